//! What one client brings to a solve: named local dirs, secrets, ssh agent
//! sockets, cache flags, progress output and a cancellation token.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;

pub use tokio_util::sync::CancellationToken;

use crate::cache::{CacheSpec, SessionState};
use crate::progress::Progress;
use crate::solver::BoxFuture;

/// Where secrets come from when a step asks for one: a daemon asks its
/// client over the session's stream, so a value crosses only when a step
/// that needs it runs.
pub trait SecretSource: Send + Sync {
    /// The value of secret `id`, or `None` when the client has none by
    /// that id.
    fn fetch<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;
}

impl fmt::Debug for dyn SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretSource")
    }
}

/// Answers so far: id → value, or `None` for "the client has none".
type Answers = BTreeMap<String, Option<Arc<Vec<u8>>>>;

/// A session's secrets: values given up front, plus an optional source
/// asked on demand. An answer from the source (found or not) is kept in
/// memory for the rest of the session, so a secret crosses once.
#[derive(Clone, Default)]
pub struct Secrets {
    known: Arc<Mutex<Answers>>,
    source: Option<Arc<dyn SecretSource>>,
}

impl Secrets {
    /// Secrets known up front.
    pub fn from_map(map: BTreeMap<String, Vec<u8>>) -> Secrets {
        let s = Secrets::default();
        for (k, v) in map {
            s.insert(k, v);
        }
        s
    }

    /// Secrets asked of `source` when a step needs them.
    pub fn on_demand(source: Arc<dyn SecretSource>) -> Secrets {
        Secrets {
            known: Arc::default(),
            source: Some(source),
        }
    }

    /// Adds (or replaces) a secret.
    pub fn insert(&self, id: impl Into<String>, value: Vec<u8>) {
        self.lock().insert(id.into(), Some(Arc::new(value)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of secret `id`, asking the source the first time.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Vec<u8>>>> {
        if let Some(v) = self.lock().get(id) {
            return Ok(v.clone());
        }
        let Some(source) = &self.source else {
            return Ok(None);
        };
        let v = source.fetch(id).await?.map(Arc::new);
        self.lock().entry(id.to_string()).or_insert(v.clone());
        Ok(v)
    }

    /// Looks up every id of `ids`, for a step about to run: a map of those
    /// the session has.
    pub async fn resolve<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeMap<String, Arc<Vec<u8>>>> {
        let mut out = BTreeMap::new();
        for id in ids {
            if out.contains_key(id) {
                continue;
            }
            if let Some(v) = self.get(id).await? {
                out.insert(id.to_string(), v);
            }
        }
        Ok(out)
    }

    /// The ids answered so far (never the values), for debug output.
    fn ids(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("ids", &self.ids())
            .field("on_demand", &self.source.is_some())
            .finish()
    }
}

/// A client session. Secrets stay in memory: they are never written to a
/// layer, a record or a log.
#[derive(Clone, Default)]
pub struct Session {
    /// `local://NAME` sources: NAME → directory.
    pub locals: BTreeMap<String, PathBuf>,
    /// Secrets by id, in memory only.
    pub secrets: Secrets,
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
            .field("secrets", &self.secrets)
            .field("ssh", &self.ssh)
            .field("oci_layouts", &self.oci_layouts)
            .field("no_cache", &self.no_cache)
            .field("explain_cache", &self.explain_cache)
            .field("cache_imports", &self.cache_imports)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    impl SecretSource for Counting {
        fn fetch<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok((id == "tok").then(|| b"v".to_vec())) })
        }
    }

    #[tokio::test]
    async fn a_source_is_asked_once_per_id_and_given_values_win() {
        let src = Arc::new(Counting(AtomicUsize::new(0)));
        let s = Secrets::on_demand(src.clone());
        s.insert("given", b"g".to_vec());
        let got = s.resolve(["tok", "tok", "missing", "given"]).await.unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["given", "tok"]);
        assert_eq!(got["tok"].as_slice(), b"v");
        assert_eq!(s.get("missing").await.unwrap(), None);
        assert_eq!(s.get("tok").await.unwrap().unwrap().as_slice(), b"v");
        // tok and missing, once each; given never.
        assert_eq!(src.0.load(Ordering::SeqCst), 2);
        // Debug output names ids, never values.
        let dbg = format!("{s:?}");
        assert!(dbg.contains("tok") && !dbg.contains("118"), "{dbg}");
    }
}
