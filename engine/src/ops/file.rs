//! FileOp: chained mkdir, mkfile, rm, copy and symlink actions.
//!
//! Each action works on a plain directory tree: an op input's merged view is
//! copied into a copy-mode snapshot of kiln-store, and a chain of actions
//! keeps mutating that tree; the last action's tree is committed (as a diff
//! against the base input, so it exports as one layer). Every path is
//! resolved inside its root (see [`crate::fsutil::resolve`]); nothing an
//! action does can reach outside it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use kiln_llb::pb;
use kiln_llb::pb::file_action::Action;
use kiln_runtime::{OverlaySpec, executor::UpperDir};
use kiln_store::{Active, SnapshotId};
use tokio_util::sync::CancellationToken;

use super::{OpCtx, Ref, RootfsMode, Worker, blocking, explain, remember};
use crate::cachekey::CacheKey;
use crate::fsutil;
use crate::patterns::PatternSet;
use crate::records::KeyParts;
use crate::solver::{BoxFuture, Input, Op, OpContext};

pub(crate) struct FileOp {
    ctx: OpCtx,
    op: Arc<pb::FileOp>,
    n_inputs: usize,
    parts: std::sync::Mutex<Option<KeyParts>>,
}

/// How an op input is read by the actions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Not at all.
    None,
    /// Only as a copy source or for user names: keyed by content.
    Content,
    /// As the base tree of an action: keyed by its cache key.
    Base,
}

impl FileOp {
    pub(crate) fn new(
        ctx: OpCtx,
        op: pb::FileOp,
        n_inputs: usize,
    ) -> std::result::Result<FileOp, String> {
        if op.actions.is_empty() {
            return Err("file op has no actions".into());
        }
        for (i, a) in op.actions.iter().enumerate() {
            let limit = (n_inputs + i) as i64;
            if a.input < -1 || a.input >= limit {
                return Err(format!("action {i}: input {} is out of range", a.input));
            }
            if a.secondary_input < -1 || a.secondary_input >= limit {
                return Err(format!(
                    "action {i}: secondary input {} is out of range",
                    a.secondary_input
                ));
            }
            if a.action.is_none() {
                return Err(format!("action {i} has no action set"));
            }
        }
        Ok(FileOp {
            ctx,
            op: Arc::new(op),
            n_inputs,
            parts: std::sync::Mutex::new(None),
        })
    }

    fn uses(&self) -> Vec<Use> {
        let mut u = vec![Use::None; self.n_inputs];
        let mut mark = |idx: i64, how: Use| {
            if idx >= 0 && (idx as usize) < self.n_inputs {
                let cur = &mut u[idx as usize];
                if how == Use::Base || *cur == Use::None {
                    *cur = how;
                }
            }
        };
        for a in &self.op.actions {
            mark(a.input, Use::Base);
            if matches!(a.action, Some(Action::Copy(_))) {
                mark(a.secondary_input, Use::Content);
            }
            for owner in owners(a) {
                for uo in [&owner.user, &owner.group].into_iter().flatten() {
                    if let Some(pb::user_opt::User::ByName(n)) = &uo.user {
                        mark(n.input, Use::Content);
                    }
                }
            }
        }
        u
    }
}

