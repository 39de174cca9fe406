//! `git://` sources: a checkout at a commit, keyed by the commit hash.
//!
//! Uses the `git` CLI rather than gix: it speaks every transport and auth
//! scheme users configure (ssh, smart and dumb http, `git://`, `file://`),
//! handles submodules, and its checkout is the reference behaviour for
//! symlinks, modes and hostile trees.
//!
//! The ref is resolved with `git ls-remote` (no clone) unless the identifier
//! pins a commit. Fetched commits are kept in a bare mirror per URL under
//! `<state>/engine/v1/git/`, so checking out a commit that was fetched
//! before needs no network beyond resolving the ref. A checkout is made
//! from the mirror into a temporary dir, submodules are updated from their
//! own remotes (unless `git.skipsubmodules`), and `.git` is dropped unless
//! `git.keepgitdir`. `git.checksum` pins the commit (or annotated tag) the
//! ref must resolve to. `git.authheadersecret` / `git.authtokensecret` name
//! session secrets sent as an HTTP `Authorization` header through git's
//! environment config, never on a command line.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use kiln_llb::pb;

use super::{OpCtx, Ref, blocking};
use crate::cachekey::{CacheKey, KeyBuilder};
use crate::fsutil;
use crate::solver::{BoxFuture, Input, Op, OpContext, ProgressSink, VertexInfo};

pub(crate) struct GitOp {
    ctx: OpCtx,
    url: String,
    reference: String,
    subdir: String,
    keep_git_dir: bool,
    skip_submodules: bool,
    checksum: Option<String>,
    auth_header_secret: Option<String>,
    auth_token_secret: Option<String>,
    /// `git.mountsshsock`: the session's ssh agent id for ssh remotes.
    ssh_sock: Option<String>,
    /// `git.knownsshhosts`: known_hosts lines for ssh remotes.
    known_hosts: Option<String>,
    commit: Mutex<Option<String>>,
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How git reaches a remote: an `Authorization` header (passed through
/// `GIT_CONFIG_*`, so it is in no argument list and no config file), the
/// session's ssh agent socket, and a known-hosts file.
#[derive(Default)]
struct Net {
    url: String,
    header: Option<String>,
    ssh_sock: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(k) = &self.known_hosts {
            let _ = std::fs::remove_file(k);
        }
    }
}

/// `GIT_SSH_COMMAND`: no ssh config of the user's; host keys checked
/// against `known_hosts` when one is given, otherwise not checked (and not
/// recorded anywhere).
fn ssh_command(known_hosts: Option<&Path>) -> String {
    let mut c = String::from("ssh -F /dev/null -o BatchMode=yes");
    match known_hosts {
        Some(k) => {
            let quoted = format!("'{}'", k.display().to_string().replace('\'', r"'\''"));
            c.push_str(" -o StrictHostKeyChecking=yes -o UserKnownHostsFile=");
            c.push_str(&quoted);
        }
        None => c.push_str(" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"),
    }
    c
}

/// One `git` invocation; `net` when it may reach the remote.
struct Git<'a> {
    dir: Option<&'a Path>,
    net: Option<&'a Net>,
}

