//! Ops: the one place joining the generic solver with kiln-store (and, for
//! exec and image pulls, kiln-runtime).
//!
//! A result is a [`Ref`]: a committed snapshot of kiln-store, or the empty
//! filesystem. Ops build new snapshots in the store's temp space and commit
//! them before returning, so a record never names an uncommitted result.
//! Blocking filesystem work runs in `spawn_blocking`.

mod diff;
pub mod exec;
mod file;
pub(crate) mod git;
mod http;
mod image;
mod local;
mod merge;
mod sshproxy;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use kiln_llb::OpEntry;
use kiln_llb::pb;
use kiln_store::{ContentStore, SnapshotId, SnapshotStore};

use crate::cache::{SessionState, TraceEntry, materialize};
use crate::cachekey::{CacheKey, KeyBuilder};
use crate::fsutil;
use crate::records::{KeyParts, Records};
use crate::session::Session;
use crate::solver::{BoxFuture, CacheStore, Input, Op, OpContext};

pub use exec::{Executor, RootfsMode};
pub(crate) use image::unpack_chain;

/// File in a snapshot's cache dir: resolved path → subtree checksum.
const SUBTREE_MEMO: &str = "subtree-sums-v1.json";

/// A solved result: a committed snapshot, or `None` for the empty
/// filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ref(pub Option<SnapshotId>);