fn owners(a: &pb::FileAction) -> Vec<&pb::ChownOpt> {
    match &a.action {
        Some(Action::Copy(c)) => c.owner.iter().collect(),
        Some(Action::Mkfile(c)) => c.owner.iter().collect(),
        Some(Action::Mkdir(c)) => c.owner.iter().collect(),
        Some(Action::Symlink(c)) => c.owner.iter().collect(),
        _ => Vec::new(),
    }
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Op<Ref> for FileOp {
    fn outputs(&self) -> usize {
        1
    }

    fn cache_key<'a>(
        &'a self,
        _cx: &'a OpContext,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<CacheKey>> {
        Box::pin(async move {
            let uses = self.uses();
            let mut b = self.ctx.key_builder("file");
            let mut parts = self.ctx.parts();
            for (i, inp) in inputs.iter().enumerate() {
                match uses.get(i).copied().unwrap_or(Use::Base) {
                    Use::Base => {
                        b.str("base").key(&inp.key);
                        parts.push((format!("input {i}"), inp.key.as_str().to_owned()));
                    }
                    Use::None => {
                        b.str("unused");
                    }
                    Use::Content => {
                        // Content of exactly the paths the actions read.
                        let mut paths: Vec<(String, bool)> = Vec::new();
                        for a in &self.op.actions {
                            if let Some(Action::Copy(c)) = &a.action
                                && a.secondary_input == i as i64
                            {
                                let p = if c.allow_wildcard && has_glob(&c.src) {
                                    glob_base(&c.src)
                                } else {
                                    c.src.clone()
                                };
                                paths.push((p, c.follow_symlink));
                            }
                            for owner in owners(a) {
                                for uo in [&owner.user, &owner.group].into_iter().flatten() {
                                    if let Some(pb::user_opt::User::ByName(n)) = &uo.user
                                        && n.input == i as i64
                                    {
                                        paths.push(("/etc/passwd".into(), true));
                                        paths.push(("/etc/group".into(), true));
                                    }
                                }
                            }
                        }
                        let worker = self.ctx.worker.clone();
                        // An imported result is unpacked to read its content.
                        let r = crate::cache::materialize(
                            &worker,
                            &self.ctx.session.cache,
                            &inp.result,
                        )
                        .await?;
                        let sums = blocking(move || {
                            paths
                                .into_iter()
                                .map(|(p, follow)| {
                                    Ok((p.clone(), worker.content_sum(&r, &p, follow)?))
                                })
                                .collect::<Result<Vec<_>>>()
                        })
                        .await?;
                        b.str("content");
                        for (p, s) in sums {
                            b.str(&p).str(&s);
                            parts.push((format!("content of {p:?} in input {i}"), s));
                        }
                    }
                }
            }
            let key = b.finish();
            *self.parts.lock().unwrap_or_else(|p| p.into_inner()) = Some(KeyParts {
                key: key.as_str().to_owned(),
                parts,
            });
            Ok(key)
        })
    }

    fn execute<'a>(
        &'a self,
        cx: &'a OpContext,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<Vec<Ref>>> {
        Box::pin(async move {
            let worker = self.ctx.worker.clone();
            let op = self.op.clone();
            let refs: Vec<Ref> = inputs.iter().map(|i| i.result.clone()).collect();
            let cancel = cx.cancel.clone();
            let id = blocking(move || run_actions(&worker, &op, &refs, &cancel)).await?;
            Ok(vec![Ref(id)])
        })
    }

    fn explain_miss<'a>(
        &'a self,
        _key: &'a CacheKey,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, String> {
        Box::pin(async move { explain(&self.ctx, "file", &self.parts, inputs) })
    }

    fn after_solve(&self, _key: &CacheKey, inputs: &[Input<Ref>]) {
        remember(&self.ctx, "file", &self.parts, inputs);
    }
}

/// The longest leading part of a path without glob characters.
fn glob_base(p: &str) -> String {
    let mut out = Vec::new();
    for c in p.split('/') {
        if has_glob(c) {
            break;
        }
        out.push(c);
    }
    let s = out.join("/");
    if s.is_empty() { "/".into() } else { s }
}

/// A tree an action produced, and the snapshot it started from, which the
/// result is committed on top of.
enum Tree {
    /// A plain directory owned by this op (empty, or a hardlink farm of its
    /// base, see [`fsutil::link_tree`]).
    Dir(PathBuf, Option<SnapshotId>),
    /// An overlay of the base mounted at `mount` (as root): writes land in
    /// the active snapshot's upper dir, which becomes the new diff as it
    /// is, so the op neither mirrors the base nor diffs the result.
    Overlay {
        mount: PathBuf,
        active: Active,
        parent: Option<SnapshotId>,
    },
    /// Moved into a later action.
    Taken,
}

impl Tree {
    fn root(&self) -> Result<PathBuf> {
        match self {
            Tree::Dir(d, _) => Ok(d.clone()),
            Tree::Overlay { mount, .. } => Ok(mount.clone()),
            Tree::Taken => Err(anyhow!("action result already consumed")),
        }
    }

    fn parent(&self) -> Option<SnapshotId> {
        match self {
            Tree::Dir(_, p) | Tree::Overlay { parent: p, .. } => p.clone(),
            Tree::Taken => None,
        }
    }
}

