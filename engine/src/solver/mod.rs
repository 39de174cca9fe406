//! The generic solver: loads a graph of vertices, computes cache keys bottom-up
//! and runs missing vertices in parallel.
//!
//! It knows no op kinds. An [`Op`] supplies the cache key and the execution; a
//! [`CacheStore`] persists results by key; a [`ProgressSink`] hears about every
//! vertex. Uses only the cache-key layer below it.
//!
//! Lifecycle of one vertex inside [`Solver::solve`]:
//! 1. wait for every input vertex (a failed input fails this vertex with the
//!    same error, it does not run);
//! 2. compute the cache key from the op and the inputs' keys and results;
//! 3. unless the vertex or the session ignores the cache, look the key up;
//! 4. take the engine-wide in-flight lock of the key, so that a concurrent
//!    solve computing the same key waits and then finds the record;
//! 5. run the op under the concurrency limit, then save the record.
//!
//! The first failure cancels the solve's token; running ops watch it, pending
//! ones do not start. `solve` returns only after every task has ended.

mod graph;

pub use graph::{Graph, GraphError, VertexSpec};

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use futures_util::future::{FutureExt, Shared, join_all};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cachekey::CacheKey;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One solved input as an op sees it: the key of the producing vertex and the
/// selected output.
#[derive(Clone, Debug)]
pub struct Input<R> {
    /// Cache key of the vertex that produced this input.
    pub key: CacheKey,
    /// The selected output of that vertex.
    pub result: R,
}

/// Context handed to ops.
#[derive(Clone)]
pub struct OpContext {
    /// Cancelled when the solve fails elsewhere or the session is cancelled.
    pub cancel: CancellationToken,
    /// Digest of the vertex being run.
    pub digest: String,
    /// Display name of the vertex.
    pub name: String,
}

/// One kind of work. Implementations live in the ops layer.
///
/// `cache_key` is called once per vertex and solve, after all inputs are
/// solved; `execute` only when no record for the key exists (or the cache is
/// ignored). `execute` must return exactly `outputs()` results and should
/// check `cx.cancel` between steps of long work.
pub trait Op<R>: Send + Sync {
    /// Number of outputs this op produces.
    fn outputs(&self) -> usize;
    /// Computes the cache key.
    fn cache_key<'a>(
        &'a self,
        cx: &'a OpContext,
        inputs: &'a [Input<R>],
    ) -> BoxFuture<'a, anyhow::Result<CacheKey>>;
    /// Runs the op.
    fn execute<'a>(
        &'a self,
        cx: &'a OpContext,
        inputs: &'a [Input<R>],
    ) -> BoxFuture<'a, anyhow::Result<Vec<R>>>;
    /// Explains why `key` had no record; called only on a miss with
    /// explanations enabled. Returns one line.
    fn explain_miss<'a>(
        &'a self,
        _key: &'a CacheKey,
        _inputs: &'a [Input<R>],
    ) -> BoxFuture<'a, String> {
        Box::pin(async { "no record".to_owned() })
    }
    /// Called after a result is stored (hit or run), e.g. to remember what an
    /// explanation needs next time.
    fn after_solve(&self, _key: &CacheKey, _inputs: &[Input<R>]) {}
    /// The record type its results are stored under (`regular`,
    /// `source.local`, …), for `du`, `prune --filter` and cache export.
    fn kind(&self) -> &str {
        "regular"
    }
}

/// Persists results by cache key. Lookups return `None` for a key without a
/// committed record; `save` is called only with committed results.
pub trait CacheStore<R>: Send + Sync {
    /// Looks up a record.
    fn load(&self, key: &CacheKey) -> anyhow::Result<Option<Vec<R>>>;
    /// Stores a record (replacing an older one); `description` names the
    /// vertex that produced it and `kind` is its record type ([`Op::kind`]).
    fn save(
        &self,
        key: &CacheKey,
        results: &[R],
        description: &str,
        kind: &str,
    ) -> anyhow::Result<()>;
}

/// Identity of a vertex for progress reporting.
#[derive(Clone, Debug)]
pub struct VertexInfo {
    /// `sha256:…` of the op bytes.
    pub digest: String,
    /// Display name (`llb.customname` or a derived description).
    pub name: String,
    /// Digests of the inputs.
    pub inputs: Vec<String>,
}

/// Receives vertex events. Called from many tasks at once.
pub trait ProgressSink: Send + Sync {
    /// The vertex was found in the cache.
    fn cached(&self, v: &VertexInfo);
    /// The vertex started running.
    fn started(&self, v: &VertexInfo);
    /// The vertex finished; `error` is set on failure.
    fn completed(&self, v: &VertexInfo, started: Instant, error: Option<&str>);
    /// A log line for the vertex (e.g. a cache-miss explanation).
    fn log(&self, v: &VertexInfo, line: &str);
}

