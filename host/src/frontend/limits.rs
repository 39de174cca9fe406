//! The limits every frontend runs under.

use std::time::Duration;

/// Bounds for one frontend run. Every field has a default and a flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendLimits {
    /// Time spent executing guest code (`--frontend-timeout`, default 120 s).
    pub timeout: Duration,
    /// Linear memory (`--frontend-memory`, default 512 MiB).
    pub max_memory_bytes: u64,
    /// Number of `solve` calls (`--frontend-max-solves`, default 10,000).
    pub max_solves: u64,
    /// Size of one definition passed to `solve`, and of the returned result
    /// (`--frontend-max-result`, default 64 MiB).
    pub max_result_bytes: u64,
    /// Bytes of log, warnings and stdout/stderr (`--frontend-max-log`,
    /// default 4 MiB).
    pub max_log_bytes: u64,
    /// Number of warnings (default 10,000).
    pub max_warnings: u64,
}

impl Default for FrontendLimits {
    fn default() -> Self {
        FrontendLimits {
            timeout: Duration::from_secs(120),
            max_memory_bytes: 512 << 20,
            max_solves: 10_000,
            max_result_bytes: 64 << 20,
            max_log_bytes: 4 << 20,
            max_warnings: 10_000,
        }
    }
}
