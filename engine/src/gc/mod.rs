//! `du`, `prune` and the automatic GC policy.
//!
//! `du` walks the state root once and puts every inode in one row, so its
//! total is what the disk holds (see [`usage`]):
//! - a cache record owns the snapshots it produced, the layer chain
//!   snapshots only it reaches (e.g. a pulled image's base layers), their
//!   checksum files and the layer blobs packed from or unpacked into them;
//! - `exec.cachemount` rows are cache mount directories, and
//!   `source.git.checkout` rows named `gitmirror:…` the git sources' bare
//!   mirrors;
//! - `frontend` is compiled and pulled frontends (pinned blobs);
//! - `internal` rows are the metadata database and other engine state, and
//!   snapshots or blobs no record reaches (reclaimable once older than
//!   [`GRACE`]; a running build may not have written its record yet).
//!
//! `prune` removes records (never one a live session holds: see the lease
//! module), then every snapshot only they reached and every blob only those
//! snapshots used. Records go least recently used first.

mod filter;
pub mod policy;
mod usage;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use kiln_store::{Digest, SnapshotId};

pub use filter::Filter;
pub use policy::{GcConfig, GcPolicy, SourcesConfig, load_settings};

use crate::ops::Worker;
use usage::{Cat, Layout};

/// Unreferenced snapshots and blobs younger than this are left alone.
pub const GRACE: Duration = Duration::from_secs(600);

/// Row id of snapshots no record reaches.
const ORPHAN_SNAPSHOTS: &str = "internal:unreferenced-snapshots";
/// Row id of blobs nothing references.
const ORPHAN_BLOBS: &str = "internal:unreferenced-content";
/// Row id of the engine's own state.
const METADATA: &str = "internal:metadata";

/// One row of `du`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    /// The cache key, or a name for the other rows.
    pub id: String,
    /// `regular`, `source.local`, `source.git.checkout`, `exec.cachemount`,
    /// `frontend` or `internal`.
    pub kind: String,
    /// Snapshot ids it owns.
    pub snapshots: Vec<String>,
    /// Bytes on disk it accounts for.
    pub size: u64,
    /// Creation time, unix seconds.
    pub created: u64,
    /// Last use, unix seconds.
    pub last_used: u64,
    /// Number of solves that used it.
    pub usage_count: u64,
    /// The vertex that made it.
    pub description: String,
    /// Held by a live session.
    pub in_use: bool,
    /// Whether `prune` may remove it at all.
    pub prunable: bool,
}

impl UsageRecord {
    /// Whether `prune` would remove it now.
    pub fn reclaimable(&self) -> bool {
        self.prunable && !self.in_use
    }
}

/// What `prune` removes.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// Keep records used within this long.
    pub keep_duration: Option<Duration>,
    /// Keep at most this many bytes in all (`--keep-storage`,
    /// `--max-used-space`).
    pub keep_bytes: Option<u64>,
    /// Never prune below this many bytes (`--reserved-space`).
    pub reserved_bytes: Option<u64>,
    /// Prune until the disk has this much free (`--min-free-space`).
    pub min_free_bytes: Option<u64>,
    /// Remove every record, cache mounts included.
    pub all: bool,
    /// Only records passing every filter.
    pub filters: Vec<Filter>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mtime_secs(p: &std::path::Path) -> u64 {
    std::fs::symlink_metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn layout(worker: &Worker) -> Layout {
    let root = worker
        .dir
        .parent()
        .and_then(|p| p.parent())
        .unwrap_or(&worker.dir)
        .to_path_buf();
    Layout {
        committed: worker.snapshots.root().join("committed"),
        blobs: worker.content.root().join("blobs").join("sha256"),
        sums: worker.dir.join("sums"),
        cachemounts: worker.dir.join("cachemounts"),
        git: worker.dir.join("git"),
        frontends: root.join("frontends"),
        root,
    }
}

/// Blobs a snapshot's cache dir names (packed layers, the blob it was
/// unpacked from).
fn snapshot_blobs(worker: &Worker, id: &SnapshotId) -> Vec<String> {
    let dir = worker
        .snapshots
        .root()
        .join("committed")
        .join(id.as_str())
        .join("cache");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(b) = std::fs::read(e.path())
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
            && let Some(d) = v.get("digest").and_then(|d| d.as_str())
            && let Ok(d) = d.parse::<Digest>()
        {
            out.push(d.hex().to_owned());
        }
    }
    out
}

