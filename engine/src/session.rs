//! What one client brings to a solve: named local dirs, secrets, ssh agent
//! sockets, cache flags, progress output and a cancellation token.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use tokio_util::sync::CancellationToken;

use crate::cache::{CacheSpec, SessionState};
use crate::progress::Progress;

/// A client session. Secrets stay in memory: they are never written to a
/// layer, a record or a log.
#[derive(Clone, Default)]
pub struct Session {
    /// `local://NAME` sources: NAME → directory.
    pub locals: BTreeMap<String, PathBuf>,
    /// Secret id → value.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// SSH id → agent socket path (`default` for the unnamed one).
    pub ssh: BTreeMap<String, PathBuf>,
    /// `oci-layout://` store names → OCI layout directory.
    pub oci_layouts: BTreeMap<String, PathBuf>,
    /// Ignore every cache record (`--no-cache`).
    pub no_cache: bool,
    /// Print why each vertex missed the cache (`--explain-cache`).
    pub explain_cache: bool,
    /// Where progress goes.
    pub progress: Progress,
    /// Cancels every solve of this session.
    pub cancel: CancellationToken,
    /// `--import-cache` sources, read at the session's first solve.
    pub cache_imports: Vec<CacheSpec>,
    /// What the session's solves used (for `--export-cache`) and the lazy
    /// results of its imports.
    pub cache: Arc<SessionState>,
}

impl Session {
    /// A session with no locals, secrets or ssh, reporting to `progress`.
    pub fn new(progress: Progress) -> Session {
        Session {
            progress,
            ..Session::default()
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("locals", &self.locals)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("ssh", &self.ssh)
            .field("oci_layouts", &self.oci_layouts)
            .field("no_cache", &self.no_cache)
            .field("explain_cache", &self.explain_cache)
            .field("cache_imports", &self.cache_imports)
            .finish_non_exhaustive()
    }
}
