//! Snapshot store: immutable layered filesystem snapshots under
//! `<root>/snapshots/v1/`.
//!
//! Layer 1 (leaf): uses `fsutil` only.
//!
//! # On disk
//!
//! ```text
//! snapshots/v1/
//!   committed/<id>/meta.json   {version, id, parent, created}
//!   committed/<id>/diff/       this snapshot's own changes, overlay upper form
//!   active/<key>/upper|work    a prepared overlay snapshot (see Active)
//!   active/<key>/root          a prepared copy-mode snapshot
//!   views/<id>/                merged read-only view cache (copy fallback)
//!   tmp/                       everything being built; never read
//!   empty/                     an empty dir, the lowerdir of a chain-less mount
//! ```
//!
//! A diff dir holds deletions as 0/0 character devices and opaque dirs as the
//! `trusted.overlay.opaque=y` xattr, exactly as an overlay upper dir after a
//! run. When kiln lacks the privilege for those (no `CAP_MKNOD`, or an fs
//! without trusted xattrs) it writes the portable forms instead, an empty
//! `.wh.NAME` file and an empty `.wh..wh..opq` file, and every reader here
//! accepts both.
//!
//! # Lifecycle and crash safety
//!
//! Snapshots are built in `tmp/`, the filesystem is synced (`syncfs`), and
//! the finished dir is renamed to `committed/<id>` in one step. A crash
//! leaves junk in `tmp/` and `active/` only, which [`SnapshotStore::recover`]
//! removes at start-up. Views are built the same way and renamed into
//! `views/`. Only committed snapshots can be parents, and a snapshot that is
//! still a parent cannot be removed.

mod apply;
mod differ;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use fs_err as fs;
use serde::{Deserialize, Serialize};

pub use apply::{apply_diff, merge_tree};
pub use differ::diff_trees;

use crate::content::sync_dir;
use crate::error::{Error, Result};
use crate::fsutil::{self, Copier};

/// The id of a committed snapshot: 1–64 of `[A-Za-z0-9_-]`. The store makes
/// them (16 hex digits), short so that many fit in an overlay option string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SnapshotId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(SnapshotId(s.to_owned()))
        } else {
            Err(Error::InvalidSnapshotId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<SnapshotId> for String {
    fn from(s: SnapshotId) -> String {
        s.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotId({})", self.0)
    }
}

/// What the store knows about a committed snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Format version of `meta.json` (1).
    pub version: u32,
    /// The snapshot.
    pub id: SnapshotId,
    /// Its parent, if any.
    pub parent: Option<SnapshotId>,
    /// Unix seconds at commit (bookkeeping only; never feeds a digest).
    pub created: u64,
}

/// How a prepared snapshot is written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveMode {
    /// The runtime mounts overlay with [`SnapshotStore::overlay_lowers`] of the
    /// parent, [`Active::upper`] and [`Active::work`]; the upper is committed
    /// as the diff.
    Overlay,
    /// [`Active::root`] is a writable full copy of the parent; commit computes
    /// the diff against the parent's view. Needs no mount and no privilege.
    Copy,
}

/// A mutable snapshot between [`SnapshotStore::prepare`] /
/// [`SnapshotStore::prepare_copy`] and [`SnapshotStore::commit`] /
/// [`SnapshotStore::abort`]. Dropping it without either leaves its dir in
/// `active/` until the next [`SnapshotStore::recover`].
#[derive(Debug)]
#[must_use = "commit or abort the snapshot"]
pub struct Active {
    key: String,
    dir: PathBuf,
    parent: Option<SnapshotId>,
    mode: ActiveMode,
}

impl Active {
    /// The parent this snapshot was prepared on.
    pub fn parent(&self) -> Option<&SnapshotId> {
        self.parent.as_ref()
    }
    /// Overlay or copy mode.
    pub fn mode(&self) -> ActiveMode {
        self.mode
    }
    /// Overlay mode: the upperdir. Copy mode: unused.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// Overlay mode: the workdir (same filesystem as the upper).
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// The directory to write to: the full tree in copy mode, the upper dir
    /// in overlay mode (where writes must follow overlay's upper form).
    pub fn root(&self) -> PathBuf {
        match self.mode {
            ActiveMode::Overlay => self.upper(),
            ActiveMode::Copy => self.dir.join("root"),
        }
    }
}