/// Mounts an overlay of `base` on a fresh scratch dir.
fn overlay_tree(
    worker: &Worker,
    base: &SnapshotId,
    scratch_dirs: &mut Vec<PathBuf>,
) -> Result<Tree> {
    let active = worker.snapshots.prepare(Some(base))?;
    let mounted = (|| {
        let lowers = worker.snapshots.overlay_lowers(Some(base), 100)?;
        let d = worker.snapshots.scratch_dir()?;
        scratch_dirs.push(d.clone());
        let spec = OverlaySpec {
            lowerdirs: lowers.absolute(),
            upper: Some(UpperDir {
                upperdir: active.upper(),
                workdir: active.work(),
            }),
        };
        kiln_runtime::executor::mount_overlay(&spec, &d)
            .with_context(|| format!("mounting an overlay of snapshot {base}"))?;
        Ok::<_, anyhow::Error>(d)
    })();
    match mounted {
        Ok(mount) => Ok(Tree::Overlay {
            mount,
            active,
            parent: Some(base.clone()),
        }),
        Err(e) => {
            let _ = worker.snapshots.abort(active);
            Err(e)
        }
    }
}

/// Unmounts an overlay tree's mount; on failure the mount point is kept
/// out of the scratch cleanup (removing files through a live overlay would
/// only whiteout them, but nothing should touch it).
fn unmount_tree(mount: &Path, scratch_dirs: &mut Vec<PathBuf>) -> Result<()> {
    let r = kiln_runtime::executor::unmount(mount);
    if r.is_err() {
        scratch_dirs.retain(|d| d != mount);
    }
    r.with_context(|| format!("unmounting {}", mount.display()))
}

