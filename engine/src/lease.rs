//! Leases: snapshots a live session uses, which `prune` must not remove,
//! visible to every process sharing the root.
//!
//! Each engine keeps one file `engine/v1/leases/<pid>-<random>.json`
//! listing the snapshot ids its open sessions hold, rewritten when the set
//! changes and removed when it empties. A reader counts only files whose
//! process is alive; files of dead processes are deleted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use kiln_store::SnapshotId;

/// The lease table of one engine.
#[derive(Debug)]
pub(crate) struct Leases {
    file: PathBuf,
    held: Mutex<HashMap<SnapshotId, usize>>,
}

impl Leases {
    pub(crate) fn new(dir: &Path) -> Result<Leases> {
        fs_err::create_dir_all(dir)?;
        let name = format!(
            "{}-{}.json",
            std::process::id(),
            kiln_store::fsutil::random_hex()?
        );
        Ok(Leases {
            file: dir.join(name),
            held: Mutex::new(HashMap::new()),
        })
    }

    fn write(&self, held: &HashMap<SnapshotId, usize>) {
        if held.is_empty() {
            let _ = std::fs::remove_file(&self.file);
            return;
        }
        let ids: BTreeSet<&str> = held.keys().map(SnapshotId::as_str).collect();
        let tmp = self.file.with_extension("tmp");
        // A lease that cannot be written only weakens protection against a
        // concurrent prune; the build itself goes on.
        if std::fs::write(&tmp, serde_json::to_vec(&ids).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.file);
        }
    }

    fn add(&self, ids: &[SnapshotId]) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            *held.entry(id.clone()).or_default() += 1;
        }
        self.write(&held);
    }

    fn release(&self, ids: &HashSet<SnapshotId>) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if let Some(n) = held.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    held.remove(id);
                }
            }
        }
        self.write(&held);
    }

    /// Every snapshot held by a live process on this root.
    pub(crate) fn live(dir: &Path) -> BTreeSet<SnapshotId> {
        let mut out = BTreeSet::new();
        let Ok(rd) = std::fs::read_dir(dir) else {
            return out;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            if let Ok(b) = std::fs::read(e.path())
                && let Ok(ids) = serde_json::from_slice::<Vec<SnapshotId>>(&b)
            {
                out.extend(ids);
            }
        }
        out
    }
}

/// What one session holds; released when the session ends.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    table: Option<Arc<Leases>>,
    ids: HashSet<SnapshotId>,
}

impl Lease {
    pub(crate) fn hold(&mut self, table: &Arc<Leases>, ids: impl IntoIterator<Item = SnapshotId>) {
        if self.table.is_none() {
            self.table = Some(table.clone());
        }
        let new: Vec<SnapshotId> = ids
            .into_iter()
            .filter(|i| self.ids.insert(i.clone()))
            .collect();
        if !new.is_empty() {
            table.add(&new);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(t) = &self.table {
            t.release(&self.ids);
        }
    }
}
