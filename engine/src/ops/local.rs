//! `local://NAME` sources: the session's directory, filtered by include,
//! exclude and follow patterns, copied into a snapshot.
//!
//! The key is the content checksum of the selected entries, so a touched but
//! unchanged file still hits. A per-name metadata index (size, mtime, ctime,
//! inode, mode → content hash) lets an unchanged file skip hashing; an
//! unchanged context is not copied at all, because its key hits.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use kiln_llb::pb;
use kiln_store::SnapshotId;

use super::{OpCtx, Ref, blocking};
use crate::cachekey::{CacheKey, KeyBuilder};
use crate::fsutil;
use crate::patterns::PatternSet;
use crate::records::IndexEntry;
use crate::solver::{BoxFuture, Input, Op, OpContext};

pub(crate) struct LocalOp {
    ctx: OpCtx,
    name: String,
    /// Where the metadata index and the last transfer's checksums are
    /// kept: the name, plus a digest of the patterns when there are any,
    /// so that two selections of one local (a frontend reading
    /// `.dockerignore` alone, then the whole context) do not replace each
    /// other's index on every build.
    records_key: String,
    include: PatternSet,
    exclude: PatternSet,
    follow: Vec<String>,
    staged: Mutex<Option<Arc<Staged>>>,
}

struct Staged {
    dir: PathBuf,
    entries: Vec<String>,
    sums: BTreeMap<String, String>,
}

fn json_list(
    attrs: &BTreeMap<String, String>,
    k: &str,
) -> std::result::Result<Vec<String>, String> {
    match attrs.get(k) {
        None => Ok(Vec::new()),
        Some(v) if v.is_empty() => Ok(Vec::new()),
        Some(v) => {
            serde_json::from_str(v).map_err(|e| format!("attr {k} is not a JSON string list: {e}"))
        }
    }
}

impl LocalOp {
    pub(crate) fn new(
        ctx: OpCtx,
        name: &str,
        src: &pb::SourceOp,
    ) -> std::result::Result<LocalOp, String> {
        let include = json_list(&src.attrs, "local.includepattern")?;
        let exclude = json_list(&src.attrs, "local.excludepatterns")?;
        let follow = json_list(&src.attrs, "local.followpaths")?;
        let mut inc = include.clone();
        if !inc.is_empty() {
            inc.extend(follow.iter().cloned());
        }
        let records_key = if include.is_empty() && exclude.is_empty() && follow.is_empty() {
            name.to_owned()
        } else {
            let mut b = KeyBuilder::new("local.selection");
            for list in [&include, &exclude, &follow] {
                b.str(&list.len().to_string());
                for p in list {
                    b.str(p);
                }
            }
            let k = b.finish();
            let hex = k.as_str().rsplit(':').next().unwrap_or_default();
            format!("{name}@{}", &hex[..hex.len().min(16)])
        };
        Ok(LocalOp {
            ctx,
            name: name.to_owned(),
            records_key,
            include: PatternSet::new(&inc).map_err(|e| format!("{e:#}"))?,
            exclude: PatternSet::new(&exclude).map_err(|e| format!("{e:#}"))?,
            follow,
            staged: Mutex::new(None),
        })
    }