fn run_actions(
    worker: &Arc<Worker>,
    op: &pb::FileOp,
    refs: &[Ref],
    cancel: &CancellationToken,
) -> Result<Option<SnapshotId>> {
    let n = refs.len();
    let mut trees: Vec<Tree> = Vec::new();
    // How often each action result is read later.
    let mut readers = vec![0usize; op.actions.len()];
    for a in &op.actions {
        for idx in [a.input, a.secondary_input] {
            if idx >= n as i64 {
                readers[(idx as usize) - n] += 1;
            }
        }
    }
    let mut scratch_dirs: Vec<PathBuf> = Vec::new();
    let result = (|| {
        for (i, a) in op.actions.iter().enumerate() {
            if cancel.is_cancelled() {
                bail!("cancelled");
            }
            // The tree this action writes to.
            let tree = if a.input < 0 {
                let d = worker.snapshots.scratch_dir()?;
                scratch_dirs.push(d.clone());
                Tree::Dir(d, None)
            } else if (a.input as usize) < n {
                let r = &refs[a.input as usize];
                match &r.0 {
                    Some(base) if worker.rootfs_mode == RootfsMode::Overlay => {
                        overlay_tree(worker, base, &mut scratch_dirs)?
                    }
                    _ => {
                        let d = worker.snapshots.scratch_dir()?;
                        scratch_dirs.push(d.clone());
                        fs_err::remove_dir(&d)?;
                        fsutil::link_tree(&worker.view(r)?, &d)?;
                        Tree::Dir(d, r.0.clone())
                    }
                }
            } else {
                let j = a.input as usize - n;
                readers[j] -= 1;
                if readers[j] == 0 {
                    std::mem::replace(&mut trees[j], Tree::Taken)
                } else {
                    let d = worker.snapshots.scratch_dir()?;
                    scratch_dirs.push(d.clone());
                    fs_err::remove_dir(&d)?;
                    fsutil::link_tree(&trees[j].root()?, &d)?;
                    Tree::Dir(d, trees[j].parent())
                }
            };
            let root = tree.root()?;
            // The tree copy sources are read from.
            let src_root: Option<PathBuf> = if a.secondary_input < 0 {
                None
            } else if (a.secondary_input as usize) < n {
                Some(worker.view(&refs[a.secondary_input as usize])?)
            } else {
                let j = a.secondary_input as usize - n;
                readers[j] -= 1;
                Some(trees[j].root()?)
            };
            let user_root = |idx: i64| -> Result<PathBuf> {
                if idx >= 0 && (idx as usize) < n {
                    worker.view(&refs[idx as usize])
                } else {
                    Ok(root.clone())
                }
            };
            match a.action.as_ref() {
                Some(Action::Mkdir(m)) => {
                    mkdir(&root, m, &user_root).with_context(|| format!("mkdir {}", m.path))?
                }
                Some(Action::Mkfile(m)) => {
                    mkfile(&root, m, &user_root).with_context(|| format!("mkfile {}", m.path))?
                }
                Some(Action::Rm(r)) => rm(&root, r).with_context(|| format!("rm {}", r.path))?,
                Some(Action::Symlink(s)) => symlink(&root, s, &user_root)
                    .with_context(|| format!("symlink {} -> {}", s.newpath, s.oldpath))?,
                Some(Action::Copy(c)) => {
                    let empty;
                    let src = match &src_root {
                        Some(s) => s.as_path(),
                        None => {
                            empty = worker.view(&Ref(None))?;
                            empty.as_path()
                        }
                    };
                    copy(src, &root, c, &user_root, cancel)
                        .with_context(|| format!("copy {} to {}", c.src, c.dest))?
                }
                None => bail!("action {i} has no action set"),
            }
            trees.push(tree);
        }
        let last = trees.pop().context("file op has no actions")?;
        match last {
            // The tree is a scratch dir of this op: what it adds is moved
            // into the new snapshot, not copied.
            Tree::Dir(d, parent) => Ok(Some(
                worker
                    .snapshots
                    .create_from_dir_consuming(&d, parent.as_ref())?,
            )),
            // The upper dir is the diff.
            Tree::Overlay { mount, active, .. } => {
                if let Err(e) = unmount_tree(&mount, &mut scratch_dirs) {
                    let _ = worker.snapshots.abort(active);
                    return Err(e);
                }
                Ok(Some(worker.snapshots.commit(active)?))
            }
            Tree::Taken => Err(anyhow!("action result already consumed")),
        }
    })();
    // Overlays of intermediate (or failed) actions are discarded.
    for t in trees {
        if let Tree::Overlay { mount, active, .. } = t {
            if unmount_tree(&mount, &mut scratch_dirs).is_ok() {
                let _ = worker.snapshots.abort(active);
            } else {
                std::mem::forget(active);
            }
        }
    }
    for d in scratch_dirs {
        if let Some(p) = d.parent() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
    result
}

/// uid/gid from a ChownOpt; names are looked up in the tree `user_root`
/// returns for the option's input.
fn resolve_owner(
    owner: Option<&pb::ChownOpt>,
    user_root: &dyn Fn(i64) -> Result<PathBuf>,
) -> Result<Option<(u32, u32)>> {
    let Some(o) = owner else { return Ok(None) };
    let mut uid = None;
    let mut gid = None;
    let mut primary_gid = None;
    if let Some(u) = o.user.as_ref().and_then(|u| u.user.as_ref()) {
        match u {
            pb::user_opt::User::ById(id) => uid = Some(*id),
            pb::user_opt::User::ByName(n) => {
                if let Ok(id) = n.name.parse::<u32>() {
                    uid = Some(id);
                } else {
                    let root = user_root(n.input)?;
                    let (u, g) = lookup_passwd(&root, &n.name)?;
                    uid = Some(u);
                    primary_gid = Some(g);
                }
            }
        }
    }
    if let Some(g) = o.group.as_ref().and_then(|g| g.user.as_ref()) {
        match g {
            pb::user_opt::User::ById(id) => gid = Some(*id),
            pb::user_opt::User::ByName(n) => {
                if let Ok(id) = n.name.parse::<u32>() {
                    gid = Some(id);
                } else {
                    let root = user_root(n.input)?;
                    gid = Some(lookup_group(&root, &n.name)?);
                }
            }
        }
    }
    match (uid, gid) {
        (None, None) => Ok(None),
        (Some(u), Some(g)) => Ok(Some((u, g))),
        (Some(u), None) => Ok(Some((u, primary_gid.unwrap_or(u)))),
        (None, Some(g)) => Ok(Some((0, g))),
    }
}

fn read_in_root(root: &Path, path: &str) -> Result<String> {
    let p = fsutil::resolve(root, path, true)?;
    fs_err::read_to_string(&p).map_err(Into::into)
}

fn lookup_passwd(root: &Path, name: &str) -> Result<(u32, u32)> {
    let text =
        read_in_root(root, "/etc/passwd").with_context(|| format!("looking up user {name:?}"))?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            let u = f[2]
                .parse()
                .with_context(|| format!("bad uid for {name:?} in /etc/passwd"))?;
            let g = f[3]
                .parse()
                .with_context(|| format!("bad gid for {name:?} in /etc/passwd"))?;
            return Ok((u, g));
        }
    }
    bail!("user {name:?} not found in /etc/passwd")
}

