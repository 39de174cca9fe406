//! kiln-engine: the LLB solver, cache keys, cache records, ops and progress.
//!
//! Layers inside the crate, bottom to top: `cachekey`, `fsutil`,
//! `patterns`, `records`, `solver` (generic: knows no op kinds), `ops` (joins
//! the solver with kiln-store and kiln-runtime), `export`, `engine` (the API
//! the host calls).

pub mod cachekey;
mod engine;
mod export;
pub mod fsutil;
mod gc;
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
pub use session::{CancellationToken, Session};