/// Lowerdirs for an overlay mount of a chain, top first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayLowers {
    /// The dir the relative paths start from (`<root>/snapshots/v1`).
    pub base: PathBuf,
    /// The lowerdirs relative to `base`, topmost first.
    pub relative: Vec<String>,
}

impl OverlayLowers {
    /// The lowerdirs as absolute paths, topmost first (for `lowerdir+` with
    /// the new mount API, which has no length limit).
    pub fn absolute(&self) -> Vec<PathBuf> {
        self.relative.iter().map(|r| self.base.join(r)).collect()
    }

    /// The legacy `mount(2)` data string with absolute paths, plus the
    /// options kiln always sets. `None` if it exceeds the 4096-byte page the
    /// kernel reads (use [`OverlayLowers::mount_data_relative`] then).
    pub fn mount_data(&self, upper: &Path, work: &Path) -> Option<String> {
        let lowers: Vec<String> = self
            .absolute()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let s = format!(
            "lowerdir={},upperdir={},workdir={},index=off,metacopy=off,redirect_dir=off",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        (s.len() < 4096).then_some(s)
    }

    /// The `mount(2)` data string with lowerdirs relative to [`Self::base`]:
    /// the mounting process must chdir there first (in a forked child, never
    /// in the engine's threads). `None` if even that exceeds 4096 bytes.
    pub fn mount_data_relative(&self, upper: &Path, work: &Path) -> Option<String> {
        let s = format!(
            "lowerdir={},upperdir={},workdir={},index=off,metacopy=off,redirect_dir=off",
            self.relative.join(":"),
            upper.display(),
            work.display()
        );
        (s.len() < 4096).then_some(s)
    }
}

/// Overlay refuses more than 500 lower layers.
pub const MAX_OVERLAY_LOWERS: usize = 500;

/// The snapshot store. Cheap to clone and safe to share between threads:
/// every mutation builds in a unique temp dir and publishes with a rename.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    root: PathBuf,
    durable: bool,
}

impl SnapshotStore {
    /// Open (creating if needed) the store under `<state_root>/snapshots/v1`.
    pub fn new(state_root: impl AsRef<Path>) -> Result<Self> {
        let root = state_root.as_ref().join("snapshots").join("v1");
        for d in ["committed", "active", "views", "tmp", "empty"] {
            fs::create_dir_all(root.join(d)).map_err(Error::io("create snapshot store"))?;
        }
        Ok(SnapshotStore {
            root,
            durable: true,
        })
    }

    /// Skip the `syncfs` before each commit. Commits stay atomic, but after
    /// a power loss a committed snapshot may hold truncated files. For tests
    /// and throwaway stores only.
    pub fn without_sync(mut self) -> Self {
        self.durable = false;
        self
    }

    /// Remove what a crash left behind: everything in `tmp/` and `active/`.
    /// Call once at start-up, before any snapshot is prepared.
    pub fn recover(&self) -> Result<()> {
        for d in ["tmp", "active"] {
            for name in fsutil::sorted_children(&self.root.join(d))? {
                fsutil::remove_all(&self.root.join(d).join(name))?;
            }
        }
        Ok(())
    }