/// The full picture `du` and `prune` work from.
struct Picture {
    rows: Vec<UsageRecord>,
    /// Snapshot → the blobs attributed to it.
    blobs_of: HashMap<SnapshotId, Vec<String>>,
    /// Row id → every snapshot its outputs' chains hold.
    chains: HashMap<String, Vec<SnapshotId>>,
    /// Snapshot → bytes (its own and its attributed blobs).
    snap_bytes: HashMap<SnapshotId, u64>,
}

fn picture(worker: &Worker) -> Result<Picture> {
    let lay = layout(worker);
    let walk = lay.walk();
    let held = crate::lease::Leases::live(&worker.dir.join("leases"));
    let t = now();
    let grace = GRACE.as_secs();
    let infos = worker.snapshots.list()?;
    let by_id: HashMap<SnapshotId, &kiln_store::SnapshotInfo> =
        infos.iter().map(|i| (i.id.clone(), i)).collect();
    let pins: HashSet<String> = worker
        .content
        .pins()
        .into_iter()
        .map(|d| d.hex().to_owned())
        .collect();

    // Each snapshot's own bytes plus the blobs first attributed to it.
    let mut assigned: HashSet<String> = HashSet::new();
    let mut snap_bytes: HashMap<SnapshotId, u64> = HashMap::new();
    let mut blobs_of: HashMap<SnapshotId, Vec<String>> = HashMap::new();
    for i in &infos {
        let mut b = walk
            .by
            .get(&Cat::Snap(i.id.as_str().to_owned()))
            .copied()
            .unwrap_or(0);
        let blobs = snapshot_blobs(worker, &i.id);
        for h in &blobs {
            if !pins.contains(h) && assigned.insert(h.clone()) {
                b += walk.by.get(&Cat::Blob(h.clone())).copied().unwrap_or(0);
            }
        }
        blobs_of.insert(i.id.clone(), blobs);
        snap_bytes.insert(i.id.clone(), b);
    }
    let chain = |id: &SnapshotId| -> Vec<SnapshotId> {
        let mut out = Vec::new();
        let mut cur = Some(id.clone());
        while let Some(c) = cur {
            let Some(info) = by_id.get(&c) else { break };
            out.push(c.clone());
            cur = info.parent.clone();
        }
        out
    };

    // Records own their outputs, then the chain snapshots only they reach
    // (shortest chains first, so a base layer goes to its image record).
    let mut records = worker.records.all()?;
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let mut owner: HashMap<SnapshotId, usize> = HashMap::new();
    let outs = |r: &crate::records::Record| -> Vec<SnapshotId> {
        r.outputs
            .iter()
            .flatten()
            .filter_map(|s| s.parse::<SnapshotId>().ok())
            .filter(|s| by_id.contains_key(s))
            .collect()
    };
    for (i, (_, r)) in records.iter().enumerate() {
        for s in outs(r) {
            owner.entry(s).or_insert(i);
        }
    }
    let mut order: Vec<(usize, usize)> = records
        .iter()
        .enumerate()
        .map(|(i, (_, r))| (outs(r).iter().map(|s| chain(s).len()).sum(), i))
        .collect();
    order.sort();
    for (_, i) in order {
        for s in outs(&records[i].1) {
            for c in chain(&s) {
                owner.entry(c).or_insert(i);
            }
        }
    }

    let mut chains: HashMap<String, Vec<SnapshotId>> = HashMap::new();
    for (key, r) in &records {
        chains.insert(key.clone(), outs(r).iter().flat_map(&chain).collect());
    }
    let mut rows = Vec::new();
    let mut owned: Vec<Vec<SnapshotId>> = vec![Vec::new(); records.len()];
    for (s, i) in &owner {
        owned[*i].push(s.clone());
    }
    for (i, (key, r)) in records.iter().enumerate() {
        let mut snaps = owned[i].clone();
        snaps.sort();
        let size = snaps
            .iter()
            .map(|s| snap_bytes.get(s).copied().unwrap_or(0))
            .sum();
        // In use: a live session holds one of its own snapshots (holding
        // a child's snapshot keeps this one's data through the chain, but
        // not the record).
        let in_use = outs(r).iter().chain(&snaps).any(|s| held.contains(s));
        rows.push(UsageRecord {
            id: key.clone(),
            kind: r.kind.clone(),
            snapshots: snaps.iter().map(|s| s.as_str().to_owned()).collect(),
            size,
            created: r.created,
            last_used: r.last_used,
            usage_count: r.usage_count,
            description: r.description.clone(),
            in_use,
            prunable: true,
        });
    }

    // Snapshots no record reaches: old ones are garbage, young ones may be
    // a running build's.
    let (mut old_orphans, mut young_orphans) = (Vec::new(), Vec::new());
    for i in &infos {
        if !owner.contains_key(&i.id) {
            if t.saturating_sub(i.created) > grace && !held.contains(&i.id) {
                old_orphans.push(i.id.clone());
            } else {
                young_orphans.push(i.id.clone());
            }
        }
    }
    let orphan_row = |id: &str, snaps: &[SnapshotId], prunable: bool| UsageRecord {
        id: id.to_owned(),
        kind: "internal".into(),
        snapshots: snaps.iter().map(|s| s.as_str().to_owned()).collect(),
        size: snaps
            .iter()
            .map(|s| snap_bytes.get(s).copied().unwrap_or(0))
            .sum(),
        created: 0,
        last_used: 0,
        usage_count: 0,
        description: if prunable {
            "snapshots no cache record uses".into()
        } else {
            "snapshots of builds in progress".into()
        },
        in_use: !prunable,
        prunable,
    };
    if !old_orphans.is_empty() {
        rows.push(orphan_row(ORPHAN_SNAPSHOTS, &old_orphans, true));
    }
    if !young_orphans.is_empty() {
        // Their parents stay with them.
        chains.insert(
            "internal:recent-snapshots".into(),
            young_orphans.iter().flat_map(&chain).collect(),
        );
        rows.push(orphan_row(
            "internal:recent-snapshots",
            &young_orphans,
            false,
        ));
    }

    // Blobs: pinned ones are the frontends'; the rest no snapshot uses.
    let mut frontend = walk.by.get(&Cat::Frontend).copied().unwrap_or(0);
    let (mut loose_old, mut loose_young) = (0u64, 0u64);
    for (cat, b) in &walk.by {
        let Cat::Blob(h) = cat else { continue };
        if assigned.contains(h) {
            continue;
        }
        if pins.contains(h) {
            frontend += b;
        } else if t.saturating_sub(mtime_secs(&lay.blobs.join(h))) > grace {
            loose_old += b;
        } else {
            loose_young += b;
        }
    }
    let internal_row = |id: &str, size: u64, desc: &str, prunable: bool| UsageRecord {
        id: id.to_owned(),
        kind: "internal".into(),
        snapshots: Vec::new(),
        size,
        created: 0,
        last_used: 0,
        usage_count: 0,
        description: desc.to_owned(),
        in_use: false,
        prunable,
    };
    if loose_old > 0 {
        rows.push(internal_row(
            ORPHAN_BLOBS,
            loose_old,
            "blobs nothing references",
            true,
        ));
    }
    let meta = walk.by.get(&Cat::Internal).copied().unwrap_or(0) + loose_young;
    rows.push(internal_row(
        METADATA,
        meta,
        "metadata, views, temp and runtime state",
        false,
    ));
    if frontend > 0 {
        let mut r = internal_row("frontend", frontend, "compiled and pulled frontends", false);
        r.kind = "frontend".into();
        rows.push(r);
    }
    for (cat, b) in &walk.by {
        let Cat::CacheMount(name) = cat else { continue };
        let p = lay.cachemounts.join(name);
        rows.push(UsageRecord {
            id: format!("cachemount:{name}"),
            kind: "exec.cachemount".into(),
            snapshots: Vec::new(),
            size: *b,
            created: mtime_secs(&p),
            last_used: mtime_secs(&p),
            usage_count: 0,
            description: format!("cache mount {name}"),
            in_use: false,
            prunable: true,
        });
    }
    for (cat, b) in &walk.by {
        let Cat::GitMirror(name) = cat else { continue };
        let p = lay.git.join(name);
        // A fetch rewrites FETCH_HEAD; a mirror touched within the grace
        // period may be in use by a running build.
        let used = mtime_secs(&p).max(mtime_secs(&p.join("FETCH_HEAD")));
        let young = t.saturating_sub(used) <= grace;
        rows.push(UsageRecord {
            id: format!("gitmirror:{name}"),
            kind: "source.git.checkout".into(),
            snapshots: Vec::new(),
            size: *b,
            created: mtime_secs(&p),
            last_used: used,
            usage_count: 0,
            description: format!("git mirror {}", &name[..name.len().min(12)]),
            in_use: young,
            prunable: true,
        });
    }
    rows.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.id.cmp(&b.id)));
    Ok(Picture {
        rows,
        blobs_of,
        chains,
        snap_bytes,
    })
}

