//! The frontend sandbox: a third-party-style guest (tests/guests/testguest)
//! runs against a fake bridge; each hostile behaviour must end in a clear
//! error that names the limit, within seconds, with the host unharmed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kiln::frontend::{
    Bridge, FileStat, FrontendError, FrontendLimits, FrontendRuntime, ImageConfig, LoadedFrontend,
    Warning,
};

/// Build the test guest once per test process.
fn testguest_wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = root.join("target/guests");
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args([
                "build",
                "-p",
                "kiln-testguest",
                "--target",
                "wasm32-wasip2",
                "--profile",
                "wasm",
            ])
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("run cargo to build the test guest");
        assert!(status.success(), "building the test guest failed");
        std::fs::read(target.join("wasm32-wasip2/wasm/kiln_testguest.wasm")).expect("read guest")
    })
}

fn runtime() -> &'static (FrontendRuntime, LoadedFrontend) {
    static RT: OnceLock<(FrontendRuntime, LoadedFrontend)> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = FrontendRuntime::new(None).expect("runtime");
        let fe = rt.load(testguest_wasm()).expect("load guest");
        (rt, fe)
    })
}

/// A bridge that serves `local://context` from a directory.
#[derive(Default)]
struct FakeBridge {
    context: PathBuf,
    defs: Arc<Mutex<Vec<Vec<u8>>>>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Bridge for FakeBridge {
    fn solve(&mut self, definition: Vec<u8>, _evaluate: bool) -> Result<String, FrontendError> {
        let mut d = self.defs.lock().unwrap();
        d.push(definition);
        Ok(format!("h{}", d.len()))
    }
    fn read_file(
        &mut self,
        _handle: &str,
        path: &str,
        _offset: u64,
        _length: Option<u64>,
    ) -> Result<Vec<u8>, FrontendError> {
        std::fs::read(self.context.join(path)).map_err(|e| FrontendError::new(e.to_string()))
    }
    fn read_dir(
        &mut self,
        _: &str,
        _: &str,
        _: Option<&str>,
    ) -> Result<Vec<FileStat>, FrontendError> {
        Ok(Vec::new())
    }
    fn stat_file(&mut self, _: &str, path: &str) -> Result<FileStat, FrontendError> {
        Err(FrontendError::new(format!("{path}: not found")))
    }
    fn resolve_image_config(
        &mut self,
        r: &str,
        _: Option<(&str, &str, Option<&str>)>,
        _: &str,
    ) -> Result<ImageConfig, FrontendError> {
        Err(FrontendError::new(format!("{r}: no registry here")))
    }
    fn warn(&mut self, _: Warning) {}
    fn log(&mut self, line: &str) {
        let mut l = self.logs.lock().unwrap();
        if l.len() < 100 {
            l.push(line.chars().take(200).collect());
        }
    }
}

fn run_mode(mode: &str, limits: FrontendLimits) -> (anyhow::Result<()>, Duration) {
    let (rt, fe) = runtime();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hello from the context\n").unwrap();
    let bridge = FakeBridge {
        context: dir.path().to_path_buf(),
        ..Default::default()
    };
    let mut opts = BTreeMap::new();
    opts.insert("mode".to_string(), mode.to_string());
    let t0 = Instant::now();
    let r = rt.run(
        fe,
        Box::new(bridge),
        opts.into_iter().collect(),
        Vec::new(),
        limits,
    );
    let elapsed = t0.elapsed();
    let r = match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!("frontend error: {e}")),
        Err(e) => Err(e),
    };
    (r, elapsed)
}

fn expect_error(mode: &str, limits: FrontendLimits, needle: &str) {
    let (r, elapsed) = run_mode(mode, limits);
    let err = format!("{:#}", r.expect_err("hostile guest must fail"));
    assert!(
        err.contains(needle),
        "mode {mode}: error {err:?} does not mention {needle:?}"
    );
    // Generous bound: the point is "seconds, not forever"; not a timing claim.
    assert!(
        elapsed < Duration::from_secs(60),
        "mode {mode} took {elapsed:?}"
    );
}

