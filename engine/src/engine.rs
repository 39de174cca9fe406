//! The engine: one per state root. Loads definitions, solves them with the
//! generic solver and the ops, reads files of results and exports them.
//!
//! State layout under the root: kiln-store's `content/` and `snapshots/v1/`,
//! and the engine's own `engine/v1/` (`meta.redb`, `sums/`, `cachemounts/`,
//! `tmp/`). Several engines, in one process or several, may share a root.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kiln_llb::pb;
use kiln_llb::{Definition, DefinitionError};
use kiln_store::{ContentStore, SnapshotId, SnapshotStore};

use crate::cachekey::CacheKey;
use crate::fsutil;
use crate::ops::{self, Executor, RecordCache, Ref, RootfsMode, Worker};
use crate::patterns::PatternSet;
use crate::records::Records;
use crate::session::Session;
use crate::solver::{Graph, GraphError, SolveFailure, SolveOptions, Solver, VertexSpec};

/// Engine settings.
#[derive(Clone, Default)]
pub struct EngineConfig {
    /// Most ops running at once (0 = number of CPUs).
    pub max_parallelism: usize,
    /// Runs exec ops; without one, exec ops fail with a clear error.
    pub executor: Option<Arc<dyn Executor>>,
    /// How exec rootfs snapshots are prepared (default: overlay as root,
    /// copy otherwise).
    pub rootfs_mode: Option<RootfsMode>,
    /// Pulls `docker-image://` sources (default: a client with default
    /// options).
    pub registry: Option<Arc<kiln_runtime::registry::RegistryClient>>,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("max_parallelism", &self.max_parallelism)
            .field("executor", &self.executor.is_some())
            .field("rootfs_mode", &self.rootfs_mode)
            .finish()
    }
}

/// A solved result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolvedRef {
    /// The committed snapshot, or `None` for an empty filesystem.
    pub snapshot: Option<SnapshotId>,
    /// The cache key of the vertex that produced it.
    pub cache_key: CacheKey,
}

/// One entry as `stat` and `read_dir` report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Path relative to the directory read, or the path asked for.
    pub path: String,
    /// Mode bits including the file type.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// mtime in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Symlink target, empty otherwise.
    pub linkname: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// What an export produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportResult {
    /// Exporter response metadata (`containerimage.digest`, …).
    pub metadata: BTreeMap<String, String>,
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// The bytes are not a valid definition.
    #[error("invalid LLB definition")]
    Definition(#[from] DefinitionError),
    /// The graph cannot be solved (unsupported op, bad index, …).
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A vertex failed.
    #[error("{name} ({digest}) failed")]
    Vertex {
        /// The failing vertex's digest.
        digest: String,
        /// Its display name.
        name: String,
        /// The cause.
        #[source]
        error: Arc<anyhow::Error>,
    },
    /// The session was cancelled.
    #[error("the build was cancelled")]
    Cancelled,
}

impl SolveError {
    fn from_failure(f: Arc<SolveFailure>) -> SolveError {
        match Arc::try_unwrap(f) {
            Ok(SolveFailure::Graph(g)) => SolveError::Graph(g),
            Ok(SolveFailure::Vertex {
                digest,
                name,
                error,
            }) => SolveError::Vertex {
                digest,
                name,
                error: Arc::new(error),
            },
            Ok(SolveFailure::Cancelled) => SolveError::Cancelled,
            Err(shared) => match &*shared {
                SolveFailure::Vertex {
                    digest,
                    name,
                    error,
                } => SolveError::Vertex {
                    digest: digest.clone(),
                    name: name.clone(),
                    error: Arc::new(anyhow::anyhow!("{error:#}")),
                },
                SolveFailure::Graph(g) => SolveError::Graph(GraphError::Decode {
                    reason: g.to_string(),
                }),
                SolveFailure::Cancelled => SolveError::Cancelled,
            },
        }
    }
}