    fn walk(&self, dir: &Path) -> Result<(Vec<String>, BTreeMap<String, std::fs::Metadata>)> {
        let mut out: BTreeMap<String, std::fs::Metadata> = BTreeMap::new();
        let mut stack: Vec<String> = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let p = if rel.is_empty() {
                dir.to_owned()
            } else {
                dir.join(&rel)
            };
            let mut names: Vec<String> = Vec::new();
            for e in fs_err::read_dir(&p)? {
                let e = e?;
                names.push(fsutil::utf8(&e.file_name())?.to_owned());
            }
            names.sort();
            for n in names {
                let r = if rel.is_empty() {
                    n.clone()
                } else {
                    format!("{rel}/{n}")
                };
                let md = fs_err::symlink_metadata(dir.join(&r))?;
                let included = self.include.is_empty() || self.include.matches(&r);
                let excluded = self.exclude.matches(&r);
                if included && !excluded {
                    out.insert(r.clone(), md.clone());
                }
                if md.is_dir() {
                    let may_include = included || self.include.may_match_below(&r);
                    let may_reinclude = !excluded || self.exclude.has_negations();
                    if may_include && may_reinclude {
                        stack.push(r);
                    }
                }
            }
        }
        // Follow paths: a symlink named there is followed, and must stay
        // inside the context.
        for f in &self.follow {
            let rel = fsutil::clean_rel_path(f)?;
            let p = dir.join(&rel);
            if let Ok(md) = std::fs::symlink_metadata(&p)
                && md.file_type().is_symlink()
            {
                let target = fs_err::read_link(&p)?;
                if !fsutil::symlink_stays_inside(&rel, &target) {
                    bail!(
                        "symlink {} in local {:?} points outside the context ({})",
                        rel.display(),
                        self.name,
                        target.display()
                    );
                }
                let resolved = fsutil::resolve(dir, &rel.to_string_lossy(), true)?;
                let rrel = fsutil::rel_string(dir, &resolved);
                if let Ok(tmd) = std::fs::symlink_metadata(&resolved)
                    && !self.exclude.matches(&rrel)
                {
                    out.insert(rrel, tmd);
                }
            }
        }
        // Parents of every selected entry are part of the transfer.
        let keys: Vec<String> = out.keys().cloned().collect();
        for k in keys {
            let mut cur = k.as_str();
            while let Some(i) = cur.rfind('/') {
                cur = &cur[..i];
                if !out.contains_key(cur) {
                    out.insert(cur.to_owned(), fs_err::symlink_metadata(dir.join(cur))?);
                }
            }
        }
        Ok((out.keys().cloned().collect(), out))
    }

    fn stage(&self, dir: &Path) -> Result<Staged> {
        let (entries, mds) = self.walk(dir)?;
        let records = &self.ctx.worker.records;
        let old = records.local_index(&self.records_key)?;
        let mut index = BTreeMap::new();
        let mut sums = BTreeMap::new();
        let root_md = fs_err::metadata(dir)?;
        sums.insert(String::new(), fsutil::entry_sum('d', root_md.mode(), ""));
        for rel in &entries {
            let md = &mds[rel];
            let kind = fsutil::kind_of(md);
            let mtime_ns = md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128;
            let ctime_ns = md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128;
            let content = match kind {
                'f' => match old.get(rel) {
                    Some(e)
                        if e.size == md.size()
                            && e.mtime_ns == mtime_ns
                            && e.ctime_ns == ctime_ns
                            && e.ino == md.ino()
                            && e.mode == md.mode() =>
                    {
                        e.content.clone()
                    }
                    _ => fsutil::hash_file(&dir.join(rel))?,
                },
                'l' => fs_err::read_link(dir.join(rel))?
                    .to_string_lossy()
                    .into_owned(),
                'o' => format!("{}:{}", md.mode() & 0o170000, md.rdev()),
                _ => String::new(),
            };
            sums.insert(rel.clone(), fsutil::entry_sum(kind, md.mode(), &content));
            index.insert(
                rel.clone(),
                IndexEntry {
                    size: md.size(),
                    mtime_ns,
                    ctime_ns,
                    ino: md.ino(),
                    mode: md.mode(),
                    content,
                },
            );
        }
        if index != old {
            records.set_local_index(&self.records_key, &index)?;
        }
        Ok(Staged {
            dir: dir.to_owned(),
            entries,
            sums,
        })
    }
}

impl Op<Ref> for LocalOp {
    fn outputs(&self) -> usize {
        1
    }