fn lookup_group(root: &Path, name: &str) -> Result<u32> {
    let text =
        read_in_root(root, "/etc/group").with_context(|| format!("looking up group {name:?}"))?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            return f[2]
                .parse()
                .with_context(|| format!("bad gid for {name:?} in /etc/group"));
        }
    }
    bail!("group {name:?} not found in /etc/group")
}

fn apply_meta(p: &Path, owner: Option<(u32, u32)>, timestamp: i64) -> Result<()> {
    if let Some((u, g)) = owner {
        fsutil::lchown(p, u, g)?;
    }
    if timestamp >= 0 {
        fsutil::set_mtime(p, timestamp / 1_000_000_000, timestamp % 1_000_000_000)?;
    }
    Ok(())
}

fn perm(mode: i32, default: u32) -> u32 {
    if mode < 0 {
        default
    } else {
        mode as u32 & 0o7777
    }
}

fn mkdir(
    root: &Path,
    m: &pb::FileActionMkDir,
    user_root: &dyn Fn(i64) -> Result<PathBuf>,
) -> Result<()> {
    let owner = resolve_owner(m.owner.as_ref(), user_root)?;
    let target = fsutil::resolve(root, &m.path, true)?;
    if let Ok(md) = std::fs::symlink_metadata(&target) {
        if md.is_dir() {
            if m.make_parents {
                return Ok(());
            }
            bail!("{} already exists", m.path);
        }
        bail!("{} exists and is not a directory", m.path);
    }
    let parent = target.parent().context("no parent")?;
    if !parent.is_dir() {
        if !m.make_parents {
            bail!("parent directory of {} does not exist", m.path);
        }
        // Create missing parents one by one, each resolved inside the root.
        create_parents(root, parent, |p| {
            fs_err::set_permissions(p, std::fs::Permissions::from_mode(perm(m.mode, 0o755)))?;
            apply_meta(p, owner, m.timestamp)
        })?;
    }
    fs_err::create_dir(&target)?;
    fs_err::set_permissions(
        &target,
        std::fs::Permissions::from_mode(perm(m.mode, 0o755)),
    )?;
    apply_meta(&target, owner, m.timestamp)
}

fn mkfile(
    root: &Path,
    m: &pb::FileActionMkFile,
    user_root: &dyn Fn(i64) -> Result<PathBuf>,
) -> Result<()> {
    let owner = resolve_owner(m.owner.as_ref(), user_root)?;
    let target = fsutil::resolve(root, &m.path, true)?;
    if let Ok(md) = std::fs::symlink_metadata(&target) {
        if md.is_dir() {
            bail!("{} is a directory", m.path);
        }
        fs_err::remove_file(&target)?;
    }
    let parent = target.parent().context("no parent")?;
    if !parent.is_dir() {
        bail!("parent directory of {} does not exist", m.path);
    }
    fs_err::write(&target, &m.data)?;
    fs_err::set_permissions(
        &target,
        std::fs::Permissions::from_mode(perm(m.mode, 0o644)),
    )?;
    apply_meta(&target, owner, m.timestamp)
}

fn rm(root: &Path, r: &pb::FileActionRm) -> Result<()> {
    let targets: Vec<PathBuf> = if r.allow_wildcard && has_glob(&r.path) {
        glob(root, &r.path, false)?
    } else {
        vec![fsutil::resolve(root, &r.path, false)?]
    };
    let mut found = false;
    for t in &targets {
        if t == root {
            bail!("refusing to remove the root");
        }
        if let Ok(md) = std::fs::symlink_metadata(t) {
            found = true;
            fsutil::remove_any(t, &md)?;
        }
    }
    if !found && !r.allow_not_found {
        bail!("{} not found", r.path);
    }
    Ok(())
}

fn symlink(
    root: &Path,
    s: &pb::FileActionSymlink,
    user_root: &dyn Fn(i64) -> Result<PathBuf>,
) -> Result<()> {
    let owner = resolve_owner(s.owner.as_ref(), user_root)?;
    let target = fsutil::resolve(root, &s.newpath, false)?;
    if std::fs::symlink_metadata(&target).is_ok() {
        bail!("{} already exists", s.newpath);
    }
    std::os::unix::fs::symlink(&s.oldpath, &target)
        .with_context(|| format!("symlink {}", target.display()))?;
    apply_meta(&target, owner, s.timestamp)
}