/// The build engine of one state root.
pub struct Engine {
    root: PathBuf,
    worker: Arc<Worker>,
    gc: crate::gc::GcConfig,
    solver: Solver<Ref>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn is_root_user() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Engine {
    /// Opens (creating) the state under `root`.
    pub fn open(root: &Path, cfg: EngineConfig) -> Result<Arc<Engine>> {
        fs_err::create_dir_all(root)?;
        let root = root
            .canonicalize()
            .with_context(|| format!("state root {}", root.display()))?;
        let dir = root.join("engine").join("v1");
        fs_err::create_dir_all(&dir)?;
        let snapshots = SnapshotStore::new(&root)?;
        let content = ContentStore::new(&root)?;
        let records = Arc::new(Records::open(&dir.join("meta.redb"))?);
        let mode = cfg.rootfs_mode.unwrap_or(if is_root_user() {
            RootfsMode::Overlay
        } else {
            RootfsMode::Copy
        });
        let (gc, sources) = crate::gc::load_settings(&root)?;
        let mut worker = Worker::new(
            snapshots,
            content,
            records,
            dir,
            cfg.executor.clone(),
            mode,
            cfg.registry.clone().unwrap_or_default(),
        )?;
        worker.http_max_bytes = sources.http_max_bytes;
        let worker = Arc::new(worker);
        // Leftovers of crashed builds; a day old so no live build is hit.
        crate::gc::clean_temp(&worker, std::time::Duration::from_secs(24 * 3600));
        let par = if cfg.max_parallelism == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            cfg.max_parallelism
        };
        Ok(Arc::new(Engine {
            root,
            worker,
            gc,
            solver: Solver::new(par),
        }))
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshot store (for exporters and the host's `du`/`prune`).
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.worker.snapshots
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.worker.content
    }

    /// The metadata records.
    pub fn records(&self) -> &Records {
        &self.worker.records
    }

    /// Cache records with their sizes, most recently used first.
    pub fn du(&self) -> Result<Vec<crate::gc::UsageRecord>> {
        crate::gc::du(&self.worker)
    }

    /// Removes cache records (and snapshots nothing uses any more); returns
    /// the removed records.
    pub fn prune(&self, opts: &crate::gc::PruneOptions) -> Result<Vec<crate::gc::UsageRecord>> {
        crate::gc::prune(&self.worker, opts)
    }

    /// The GC policy (from `kiln.toml` in the root, or the defaults).
    pub fn gc_config(&self) -> &crate::gc::GcConfig {
        &self.gc
    }

    /// Runs the GC policy when the cache may be over a limit (call it
    /// after a build, while the build's session still holds its results).
    /// Returns the removed records.
    pub fn auto_gc(&self) -> Result<Vec<crate::gc::UsageRecord>> {
        crate::gc::auto_gc(&self.worker, &self.gc)
    }

    /// Solves an encoded `pb.Definition` and returns the head's result.
    pub async fn solve(&self, def: &[u8], session: Arc<Session>) -> Result<SolvedRef, SolveError> {
        let def = Definition::decode(def)?;
        let (head, head_index) = def.head();
        let mut specs = Vec::new();
        for entry in def.ops() {
            let meta = def.metadata(&entry.digest);
            let name = vertex_name(&entry.op, meta);
            let digest = entry.digest.as_str().to_owned();
            let (op, outputs) =
                ops::build_op(&self.worker, &session, entry, &name).map_err(|reason| {
                    GraphError::Unsupported {
                        digest: digest.clone(),
                        name: name.clone(),
                        reason,
                    }
                })?;
            specs.push(VertexSpec {
                digest,
                name,
                inputs: entry
                    .op
                    .inputs
                    .iter()
                    .map(|i| (i.digest.clone(), i.index))
                    .collect(),
                outputs,
                ignore_cache: meta.is_some_and(|m| m.ignore_cache),
                op,
            });
        }
        let graph = Graph::new(specs, head.as_str(), head_index)?;
        if !session.cache_imports.is_empty() {
            let progress = session.progress.clone();
            session
                .cache
                .load_imports(&self.worker, &session.cache_imports, &move |m| {
                    progress.message(m)
                })
                .await;
        }
        let cache = Arc::new(RecordCache::new(self.worker.clone(), session.cache.clone()));
        let progress = Arc::new(session.progress.clone());
        let opts = SolveOptions {
            no_cache: session.no_cache,
            explain_cache: session.explain_cache,
        };
        let result = self
            .solver
            .solve(graph, cache.clone(), progress, opts, session.cancel.clone())
            .await;
        // Usage bookkeeping only; a failure here must not fail the build.
        let _ = cache.flush();
        let (key, r) = result.map_err(SolveError::from_failure)?;
        // The result is read or exported next: an imported one is unpacked
        // now, and imported records that were unpacked become local ones.
        let r = crate::cache::materialize(&self.worker, &session.cache, &r)
            .await
            .map_err(|e| SolveError::Vertex {
                digest: head.as_str().to_owned(),
                name: "importing the cached result".into(),
                error: Arc::new(e),
            })?;
        crate::cache::keep_materialized(&self.worker, &session.cache);
        Ok(SolvedRef {
            snapshot: r.0,
            cache_key: key,
        })
    }

    /// Exports the cache of what this session solved for `r` (`--export-cache`
    /// of type `local` or `registry`). Returns metadata (the cache manifest
    /// digest, record and blob counts).
    pub async fn export_cache(
        &self,
        r: Option<&SolvedRef>,
        spec: &crate::cache::CacheSpec,
        session: Arc<Session>,
    ) -> Result<BTreeMap<String, String>> {
        crate::cache::export_cache(
            &self.worker,
            session.cache.clone(),
            r.and_then(|r| r.snapshot.clone()),
            spec,
        )
        .await
    }

    /// The cache document to embed into an image exported with
    /// `image_attrs` (`--export-cache type=inline`): pass it to the image
    /// export as the attribute [`crate::cache::INLINE_ATTR`].
    pub async fn inline_cache(
        &self,
        r: Option<&SolvedRef>,
        image_attrs: &BTreeMap<String, String>,
        session: Arc<Session>,
    ) -> Result<String> {
        crate::cache::inline_cache(
            &self.worker,
            session.cache.clone(),
            r.and_then(|r| r.snapshot.clone()),
            image_attrs,
        )
        .await
    }

    fn tree(&self, r: &SolvedRef) -> Result<PathBuf> {
        self.worker.view(&Ref(r.snapshot.clone()))
    }

    /// Reads (part of) a file of a result. The path is resolved inside the
    /// result's root.
    pub fn read_file(
        &self,
        r: &SolvedRef,
        path: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let root = self.tree(r)?;
        let p = fsutil::resolve(&root, path, true)?;
        let md = fs_err::metadata(&p)?;
        if !md.is_file() {
            bail!("{path} is not a regular file");
        }
        let mut f = fs_err::File::open(&p)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut out = Vec::new();
        match len {
            Some(n) => {
                f.take(n).read_to_end(&mut out)?;
            }
            None => {
                f.read_to_end(&mut out)?;
            }
        }
        Ok(out)
    }

    /// Lists a directory of a result, optionally filtered by a glob on the
    /// entry names.
    pub fn read_dir(
        &self,
        r: &SolvedRef,
        path: &str,
        include: Option<&str>,
    ) -> Result<Vec<FileStat>> {
        let root = self.tree(r)?;
        let p = fsutil::resolve(&root, path, true)?;
        let filter = match include {
            Some(pat) if !pat.is_empty() => Some(PatternSet::new(&[pat])?),
            _ => None,
        };
        let mut out = Vec::new();
        for e in fs_err::read_dir(&p)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if filter.as_ref().is_some_and(|f| !f.matches(&name)) {
                continue;
            }
            out.push(stat_of(&e.path(), name)?);
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Stats a path of a result (symlinks in it are followed, inside the
    /// root; the last component is not).
    pub fn stat(&self, r: &SolvedRef, path: &str) -> Result<FileStat> {
        let root = self.tree(r)?;
        let p = fsutil::resolve(&root, path, false)?;
        stat_of(&p, path.to_owned())
    }

    /// Exports a result (or an empty filesystem) with the named exporter.
    pub async fn export(
        &self,
        r: Option<&SolvedRef>,
        image_config: Option<&[u8]>,
        output_type: &str,
        attrs: &BTreeMap<String, String>,
        session: Arc<Session>,
    ) -> Result<ExportResult> {
        crate::export::export(
            &self.worker,
            r.and_then(|r| r.snapshot.clone()),
            image_config,
            output_type,
            attrs,
            session,
        )
        .await
    }
}

fn stat_of(p: &Path, path: String) -> Result<FileStat> {
    let md = fs_err::symlink_metadata(p)?;
    let linkname = if md.file_type().is_symlink() {
        fs_err::read_link(p)?.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    Ok(FileStat {
        path,
        mode: md.mode(),
        size: md.size(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        linkname,
        uid: md.uid(),
        gid: md.gid(),
    })
}

/// The display name of a vertex: `llb.customname`, or a description of
/// the op.
pub fn vertex_name(op: &pb::Op, meta: Option<&pb::OpMetadata>) -> String {
    if let Some(n) = meta.and_then(|m| m.description.get("llb.customname")) {
        return n.clone();
    }
    use pb::file_action::Action;
    match &op.op {
        Some(pb::op::Op::Source(s)) => s.identifier.clone(),
        Some(pb::op::Op::Exec(e)) => e
            .meta
            .as_ref()
            .map(|m| m.args.join(" "))
            .unwrap_or_default(),
        Some(pb::op::Op::File(f)) => f
            .actions
            .iter()
            .map(|a| match &a.action {
                Some(Action::Copy(c)) => format!("copy {} {}", c.src, c.dest),
                Some(Action::Mkfile(m)) => format!("mkfile {}", m.path),
                Some(Action::Mkdir(m)) => format!("mkdir {}", m.path),
                Some(Action::Rm(r)) => format!("rm {}", r.path),
                Some(Action::Symlink(s)) => format!("symlink {} -> {}", s.newpath, s.oldpath),
                None => "?".into(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(pb::op::Op::Merge(_)) => "merge".into(),
        Some(pb::op::Op::Diff(_)) => "diff".into(),
        Some(pb::op::Op::Build(_)) => "build".into(),
        Some(pb::op::Op::Passthrough(_)) => "passthrough".into(),
        None => "terminal".into(),
    }
}