/// Shared state of the ops of one engine.
pub struct Worker {
    /// Snapshot store.
    pub snapshots: SnapshotStore,
    /// Content store.
    pub content: ContentStore,
    /// Metadata database.
    pub records: Arc<Records>,
    /// `<root>/engine/v1`.
    pub dir: PathBuf,
    /// Runs exec ops; `None` makes exec ops fail with a clear error.
    pub executor: Option<Arc<dyn Executor>>,
    /// How exec rootfs snapshots are prepared.
    pub rootfs_mode: RootfsMode,
    /// Pulls images.
    pub registry: Arc<kiln_runtime::registry::RegistryClient>,
    /// Snapshots the sessions of this engine hold.
    pub(crate) leases: Arc<crate::lease::Leases>,
    /// `[sources] http-max-size` of `kiln.toml`.
    pub(crate) http_max_bytes: Option<u64>,
    sums: Mutex<HashMap<SnapshotId, Arc<BTreeMap<String, String>>>>,
    /// Explanation parts remembered since the last flush, written with the
    /// usage of the solve's hits in one transaction.
    pending_explain: Mutex<BTreeMap<String, KeyParts>>,
    local_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Worker {
    /// A worker over the given stores.
    pub fn new(
        snapshots: SnapshotStore,
        content: ContentStore,
        records: Arc<Records>,
        dir: PathBuf,
        executor: Option<Arc<dyn Executor>>,
        rootfs_mode: RootfsMode,
        registry: Arc<kiln_runtime::registry::RegistryClient>,
    ) -> Result<Worker> {
        for d in ["sums", "tmp", "cachemounts"] {
            fs_err::create_dir_all(dir.join(d))?;
        }
        let leases = Arc::new(crate::lease::Leases::new(&dir.join("leases"))?);
        Ok(Worker {
            leases,
            http_max_bytes: None,
            snapshots,
            content,
            records,
            dir,
            executor,
            rootfs_mode,
            registry,
            sums: Mutex::new(HashMap::new()),
            pending_explain: Mutex::new(BTreeMap::new()),
            local_locks: Mutex::new(HashMap::new()),
        })
    }

    /// The merged read-only tree of a ref (an empty dir for scratch).
    pub fn view(&self, r: &Ref) -> Result<PathBuf> {
        match &r.0 {
            Some(id) => Ok(self.snapshots.view(id)?),
            None => {
                let p = self.snapshots.root().join("empty");
                fs_err::create_dir_all(&p)?;
                Ok(p)
            }
        }
    }

    /// Per-entry checksums of a snapshot, computed once and kept in
    /// `sums/<id>.json` (snapshots are immutable).
    pub fn sums(&self, r: &Ref) -> Result<Arc<BTreeMap<String, String>>> {
        let Some(id) = &r.0 else {
            return Ok(Arc::new(BTreeMap::new()));
        };
        if let Some(s) = self.sums.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(s.clone());
        }
        let file = self.dir.join("sums").join(format!("{}.json", id.as_str()));
        let sums = match std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, String>>(&b).ok())
        {
            Some(s) => s,
            None => {
                let s = fsutil::tree_sums(&self.view(r)?)?;
                self.store_sums(id, &s)?;
                s
            }
        };
        let s = Arc::new(sums);
        self.sums
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), s.clone());
        Ok(s)
    }

    /// Records precomputed checksums of a new snapshot.
    pub fn store_sums(&self, id: &SnapshotId, sums: &BTreeMap<String, String>) -> Result<()> {
        let file = self.dir.join("sums").join(format!("{}.json", id.as_str()));
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("sums-{}", kiln_store::fsutil::random_hex()?));
        fs_err::write(&tmp, serde_json::to_vec(sums)?)?;
        fs_err::rename(&tmp, &file)?;
        Ok(())
    }

    /// Content checksum of `path` (and everything below it) in `r`,
    /// resolved inside the root.
    ///
    /// The checksum of a resolved path is remembered next to the snapshot
    /// (snapshots are immutable), so a rebuild does not load the whole
    /// per-entry table of a large snapshot to key a `COPY` of one file.
    pub fn content_sum(&self, r: &Ref, path: &str, follow: bool) -> Result<String> {
        let root = self.view(r)?;
        let resolved = fsutil::resolve(&root, path, follow)?;
        let rel = fsutil::rel_string(&root, &resolved);
        let Some(id) = &r.0 else {
            return Ok(fsutil::subtree_sum(&BTreeMap::new(), &rel));
        };
        let loaded = self
            .sums
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        if let Some(sums) = loaded {
            return Ok(fsutil::subtree_sum(&sums, &rel));
        }
        let memo_file = self
            .snapshots
            .cache_dir(id)
            .ok()
            .map(|d| d.join(SUBTREE_MEMO));
        let mut memo: BTreeMap<String, String> = memo_file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Some(s) = memo.get(&rel) {
            return Ok(s.clone());
        }
        let sum = fsutil::subtree_sum(self.sums(r)?.as_ref(), &rel);
        // Remembering is an optimisation: a failed write costs a later
        // rebuild the full table again, nothing else.
        if let Some(f) = memo_file {
            memo.insert(rel, sum.clone());
            let tmp = f.with_extension(format!(
                "tmp{}",
                kiln_store::fsutil::random_hex().unwrap_or_default()
            ));
            if std::fs::write(&tmp, serde_json::to_vec(&memo).unwrap_or_default()).is_ok()
                && std::fs::rename(&tmp, &f).is_err()
            {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(sum)
    }

    fn local_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.local_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Remembers the parts of a key under each of the op's identities, for
    /// explanations.
    ///
    /// Nothing is written here: [`RecordCache::flush`] stores what changed
    /// at the end of the solve.
    fn remember_parts(&self, ids: &[String], parts: &KeyParts) {
        let mut pending = self
            .pending_explain
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for id in ids {
            let same = match pending.get(id) {
                Some(p) => p == parts,
                None => matches!(self.records.explain_get(id), Ok(Some(old)) if &old == parts),
            };
            if !same {
                pending.insert(id.clone(), parts.clone());
            }
        }
    }

    /// The parts last remembered for an op identity, written or not.
    fn remembered_parts(&self, id: &str) -> Option<KeyParts> {
        let pending = self
            .pending_explain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        pending.or_else(|| self.records.explain_get(id).ok().flatten())
    }

    /// Says which parts differ from the ones last stored under the first of
    /// `ids` that has any.
    fn explain_parts(&self, ids: &[String], parts: &KeyParts) -> String {
        let old = ids.iter().find_map(|id| self.remembered_parts(id));
        let Some(old) = old else {
            return "no record (first build of this step)".to_owned();
        };
        let old_map: BTreeMap<&str, &str> = old
            .parts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let short = |v: &str| -> String {
            if v.len() > 40 {
                format!(
                    "{}…",
                    &v[..v.char_indices().nth(24).map(|(i, _)| i).unwrap_or(v.len())]
                )
            } else {
                v.to_owned()
            }
        };
        let mut diffs = Vec::new();
        for (k, v) in &parts.parts {
            match old_map.get(k.as_str()) {
                Some(o) if o == v => {}
                Some(o) if k.starts_with("option ") => {
                    diffs.push(format!("{k} changed ({} → {})", short(o), short(v)))
                }
                Some(_) => diffs.push(format!("{k} changed")),
                None => diffs.push(format!("{k} is new")),
            }
        }
        for (k, _) in &old.parts {
            if !parts.parts.iter().any(|(n, _)| n == k) {
                diffs.push(format!("{k} was removed"));
            }
        }
        if diffs.is_empty() {
            "no record (the result was removed or never stored)".to_owned()
        } else {
            diffs.join("; ")
        }
    }
}

/// Cache records backed by redb, checked against the snapshot store, with
/// the session's imported caches behind them. Hits are counted in memory
/// and written in one transaction by [`RecordCache::flush`] at the end of a
/// solve; every hit and stored record goes to the session's trace.
pub struct RecordCache {
    /// The worker.
    pub worker: Arc<Worker>,
    /// Keys hit during this solve.
    pub hits: Mutex<Vec<CacheKey>>,
    state: Arc<SessionState>,
}

impl RecordCache {
    /// A cache over the worker's records for one session.
    pub fn new(worker: Arc<Worker>, state: Arc<SessionState>) -> RecordCache {
        RecordCache {
            worker,
            hits: Mutex::new(Vec::new()),
            state,
        }
    }

    /// Records the usage of every hit and the explanation parts remembered
    /// since the last flush, in one transaction.
    pub fn flush(&self) -> Result<()> {
        let keys = std::mem::take(&mut *self.hits.lock().unwrap_or_else(|p| p.into_inner()));
        let explain = std::mem::take(
            &mut *self
                .worker
                .pending_explain
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        self.worker.records.touch_and_explain(&keys, &explain)
    }

    fn load_local(&self, key: &CacheKey) -> Result<Option<Vec<Ref>>> {
        let Some(rec) = self.worker.records.load(key)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for o in &rec.outputs {
            match o {
                None => out.push(Ref(None)),
                Some(s) => {
                    let Ok(id) = s.parse::<SnapshotId>() else {
                        return Ok(None);
                    };
                    // A record whose snapshot was pruned is a miss.
                    if !self.worker.snapshots.exists(&id) {
                        return Ok(None);
                    }
                    out.push(Ref(Some(id)));
                }
            }
        }
        self.state.hold(&self.worker, &out);
        self.hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.clone());
        self.state.record(TraceEntry {
            key: key.clone(),
            outputs: out.clone(),
            kind: rec.kind,
            description: rec.description,
        });
        Ok(Some(out))
    }

    fn load_imported(&self, key: &CacheKey) -> Result<Option<Vec<Ref>>> {
        for imp in self.state.imports() {
            let Some(&i) = imp.by_key.get(key.as_str()) else {
                continue;
            };
            let rec = &imp.config.records[i];
            let mut out = Vec::new();
            for o in &rec.outputs {
                out.push(self.state.lazy_ref(imp, *o)?);
            }
            self.state.record(TraceEntry {
                key: key.clone(),
                outputs: out.clone(),
                kind: rec.kind.clone(),
                description: rec.description.clone(),
            });
            return Ok(Some(out));
        }
        Ok(None)
    }
}

impl CacheStore<Ref> for RecordCache {
    fn load(&self, key: &CacheKey) -> Result<Option<Vec<Ref>>> {
        match self.load_local(key)? {
            Some(r) => Ok(Some(r)),
            None => self.load_imported(key),
        }
    }

    fn save(&self, key: &CacheKey, results: &[Ref], description: &str, kind: &str) -> Result<()> {
        let outputs = results
            .iter()
            .map(|r| r.0.as_ref().map(|id| id.as_str().to_owned()))
            .collect();
        self.state.hold(&self.worker, results);
        self.worker.records.save(key, outputs, description, kind)?;
        self.state.record(TraceEntry {
            key: key.clone(),
            outputs: results.to_vec(),
            kind: kind.to_owned(),
            description: description.to_owned(),
        });
        Ok(())
    }
}

/// Every op as the solver sees it: the op's record type, and inputs made
/// real (imported results unpacked) before it runs.
struct Wrapped {
    inner: Arc<dyn Op<Ref>>,
    kind: &'static str,
    worker: Arc<Worker>,
    session: Arc<Session>,
}

impl Op<Ref> for Wrapped {
    fn outputs(&self) -> usize {
        self.inner.outputs()
    }

    fn cache_key<'a>(
        &'a self,
        cx: &'a OpContext,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<CacheKey>> {
        self.inner.cache_key(cx, inputs)
    }

    fn execute<'a>(
        &'a self,
        cx: &'a OpContext,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<Vec<Ref>>> {
        Box::pin(async move {
            let mut real = Vec::with_capacity(inputs.len());
            for i in inputs {
                real.push(Input {
                    key: i.key.clone(),
                    result: materialize(&self.worker, &self.session.cache, &i.result)
                        .await
                        .context("unpacking an imported cache result")?,
                });
            }
            self.inner.execute(cx, &real).await
        })
    }

    fn explain_miss<'a>(
        &'a self,
        key: &'a CacheKey,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, String> {
        self.inner.explain_miss(key, inputs)
    }

    fn after_solve(&self, key: &CacheKey, inputs: &[Input<Ref>]) {
        self.inner.after_solve(key, inputs)
    }

    fn kind(&self) -> &str {
        self.kind
    }
}