/// Paths under `root` matching `pattern` (globs allowed in every
/// component), resolved inside the root.
fn glob(root: &Path, pattern: &str, follow_last: bool) -> Result<Vec<PathBuf>> {
    let comps = fsutil::clean_rel(pattern)?;
    let mut cur: Vec<PathBuf> = vec![root.to_owned()];
    for (i, c) in comps.iter().enumerate() {
        let c = fsutil::utf8(c)?;
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        for base in &cur {
            if has_glob(c) {
                let pat = PatternSet::new(&[c])?;
                let Ok(rd) = std::fs::read_dir(base) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect();
                names.sort();
                for name in names {
                    if pat.matches(&name) {
                        let rel = format!("{}/{name}", fsutil::rel_string(root, base));
                        next.push(fsutil::resolve(root, &rel, !last || follow_last)?);
                    }
                }
            } else {
                let rel = format!("{}/{c}", fsutil::rel_string(root, base));
                let p = fsutil::resolve(root, &rel, !last || follow_last)?;
                if std::fs::symlink_metadata(&p).is_ok() {
                    next.push(p);
                }
            }
        }
        cur = next;
    }
    Ok(cur)
}

/// Applies a symbolic mode (`u+x,g-w`, `a=r`, `+x`, or octal) to `mode`.
pub(crate) fn apply_mode_str(mode: u32, s: &str, is_dir: bool) -> Result<u32> {
    if let Ok(m) = u32::from_str_radix(s, 8) {
        return Ok(m & 0o7777);
    }
    let mut out = mode;
    for clause in s.split(',') {
        let ops_at = clause
            .find(['+', '-', '='])
            .with_context(|| format!("bad mode {s:?}"))?;
        let (who, rest) = clause.split_at(ops_at);
        let mut mask = 0u32;
        for c in who.chars() {
            mask |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => bail!("bad mode {s:?}"),
            };
        }
        if who.is_empty() {
            mask = 0o7777;
        }
        let mut chars = rest.chars().peekable();
        while let Some(op) = chars.next() {
            let mut bits = 0u32;
            while let Some(&c) = chars.peek() {
                if matches!(c, '+' | '-' | '=') {
                    break;
                }
                chars.next();
                bits |= match c {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    'X' => {
                        if is_dir || mode & 0o111 != 0 {
                            0o111
                        } else {
                            0
                        }
                    }
                    's' => 0o6000,
                    't' => 0o1000,
                    _ => bail!("bad mode {s:?}"),
                };
            }
            let bits = bits & mask;
            match op {
                '+' => out |= bits,
                '-' => out &= !bits,
                '=' => out = (out & !(mask & 0o7777)) | bits,
                _ => bail!("bad mode {s:?}"),
            }
        }
    }
    Ok(out)
}

struct CopyOpts {
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
    mode_str: Option<String>,
    timestamp: i64,
    include: PatternSet,
    exclude: PatternSet,
}

