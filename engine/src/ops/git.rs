//! `git://` sources: a checkout at a commit, keyed by the commit hash.
//!
//! The ref is resolved with `git ls-remote` (no clone) unless the
//! identifier or `git.checksum` already pins a commit; the checkout is a
//! shallow fetch of that ref. Uses the `git` CLI.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use kiln_llb::pb;

use super::{OpCtx, Ref, blocking};
use crate::cachekey::{CacheKey, KeyBuilder};
use crate::fsutil;
use crate::solver::{BoxFuture, Input, Op, OpContext};

pub(crate) struct GitOp {
    ctx: OpCtx,
    url: String,
    reference: String,
    subdir: String,
    keep_git_dir: bool,
    checksum: Option<String>,
    commit: Mutex<Option<String>>,
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn git(dir: Option<&Path>, args: &[&str]) -> Result<String> {
    let mut cmd = tokio::process::Command::new("git");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .await
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl GitOp {
    pub(crate) fn new(ctx: OpCtx, src: &pb::SourceOp) -> std::result::Result<GitOp, String> {
        let rest = src
            .identifier
            .strip_prefix("git://")
            .ok_or("not a git source")?;
        let (remote, fragment) = rest.split_once('#').unwrap_or((rest, ""));
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        let url = match src.attrs.get("git.fullurl") {
            Some(u) if !u.is_empty() => u.clone(),
            _ => format!("https://{remote}"),
        };
        if url.starts_with('-') || reference.starts_with('-') {
            return Err(format!("bad git source {:?}", src.identifier));
        }
        fsutil::clean_rel(subdir).map_err(|e| format!("{e:#}"))?;
        Ok(GitOp {
            ctx,
            url,
            reference: reference.to_owned(),
            subdir: subdir.to_owned(),
            keep_git_dir: src.attrs.get("git.keepgitdir").is_some_and(|v| v == "true"),
            checksum: src
                .attrs
                .get("git.checksum")
                .cloned()
                .filter(|c| !c.is_empty()),
            commit: Mutex::new(None),
        })
    }

    async fn resolve(&self) -> Result<String> {
        if let Some(c) = &self.checksum
            && is_sha(c)
        {
            return Ok(c.to_lowercase());
        }
        if is_sha(&self.reference) {
            return Ok(self.reference.to_lowercase());
        }
        let r = if self.reference.is_empty() {
            "HEAD"
        } else {
            self.reference.as_str()
        };
        let out = git(None, &["ls-remote", "--", &self.url, r]).await?;
        let mut found = None;
        for line in out.lines() {
            let Some((sha, name)) = line.split_once('\t') else {
                continue;
            };
            // A peeled annotated tag names the commit itself.
            if name.ends_with("^{}") {
                found = Some(sha.to_owned());
                break;
            }
            if found.is_none() {
                found = Some(sha.to_owned());
            }
        }
        let commit = found.with_context(|| format!("ref {r:?} not found in {}", self.url))?;
        if let Some(c) = &self.checksum
            && !commit.starts_with(c.as_str())
        {
            bail!("{} at {r} is {commit}, not the expected {c}", self.url);
        }
        Ok(commit)
    }
}

impl Op<Ref> for GitOp {
    fn outputs(&self) -> usize {
        1
    }

    fn cache_key<'a>(
        &'a self,
        _cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<CacheKey>> {
        Box::pin(async move {
            let commit = self.resolve().await?;
            let key = KeyBuilder::new("source.git")
                .str(&commit)
                .str(&self.subdir)
                .u64(self.keep_git_dir as u64)
                .finish();
            *self.commit.lock().unwrap_or_else(|p| p.into_inner()) = Some(commit);
            Ok(key)
        })
    }

    fn execute<'a>(
        &'a self,
        _cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<Vec<Ref>>> {
        Box::pin(async move {
            let commit = self
                .commit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .context("git source executed before it was resolved")?;
            let worker = self.ctx.worker.clone();
            let work: PathBuf = worker
                .dir
                .join("tmp")
                .join(format!("git-{}", kiln_store::fsutil::random_hex()?));
            fs_err::create_dir_all(&work)?;
            let r = async {
                git(Some(&work), &["init", "-q"]).await?;
                let want = if self.reference.is_empty() || is_sha(&self.reference) {
                    commit.clone()
                } else {
                    self.reference.clone()
                };
                if git(
                    Some(&work),
                    &["fetch", "-q", "--depth", "1", "--", &self.url, &want],
                )
                .await
                .is_err()
                {
                    // Servers that refuse shallow fetches by name or hash: fetch all.
                    git(
                        Some(&work),
                        &[
                            "fetch",
                            "-q",
                            "--tags",
                            "--",
                            &self.url,
                            "+refs/heads/*:refs/remotes/origin/*",
                        ],
                    )
                    .await?;
                    git(
                        Some(&work),
                        &["-c", "advice.detachedHead=false", "checkout", "-q", &commit],
                    )
                    .await?;
                } else {
                    git(
                        Some(&work),
                        &[
                            "-c",
                            "advice.detachedHead=false",
                            "checkout",
                            "-q",
                            "FETCH_HEAD",
                        ],
                    )
                    .await?;
                }
                let head = git(Some(&work), &["rev-parse", "HEAD"]).await?;
                if head.trim() != commit {
                    bail!(
                        "{} moved while fetching: expected {commit}, got {}",
                        self.url,
                        head.trim()
                    );
                }
                Ok(())
            }
            .await;
            let subdir = self.subdir.clone();
            let keep = self.keep_git_dir;
            let id = match r {
                Ok(()) => {
                    let work2 = work.clone();
                    blocking(move || {
                        if !keep {
                            let _ = std::fs::remove_dir_all(work2.join(".git"));
                        }
                        let src = fsutil::resolve(&work2, &subdir, true)?;
                        if !src.is_dir() {
                            bail!("subdirectory {subdir:?} not found in the checkout");
                        }
                        let scratch = worker.snapshots.scratch_dir()?;
                        fs_err::remove_dir(&scratch)?;
                        fsutil::copy_tree(&src, &scratch)?;
                        Ok(worker.snapshots.commit_diff_dir_move(&scratch, None)?)
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_dir_all(&work);
            Ok(vec![Ref(Some(id?))])
        })
    }
}