    /// `<root>/snapshots/v1`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn committed(&self, id: &SnapshotId) -> PathBuf {
        self.root.join("committed").join(id.as_str())
    }

    /// The diff dir of a committed snapshot (read only!).
    pub fn diff_dir(&self, id: &SnapshotId) -> Result<PathBuf> {
        let p = self.committed(id).join("diff");
        if p.is_dir() {
            Ok(p)
        } else {
            Err(Error::SnapshotNotFound(id.clone()))
        }
    }

    /// Whether a committed snapshot exists.
    pub fn exists(&self, id: &SnapshotId) -> bool {
        self.committed(id).join("meta.json").is_file()
    }

    /// Metadata of a committed snapshot.
    pub fn info(&self, id: &SnapshotId) -> Result<SnapshotInfo> {
        let p = self.committed(id).join("meta.json");
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::SnapshotNotFound(id.clone()));
            }
            Err(e) => {
                return Err(Error::Io {
                    op: "read snapshot metadata",
                    source: e,
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| Error::CorruptSnapshot { path: p, source })
    }

    /// All committed snapshots, sorted by id.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>> {
        let mut out = Vec::new();
        for name in fsutil::sorted_children(&self.root.join("committed"))? {
            let Some(id) = name.to_str().and_then(|s| s.parse::<SnapshotId>().ok()) else {
                continue;
            };
            out.push(self.info(&id)?);
        }
        Ok(out)
    }

    /// The chain ending at `id`, base first (`[.., parent, id]`): the order
    /// layers appear in an image.
    pub fn chain(&self, id: &SnapshotId) -> Result<Vec<SnapshotId>> {
        let mut v = vec![id.clone()];
        let mut cur = self.info(id)?;
        while let Some(p) = cur.parent {
            if v.len() > 10_000 || v.contains(&p) {
                return Err(Error::InvalidImage(format!("snapshot chain at {id} loops")));
            }
            v.push(p.clone());
            cur = self.info(&p)?;
        }
        v.reverse();
        Ok(v)
    }

    fn new_tmp(&self, prefix: &str) -> Result<PathBuf> {
        let p = self
            .root
            .join("tmp")
            .join(format!("{prefix}{}", fsutil::random_hex()?));
        fs::create_dir(&p).map_err(Error::io("create temp dir"))?;
        Ok(p)
    }

    fn new_id(&self) -> Result<SnapshotId> {
        loop {
            let id = SnapshotId(fsutil::random_hex()?);
            if !self.committed(&id).exists() {
                return Ok(id);
            }
        }
    }

    /// Publish `tmp` (which holds `diff/`) as a committed snapshot.
    fn publish(&self, tmp: &Path, parent: Option<&SnapshotId>) -> Result<SnapshotId> {
        if let Some(p) = parent
            && !self.exists(p)
        {
            return Err(Error::SnapshotNotFound(p.clone()));
        }
        let id = self.new_id()?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let info = SnapshotInfo {
            version: 1,
            id: id.clone(),
            parent: parent.cloned(),
            created,
        };
        let meta = tmp.join("meta.json");
        let mut f = fs::File::create(&meta).map_err(Error::io("write snapshot metadata"))?;
        f.write_all(&serde_json::to_vec_pretty(&info).unwrap_or_default())
            .map_err(Error::io("write snapshot metadata"))?;
        // One syncfs makes every file of the diff durable before the rename.
        if self.durable {
            rustix::fs::syncfs(f.file()).map_err(|e| Error::IoAt {
                op: "syncfs",
                path: meta.clone(),
                source: e.into(),
            })?;
        }
        drop(f);
        let dest = self.committed(&id);
        fs::rename(tmp, &dest).map_err(Error::io("publish snapshot"))?;
        sync_dir(&self.root.join("committed"))?;
        Ok(id)
    }

    /// Commit a copy of `diff` (a directory in overlay upper form: 0/0 char
    /// devices or `.wh.` files for deletions, opaque xattr or marker) as a new
    /// snapshot on `parent`. `diff` itself is not changed.
    pub fn create_from_diff_dir(
        &self,
        diff: &Path,
        parent: Option<&SnapshotId>,
    ) -> Result<SnapshotId> {
        let tmp = self.new_tmp("diff-")?;
        let r = (|| {
            let mut c = Copier::for_diffs();
            c.copy_tree(diff, &tmp.join("diff"))?;
            c.finish()?;
            self.publish(&tmp, parent)
        })();
        if r.is_err() {
            let _ = fsutil::remove_all(&tmp);
        }
        r
    }

    /// Commit the plain directory tree `dir` as a new snapshot on `parent`:
    /// the stored diff is what changes the parent's merged view into `dir`
    /// (with no parent, a copy of `dir`). `dir` is not changed.
    pub fn create_from_dir(&self, dir: &Path, parent: Option<&SnapshotId>) -> Result<SnapshotId> {
        let Some(parent) = parent else {
            return self.create_from_diff_dir(dir, None);
        };
        let lower = self.view(parent)?;
        let tmp = self.new_tmp("dir-")?;
        let r = (|| {
            let out = tmp.join("diff");
            fs::create_dir(&out).map_err(Error::io("create diff dir"))?;
            diff_trees(&lower, dir, &out)?;
            self.publish(&tmp, Some(parent))
        })();
        if r.is_err() {
            let _ = fsutil::remove_all(&tmp);
        }
        r
    }

    /// [`SnapshotStore::create_from_dir`] for a `dir` the caller gives away
    /// (on the store's filesystem, e.g. from [`SnapshotStore::scratch_dir`]):
    /// what changed is moved into the new diff instead of copied, and `dir`
    /// is left incomplete.
    pub fn create_from_dir_consuming(
        &self,
        dir: &Path,
        parent: Option<&SnapshotId>,
    ) -> Result<SnapshotId> {
        let Some(parent) = parent else {
            return self.commit_diff_dir_move(dir, None);
        };
        let lower = self.view(parent)?;
        let tmp = self.new_tmp("dir-")?;
        let r = (|| {
            let out = tmp.join("diff");
            fs::create_dir(&out).map_err(Error::io("create diff dir"))?;
            differ::diff_trees_consuming(&lower, dir, &out)?;
            self.publish(&tmp, Some(parent))
        })();
        if r.is_err() {
            let _ = fsutil::remove_all(&tmp);
        }
        r
    }

    /// Commit a directory that kiln may consume (rename, not copy) as the
    /// diff of a new snapshot: e.g. a layer just unpacked into a dir from
    /// [`SnapshotStore::scratch_dir`]. It must be on the store's filesystem.
    pub fn commit_diff_dir_move(
        &self,
        diff: &Path,
        parent: Option<&SnapshotId>,
    ) -> Result<SnapshotId> {
        let tmp = self.new_tmp("mv-")?;
        let r = (|| {
            fs::rename(diff, tmp.join("diff")).map_err(Error::io("move diff dir"))?;
            self.publish(&tmp, parent)
        })();
        if r.is_err() {
            let _ = fsutil::remove_all(&tmp);
        }
        r
    }

    /// A fresh empty dir in the store's `tmp/` for building a diff that is
    /// then passed to [`SnapshotStore::commit_diff_dir_move`]. The caller
    /// removes it if it gives up.
    pub fn scratch_dir(&self) -> Result<PathBuf> {
        let t = self.new_tmp("scratch-")?;
        let d = t.join("d");
        fs::create_dir(&d).map_err(Error::io("create scratch dir"))?;
        Ok(d)
    }

    /// Prepare an overlay-mode mutable snapshot on `parent`: an empty upper
    /// and work dir. Mount with `overlay_lowers(parent)`, run, unmount,
    /// remove mount stubs, then [`SnapshotStore::commit`].
    pub fn prepare(&self, parent: Option<&SnapshotId>) -> Result<Active> {
        if let Some(p) = parent
            && !self.exists(p)
        {
            return Err(Error::SnapshotNotFound(p.clone()));
        }
        let key = fsutil::random_hex()?;
        let dir = self.root.join("active").join(&key);
        for d in ["upper", "work"] {
            fs::create_dir_all(dir.join(d)).map_err(Error::io("prepare snapshot"))?;
        }
        Ok(Active {
            key,
            dir,
            parent: parent.cloned(),
            mode: ActiveMode::Overlay,
        })
    }

    /// Prepare a copy-mode mutable snapshot: [`Active::root`] starts as a
    /// full writable copy of the parent's merged view (empty without parent).
    pub fn prepare_copy(&self, parent: Option<&SnapshotId>) -> Result<Active> {
        let key = fsutil::random_hex()?;
        let dir = self.root.join("active").join(&key);
        fs::create_dir_all(&dir).map_err(Error::io("prepare snapshot"))?;
        let active = Active {
            key,
            dir,
            parent: parent.cloned(),
            mode: ActiveMode::Copy,
        };
        let r = (|| match parent {
            Some(p) => {
                let view = self.view(p)?;
                let mut c = Copier::new();
                c.copy_tree(&view, &active.root())?;
                c.finish()
            }
            None => fs::create_dir(active.root()).map_err(Error::io("prepare snapshot")),
        })();
        if let Err(e) = r {
            let _ = fsutil::remove_all(&active.dir);
            return Err(e);
        }
        Ok(active)
    }

    /// Commit a mutable snapshot as a new immutable one and return its id.
    /// The active dir is gone afterwards, on success and on failure.
    pub fn commit(&self, active: Active) -> Result<SnapshotId> {
        let r = (|| {
            let tmp = self.new_tmp("commit-")?;
            let r = (|| {
                match active.mode {
                    ActiveMode::Overlay => fs::rename(active.upper(), tmp.join("diff"))
                        .map_err(Error::io("move upper dir"))?,
                    ActiveMode::Copy => {
                        let out = tmp.join("diff");
                        fs::create_dir(&out).map_err(Error::io("create diff dir"))?;
                        match &active.parent {
                            Some(p) => diff_trees(&self.view(p)?, &active.root(), &out)?,
                            None => diff_trees(&self.root.join("empty"), &active.root(), &out)?,
                        }
                    }
                }
                self.publish(&tmp, active.parent.as_ref())
            })();
            if r.is_err() {
                let _ = fsutil::remove_all(&tmp);
            }
            r
        })();
        let _ = fsutil::remove_all(&active.dir);
        r
    }

    /// Throw a mutable snapshot away.
    pub fn abort(&self, active: Active) -> Result<()> {
        let _ = &active.key;
        fsutil::remove_all(&active.dir)
    }

    /// The merged read-only view of the chain ending at `id` as a plain
    /// directory (built once by applying the diffs in order, then cached in
    /// `views/<id>`).
    ///
    /// Never write to it, not even to change metadata: views share files
    /// (hardlinks) with the views of their ancestors. To get a writable tree
    /// use [`SnapshotStore::prepare_copy`]; to mount it writable, use it as an
    /// overlay lowerdir.
    pub fn view(&self, id: &SnapshotId) -> Result<PathBuf> {
        let dest = self.root.join("views").join(id.as_str());
        if dest.is_dir() {
            return Ok(dest);
        }
        let chain = self.chain(id)?;
        // Start from the nearest ancestor that has a view: its files are
        // hardlinked (views are read only, and applying a diff replaces
        // files rather than writing into them), then only the diffs above it
        // are applied.
        let start = chain[..chain.len() - 1]
            .iter()
            .rposition(|s| self.root.join("views").join(s.as_str()).is_dir());
        let tmp = self.new_tmp("view-")?;
        let r = (|| {
            let out = tmp.join("v");
            fs::create_dir(&out).map_err(Error::io("create view"))?;
            let mut c = Copier::new();
            let rest = match start {
                Some(i) => {
                    link_tree(
                        &self.root.join("views").join(chain[i].as_str()),
                        &out,
                        &mut c,
                    )?;
                    &chain[i + 1..]
                }
                None => &chain[..],
            };
            for s in rest {
                apply_diff(&self.diff_dir(s)?, &out, &mut c)?;
            }
            c.finish()?;
            match fs::rename(&out, &dest) {
                Ok(()) => Ok(()),
                // Another thread built the same view first: use theirs.
                Err(_) if dest.is_dir() => Ok(()),
                Err(e) => Err(Error::Io {
                    op: "publish view",
                    source: e,
                }),
            }
        })();
        let _ = fsutil::remove_all(&tmp);
        r.map(|()| dest)
    }

    /// Drop every cached view (they are rebuilt on demand). Call only when
    /// no view is in use.
    pub fn drop_views(&self) -> Result<()> {
        for name in fsutil::sorted_children(&self.root.join("views"))? {
            if let Some(id) = name.to_str().and_then(|s| s.parse::<SnapshotId>().ok()) {
                self.drop_view(&id)?;
            }
        }
        Ok(())
    }

    /// Drop the cached view of `id`, if any.
    pub fn drop_view(&self, id: &SnapshotId) -> Result<()> {
        let v = self.root.join("views").join(id.as_str());
        if v.exists() {
            let t = self.new_tmp("rm-")?;
            fs::rename(&v, t.join("v")).map_err(Error::io("remove view"))?;
            fsutil::remove_all(&t)?;
        }
        Ok(())
    }

    /// Lowerdirs for mounting overlay on `parent` (topmost first). Chains
    /// longer than `max_layers` (at most [`MAX_OVERLAY_LOWERS`]) are
    /// flattened: the deepest part becomes one materialised view. No parent
    /// gives the store's `empty/` dir, since overlay needs one lowerdir.
    pub fn overlay_lowers(
        &self,
        parent: Option<&SnapshotId>,
        max_layers: usize,
    ) -> Result<OverlayLowers> {
        let base = self.root.clone();
        let Some(parent) = parent else {
            return Ok(OverlayLowers {
                base,
                relative: vec!["empty".into()],
            });
        };
        let max = max_layers.clamp(1, MAX_OVERLAY_LOWERS);
        let mut chain = self.chain(parent)?;
        chain.reverse(); // top first
        let mut relative = Vec::new();
        if chain.len() <= max {
            for s in &chain {
                relative.push(format!("committed/{s}/diff"));
            }
        } else {
            for s in &chain[..max - 1] {
                relative.push(format!("committed/{s}/diff"));
            }
            self.view(&chain[max - 1])?;
            relative.push(format!("views/{}", chain[max - 1]));
        }
        Ok(OverlayLowers { base, relative })
    }

    /// [`SnapshotStore::overlay_lowers`] flattened just enough that
    /// [`OverlayLowers::mount_data_relative`] with this `upper` and `work`
    /// fits the kernel's 4096-byte limit on legacy `mount(2)` data.
    pub fn overlay_lowers_fitting(
        &self,
        parent: Option<&SnapshotId>,
        upper: &Path,
        work: &Path,
    ) -> Result<OverlayLowers> {
        let fixed = format!(
            "lowerdir=,upperdir={},workdir={},index=off,metacopy=off,redirect_dir=off",
            upper.display(),
            work.display()
        )
        .len();
        // "committed/<id>/diff:" is at most 15 + 64 + 1 bytes per layer.
        let longest = match parent {
            Some(p) => self
                .chain(p)?
                .iter()
                .map(|s| s.as_str().len())
                .max()
                .unwrap_or(16),
            None => 16,
        };
        let per_layer = "committed//diff:".len() + longest;
        let max = 4095usize.saturating_sub(fixed) / per_layer;
        self.overlay_lowers(parent, max.max(1))
    }

    /// Bytes used by the snapshot's own diff (allocated blocks, hardlinks once).
    pub fn usage(&self, id: &SnapshotId) -> Result<u64> {
        fsutil::usage(&self.diff_dir(id)?)
    }

    /// Remove a committed snapshot (and its cached view). Refused while
    /// another snapshot names it as parent.
    pub fn remove(&self, id: &SnapshotId) -> Result<()> {
        if !self.exists(id) {
            return Err(Error::SnapshotNotFound(id.clone()));
        }
        if let Some(child) = self
            .list()?
            .into_iter()
            .find(|s| s.parent.as_ref() == Some(id))
        {
            return Err(Error::SnapshotInUse {
                id: id.clone(),
                child: child.id,
            });
        }
        self.drop_view(id)?;
        let t = self.new_tmp("rm-")?;
        fs::rename(self.committed(id), t.join("s")).map_err(Error::io("remove snapshot"))?;
        sync_dir(&self.root.join("committed"))?;
        fsutil::remove_all(&t)
    }

    /// A per-snapshot cache dir for derived data (e.g. layer blob digests),
    /// `committed/<id>/cache`. Created on demand; removed with the
    /// snapshot.
    pub fn cache_dir(&self, id: &SnapshotId) -> Result<PathBuf> {
        let d = self.committed(id).join("cache");
        fs::create_dir_all(&d).map_err(Error::io("create snapshot cache dir"))?;
        Ok(d)
    }
}

/// Mirror the tree `src` into `dst` (an existing dir): new directories with
/// the same attributes, every other entry hardlinked.
fn link_tree(src: &Path, dst: &Path, c: &mut Copier) -> Result<()> {
    for name in fsutil::sorted_children(src)? {
        let (s, d) = (src.join(&name), dst.join(&name));
        let m = fs::symlink_metadata(&s).map_err(Error::io("stat"))?;
        if m.is_dir() {
            c.copy_entry(&s, &d, &m)?;
            link_tree(&s, &d, c)?;
        } else if std::fs::hard_link(&s, &d).is_err() {
            // Too many links, or a special file the fs will not link: copy.
            c.copy_entry(&s, &d, &m)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