impl Git<'_> {
    /// Whether the repository has the object `spec`.
    async fn has(&self, spec: &str) -> bool {
        self.run(&["cat-file", "-e", spec]).await.is_ok()
    }

    async fn run(&self, args: &[&str]) -> Result<String> {
        let mut cmd = tokio::process::Command::new("git");
        if let Some(d) = self.dir {
            cmd.current_dir(d);
        }
        // Only the session's agent: never one the process inherited.
        cmd.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("SSH_AUTH_SOCK")
            .env(
                "GIT_SSH_COMMAND",
                ssh_command(self.net.and_then(|n| n.known_hosts.as_deref())),
            )
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(n) = self.net {
            if let Some(header) = &n.header {
                cmd.env("GIT_CONFIG_COUNT", "1")
                    .env("GIT_CONFIG_KEY_0", format!("http.{}.extraHeader", n.url))
                    .env("GIT_CONFIG_VALUE_0", format!("Authorization: {header}"));
            }
            if let Some(sock) = &n.ssh_sock {
                cmd.env("SSH_AUTH_SOCK", sock);
            }
        }
        let out = cmd
            .output()
            .await
            .context("running git (is it installed?)")?;
        if !out.status.success() {
            bail!(
                "git {} failed: {}",
                args.iter()
                    .find(|a| !a.starts_with('-') && !a.contains('='))
                    .copied()
                    .unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
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
        let attr = |k: &str| src.attrs.get(k).cloned().filter(|c| !c.is_empty());
        let checksum = attr("git.checksum");
        if let Some(c) = &checksum
            && (c.len() < 7 || c.len() > 40 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!(
                "bad git.checksum {c:?}: expected a commit hash (7 to 40 hex digits)"
            ));
        }
        Ok(GitOp {
            ctx,
            url,
            reference: reference.to_owned(),
            subdir: subdir.to_owned(),
            keep_git_dir: src.attrs.get("git.keepgitdir").is_some_and(|v| v == "true"),
            skip_submodules: src
                .attrs
                .get("git.skipsubmodules")
                .is_some_and(|v| v == "true"),
            checksum: checksum.map(|c| c.to_ascii_lowercase()),
            auth_header_secret: attr("git.authheadersecret"),
            auth_token_secret: attr("git.authtokensecret"),
            ssh_sock: attr("git.mountsshsock"),
            known_hosts: attr("git.knownsshhosts"),
            commit: Mutex::new(None),
        })
    }

    /// The `Authorization` header value from the session's secrets, if the
    /// named secrets are present (BuildKit sets default IDs, so a missing
    /// secret just means no auth).
    async fn auth(&self) -> Result<Option<String>> {
        let secrets = &self.ctx.session.secrets;
        if let Some(id) = &self.auth_header_secret
            && let Some(h) = secrets.get(id).await?
        {
            return Ok(Some(String::from_utf8_lossy(&h).trim().to_owned()));
        }
        let Some(id) = &self.auth_token_secret else {
            return Ok(None);
        };
        let Some(token) = secrets.get(id).await? else {
            return Ok(None);
        };
        use base64::Engine as _;
        let creds = format!("x-access-token:{}", String::from_utf8_lossy(&token).trim());
        Ok(Some(format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode(creds)
        )))
    }

    fn git<'a>(&'a self, dir: Option<&'a Path>, net: &'a Net) -> Git<'a> {
        Git {
            dir,
            net: Some(net),
        }
    }

    /// What git needs to reach the remote: the auth header, the session's
    /// ssh agent (`git.mountsshsock`), the known hosts
    /// (`git.knownsshhosts`).
    async fn net(&self) -> Result<Net> {
        let mut net = Net::default();
        net.url = self.url.clone();
        net.header = self.auth().await?;
        if let Some(id) = &self.ssh_sock {
            let sock = self.ctx.session.ssh.get(id).with_context(|| {
                format!(
                    "{}: ssh agent {id:?} is not provided by the session (pass --ssh {id})",
                    self.url
                )
            })?;
            net.ssh_sock = Some(sock.clone());
        }
        if let Some(hosts) = &self.known_hosts {
            let p = self
                .ctx
                .worker
                .dir
                .join("tmp")
                .join(format!("known-hosts-{}", kiln_store::fsutil::random_hex()?));
            fs_err::write(&p, format!("{}\n", hosts.trim_end()))?;
            net.known_hosts = Some(p);
        }
        Ok(net)
    }

    fn check_checksum(&self, found: &[&str], commit: &str) -> Result<()> {
        if let Some(c) = &self.checksum
            && !found.iter().any(|f| f.starts_with(c.as_str()))
        {
            let r = if self.reference.is_empty() {
                "HEAD"
            } else {
                &self.reference
            };
            bail!(
                "{} at {r} is commit {commit}, not the expected checksum {c}",
                self.url
            );
        }
        Ok(())
    }

    async fn resolve(&self) -> Result<String> {
        if is_sha(&self.reference) {
            let commit = self.reference.to_lowercase();
            self.check_checksum(&[&commit], &commit)?;
            return Ok(commit);
        }
        let r = if self.reference.is_empty() {
            "HEAD"
        } else {
            self.reference.as_str()
        };
        let net = self.net().await?;
        // Without the `^{}` pattern ls-remote leaves out the peeled line
        // of an annotated tag.
        let peeled = format!("{r}^{{}}");
        let mut args = vec!["ls-remote", "--", &self.url, r];
        if r != "HEAD" {
            args.push(&peeled);
        }
        let out = self.git(None, &net).run(&args).await?;
        let (tag_obj, commit) = pick_ref(&out, r);
        let commit = commit.with_context(|| format!("ref {r:?} not found in {}", self.url))?;
        let mut found = vec![commit.as_str()];
        found.extend(tag_obj.as_deref());
        self.check_checksum(&found, &commit)?;
        Ok(commit)
    }

    fn ref_name(&self) -> &str {
        if self.reference.is_empty() {
            "HEAD"
        } else {
            &self.reference
        }
    }

    fn resolved(&self) -> Option<String> {
        self.commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where the commit last solved for this URL and ref is remembered,
    /// for `--explain-cache`.
    fn last_fact(&self) -> String {
        format!("git.v1.last:{}#{}", self.url, self.ref_name())
    }

    /// The bare mirror of this URL (created on first use).
    async fn mirror(&self) -> Result<PathBuf> {
        let dir = self
            .ctx
            .worker
            .dir
            .join("git")
            .join(&crate::cachekey::sha256_digest(self.url.as_bytes())["sha256:".len()..]);
        if !dir.join("HEAD").is_file() {
            let tmp = self
                .ctx
                .worker
                .dir
                .join("tmp")
                .join(format!("mirror-{}", kiln_store::fsutil::random_hex()?));
            fs_err::create_dir_all(&tmp)?;
            Git {
                dir: Some(&tmp),
                net: None,
            }
            .run(&["init", "-q", "--bare"])
            .await?;
            fs_err::create_dir_all(dir.parent().context("mirror dir has a parent")?)?;
            if let Err(e) = std::fs::rename(&tmp, &dir) {
                let _ = std::fs::remove_dir_all(&tmp);
                if !dir.join("HEAD").is_file() {
                    return Err(e).with_context(|| format!("creating {}", dir.display()));
                }
            }
        }
        Ok(dir)
    }

    /// Makes sure the mirror holds `commit`, fetching only when it does
    /// not; says whether it fetched.
    async fn fill_mirror(&self, mirror: &Path, commit: &str) -> Result<bool> {
        let m = Git {
            dir: Some(mirror),
            net: None,
        };
        let keep = format!("refs/kiln/{commit}");
        let spec = format!("{commit}^{{commit}}");
        if m.has(&spec).await {
            return Ok(false);
        }
        let remote = self.net().await?;
        let net = self.git(Some(mirror), &remote);
        let want = if self.reference.is_empty() || is_sha(&self.reference) {
            commit.to_owned()
        } else {
            self.reference.clone()
        };
        let by_name = net
            .run(&[
                "fetch",
                "-q",
                "--no-tags",
                "--depth",
                "1",
                "--",
                &self.url,
                &format!("+{want}:{keep}"),
            ])
            .await;
        if by_name.is_err() || !m.has(&spec).await {
            // Servers that refuse shallow fetches, or fetches by hash, and
            // refs that moved since they were resolved: fetch everything.
            net.run(&[
                "fetch",
                "-q",
                "--tags",
                "--",
                &self.url,
                "+refs/heads/*:refs/heads/*",
            ])
            .await?;
        }
        if !m.has(&spec).await {
            bail!(
                "commit {commit} is not in {} (the ref moved while fetching?)",
                self.url
            );
        }
        m.run(&["update-ref", &keep, commit]).await?;
        Ok(true)
    }

    /// Checks `commit` out of the mirror into `work` (an empty dir).
    async fn checkout(&self, mirror: &Path, work: &Path, commit: &str) -> Result<()> {
        let w = Git {
            dir: Some(work),
            net: None,
        };
        w.run(&["init", "-q"]).await?;
        let from = mirror.to_str().context("state dir path is not UTF-8")?;
        Git {
            dir: Some(work),
            net: None,
        }
        .run(&[
            "-c",
            "protocol.file.allow=always",
            "fetch",
            "-q",
            "--no-tags",
            "--depth",
            "1",
            "--",
            from,
            &format!("refs/kiln/{commit}"),
        ])
        .await?;
        w.run(&["-c", "advice.detachedHead=false", "checkout", "-q", commit])
            .await?;
        let _ = std::fs::remove_file(work.join(".git/FETCH_HEAD"));
        w.run(&["remote", "add", "origin", "--", &self.url]).await?;
        if !self.skip_submodules && work.join(".gitmodules").is_file() {
            let remote = self.net().await?;
            let net = self.git(Some(work), &remote);
            let shallow = net
                .run(&[
                    SUB_NO_FILE,
                    SUB_NO_FILE_V,
                    "submodule",
                    "update",
                    "--init",
                    "--recursive",
                    "--depth",
                    "1",
                ])
                .await;
            if shallow.is_err() {
                net.run(&[
                    SUB_NO_FILE,
                    SUB_NO_FILE_V,
                    "submodule",
                    "update",
                    "--init",
                    "--recursive",
                ])
                .await
                .context("checking out submodules")?;
            }
        }
        let head = w.run(&["rev-parse", "HEAD"]).await?;
        if head.trim() != commit {
            bail!(
                "checkout of {} is at {}, expected {commit}",
                self.url,
                head.trim()
            );
        }
        Ok(())
    }
}