/// Builds the op for one definition entry (wrapped, see [`Wrapped`]).
pub fn build_op(
    worker: &Arc<Worker>,
    session: &Arc<Session>,
    entry: &OpEntry,
    name: &str,
) -> std::result::Result<(Arc<dyn Op<Ref>>, usize), String> {
    let (inner, outputs) = build_inner(worker, session, entry, name)?;
    let kind = match &entry.op.op {
        Some(pb::op::Op::Source(src)) if src.identifier.starts_with("local://") => "source.local",
        Some(pb::op::Op::Source(src)) if src.identifier.starts_with("git://") => {
            "source.git.checkout"
        }
        _ => "regular",
    };
    let op = Wrapped {
        inner,
        kind,
        worker: worker.clone(),
        session: session.clone(),
    };
    Ok((Arc::new(op), outputs))
}

fn build_inner(
    worker: &Arc<Worker>,
    session: &Arc<Session>,
    entry: &OpEntry,
    name: &str,
) -> std::result::Result<(Arc<dyn Op<Ref>>, usize), String> {
    let ctx = OpCtx {
        worker: worker.clone(),
        session: session.clone(),
        name: name.to_owned(),
        base: op_base_bytes(&entry.op),
        options: Arc::new(option_parts(&entry.op)),
    };
    let n_inputs = entry.op.inputs.len();
    match &entry.op.op {
        Some(pb::op::Op::Source(src)) => {
            let id = src.identifier.as_str();
            if let Some(local) = id.strip_prefix("local://") {
                Ok((Arc::new(local::LocalOp::new(ctx, local, src)?), 1))
            } else if id.starts_with("git://") {
                Ok((Arc::new(git::GitOp::new(ctx, src)?), 1))
            } else if id.starts_with("http://") || id.starts_with("https://") {
                Ok((Arc::new(http::HttpOp::new(ctx, src)?), 1))
            } else if id.starts_with("docker-image://") || id.starts_with("oci-layout://") {
                Ok((
                    Arc::new(image::ImageOp::new(ctx, src, entry.op.platform.clone())?),
                    1,
                ))
            } else {
                let scheme = id.split("://").next().unwrap_or(id);
                Err(format!("source scheme {scheme:?} is not supported ({id})"))
            }
        }
        Some(pb::op::Op::File(f)) => {
            Ok((Arc::new(file::FileOp::new(ctx, f.clone(), n_inputs)?), 1))
        }
        Some(pb::op::Op::Merge(m)) => Ok((Arc::new(merge::MergeOp::new(ctx, m, n_inputs)?), 1)),
        Some(pb::op::Op::Diff(d)) => Ok((Arc::new(diff::DiffOp::new(ctx, d, n_inputs)?), 1)),
        Some(pb::op::Op::Exec(e)) => {
            let op = exec::ExecOpImpl::new(ctx, e.clone(), entry.op.platform.clone(), n_inputs)?;
            let outputs = op.output_count();
            Ok((Arc::new(op), outputs))
        }
        Some(pb::op::Op::Build(_)) => Err("BuildOp (nested builds) is not supported".into()),
        Some(pb::op::Op::Passthrough(_)) => Err("PassthroughOp is not supported".into()),
        None => Err("op has no operation".into()),
    }
}