/// The bytes the GC limits bound: every row but frontends and metadata.
pub fn cache_bytes(rows: &[UsageRecord]) -> u64 {
    rows.iter()
        .filter(|r| r.kind != "frontend" && r.id != METADATA)
        .map(|r| r.size)
        .sum()
}

/// Every row, most recently used first. The sizes add up to the disk
/// usage of the state root.
pub(crate) fn du(worker: &Worker) -> Result<Vec<UsageRecord>> {
    Ok(picture(worker)?.rows)
}

/// `statvfs` of the filesystem holding `p`.
fn statvfs(p: &std::path::Path) -> Option<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; `c` is a valid
    // NUL-terminated path.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut s) == 0).then_some(s)
    }
}

/// Free bytes on the filesystem holding `p`.
fn free_bytes(p: &std::path::Path) -> Option<u64> {
    statvfs(p).map(|s| s.f_bavail * s.f_frsize)
}

/// Size of the filesystem holding `p`.
pub fn disk_size(p: &std::path::Path) -> Option<u64> {
    statvfs(p).map(|s| s.f_blocks * s.f_frsize)
}

pub(crate) fn prune(worker: &Worker, opts: &PruneOptions) -> Result<Vec<UsageRecord>> {
    let mut removed = prune_once(worker, opts, picture(worker)?)?;
    // Snapshots share files through hardlinks, so what removing a record
    // frees is an estimate: while a size limit is still exceeded, tighten it
    // by the excess and go again.
    let mut opts = opts.clone();
    for _ in 0..3 {
        let Some(limit) = opts.keep_bytes else { break };
        let pic = picture(worker)?;
        let used = cache_bytes(&pic.rows);
        if used <= limit {
            break;
        }
        opts.keep_bytes = Some(limit.saturating_sub(used - limit));
        let more = prune_once(worker, &opts, pic)?;
        if more.is_empty() {
            break;
        }
        removed.extend(more);
    }
    Ok(removed)
}