/// Picks `r` out of `git ls-remote` output: `(tag object, commit)`. An
/// exact branch wins over a tag of the same name, then anything matching;
/// an annotated tag's peeled line (`^{}`) names its commit.
fn pick_ref(ls_remote: &str, r: &str) -> (Option<String>, Option<String>) {
    let lines: Vec<(&str, &str)> = ls_remote
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .collect();
    let pick = |name: &str| {
        lines
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(s, _)| (*s).to_owned())
    };
    if r == "HEAD" {
        return (None, pick("HEAD"));
    }
    if let Some(c) = pick(&format!("refs/heads/{r}")) {
        return (None, Some(c));
    }
    if let Some(t) = pick(&format!("refs/tags/{r}")) {
        let c = pick(&format!("refs/tags/{r}^{{}}")).unwrap_or_else(|| t.clone());
        return (Some(t), Some(c));
    }
    let peeled = lines
        .iter()
        .find(|(_, n)| n.ends_with("^{}"))
        .or(lines.first())
        .map(|(s, _)| (*s).to_owned());
    (None, peeled)
}

/// Submodule URLs come from the repository, so they may not name local
/// paths (`ext::` is refused by git's defaults already).
const SUB_NO_FILE: &str = "-c";
const SUB_NO_FILE_V: &str = "protocol.file.allow=never";

