//! kiln-engine: the LLB solver, cache keys, cache records, ops and progress.
//!
//! Layers inside the crate, bottom to top: `cachekey`, `records`, `solver`
//! (generic), `ops` (joins the solver with kiln-store and kiln-runtime),
//! `engine` (the API the host calls).

pub mod cachekey;
pub mod fsutil;
pub mod patterns;
pub mod progress;
pub mod records;
pub mod session;
pub mod solver;