    fn cache_key<'a>(
        &'a self,
        _cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<CacheKey>> {
        Box::pin(async move {
            let dir = self
                .ctx
                .session
                .locals
                .get(&self.name)
                .cloned()
                .with_context(|| format!("local {:?} is not provided by the session", self.name))?;
            if !dir.is_dir() {
                bail!(
                    "local {:?}: {} is not a directory",
                    self.name,
                    dir.display()
                );
            }
            let lock = self.ctx.worker.local_lock(&self.name);
            let _g = lock.lock().await;
            let spec = LocalOp {
                ctx: self.ctx.clone(),
                name: self.name.clone(),
                records_key: self.records_key.clone(),
                include: self.include.clone(),
                exclude: self.exclude.clone(),
                follow: self.follow.clone(),
                staged: Mutex::new(None),
            };
            let staged = blocking(move || spec.stage(&dir)).await?;
            let key = KeyBuilder::new("source.local")
                .str(&fsutil::subtree_sum(&staged.sums, ""))
                .finish();
            *self.staged.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(staged));
            Ok(key)
        })
    }

    fn execute<'a>(
        &'a self,
        cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<Vec<Ref>>> {
        Box::pin(async move {
            let staged = self
                .staged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .context("local source executed before its key was computed")?;
            let worker = self.ctx.worker.clone();
            let name = self.name.clone();
            let cancel = cx.cancel.clone();
            let id = blocking(move || {
                let scratch = worker.snapshots.scratch_dir()?;
                let r = (|| {
                    let root_md = fs_err::metadata(&staged.dir)?;
                    fs_err::set_permissions(
                        &scratch,
                        std::fs::Permissions::from_mode(root_md.mode() & 0o7777),
                    )?;
                    // Files unchanged since the last transfer of this name are
                    // hard links into its snapshot instead of new copies
                    // (committed snapshots are never written in place).
                    let prev = worker
                        .records
                        .kv_get(&format!("localsnap:{name}"))
                        .ok()
                        .flatten()
                        .and_then(|s| s.parse::<SnapshotId>().ok())
                        .filter(|id| worker.snapshots.exists(id));
                    let prev = match prev {
                        Some(id) => {
                            let sums = worker.sums(&Ref(Some(id.clone())))?;
                            let dir = worker.snapshots.diff_dir(&id)?;
                            Some((dir, sums))
                        }
                        None => None,
                    };
                    let mut dirs = Vec::new();
                    for rel in &staged.entries {
                        if cancel.is_cancelled() {
                            bail!("cancelled");
                        }
                        let src = staged.dir.join(rel);
                        let dst = scratch.join(rel);
                        let md = fs_err::symlink_metadata(&src)?;
                        if md.is_file()
                            && let Some((pdir, psums)) = &prev
                            && psums.get(rel) == staged.sums.get(rel)
                            && std::fs::hard_link(pdir.join(rel), &dst).is_ok()
                        {
                            continue;
                        }
                        fsutil::copy_entry(&src, &dst, &md)?;
                        // Context files belong to root in the build, as in
                        // BuildKit's local source.
                        fsutil::lchown(&dst, 0, 0)?;
                        if md.is_dir() {
                            dirs.push((dst, md));
                        }
                    }
                    for (d, md) in dirs.iter().rev() {
                        fsutil::set_mtime(d, md.mtime(), md.mtime_nsec())?;
                    }
                    let id = worker.snapshots.commit_diff_dir_move(&scratch, None)?;
                    worker.store_sums(&id, &staged.sums)?;
                    worker
                        .records
                        .kv_put(&format!("localsnap:{name}"), id.as_str())?;
                    Ok(id)
                })();
                if r.is_err() {
                    let _ = std::fs::remove_dir_all(&scratch);
                }
                r
            })
            .await?;
            Ok(vec![Ref(Some(id))])
        })
    }

    fn explain_miss<'a>(
        &'a self,
        _key: &'a CacheKey,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let staged = self
                .staged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some(staged) = staged else {
                return "no record".to_owned();
            };
            match self.ctx.worker.records.local_sums(&self.records_key) {
                Ok(Some(old)) => describe_changes(&self.name, &old, &staged.sums),
                _ => format!("no record (first transfer of local {:?})", self.name),
            }
        })
    }

    fn after_solve(&self, _key: &CacheKey, _inputs: &[Input<Ref>]) {
        let staged = self
            .staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(s) = staged {
            let records = &self.ctx.worker.records;
            if records
                .local_sums(&self.records_key)
                .ok()
                .flatten()
                .as_ref()
                != Some(&s.sums)
            {
                let _ = records.set_local_sums(&self.records_key, &s.sums);
            }
        }
    }
}

/// One line naming the context files that differ.
fn describe_changes(
    name: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> String {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut changed = Vec::new();
    for k in keys {
        let what = match (old.get(k), new.get(k)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(_), Some(_)) => "changed",
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (None, None) => continue,
        };
        let shown = if k.is_empty() { "." } else { k.as_str() };
        changed.push(format!("{shown} ({what})"));
    }
    if changed.is_empty() {
        return format!("no record for local {name:?} (content unchanged since the last transfer)");
    }
    let n = changed.len();
    changed.truncate(10);
    let more = if n > 10 {
        format!(" and {} more", n - 10)
    } else {
        String::new()
    };
    format!(
        "context file content changed in local {name:?}: {}{more}",
        changed.join(", ")
    )
}
