use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::cachekey::KeyBuilder;

#[derive(Default)]
struct MemCache(Mutex<HashMap<CacheKey, Vec<u64>>>);

impl CacheStore<u64> for MemCache {
    fn load(&self, key: &CacheKey) -> anyhow::Result<Option<Vec<u64>>> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    fn save(&self, key: &CacheKey, results: &[u64], _d: &str, _k: &str) -> anyhow::Result<()> {
        self.0.lock().unwrap().insert(key.clone(), results.to_vec());
        Ok(())
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl ProgressSink for Events {
    fn cached(&self, v: &VertexInfo) {
        self.0.lock().unwrap().push(format!("cached {}", v.name));
    }
    fn started(&self, v: &VertexInfo) {
        self.0.lock().unwrap().push(format!("start {}", v.name));
    }
    fn completed(&self, v: &VertexInfo, _s: Instant, e: Option<&str>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("done {} {e:?}", v.name));
    }
    fn log(&self, v: &VertexInfo, line: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("log {} {line}", v.name));
    }
}

/// Adds its inputs plus a constant; optionally sleeps or fails.
struct AddOp {
    value: u64,
    sleep_ms: u64,
    fail: bool,
    runs: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Op<u64> for AddOp {
    fn outputs(&self) -> usize {
        1
    }
    fn cache_key<'a>(
        &'a self,
        _cx: &'a OpContext,
        inputs: &'a [Input<u64>],
    ) -> BoxFuture<'a, anyhow::Result<CacheKey>> {
        Box::pin(async move {
            let mut b = KeyBuilder::new("test.add");
            b.u64(self.value).u64(self.fail as u64);
            for i in inputs {
                b.key(&i.key);
            }
            Ok(b.finish())
        })
    }
    fn execute<'a>(
        &'a self,
        cx: &'a OpContext,
        inputs: &'a [Input<u64>],
    ) -> BoxFuture<'a, anyhow::Result<Vec<u64>>> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            let r = tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(self.sleep_ms)) => Ok(()),
                _ = cx.cancel.cancelled() => Err(anyhow::anyhow!("cancelled")),
            };
            self.running.fetch_sub(1, Ordering::SeqCst);
            r?;
            if self.fail {
                anyhow::bail!("boom");
            }
            Ok(vec![
                self.value + inputs.iter().map(|i| i.result).sum::<u64>(),
            ])
        })
    }
}