fn prune_once(worker: &Worker, opts: &PruneOptions, pic: Picture) -> Result<Vec<UsageRecord>> {
    let t = now();
    let explicit = !opts.filters.is_empty();
    let candidate = |r: &UsageRecord| {
        r.reclaimable()
            && filter::all_match(&opts.filters, r)
            // Cache mounts go only when asked for.
            && (r.kind != "exec.cachemount" || opts.all || explicit)
    };
    let mut cands: Vec<&UsageRecord> = pic.rows.iter().filter(|r| candidate(r)).collect();
    cands.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.id.cmp(&b.id)));
    // Keeping a record keeps its whole chain: sizes below are marginal,
    // counting each snapshot once.
    let cand_ids: HashSet<&str> = cands.iter().map(|r| r.id.as_str()).collect();
    let mut kept_snaps: HashSet<SnapshotId> = HashSet::new();
    let cost = |r: &UsageRecord, kept_snaps: &mut HashSet<SnapshotId>, commit: bool| -> u64 {
        let owned: u64 = r
            .snapshots
            .iter()
            .filter_map(|s| s.parse::<SnapshotId>().ok())
            .map(|s| pic.snap_bytes.get(&s).copied().unwrap_or(0))
            .sum();
        let mut c = r.size.saturating_sub(owned);
        let mut new = Vec::new();
        let snaps = pic
            .chains
            .get(&r.id)
            .cloned()
            .unwrap_or_else(|| r.snapshots.iter().filter_map(|s| s.parse().ok()).collect());
        for s in snaps {
            if !kept_snaps.contains(&s) && !new.contains(&s) {
                c += pic.snap_bytes.get(&s).copied().unwrap_or(0);
                new.push(s);
            }
        }
        if commit {
            kept_snaps.extend(new);
        }
        c
    };
    // Limits bound the build cache: frontends and metadata do not count.
    let mut fixed = 0u64;
    for r in &pic.rows {
        if r.kind != "frontend" && r.id != METADATA && !cand_ids.contains(r.id.as_str()) {
            fixed += cost(r, &mut kept_snaps, true);
        }
    }
    let cache_total = cache_bytes(&pic.rows);
    let mut limit = opts.keep_bytes;
    if let Some(min_free) = opts.min_free_bytes
        && let Some(free) = free_bytes(&worker.dir)
        && free < min_free
    {
        let bound = cache_total.saturating_sub(min_free - free);
        limit = Some(limit.map_or(bound, |l| l.min(bound)));
    }
    let budget = limit.map(|l| l.saturating_sub(fixed));
    let mut remove: Vec<&UsageRecord> = Vec::new();
    let mut kept = 0u64;
    for r in cands {
        // Unreferenced data is garbage whatever the limits say.
        let garbage = r.id == ORPHAN_SNAPSHOTS || r.id == ORPHAN_BLOBS;
        let old = opts
            .keep_duration
            .is_some_and(|d| t.saturating_sub(r.last_used) > d.as_secs());
        let no_limits = opts.keep_duration.is_none() && limit.is_none();
        if garbage || opts.all || old || no_limits {
            remove.push(r);
            continue;
        }
        let c = cost(r, &mut kept_snaps, false);
        if budget.is_some_and(|b| kept + c > b) {
            remove.push(r);
        } else {
            kept += cost(r, &mut kept_snaps, true);
        }
    }
    if let Some(reserved) = opts.reserved_bytes {
        // Oldest first, and stop once usage would fall below the reserve.
        remove.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.id.cmp(&b.id)));
        let mut left = cache_total;
        remove.retain(|r| {
            if left <= reserved {
                return false;
            }
            left = left.saturating_sub(r.size);
            true
        });
    }

    let mut released: BTreeSet<SnapshotId> = BTreeSet::new();
    let mut removed = Vec::new();
    for r in remove {
        match r.kind.as_str() {
            "exec.cachemount" => {
                if let Some(name) = r.id.strip_prefix("cachemount:") {
                    let _ = std::fs::remove_dir_all(worker.dir.join("cachemounts").join(name));
                }
            }
            "internal" => {
                released.extend(r.snapshots.iter().filter_map(|s| s.parse().ok()));
            }
            _ if r.id.starts_with("gitmirror:") => {
                if let Some(name) = r.id.strip_prefix("gitmirror:") {
                    // A mirror a build is fetching into stays.
                    let dir = worker.dir.join("git").join(name);
                    match crate::ops::git::lock_mirror_now(&dir, false) {
                        Ok(Some(_held)) => {
                            let _ = std::fs::remove_dir_all(&dir);
                        }
                        _ => continue,
                    }
                }
            }
            _ => {
                worker.records.remove(&r.id)?;
                released.extend(r.snapshots.iter().filter_map(|s| s.parse().ok()));
            }
        }
        removed.push(r.clone());
    }
    sweep(worker, &released, &pic.blobs_of)?;
    clean_temp(worker, Duration::from_secs(3600));
    Ok(removed)
}

