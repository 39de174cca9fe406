use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kiln_engine::{Engine, EngineConfig};
use kiln_llb::pb;
use kiln_runtime::executor::{
    self as rt, CancelToken, ExecOutcome, ExecRequest, Executor, MountKind, OutputSink, Rootfs,
    StreamKind,
};

use crate::defs::*;
use crate::{count, session_with};

/// Pretends to run: appends the argv to `/log` in the rootfs, reads the
/// secret, and bumps a counter in the cache mount.
#[derive(Default)]
struct FakeExecutor {
    runs: Mutex<Vec<Vec<String>>>,
    secrets_seen: Mutex<Vec<(PathBuf, String)>>,
}

impl Executor for FakeExecutor {
    fn run(
        &self,
        req: &ExecRequest,
        output: &mut dyn OutputSink,
        cancel: &CancelToken,
    ) -> rt::Result<ExecOutcome> {
        let Rootfs::Dir(root) = &req.rootfs else {
            panic!("copy mode expected")
        };
        if cancel.is_canceled() {
            return Err(rt::Error::Canceled {
                container_id: "fake".into(),
                argv: req.process.args.clone(),
            });
        }
        self.runs.lock().unwrap().push(req.process.args.clone());
        let mut log = std::fs::read_to_string(root.join("log")).unwrap_or_default();
        log.push_str(&req.process.args.join(" "));
        log.push('\n');
        std::fs::write(root.join("log"), log).unwrap();
        for m in &req.mounts {
            match &m.kind {
                MountKind::Secret { source } => {
                    let v = std::fs::read_to_string(source).unwrap();
                    self.secrets_seen.lock().unwrap().push((source.clone(), v));
                }
                MountKind::Bind {
                    source,
                    readonly: false,
                } if m.dest == std::path::Path::new("/cache") => {
                    let n: u32 = std::fs::read_to_string(source.join("n"))
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    std::fs::write(source.join("n"), (n + 1).to_string()).unwrap();
                }
                MountKind::Bind {
                    source,
                    readonly: false,
                } => {
                    std::fs::write(source.join("from-exec"), "out").unwrap();
                }
                _ => {}
            }
        }
        if req.process.args.iter().any(|a| a == "fail") {
            output.write(StreamKind::Stderr, b"it failed\n");
            return Err(rt::Error::Canceled {
                container_id: "fake".into(),
                argv: req.process.args.clone(),
            });
        }
        output.write(StreamKind::Stdout, b"hello from the container\n");
        Ok(ExecOutcome {
            container_id: "fake".into(),
            exit_code: 0,
        })
    }
}

