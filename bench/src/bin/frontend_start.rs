//! How long a frontend takes to start: compiled from scratch (cold), loaded
//! from the disk cache of precompiled artifacts (a new process), and started
//! again in a process that already holds it (new Store + instantiate +
//! `build`). Run with `cargo run --release -p kiln-bench --bin frontend_start
//! [FILE.wasm]`; without a file it uses the built-in Dockerfile frontend.

use std::time::Instant;

use kiln::frontend::{FrontendLimits, FrontendRuntime};
use kiln_bench::{NullBridge, median, ms, sample};

fn main() -> anyhow::Result<()> {
    let wasm = match std::env::args().nth(1) {
        Some(p) => std::fs::read(&p)?,
        None => kiln::builtin::get("dockerfile.v0")
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| anyhow::anyhow!("no built-in dockerfile.v0"))?
            .to_vec(),
    };
    let cache = tempfile::tempdir()?;
    let n = 20;

    let cold = sample(3, || {
        let rt = FrontendRuntime::new(None).unwrap();
        rt.load(&wasm).unwrap();
    });

    // Fill the disk cache once, then time loads by fresh runtimes.
    FrontendRuntime::new(Some(cache.path().to_path_buf()))?.load(&wasm)?;
    let cached = sample(n, || {
        let rt = FrontendRuntime::new(Some(cache.path().to_path_buf())).unwrap();
        let fe = rt.load(&wasm).unwrap();
        assert!(fe.cache_hit);
    });

    // Already loaded: a new Store and instantiate per build; the frontend
    // fails fast on its missing inputs, which is the start cost we want.
    let rt = FrontendRuntime::new(Some(cache.path().to_path_buf()))?;
    let fe = rt.load(&wasm)?;
    let loaded = sample(n, || {
        let _ = rt.run(
            &fe,
            Box::new(NullBridge),
            Vec::new(),
            Vec::new(),
            FrontendLimits::default(),
        );
    });
    let start_to_first_call = {
        let t = Instant::now();
        let rt = FrontendRuntime::new(Some(cache.path().to_path_buf()))?;
        let fe = rt.load(&wasm)?;
        let _ = rt.run(
            &fe,
            Box::new(NullBridge),
            Vec::new(),
            Vec::new(),
            FrontendLimits::default(),
        );
        t.elapsed()
    };

    println!("frontend start ({} bytes of component)", wasm.len());
    println!("  cold compile               median {}", ms(median(&cold)));
    println!(
        "  from the disk cache        median {}",
        ms(median(&cached))
    );
    println!(
        "  already loaded (new Store) median {}",
        ms(median(&loaded))
    );
    println!("  disk cache + first build   {}", ms(start_to_first_call));
    Ok(())
}