fn copy(
    src_root: &Path,
    dst_root: &Path,
    c: &pb::FileActionCopy,
    user_root: &dyn Fn(i64) -> Result<PathBuf>,
    cancel: &CancellationToken,
) -> Result<()> {
    let opts = CopyOpts {
        owner: resolve_owner(c.owner.as_ref(), user_root)?,
        mode: (c.mode >= 0 && c.mode_str.is_empty()).then_some(c.mode as u32 & 0o7777),
        mode_str: (!c.mode_str.is_empty()).then(|| c.mode_str.clone()),
        timestamp: c.timestamp,
        include: PatternSet::new(&c.include_patterns)?,
        exclude: PatternSet::new(&c.exclude_patterns)?,
    };
    let sources: Vec<PathBuf> = if c.allow_wildcard && has_glob(&c.src) {
        let m = glob(src_root, &c.src, c.follow_symlink)?;
        if m.is_empty() {
            if c.allow_empty_wildcard {
                return Ok(());
            }
            bail!("no source files were specified matching {:?}", c.src);
        }
        m
    } else {
        let p = fsutil::resolve(src_root, &c.src, c.follow_symlink)?;
        if std::fs::symlink_metadata(&p).is_err() {
            bail!("{} not found", c.src);
        }
        vec![p]
    };
    for r in &c.required_paths {
        let p = fsutil::resolve(src_root, &format!("{}/{r}", c.src), false)?;
        if std::fs::symlink_metadata(&p).is_err() {
            bail!("required path {r} not found");
        }
    }
    let dest_is_dir_hint = c.dest.ends_with('/') || c.dest.ends_with("/.") || sources.len() > 1;
    let dest = fsutil::resolve(dst_root, &c.dest, true)?;
    for src in &sources {
        if cancel.is_cancelled() {
            bail!("cancelled");
        }
        let smd = fs_err::symlink_metadata(src)?;
        let dest_md = std::fs::symlink_metadata(&dest).ok();
        let dest_exists_dir = dest_md.as_ref().is_some_and(|m| m.is_dir());
        // The root itself has no name to copy it under: copy its contents.
        if smd.is_dir() && (c.dir_copy_contents || src.as_path() == src_root) {
            ensure_dir(dst_root, &dest, true, &opts)?;
            copy_dir_contents(
                src,
                &dest,
                "",
                &opts,
                c.always_replace_existing_dest_paths,
                cancel,
            )?;
            continue;
        }
        if !smd.is_dir() && c.attempt_unpack_docker_compatibility && smd.is_file() {
            let is_archive = fs_err::File::open(src)
                .ok()
                .and_then(|f| kiln_store::layer::sniff_archive(std::io::BufReader::new(f)).ok())
                .flatten()
                .is_some();
            if is_archive {
                ensure_dir(dst_root, &dest, true, &opts)?;
                // Unpack aside, then merge: files in the tree may be hard
                // links into committed snapshots and must be replaced, never
                // written in place.
                let tmp = dst_root
                    .with_extension(format!("unpack-{}", kiln_store::fsutil::random_hex()?));
                fs_err::create_dir(&tmp)?;
                let r = (|| {
                    let f = fs_err::File::open(src)?;
                    kiln_store::layer::unpack_archive(std::io::BufReader::new(f), &tmp)
                        .with_context(|| format!("extracting {}", src.display()))?;
                    fsutil::merge_into(&tmp, &dest)
                })();
                let _ = std::fs::remove_dir_all(&tmp);
                r?;
                continue;
            }
        }
        let name = src
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_else(|| "root".into());
        let target = if dest_is_dir_hint || dest_exists_dir {
            ensure_dir(
                dst_root,
                &dest,
                c.create_dest_path || dest_is_dir_hint,
                &opts,
            )?;
            dest.join(name)
        } else {
            let parent = dest.parent().context("destination has no parent")?;
            if !parent.is_dir() {
                if c.create_dest_path {
                    ensure_dir(dst_root, parent, true, &opts)?;
                } else {
                    bail!("destination directory of {} does not exist", c.dest);
                }
            }
            dest.clone()
        };
        copy_one(
            src,
            &target,
            &smd,
            &opts,
            c.always_replace_existing_dest_paths,
            cancel,
        )?;
    }
    Ok(())
}

/// Creates `dir` (already resolved inside `root`) and its missing parents,
/// one component at a time, each resolved inside `root` so a symlink on the
/// way cannot lead out; `init` sets up each directory it creates.
fn create_parents(
    root: &Path,
    dir: &Path,
    mut init: impl FnMut(&Path) -> Result<()>,
) -> Result<()> {
    let rel = fsutil::rel_string(root, dir);
    let mut cur = String::new();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        cur = if cur.is_empty() {
            c.to_owned()
        } else {
            format!("{cur}/{c}")
        };
        let p = fsutil::resolve(root, &cur, true)?;
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => bail!("{cur} exists and is not a directory"),
            Err(_) => {
                fs_err::create_dir(&p)?;
                init(&p)?;
            }
        }
    }
    Ok(())
}

/// Creates `dir` (already resolved inside `root`) and missing parents.
fn ensure_dir(root: &Path, dir: &Path, create: bool, opts: &CopyOpts) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if !create {
        bail!("destination directory does not exist");
    }
    create_parents(root, dir, |p| {
        fs_err::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
        if let Some((u, g)) = opts.owner {
            fsutil::lchown(p, u, g)?;
        }
        Ok(())
    })
}