fn exec_op(inputs: &[&str], args: &[&str], mounts: Vec<pb::Mount>) -> pb::Op {
    pb::Op {
        inputs: inputs.iter().map(|d| input(d)).collect(),
        op: Some(pb::op::Op::Exec(pb::ExecOp {
            meta: Some(pb::Meta {
                args: args.iter().map(|s| s.to_string()).collect(),
                cwd: "/".into(),
                ..Default::default()
            }),
            mounts,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn root_mount(input: i64) -> pb::Mount {
    pb::Mount {
        input,
        dest: "/".into(),
        output: 0,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_with_mounts_secrets_and_cache() {
    let root = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeExecutor::default());
    let e = Engine::open(
        root.path(),
        EngineConfig {
            max_parallelism: 2,
            executor: Some(fake.clone()),
            rootfs_mode: Some(kiln_engine::ops::RootfsMode::Copy),
            ..Default::default()
        },
    )
    .unwrap();
    let mut def = Def::default();
    let base = def.add(file(&[], vec![act(-1, -1, mkfile("/etc-file", b"base"))]));
    let data = def.add(file(&[], vec![act(-1, -1, mkdir("/data"))]));
    let run = def.add(exec_op(
        &[&base, &data],
        &["sh", "-c", "build"],
        vec![
            root_mount(0),
            pb::Mount {
                input: -1,
                dest: "/cache".into(),
                output: -1,
                mount_type: pb::MountType::Cache as i32,
                cache_opt: Some(pb::CacheOpt {
                    id: "c1".into(),
                    sharing: 0,
                }),
                ..Default::default()
            },
            pb::Mount {
                input: 1,
                selector: "/data".into(),
                dest: "/out".into(),
                output: 1,
                ..Default::default()
            },
            pb::Mount {
                input: -1,
                dest: "/run/secrets/tok".into(),
                output: -1,
                mount_type: pb::MountType::Secret as i32,
                secret_opt: Some(pb::SecretOpt {
                    id: "tok".into(),
                    mode: 0o400,
                    ..Default::default()
                }),
                ..Default::default()
            },
            pb::Mount {
                input: -1,
                dest: "/tmp".into(),
                output: -1,
                mount_type: pb::MountType::Tmpfs as i32,
                ..Default::default()
            },
        ],
    ));
    def.name(&run, "[2/2] RUN build");
    let bytes = def.finish(&run);
    let secret = |s: &mut kiln_engine::Session| {
        s.secrets.insert("tok", b"s3cr3t".to_vec());
    };
    let (s, buf) = session_with(secret, &[]);
    let r = e.solve(&bytes, s).await.unwrap();
    assert_eq!(e.read_file(&r, "/log", 0, None).unwrap(), b"sh -c build\n");
    assert_eq!(e.read_file(&r, "/etc-file", 0, None).unwrap(), b"base");
    let text = buf.text();
    assert!(text.contains("hello from the container"), "{text}");
    // The secret was readable during the run and is gone afterwards; it is
    // in no layer and no log.
    let seen = fake.secrets_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, "s3cr3t");
    assert!(!seen[0].0.exists());
    assert!(!seen[0].0.starts_with(root.path()) || !seen[0].0.exists());
    assert!(!text.contains("s3cr3t"));
    let out = std::process::Command::new("grep")
        .args(["-r", "-l", "s3cr3t"])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "secret found in the state dir: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Second output (the writable bind mount) through a follow-up op.
    let mut def2 = Def::default();
    let base2 = def2.add(file(&[], vec![act(-1, -1, mkfile("/etc-file", b"base"))]));
    let data2 = def2.add(file(&[], vec![act(-1, -1, mkdir("/data"))]));
    let run2 = def2.add(exec_op(
        &[&base2, &data2],
        &["sh", "-c", "build2"],
        vec![
            root_mount(0),
            pb::Mount {
                input: 1,
                selector: "/data".into(),
                dest: "/out".into(),
                output: 1,
                ..Default::default()
            },
        ],
    ));
    let sel = def2.add(pb::Op {
        inputs: vec![pb::Input {
            digest: run2.clone(),
            index: 1,
        }],
        op: Some(pb::op::Op::Merge(pb::MergeOp {
            inputs: vec![pb::MergeInput { input: 0 }],
        })),
        ..Default::default()
    });
    let (s, _) = session_with(|_| {}, &[]);
    let r2 = e.solve(&def2.finish(&sel), s).await.unwrap();
    // The second output is the writable bind mount's source tree.
    assert_eq!(
        e.read_file(&r2, "/data/from-exec", 0, None).unwrap(),
        b"out"
    );

    // Cached on the second solve; the cache mount persisted its counter.
    let (s, buf) = session_with(secret, &[]);
    e.solve(&bytes, s).await.unwrap();
    assert_eq!(count(&buf.text(), "CACHED"), 3, "{}", buf.text());
    let (s, _) = session_with(
        |s| {
            secret(s);
            s.no_cache = true;
        },
        &[],
    );
    e.solve(&bytes, s).await.unwrap();
    let cm = std::fs::read_dir(root.path().join("engine/v1/cachemounts"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    assert_eq!(std::fs::read_to_string(cm.join("n")).unwrap(), "2");

    // A missing secret is a clear error naming it.
    let (s, _) = session_with(|s| s.no_cache = true, &[]);
    let err = e.solve(&bytes, s).await.unwrap_err();
    assert!(
        crate::chain(&err).contains("secret \"tok\" is not provided"),
        "{}",
        crate::chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_without_runtime_and_failing_exec_are_clear() {
    let root = tempfile::tempdir().unwrap();
    let e = crate::engine(root.path());
    let mut def = Def::default();
    let run = def.add(exec_op(&[], &["true"], vec![root_mount(-1)]));
    let (s, _) = session_with(|_| {}, &[]);
    let err = e.solve(&def.finish(&run), s).await.unwrap_err();
    assert!(
        crate::chain(&err).contains("no container runtime"),
        "{}",
        crate::chain(&err)
    );

    let fake = Arc::new(FakeExecutor::default());
    let e = Engine::open(
        root.path(),
        EngineConfig {
            executor: Some(fake),
            rootfs_mode: Some(kiln_engine::ops::RootfsMode::Copy),
            ..Default::default()
        },
    )
    .unwrap();
    let mut def = Def::default();
    let run = def.add(exec_op(&[], &["fail"], vec![root_mount(-1)]));
    let (s, buf) = session_with(|_| {}, &[]);
    let err = e.solve(&def.finish(&run), s).await.unwrap_err();
    assert!(
        crate::chain(&err).contains("did not complete successfully"),
        "{}",
        crate::chain(&err)
    );
    assert!(buf.text().contains("it failed"), "{}", buf.text());
}

/// Runs until cancelled.
struct SlowExecutor;

impl Executor for SlowExecutor {
    fn run(
        &self,
        req: &ExecRequest,
        _output: &mut dyn OutputSink,
        cancel: &CancelToken,
    ) -> rt::Result<ExecOutcome> {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(20) {
            if cancel.is_canceled() {
                return Err(rt::Error::Canceled {
                    container_id: "slow".into(),
                    argv: req.process.args.clone(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(ExecOutcome {
            container_id: "slow".into(),
            exit_code: 0,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_exec_kills_it() {
    let root = tempfile::tempdir().unwrap();
    let e = Engine::open(
        root.path(),
        EngineConfig {
            executor: Some(Arc::new(SlowExecutor)),
            rootfs_mode: Some(kiln_engine::ops::RootfsMode::Copy),
            ..Default::default()
        },
    )
    .unwrap();
    let mut def = Def::default();
    let run = def.add(exec_op(&[], &["sleep", "forever"], vec![root_mount(-1)]));
    let (s, _) = session_with(|_| {}, &[]);
    let cancel = s.cancel.clone();
    let t = std::time::Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let err = e.solve(&def.finish(&run), s).await.unwrap_err();
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert!(matches!(err, kiln_engine::SolveError::Cancelled), "{err:?}");
}

/// Sleeps a little and records how many runs overlap.
#[derive(Default)]
struct OverlapExecutor {
    running: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
    runs: std::sync::atomic::AtomicUsize,
}

impl Executor for OverlapExecutor {
    fn run(
        &self,
        _req: &ExecRequest,
        _output: &mut dyn OutputSink,
        _cancel: &CancelToken,
    ) -> rt::Result<ExecOutcome> {
        use std::sync::atomic::Ordering::SeqCst;
        self.runs.fetch_add(1, SeqCst);
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(now, SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(300));
        self.running.fetch_sub(1, SeqCst);
        Ok(ExecOutcome {
            container_id: "o".into(),
            exit_code: 0,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_execs_run_in_parallel_and_identical_ones_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let root = tempfile::tempdir().unwrap();
    let ex = Arc::new(OverlapExecutor::default());
    let e = Engine::open(
        root.path(),
        EngineConfig {
            executor: Some(ex.clone()),
            rootfs_mode: Some(kiln_engine::ops::RootfsMode::Copy),
            max_parallelism: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let mut def = Def::default();
    let a = def.add(exec_op(&[], &["a"], vec![root_mount(-1)]));
    let b = def.add(exec_op(&[], &["b"], vec![root_mount(-1)]));
    let c = def.add(exec_op(&[], &["c"], vec![root_mount(-1)]));
    let m = def.add(pb::Op {
        inputs: vec![input(&a), input(&b), input(&c), input(&a)],
        op: Some(pb::op::Op::Merge(pb::MergeOp {
            inputs: (0..4).map(|i| pb::MergeInput { input: i }).collect(),
        })),
        ..Default::default()
    });
    let bytes = def.finish(&m);
    let t = std::time::Instant::now();
    let (s1, _) = session_with(|_| {}, &[]);
    let (s2, _) = session_with(|_| {}, &[]);
    let (r1, r2) = tokio::join!(e.solve(&bytes, s1), e.solve(&bytes, s2));
    assert_eq!(r1.unwrap(), r2.unwrap());
    assert_eq!(
        ex.runs.load(SeqCst),
        3,
        "each exec ran once across both solves"
    );
    assert_eq!(ex.max.load(SeqCst), 3, "the three execs overlapped");
    assert!(
        t.elapsed() < std::time::Duration::from_millis(850),
        "{:?}",
        t.elapsed()
    );
}