/// Removes `.git` from a checkout and the `.git` files of its submodules
/// (they point into the removed dir). Symlinks are not followed.
fn drop_git_dirs(root: &Path) -> Result<()> {
    fn walk(dir: &Path) -> Result<()> {
        for e in fs_err::read_dir(dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if e.file_name() == ".git" {
                if ft.is_dir() {
                    fs_err::remove_dir_all(e.path())?;
                } else {
                    fs_err::remove_file(e.path())?;
                }
            } else if ft.is_dir() {
                walk(&e.path())?;
            }
        }
        Ok(())
    }
    walk(root)
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
                .u64(self.skip_submodules as u64)
                .finish();
            *self.commit.lock().unwrap_or_else(|p| p.into_inner()) = Some(commit);
            Ok(key)
        })
    }

    fn explain_miss<'a>(
        &'a self,
        _key: &'a CacheKey,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let now = self.resolved().unwrap_or_default();
            let r = self.ref_name();
            match self.ctx.worker.records.kv_get(&self.last_fact()) {
                Ok(Some(old)) if old != now => {
                    format!("{} {r} moved from {old} to {now}", self.url)
                }
                _ => format!("no record for {} at {r} ({now})", self.url),
            }
        })
    }

    fn after_solve(&self, _key: &CacheKey, _inputs: &[Input<Ref>]) {
        if let Some(c) = self.resolved() {
            let _ = self.ctx.worker.records.kv_put(&self.last_fact(), &c);
        }
    }

    fn execute<'a>(
        &'a self,
        cx: &'a OpContext,
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
                let lock = worker.local_lock(&format!("git-mirror:{}", self.url));
                let _guard = lock.lock().await;
                let mirror = self.mirror().await?;
                // Other processes on this root (another kiln, `prune`)
                // wait too.
                let _held = lock_mirror(&mirror, true)
                    .await?
                    .context("the mirror lock")?;
                let line = if self.fill_mirror(&mirror, &commit).await? {
                    format!("fetched {commit} from {}", self.url)
                } else {
                    format!("{commit} is in the local mirror of {}: no fetch", self.url)
                };
                let v = VertexInfo {
                    digest: cx.digest.clone(),
                    name: cx.name.clone(),
                    inputs: Vec::new(),
                };
                self.ctx.session.progress.log(&v, &line);
                self.checkout(&mirror, &work, &commit).await
            }
            .await;
            let subdir = self.subdir.clone();
            let keep = self.keep_git_dir;
            let id = match r {
                Ok(()) => {
                    let work2 = work.clone();
                    blocking(move || {
                        if !keep {
                            drop_git_dirs(&work2)?;
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

/// Takes the lock file of the bare mirror at `mirror` (shared by every
/// process on the root): waits for it when `wait`, otherwise gives `None`
/// when another holds it. The lock lasts as long as the returned file.
pub(crate) async fn lock_mirror(mirror: &Path, wait: bool) -> Result<Option<fs_err::File>> {
    let mirror = mirror.to_path_buf();
    blocking(move || lock_mirror_now(&mirror, wait)).await
}

/// [`lock_mirror`], on this thread.
pub(crate) fn lock_mirror_now(mirror: &Path, wait: bool) -> Result<Option<fs_err::File>> {
    let f = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(mirror.join("kiln.lock"))?;
    Ok(super::exec::flock(&f, true, wait)?.then_some(f))
}

#[cfg(test)]
mod tests {
    use super::{pick_ref, ssh_command};

    #[test]
    fn ssh_command_quotes_the_known_hosts_path() {
        assert_eq!(
            ssh_command(None),
            "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null"
        );
        assert_eq!(
            ssh_command(Some(std::path::Path::new("/a b/it's"))),
            "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes \
             -o UserKnownHostsFile='/a b/it'\\''s'"
        );
    }

    const LS: &str = "aaaa\trefs/heads/main\n\
                      bbbb\trefs/tags/main\n\
                      cccc\trefs/tags/v1\n\
                      dddd\trefs/tags/v1^{}\n\
                      eeee\trefs/tags/light\n\
                      ffff\tHEAD\n";

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn branch_wins_over_a_tag_of_the_same_name() {
        assert_eq!(pick_ref(LS, "main"), (None, some("aaaa")));
    }

    #[test]
    fn annotated_tags_resolve_to_their_commit() {
        assert_eq!(pick_ref(LS, "v1"), (some("cccc"), some("dddd")));
        assert_eq!(pick_ref(LS, "light"), (some("eeee"), some("eeee")));
        assert_eq!(pick_ref(LS, "refs/tags/v1"), (None, some("dddd")));
    }

    #[test]
    fn head_and_missing_refs() {
        assert_eq!(pick_ref(LS, "HEAD"), (None, some("ffff")));
        assert_eq!(pick_ref("", "nope"), (None, None));
    }
}