fn finish_entry(p: &Path, md: &std::fs::Metadata, opts: &CopyOpts) -> Result<()> {
    if let Some((u, g)) = opts.owner {
        fsutil::lchown(p, u, g)?;
    }
    if !md.file_type().is_symlink() {
        let base = md.mode() & 0o7777;
        let m = match (&opts.mode, &opts.mode_str) {
            (_, Some(s)) => Some(apply_mode_str(base, s, md.is_dir())?),
            (Some(m), None) => Some(*m),
            _ => None,
        };
        if let Some(m) = m {
            fs_err::set_permissions(p, std::fs::Permissions::from_mode(m))?;
        }
    }
    if opts.timestamp >= 0 {
        fsutil::set_mtime(
            p,
            opts.timestamp / 1_000_000_000,
            opts.timestamp % 1_000_000_000,
        )?;
    }
    Ok(())
}

/// Copies one source entry (recursively for dirs) to `target`, which is
/// replaced if it exists (a symlink there is replaced, never followed).
fn copy_one(
    src: &Path,
    target: &Path,
    smd: &std::fs::Metadata,
    opts: &CopyOpts,
    replace: bool,
    cancel: &CancellationToken,
) -> Result<()> {
    if let Ok(tmd) = std::fs::symlink_metadata(target) {
        if tmd.is_dir() && smd.is_dir() {
            copy_dir_contents(src, target, "", opts, replace, cancel)?;
            finish_entry(target, smd, opts)?;
            return Ok(());
        }
        if tmd.is_dir() && !replace {
            bail!("cannot replace directory {} with a file", target.display());
        }
        fsutil::remove_any(target, &tmd)?;
    }
    if smd.is_dir() {
        fsutil::copy_entry(src, target, smd)?;
        copy_dir_contents(src, target, "", opts, replace, cancel)?;
        finish_entry(target, smd, opts)?;
        if opts.timestamp < 0 {
            fsutil::set_mtime(target, smd.mtime(), smd.mtime_nsec())?;
        }
    } else {
        fsutil::copy_entry(src, target, smd)?;
        finish_entry(target, smd, opts)?;
    }
    Ok(())
}

fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    rel: &str,
    opts: &CopyOpts,
    replace: bool,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut names: Vec<std::ffi::OsString> = fs_err::read_dir(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for n in names {
        if cancel.is_cancelled() {
            bail!("cancelled");
        }
        let r = if rel.is_empty() {
            fsutil::utf8(&n)?.to_owned()
        } else {
            format!("{rel}/{}", fsutil::utf8(&n)?)
        };
        let s = src.join(&n);
        let d = dst.join(&n);
        let smd = fs_err::symlink_metadata(&s)?;
        let included = opts.include.is_empty() || opts.include.matches(&r);
        let excluded = opts.exclude.matches(&r);
        if smd.is_dir() {
            let descend = (included || opts.include.may_match_below(&r))
                && (!excluded || opts.exclude.has_negations());
            if !descend {
                continue;
            }
            if included && !excluded {
                copy_one(&s, &d, &smd, opts, replace, cancel)?;
            } else {
                // Only some children are selected: create the dir, then
                // recurse with the filters.
                if std::fs::symlink_metadata(&d).is_err() {
                    fsutil::copy_entry(&s, &d, &smd)?;
                    finish_entry(&d, &smd, opts)?;
                }
                copy_dir_contents(&s, &d, &r, opts, replace, cancel)?;
            }
        } else if included && !excluded {
            copy_one(&s, &d, &smd, opts, replace, cancel)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_modes() {
        assert_eq!(apply_mode_str(0o644, "u+x", false).unwrap(), 0o744);
        assert_eq!(apply_mode_str(0o644, "+x", false).unwrap(), 0o755);
        assert_eq!(apply_mode_str(0o777, "go-w", false).unwrap(), 0o755);
        assert_eq!(apply_mode_str(0o600, "a=r", false).unwrap(), 0o444);
        assert_eq!(apply_mode_str(0o600, "0755", false).unwrap(), 0o755);
        assert_eq!(apply_mode_str(0o644, "u+X", true).unwrap(), 0o744);
        assert!(apply_mode_str(0o644, "q+x", false).is_err());
    }

    #[test]
    fn glob_bases() {
        assert_eq!(glob_base("/src/*.rs"), "/src");
        assert_eq!(glob_base("*.rs"), "/");
    }
}
