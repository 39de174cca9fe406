//! kiln-engine: the LLB solver, cache keys, cache records, ops and progress
//! (layers 2–4 of kiln, see `docs/design-notes.md`).
//!
//! # Use
//!
//! ```text
//! let engine = Engine::open(root, EngineConfig { executor: Some(runc), .. })?;   // Arc<Engine>
//! let session = Arc::new(Session { locals, secrets, progress: Progress::new(mode), .. });
//! let solved = engine.solve(&definition_bytes, session.clone()).await?;         // SolvedRef
//! engine.read_file(&solved, "/etc/os-release", 0, None)?;
//! engine.export(Some(&solved), Some(&config_json), "oci", &attrs, session).await?;
//! ```
//!
//! One [`Engine`] per state root and process is the normal case, but several
//! engines (in one process or in several) may share a root: the metadata
//! database is opened in redb's multi-writer mode and every snapshot is
//! published by rename.
//!
//! # State layout under the root
//!
//! | path | owner | what |
//! | --- | --- | --- |
//! | `content/` | kiln-store | blobs by digest |
//! | `snapshots/v1/` | kiln-store | committed snapshots (diff dirs), views, temp |
//! | `engine/v1/meta.redb` | [`records`] | cache records, explain data, local-source indexes, facts |
//! | `engine/v1/sums/<snapshot>.json` | [`ops`] | per-entry content checksums of a snapshot |
//! | `engine/v1/cachemounts/` | [`ops`] | `RUN --mount=type=cache` dirs, by id |
//! | `engine/v1/tmp/` | [`ops`] | scratch space |
//!
//! # Modules, bottom to top
//!
//! `cachekey` (stable key encoding), `fsutil` (root-confined paths, copies,
//! checksums), `patterns` (`.dockerignore` matching), `records` (redb),
//! `solver` (generic scheduler: knows no op kinds), `ops` (joins the solver
//! with kiln-store and kiln-runtime), `progress`, `session`, and the
//! [`Engine`] API with export and `du`/`prune`.

pub mod cache;
pub mod cachekey;
mod engine;
mod export;
pub mod fsutil;
pub mod gc;
mod lease;
pub mod ops;
pub mod patterns;
pub mod progress;
pub mod records;
pub mod session;
pub mod solver;

pub use engine::{
    Engine, EngineConfig, ExportResult, FileStat, SolveError, SolvedRef, vertex_name,
};
pub use gc::{PruneOptions, UsageRecord};
pub use progress::{Progress, ProgressMode};
pub use session::{CancellationToken, SecretSource, Secrets, Session};