/// The op's bytes without its inputs: what the op itself says, independent
/// of how its inputs were produced (their keys are added separately).
fn op_base_bytes(op: &pb::Op) -> Vec<u8> {
    use prost::Message as _;
    let mut o = op.clone();
    o.inputs.clear();
    o.encode_to_vec()
}

/// What every op carries.
#[derive(Clone)]
pub(crate) struct OpCtx {
    pub worker: Arc<Worker>,
    pub session: Arc<Session>,
    pub name: String,
    pub base: Vec<u8>,
    /// The op's fields as (`option <json path>`, value) pairs, for
    /// explanations.
    pub options: Arc<Vec<(String, String)>>,
}

impl OpCtx {
    /// Starts a key from the op kind and the op's own bytes.
    fn key_builder(&self, kind: &str) -> KeyBuilder {
        let mut b = KeyBuilder::new(kind);
        b.bytes(&self.base);
        b
    }

    /// Identities under which explanations are remembered: the display
    /// name, the `[stage n/m]` step label if the name has one, and the
    /// input keys (same inputs, different key: an option changed).
    fn explain_ids(&self, kind: &str, inputs: &[Input<Ref>]) -> Vec<String> {
        let mut ids = vec![format!("{kind}:name:{}", self.name)];
        if self.name.starts_with('[')
            && let Some(end) = self.name.find(']')
        {
            ids.push(format!("{kind}:step:{}", &self.name[..=end]));
        }
        if !inputs.is_empty() {
            let mut b = KeyBuilder::new("explain.inputs");
            for i in inputs {
                b.key(&i.key);
            }
            ids.push(format!("{kind}:inputs:{}", b.finish()));
        }
        ids
    }