#[test]
fn well_behaved_guest_reads_a_file_and_returns_llb() {
    let (rt, fe) = runtime();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hi\n").unwrap();
    let defs = Arc::new(Mutex::new(Vec::new()));
    let bridge = FakeBridge {
        context: dir.path().to_path_buf(),
        defs: defs.clone(),
        ..Default::default()
    };
    let out = rt.run(
        fe,
        Box::new(bridge),
        Vec::new(),
        Vec::new(),
        FrontendLimits::default(),
    );
    let out = out.expect("no trap").expect("no frontend error");
    assert_eq!(out.refs, vec![(String::new(), "h2".to_string())]);
    assert!(out.metadata("containerimage.config").is_some());
    let defs = defs.lock().unwrap();
    assert_eq!(defs.len(), 2);
    let def = kiln_llb::Definition::decode(&defs[1]).expect("valid LLB");
    let dump = format!("{def:?}");
    assert!(dump.contains("greeting.txt"), "{dump}");
}

#[test]
fn endless_loop_hits_the_cpu_limit() {
    let limits = FrontendLimits {
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    expect_error("loop", limits, "CPU time limit");
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let limits = FrontendLimits {
        max_memory_bytes: 64 << 20,
        ..Default::default()
    };
    expect_error("membomb", limits, "memory limit");
}

#[test]
fn panic_is_reported_with_its_message() {
    expect_error("panic", FrontendLimits::default(), "panics on purpose");
}

#[test]
fn trap_is_reported() {
    expect_error("trap", FrontendLimits::default(), "unreachable");
}

#[test]
fn huge_log_hits_the_log_limit() {
    expect_error("biglog", FrontendLimits::default(), "log limit");
}

#[test]
fn huge_stdout_hits_the_log_limit() {
    expect_error("bigprint", FrontendLimits::default(), "log limit");
}

#[test]
fn huge_result_hits_the_result_limit() {
    let limits = FrontendLimits {
        max_memory_bytes: 1 << 30,
        ..Default::default()
    };
    expect_error("bigresult", limits, "result");
}

#[test]
fn too_many_solves_hit_the_solve_limit() {
    let limits = FrontendLimits {
        max_solves: 50,
        ..Default::default()
    };
    expect_error("solves", limits, "solve calls");
}

#[test]
fn host_files_are_out_of_reach() {
    let (r, _) = run_mode("openfile", FrontendLimits::default());
    let err = format!("{:#}", r.unwrap_err());
    assert!(!err.contains("SANDBOX BREACH"), "{err}");
    assert!(err.contains("cannot open /etc/passwd"), "{err}");
}

#[test]
fn the_host_survives_all_of_it() {
    // After every hostile run above (in any order), a normal build still works.
    for mode in ["panic", "trap"] {
        let _ = run_mode(mode, FrontendLimits::default());
    }
    let (r, _) = run_mode("", FrontendLimits::default());
    r.expect("a well-behaved build after hostile ones");
}

#[test]
fn precompiled_artifact_is_cached_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let first = FrontendRuntime::new(Some(cache.path().to_path_buf())).unwrap();
    let a = first.load(testguest_wasm()).unwrap();
    assert!(!a.cache_hit);
    drop(first);
    let second = FrontendRuntime::new(Some(cache.path().to_path_buf())).unwrap();
    let b = second.load(testguest_wasm()).unwrap();
    assert!(b.cache_hit, "second load must come from the disk cache");
    assert_eq!(a.digest, b.digest);
}

#[test]
fn a_core_module_is_refused_clearly() {
    let (rt, _) = runtime();
    let err = rt
        .load(b"\0asm\x01\0\0\0")
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("core WebAssembly module"), "{err}");
}

#[test]
fn a_corrupt_component_is_refused_clearly() {
    let (rt, _) = runtime();
    let mut bytes = testguest_wasm().to_vec();
    let n = bytes.len();
    bytes.truncate(n / 2);
    let err = format!("{:#}", rt.load(&bytes).err().expect("refused"));
    assert!(err.contains("not a valid component"), "{err}");
}
