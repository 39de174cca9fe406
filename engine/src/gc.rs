//! `du` and `prune` over the cache records and their snapshots.
//!
//! A record's size is the disk use of its own snapshots' diffs. Pruning
//! removes records, then every snapshot no remaining record reaches through
//! its parent chain. Snapshots no record names that are younger than an
//! hour are left alone: a running build may have committed them and not yet
//! written its record.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use kiln_store::SnapshotId;

use crate::ops::Worker;

/// One cache record as `du` and `prune` report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    /// The cache key.
    pub id: String,
    /// Snapshot ids of its outputs.
    pub snapshots: Vec<String>,
    /// Bytes used by those snapshots' own diffs.
    pub size: u64,
    /// Creation time, unix seconds.
    pub created: u64,
    /// Last use, unix seconds.
    pub last_used: u64,
    /// Number of solves that used it.
    pub usage_count: u64,
    /// The vertex that made it.
    pub description: String,
}

/// What `prune` removes.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Keep records used within this long (`None`: no age limit).
    pub keep_duration: Option<Duration>,
    /// Keep the most recently used records up to this many bytes.
    pub keep_bytes: Option<u64>,
    /// Remove every record (and cache mounts).
    pub all: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn du(worker: &Worker) -> Result<Vec<UsageRecord>> {
    let mut out = Vec::new();
    for (key, r) in worker.records.all()? {
        let mut size = 0;
        let mut snaps = Vec::new();
        for id in r.outputs.iter().flatten() {
            if let Ok(sid) = id.parse::<SnapshotId>() {
                size += worker.snapshots.usage(&sid).unwrap_or(0);
            }
            snaps.push(id.clone());
        }
        out.push(UsageRecord {
            id: key,
            snapshots: snaps,
            size,
            created: r.created,
            last_used: r.last_used,
            usage_count: r.usage_count,
            description: r.description,
        });
    }
    out.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.id.cmp(&b.id)));
    Ok(out)
}

pub(crate) fn prune(worker: &Worker, opts: &PruneOptions) -> Result<Vec<UsageRecord>> {
    let records = du(worker)?;
    // What live sessions (in any process) hold is never removed.
    let held = crate::lease::Leases::live(&worker.dir.join("leases"));
    let mut remove: BTreeSet<String> = BTreeSet::new();
    let t = now();
    let mut kept_bytes = 0u64;
    for r in &records {
        // Most recently used first.
        let old = match opts.keep_duration {
            Some(d) => t.saturating_sub(r.last_used) > d.as_secs(),
            None => opts.keep_bytes.is_none(),
        };
        let over = opts.keep_bytes.is_some_and(|k| kept_bytes + r.size > k);
        let in_use = r
            .snapshots
            .iter()
            .any(|s| s.parse::<SnapshotId>().is_ok_and(|s| held.contains(&s)));
        if !in_use && (opts.all || old || over) {
            remove.insert(r.id.clone());
        } else {
            kept_bytes += r.size;
        }
    }
    let mut removed = Vec::new();
    for r in &records {
        if remove.contains(&r.id) {
            worker.records.remove(&r.id)?;
            removed.push(r.clone());
        }
    }
    sweep(worker, &held)?;
    clean_temp(worker, Duration::from_secs(3600));
    if opts.all {
        let dir = worker.dir.join("cachemounts");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    Ok(removed)
}

/// Removes entries older than `age` from the temp dirs of the store and
/// the engine: what a crashed build left behind. Young entries may belong
/// to a build running right now (in this or another process).
pub(crate) fn clean_temp(worker: &Worker, age: Duration) {
    let dirs = [
        worker.snapshots.root().join("tmp"),
        worker.snapshots.root().join("active"),
        worker.dir.join("tmp"),
    ];
    let cutoff = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
}

/// Removes snapshots that no record reaches, children first.
fn sweep(worker: &Worker, held: &BTreeSet<SnapshotId>) -> Result<()> {
    let mut live: BTreeSet<SnapshotId> = BTreeSet::new();
    for id in held {
        if let Ok(chain) = worker.snapshots.chain(id) {
            live.extend(chain);
        }
    }
    for (_, r) in worker.records.all()? {
        for id in r.outputs.iter().flatten() {
            if let Ok(sid) = id.parse::<SnapshotId>()
                && let Ok(chain) = worker.snapshots.chain(&sid)
            {
                live.extend(chain);
            }
        }
    }
    let infos = worker.snapshots.list()?;
    let t = now();
    let mut children: BTreeMap<SnapshotId, usize> = BTreeMap::new();
    for i in &infos {
        if let Some(p) = &i.parent {
            *children.entry(p.clone()).or_default() += 1;
        }
    }
    let mut dead: Vec<_> = infos
        .into_iter()
        .filter(|i| !live.contains(&i.id) && t.saturating_sub(i.created) > 3600)
        .collect();
    // Remove leaves repeatedly until nothing more can go.
    loop {
        let before = dead.len();
        dead.retain(|i| {
            if children.get(&i.id).copied().unwrap_or(0) > 0 {
                return true;
            }
            if worker.snapshots.remove(&i.id).is_ok() {
                let _ = std::fs::remove_file(
                    worker
                        .dir
                        .join("sums")
                        .join(format!("{}.json", i.id.as_str())),
                );
                if let Some(p) = &i.parent
                    && let Some(c) = children.get_mut(p)
                {
                    *c -= 1;
                }
                false
            } else {
                true
            }
        });
        if dead.len() == before {
            break;
        }
    }
    Ok(())
}