/// A vertex failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveFailure {
    /// The graph is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// An op failed.
    #[error("vertex {name} ({digest}) failed: {error:#}")]
    Vertex {
        /// Digest of the failing vertex.
        digest: String,
        /// Its display name.
        name: String,
        /// What went wrong.
        error: anyhow::Error,
    },
    /// The solve was cancelled.
    #[error("solve cancelled")]
    Cancelled,
}

/// How one solve treats the cache.
#[derive(Clone, Debug, Default)]
pub struct SolveOptions {
    /// Ignore every record (the session's `--no-cache`).
    pub no_cache: bool,
    /// Explain every miss through the progress sink.
    pub explain_cache: bool,
}

/// A finished vertex.
#[derive(Clone, Debug)]
pub struct Solved<R> {
    /// The vertex's cache key.
    pub key: CacheKey,
    /// One result per output.
    pub results: Vec<R>,
    /// Whether it came from the cache.
    pub cached: bool,
}

type NodeResult<R> = Result<Arc<Solved<R>>, Arc<SolveFailure>>;
type NodeFuture<R> = Shared<BoxFuture<'static, NodeResult<R>>>;

/// The scheduler. One per engine; solves share its concurrency limit and
/// in-flight map.
pub struct Solver<R> {
    limit: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashMap<CacheKey, Weak<tokio::sync::Mutex<()>>>>>,
    _marker: std::marker::PhantomData<fn() -> R>,
}

impl<R: Clone + Send + Sync + 'static> Solver<R> {
    /// A solver running at most `parallelism` ops at once.
    pub fn new(parallelism: usize) -> Self {
        Solver {
            limit: Arc::new(Semaphore::new(parallelism.max(1))),
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            _marker: std::marker::PhantomData,
        }
    }

    /// Solves `graph` and returns the head vertex's selected output.
    ///
    /// Returns only after every task it started has ended.
    pub async fn solve(
        &self,
        graph: Graph<Arc<dyn Op<R>>>,
        cache: Arc<dyn CacheStore<R>>,
        progress: Arc<dyn ProgressSink>,
        opts: SolveOptions,
        cancel: CancellationToken,
    ) -> Result<(CacheKey, R), Arc<SolveFailure>> {
        let cancel = cancel.child_token();
        let first_failure: Arc<OnceLock<Arc<SolveFailure>>> = Arc::new(OnceLock::new());
        let (head, head_index) = graph.head();
        let mut futs: Vec<NodeFuture<R>> = Vec::with_capacity(graph.vertices.len());
        // Graph vertices are in topological order: inputs come first.
        for spec in graph.vertices.into_iter() {
            let inputs: Vec<(NodeFuture<R>, usize)> = spec
                .inputs
                .iter()
                .map(|&(i, out)| (futs[i].clone(), out))
                .collect();
            let node = Node {
                info: VertexInfo {
                    digest: spec.digest.clone(),
                    name: spec.name.clone(),
                    inputs: spec.input_digests.clone(),
                },
                op: spec.op,
                ignore_cache: spec.ignore_cache || opts.no_cache,
                explain: opts.explain_cache,
            };
            let env = Env {
                cache: cache.clone(),
                progress: progress.clone(),
                cancel: cancel.clone(),
                limit: self.limit.clone(),
                in_flight: self.in_flight.clone(),
                first_failure: first_failure.clone(),
            };
            let fut: BoxFuture<'static, NodeResult<R>> = Box::pin(node.run(inputs, env));
            futs.push(fut.shared());
        }
        let handles: Vec<_> = futs.iter().map(|f| tokio::spawn(f.clone())).collect();
        let result = futs[head].clone().await;
        if result.is_err() {
            cancel.cancel();
        }
        for h in handles {
            let _ = h.await;
        }
        match result {
            Ok(solved) => match solved.results.get(head_index) {
                Some(r) => Ok((solved.key.clone(), r.clone())),
                None => Err(Arc::new(SolveFailure::Graph(GraphError::BadOutputIndex {
                    digest: "head".into(),
                    index: head_index as i64,
                }))),
            },
            Err(e) => Err(first_failure.get().cloned().unwrap_or(e)),
        }
    }
}

struct Node<R> {
    info: VertexInfo,
    op: Arc<dyn Op<R>>,
    ignore_cache: bool,
    explain: bool,
}

struct Env<R> {
    cache: Arc<dyn CacheStore<R>>,
    progress: Arc<dyn ProgressSink>,
    cancel: CancellationToken,
    limit: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashMap<CacheKey, Weak<tokio::sync::Mutex<()>>>>>,
    first_failure: Arc<OnceLock<Arc<SolveFailure>>>,
}