struct Counters {
    runs: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Counters {
    fn new() -> Self {
        Counters {
            runs: Arc::default(),
            running: Arc::default(),
            max_running: Arc::default(),
        }
    }
    fn op(&self, value: u64, sleep_ms: u64, fail: bool) -> Arc<dyn Op<u64>> {
        Arc::new(AddOp {
            value,
            sleep_ms,
            fail,
            runs: self.runs.clone(),
            running: self.running.clone(),
            max_running: self.max_running.clone(),
        })
    }
}

fn spec(d: &str, inputs: &[&str], op: Arc<dyn Op<u64>>) -> VertexSpec<Arc<dyn Op<u64>>> {
    VertexSpec {
        digest: d.into(),
        name: d.into(),
        inputs: inputs.iter().map(|i| (i.to_string(), 0)).collect(),
        outputs: 1,
        ignore_cache: false,
        op,
    }
}

async fn run(
    solver: &Solver<u64>,
    specs: Vec<VertexSpec<Arc<dyn Op<u64>>>>,
    head: &str,
    cache: Arc<MemCache>,
    ev: Arc<Events>,
) -> Result<(CacheKey, u64), Arc<SolveFailure>> {
    let g = Graph::new(specs, head, 0).map_err(|e| Arc::new(SolveFailure::Graph(e)))?;
    solver
        .solve(
            g,
            cache,
            ev,
            SolveOptions::default(),
            CancellationToken::new(),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_vertices_run_in_parallel_and_cache() {
    let c = Counters::new();
    let solver = Solver::new(4);
    let cache = Arc::new(MemCache::default());
    let mk = || {
        vec![
            spec("a", &[], c.op(1, 200, false)),
            spec("b", &[], c.op(2, 200, false)),
            spec("c", &[], c.op(3, 200, false)),
            spec("d", &["a", "b", "c"], c.op(10, 0, false)),
        ]
    };
    let t = Instant::now();
    let (_, v) = run(&solver, mk(), "d", cache.clone(), Arc::default())
        .await
        .unwrap();
    assert_eq!(v, 16);
    assert!(
        t.elapsed() < Duration::from_millis(550),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(c.max_running.load(Ordering::SeqCst), 3);
    assert_eq!(c.runs.load(Ordering::SeqCst), 4);
    let ev = Arc::new(Events::default());
    let (_, v) = run(&solver, mk(), "d", cache, ev.clone()).await.unwrap();
    assert_eq!(v, 16);
    assert_eq!(c.runs.load(Ordering::SeqCst), 4);
    assert_eq!(
        ev.0.lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("cached"))
            .count(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_is_respected() {
    let c = Counters::new();
    let solver = Solver::new(2);
    let specs = vec![
        spec("a", &[], c.op(1, 100, false)),
        spec("b", &[], c.op(2, 100, false)),
        spec("c", &[], c.op(3, 100, false)),
        spec("e", &[], c.op(4, 100, false)),
        spec("d", &["a", "b", "c", "e"], c.op(10, 0, false)),
    ];
    run(&solver, specs, "d", Arc::default(), Arc::default())
        .await
        .unwrap();
    assert_eq!(c.max_running.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_work_runs_once_across_concurrent_solves() {
    let c = Counters::new();
    let solver = Arc::new(Solver::new(4));
    let cache = Arc::new(MemCache::default());
    // Different digests, same key: deduplicated by key.
    let mk = |d: &str| {
        vec![
            spec(d, &[], c.op(7, 200, false)),
            spec("top", &[d], c.op(1, 0, false)),
        ]
    };
    let (r1, r2) = tokio::join!(
        run(&solver, mk("x1"), "top", cache.clone(), Arc::default()),
        run(&solver, mk("x2"), "top", cache.clone(), Arc::default()),
    );
    assert_eq!(r1.unwrap().1, 8);
    assert_eq!(r2.unwrap().1, 8);
    assert_eq!(c.runs.load(Ordering::SeqCst), 2);
    // The same digest twice in one definition is one vertex.
    let c2 = Counters::new();
    let specs = vec![
        spec("s", &[], c2.op(5, 0, false)),
        spec("s", &[], c2.op(5, 0, false)),
        spec("t", &["s", "s"], c2.op(0, 0, false)),
    ];
    let (_, v) = run(&Solver::new(2), specs, "t", Arc::default(), Arc::default())
        .await
        .unwrap();
    assert_eq!(v, 10);
    assert_eq!(c2.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_cancels_the_rest_and_names_the_vertex() {
    let c = Counters::new();
    let solver = Solver::new(4);
    let specs = vec![
        spec("slow", &[], c.op(1, 5_000, false)),
        spec("bad", &[], c.op(2, 10, true)),
        spec("after", &["slow"], c.op(3, 0, false)),
        spec("top", &["after", "bad"], c.op(0, 0, false)),
    ];
    let t = Instant::now();
    let err = run(&solver, specs, "top", Arc::default(), Arc::default())
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2));
    let msg = err.to_string();
    assert!(msg.contains("bad") && msg.contains("boom"), "{msg}");
    assert_eq!(c.running.load(Ordering::SeqCst), 0);
    // "after" and "top" never ran.
    assert_eq!(c.runs.load(Ordering::SeqCst), 2);
}

#[test]
fn graph_errors_are_reported() {
    let c = Counters::new();
    let e = Graph::new(vec![spec("a", &["zz"], c.op(1, 0, false))], "a", 0)
        .err()
        .unwrap();
    assert!(matches!(e, GraphError::MissingInput { .. }), "{e}");
    let e = Graph::new(
        vec![
            spec("a", &["b"], c.op(1, 0, false)),
            spec("b", &["a"], c.op(1, 0, false)),
        ],
        "a",
        0,
    )
    .err()
    .unwrap();
    assert!(matches!(e, GraphError::Cycle { .. }), "{e}");
    let e = Graph::new(vec![spec("a", &[], c.op(1, 0, false))], "a", 3)
        .err()
        .unwrap();
    assert!(matches!(e, GraphError::BadOutputIndex { .. }), "{e}");
    assert!(matches!(
        Graph::<Arc<dyn Op<u64>>>::new(vec![], "a", 0),
        Err(GraphError::Empty)
    ));
}
