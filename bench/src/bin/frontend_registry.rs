//! A frontend's start time when it comes from a registry: cold (pull,
//! verify, compile), from the disk cache in a new process-like runtime, and
//! already loaded in the process (new Store + instantiate + `build`).
//! Starts Debian's `docker-registry` on a free loopback port.
//! Run with `cargo run --release -p kiln-bench --bin frontend_registry [FILE.wasm]`;
//! without a file it uses the built-in Dockerfile frontend.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln::frontend::{FrontendLimits, FrontendRuntime};
use kiln_bench::{NullBridge, median, ms, sample};

/// The registry process, its storage (removed on drop) and its port.
struct Registry(
    Child,
    #[allow(dead_code, reason = "kept for its Drop")] tempfile::TempDir,
    u16,
);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_registry() -> anyhow::Result<Registry> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("docker-registry: {e} (apt-get install docker-registry)"))?;
    let reg = Registry(child, dir, port);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("docker-registry did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(reg)
}

fn main() -> anyhow::Result<()> {
    let wasm = match std::env::args().nth(1) {
        Some(p) => std::fs::read(&p)?,
        None => kiln::builtin::get("dockerfile.v0")
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| anyhow::anyhow!("no built-in dockerfile.v0"))?
            .to_vec(),
    };
    let reg = start_registry()?;
    let reference = format!("127.0.0.1:{}/bench/frontend:1", reg.2);
    let rt = tokio::runtime::Runtime::new()?;
    let registry = kiln_runtime::registry::RegistryClient::default();
    {
        let scratch = tempfile::tempdir()?;
        let store = kiln_store::ContentStore::new(scratch.path())?;
        rt.block_on(kiln::frontend::artifact::push(
            &registry, &store, &wasm, &reference,
        ))?;
    }

    // Cold: an empty state dir pulls, verifies and compiles.
    let cold = sample(3, || {
        let root = tempfile::tempdir().unwrap();
        let store = kiln_store::ContentStore::new(root.path()).unwrap();
        let cache = root.path().join("frontends");
        let (bytes, how) = rt
            .block_on(kiln::frontend::artifact::pull(
                &registry, &store, &cache, &reference,
            ))
            .unwrap();
        assert_eq!(how, "pulled");
        let fr = FrontendRuntime::new(Some(cache)).unwrap();
        fr.load(&bytes).unwrap();
    });

    // Warm disk cache: a new runtime on a state dir that has pulled before.
    let root = tempfile::tempdir()?;
    let store = kiln_store::ContentStore::new(root.path())?;
    let cache = root.path().join("frontends");
    let pinned = {
        let (bytes, _) = rt.block_on(kiln::frontend::artifact::pull(
            &registry, &store, &cache, &reference,
        ))?;
        FrontendRuntime::new(Some(cache.clone()))?.load(&bytes)?;
        let m = kiln::frontend::artifact::manifest_for(&bytes);
        format!("{reference}@{}", kiln_store::Digest::of_bytes(&m))
    };
    let cached = sample(10, || {
        let (bytes, _) = rt
            .block_on(kiln::frontend::artifact::pull(
                &registry, &store, &cache, &pinned,
            ))
            .unwrap();
        let fr = FrontendRuntime::new(Some(cache.clone())).unwrap();
        assert!(fr.load(&bytes).unwrap().cache_hit);
    });

    // Loaded: the component is in memory; each build gets a new Store.
    let fr = FrontendRuntime::new(Some(cache.clone()))?;
    let (bytes, _) = rt.block_on(kiln::frontend::artifact::pull(
        &registry, &store, &cache, &pinned,
    ))?;
    let fe = fr.load(&bytes)?;
    let loaded = sample(20, || {
        let _ = fr.run(
            &fe,
            Box::new(NullBridge),
            Vec::new(),
            Vec::new(),
            FrontendLimits::default(),
        );
    });

    println!(
        "frontend from a registry ({} bytes of component, {reference})",
        wasm.len()
    );
    println!(
        "  cold: pull + verify + compile  median {}",
        ms(median(&cold))
    );
    println!(
        "  disk cache (pinned reference)  median {}",
        ms(median(&cached))
    );
    println!(
        "  already loaded (new Store)     median {}",
        ms(median(&loaded))
    );
    drop(reg);
    Ok(())
}