    /// Starts the explanation parts with the op's options.
    pub(crate) fn parts(&self) -> Vec<(String, String)> {
        self.options.as_ref().clone()
    }
}

/// Says why a key missed, from the parts remembered for the op.
pub(crate) fn explain(
    ctx: &OpCtx,
    kind: &str,
    parts: &Mutex<Option<KeyParts>>,
    inputs: &[Input<Ref>],
) -> String {
    match parts.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(p) => ctx.worker.explain_parts(&ctx.explain_ids(kind, inputs), p),
        None => "no record".to_owned(),
    }
}

/// Remembers the parts of the op's current key.
pub(crate) fn remember(
    ctx: &OpCtx,
    kind: &str,
    parts: &Mutex<Option<KeyParts>>,
    inputs: &[Input<Ref>],
) {
    if let Some(p) = parts.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        ctx.worker.remember_parts(&ctx.explain_ids(kind, inputs), p);
    }
}

/// The op's fields, flattened to JSON paths (without its inputs).
fn option_parts(op: &pb::Op) -> Vec<(String, String)> {
    let mut o = op.clone();
    o.inputs.clear();
    let v = kiln_llb::dump::op_json(&o);
    let mut out = Vec::new();
    flatten("", &v, &mut out);
    out
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        leaf => {
            let s = match leaf {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let s = if s.len() > 80 {
                crate::cachekey::sha256_digest(s.as_bytes())
            } else {
                s
            };
            out.push((format!("option {prefix}"), s));
        }
    }
}

/// Runs blocking work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a blocking task panicked")?
}

/// The key of an op identified by its kind, its own definition (in `ctx`)
/// and its inputs' keys (merge, diff, exec); the parts are kept in `slot`
/// for `--explain-cache`.
pub(crate) fn inputs_key(
    ctx: &OpCtx,
    kind: &str,
    inputs: &[Input<Ref>],
    slot: &Mutex<Option<KeyParts>>,
) -> CacheKey {
    let mut b = ctx.key_builder(kind);
    let mut parts = ctx.parts();
    input_key_parts(&mut parts, &mut b, inputs);
    let key = b.finish();
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(KeyParts {
        key: key.as_str().into(),
        parts,
    });
    key
}

/// Key parts common to ops keyed on their inputs' keys.
pub(crate) fn input_key_parts(
    parts: &mut Vec<(String, String)>,
    b: &mut KeyBuilder,
    inputs: &[Input<Ref>],
) {
    for (i, inp) in inputs.iter().enumerate() {
        b.key(&inp.key);
        parts.push((format!("input {i}"), inp.key.as_str().to_owned()));
    }
}