/// A cheap estimate of the cache size for deciding whether to run the
/// policy: snapshot sizes (measured once, snapshots never change, plus a
/// block for the checksum file), blob sizes and cache mounts.
fn estimate(worker: &Worker) -> u64 {
    let mut total = 0u64;
    for i in worker.snapshots.list().unwrap_or_default() {
        let dir = worker
            .snapshots
            .root()
            .join("committed")
            .join(i.id.as_str());
        let cache = dir.join("cache");
        let file = cache.join("usage-v1");
        let n = match std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            Some(n) => n,
            None => {
                let _ = std::fs::create_dir_all(&cache);
                let _ = std::fs::write(&file, b"0000000000000000");
                let n = kiln_store::fsutil::usage(&dir).unwrap_or(0) + 4096;
                let _ = std::fs::write(&file, format!("{n:016}"));
                n
            }
        };
        total += n;
    }
    for d in worker.content.list().unwrap_or_default() {
        total += worker.content.size(&d).unwrap_or(0);
    }
    if let Ok(rd) = std::fs::read_dir(worker.dir.join("cachemounts")) {
        for e in rd.flatten() {
            total += kiln_store::fsutil::usage(&e.path()).unwrap_or(0);
        }
    }
    total
}

/// Runs the configured policy if the cache may be over a limit, or if it
/// last ran more than an hour ago (for the age limits). Returns what it
/// removed.
pub(crate) fn auto_gc(worker: &Worker, cfg: &GcConfig) -> Result<Vec<UsageRecord>> {
    if !cfg.enabled {
        return Ok(Vec::new());
    }
    let stamp = worker.dir.join("gc-stamp");
    // The age limits matter only when some record is that old (a read of
    // the records, no walk of the root).
    let stamp_old = now().saturating_sub(mtime_secs(&stamp)) > 3600;
    let stale = stamp_old
        && cfg
            .policies
            .iter()
            .filter_map(|p| p.keep_duration)
            .min()
            .is_some_and(|d| {
                let cutoff = now().saturating_sub(d.as_secs());
                worker
                    .records
                    .all()
                    .unwrap_or_default()
                    .iter()
                    .any(|(_, r)| r.last_used < cutoff)
            });
    // The estimate misses what layer packing adds later: trigger early.
    let over = cfg
        .trigger_bytes()
        .is_some_and(|t| estimate(worker) > t / 10 * 9);
    if !stale && !over {
        if stamp_old {
            let _ = std::fs::write(&stamp, b"");
        }
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for p in &cfg.policies {
        for o in p.prune_options()? {
            removed.extend(prune(worker, &o)?);
        }
    }
    let _ = std::fs::write(&stamp, b"");
    Ok(removed)
}

/// Removes temp entries older than `age` from the store's and the engine's
/// temp dirs: what a crashed build left behind.
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

/// Removes the `released` snapshots no remaining record, live session or
/// younger snapshot still reaches (children first), then the blobs only
/// removed snapshots used, and blobs nothing references that are older
/// than [`GRACE`].
fn sweep(
    worker: &Worker,
    released: &BTreeSet<SnapshotId>,
    blobs_of: &HashMap<SnapshotId, Vec<String>>,
) -> Result<()> {
    // Read again, not taken from the picture: a build that started since
    // then holds its snapshots now.
    let held = crate::lease::Leases::live(&worker.dir.join("leases"));
    let infos = worker.snapshots.list()?;
    let by_id: BTreeMap<SnapshotId, Option<SnapshotId>> = infos
        .iter()
        .map(|i| (i.id.clone(), i.parent.clone()))
        .collect();
    let mut live: BTreeSet<SnapshotId> = BTreeSet::new();
    let mark = |id: &SnapshotId, live: &mut BTreeSet<SnapshotId>| {
        let mut cur = Some(id.clone());
        while let Some(c) = cur {
            if !live.insert(c.clone()) {
                break;
            }
            cur = by_id.get(&c).cloned().flatten();
        }
    };
    for (_, r) in worker.records.all()? {
        for s in r.outputs.iter().flatten() {
            if let Ok(id) = s.parse::<SnapshotId>() {
                mark(&id, &mut live);
            }
        }
    }
    for id in &held {
        mark(id, &mut live);
    }
    // Whatever was not released stays, and so do its parents.
    for i in &infos {
        if !released.contains(&i.id) {
            mark(&i.id, &mut live);
        }
    }
    let mut children: BTreeMap<SnapshotId, usize> = BTreeMap::new();
    for i in &infos {
        if let Some(p) = &i.parent {
            *children.entry(p.clone()).or_default() += 1;
        }
    }
    let mut dead: Vec<_> = infos.iter().filter(|i| !live.contains(&i.id)).collect();
    let mut gone: Vec<SnapshotId> = Vec::new();
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
                gone.push(i.id.clone());
                false
            } else {
                true
            }
        });
        if dead.len() == before {
            break;
        }
    }

    // Content: keep what surviving snapshots and pins name.
    let mut keep: HashSet<String> = worker
        .content
        .pins()
        .into_iter()
        .map(|d| d.hex().to_owned())
        .collect();
    for i in worker.snapshots.list()? {
        keep.extend(snapshot_blobs(worker, &i.id));
    }
    let freed: HashSet<&String> = gone
        .iter()
        .filter_map(|g| blobs_of.get(g))
        .flatten()
        .collect();
    let t = now();
    let blobs_dir = worker.content.root().join("blobs").join("sha256");
    for d in worker.content.list()? {
        let h = d.hex().to_owned();
        if keep.contains(&h) {
            continue;
        }
        let old = t.saturating_sub(mtime_secs(&blobs_dir.join(&h))) > GRACE.as_secs();
        if freed.contains(&h) || old {
            let _ = worker.content.delete(&d);
        }
    }
    Ok(())
}
