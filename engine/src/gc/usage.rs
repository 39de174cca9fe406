//! One walk of the state root that puts every inode into exactly one
//! category, so the parts `du` reports add up to what the disk holds.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// What a file belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Cat {
    /// A committed snapshot (its dir, diff and cache, and its sums file).
    Snap(String),
    /// A content store blob, by hex digest.
    Blob(String),
    /// A cache mount dir, by name.
    CacheMount(String),
    /// A git source's bare mirror, by name.
    GitMirror(String),
    /// Compiled frontends.
    Frontend,
    /// Everything else: metadata, views, temp and runtime state.
    Internal,
}

/// Bytes per category (allocated blocks, each inode once).
#[derive(Debug, Default)]
pub(crate) struct Usage {
    pub by: HashMap<Cat, u64>,
    pub total: u64,
}

/// The places the walk tells apart.
pub(crate) struct Layout {
    pub root: PathBuf,
    pub committed: PathBuf,
    pub blobs: PathBuf,
    pub sums: PathBuf,
    pub cachemounts: PathBuf,
    pub git: PathBuf,
    pub frontends: PathBuf,
}

impl Layout {
    fn classify(&self, p: &Path) -> Cat {
        let first = |base: &Path| -> Option<String> {
            p.strip_prefix(base)
                .ok()?
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
        };
        if let Some(id) = first(&self.committed) {
            return Cat::Snap(id);
        }
        if let Some(hex) = first(&self.blobs) {
            return Cat::Blob(hex);
        }
        if let Some(f) = first(&self.sums)
            && let Some(id) = f.strip_suffix(".json")
        {
            return Cat::Snap(id.to_owned());
        }
        if let Some(name) = first(&self.cachemounts) {
            return Cat::CacheMount(name);
        }
        if let Some(name) = first(&self.git) {
            return Cat::GitMirror(name);
        }
        if p.starts_with(&self.frontends) {
            return Cat::Frontend;
        }
        Cat::Internal
    }

    /// Walks the root: committed snapshots first, so that files hardlinked
    /// into views count for the snapshot that owns them.
    pub(crate) fn walk(&self) -> Usage {
        let mut u = Usage::default();
        let mut seen = HashSet::new();
        self.walk_from(&self.committed, &mut seen, &mut u, None);
        self.walk_from(&self.root, &mut seen, &mut u, Some(&self.committed));
        u
    }

    fn walk_from(
        &self,
        p: &Path,
        seen: &mut HashSet<(u64, u64)>,
        u: &mut Usage,
        skip: Option<&Path>,
    ) {
        // Entries may vanish while a build runs: skip what cannot be read.
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return;
        };
        if seen.insert((m.dev(), m.ino())) {
            let b = m.blocks() * 512;
            *u.by.entry(self.classify(p)).or_default() += b;
            u.total += b;
        }
        if m.is_dir() && skip != Some(p) {
            let Ok(rd) = std::fs::read_dir(p) else {
                return;
            };
            for e in rd.flatten() {
                self.walk_from(&e.path(), seen, u, skip);
            }
        }
    }
}