impl<R: Clone + Send + Sync + 'static> Node<R> {
    async fn run(self, inputs: Vec<(NodeFuture<R>, usize)>, env: Env<R>) -> NodeResult<R> {
        let solved = join_all(inputs.iter().map(|(f, _)| f.clone())).await;
        let mut ins = Vec::with_capacity(inputs.len());
        for (res, (_, out)) in solved.into_iter().zip(inputs.iter()) {
            let s = res?;
            let Some(r) = s.results.get(*out) else {
                return Err(self.fail(
                    &env,
                    anyhow::anyhow!("input refers to output {out}, which does not exist"),
                ));
            };
            ins.push(Input {
                key: s.key.clone(),
                result: r.clone(),
            });
        }
        if env.cancel.is_cancelled() {
            return Err(Arc::new(SolveFailure::Cancelled));
        }
        let cx = OpContext {
            cancel: env.cancel.clone(),
            digest: self.info.digest.clone(),
            name: self.info.name.clone(),
        };
        let key = match self.op.cache_key(&cx, &ins).await {
            Ok(k) => k,
            Err(e) => {
                if env.cancel.is_cancelled() {
                    return Err(Arc::new(SolveFailure::Cancelled));
                }
                // Report it like a failed run so progress shows the cause.
                let started = Instant::now();
                env.progress.started(&self.info);
                env.progress
                    .completed(&self.info, started, Some(&format!("{e:#}")));
                return Err(self.fail(&env, e));
            }
        };
        if !self.ignore_cache
            && let Some(hit) = self.lookup(&env, &key, &ins)?
        {
            return Ok(hit);
        }
        // One computation per key across concurrent solves of this engine.
        let lock = {
            let mut map = env.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(&key).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.clone(), Arc::downgrade(&l));
                    l
                }
            }
        };
        let _guard = tokio::select! {
            g = lock.lock() => g,
            _ = env.cancel.cancelled() => return Err(Arc::new(SolveFailure::Cancelled)),
        };
        if !self.ignore_cache {
            if let Some(hit) = self.lookup(&env, &key, &ins)? {
                return Ok(hit);
            }
            if self.explain {
                let why = self.op.explain_miss(&key, &ins).await;
                env.progress.log(&self.info, &format!("cache miss: {why}"));
            }
        }
        let _permit = tokio::select! {
            p = env.limit.clone().acquire_owned() => p.map_err(|_| Arc::new(SolveFailure::Cancelled))?,
            _ = env.cancel.cancelled() => return Err(Arc::new(SolveFailure::Cancelled)),
        };
        if env.cancel.is_cancelled() {
            return Err(Arc::new(SolveFailure::Cancelled));
        }
        let started = Instant::now();
        env.progress.started(&self.info);
        let res = self.op.execute(&cx, &ins).await;
        let results = match res {
            Ok(r) if r.len() == self.op.outputs() => r,
            Ok(r) => {
                let e = anyhow::anyhow!(
                    "op produced {} outputs, expected {}",
                    r.len(),
                    self.op.outputs()
                );
                env.progress
                    .completed(&self.info, started, Some(&format!("{e:#}")));
                return Err(self.fail(&env, e));
            }
            Err(e) => {
                if env.cancel.is_cancelled() {
                    env.progress
                        .completed(&self.info, started, Some("cancelled"));
                    return Err(Arc::new(SolveFailure::Cancelled));
                }
                env.progress
                    .completed(&self.info, started, Some(&format!("{e:#}")));
                return Err(self.fail(&env, e));
            }
        };
        if let Err(e) = env
            .cache
            .save(&key, &results, &self.info.name, self.op.kind())
        {
            env.progress
                .completed(&self.info, started, Some(&format!("{e:#}")));
            return Err(self.fail(&env, e.context("saving the cache record")));
        }
        self.op.after_solve(&key, &ins);
        env.progress.completed(&self.info, started, None);
        Ok(Arc::new(Solved {
            key,
            results,
            cached: false,
        }))
    }

    fn lookup(
        &self,
        env: &Env<R>,
        key: &CacheKey,
        ins: &[Input<R>],
    ) -> Result<Option<Arc<Solved<R>>>, Arc<SolveFailure>> {
        match env.cache.load(key) {
            Ok(Some(results)) if results.len() == self.op.outputs() => {
                self.op.after_solve(key, ins);
                env.progress.cached(&self.info);
                Ok(Some(Arc::new(Solved {
                    key: key.clone(),
                    results,
                    cached: true,
                })))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(self.fail(env, e.context("reading the cache record"))),
        }
    }

    fn fail(&self, env: &Env<R>, error: anyhow::Error) -> Arc<SolveFailure> {
        let f = Arc::new(SolveFailure::Vertex {
            digest: self.info.digest.clone(),
            name: self.info.name.clone(),
            error,
        });
        let _ = env.first_failure.set(f.clone());
        env.cancel.cancel();
        f
    }
}

#[cfg(test)]
mod tests;
