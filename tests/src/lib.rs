//! Helpers for kiln's end-to-end tests: where the `kiln` binary and the
//! conformance data are, and small process utilities. Registry and base-image
//! fixtures live in their own modules.

pub mod busybox;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (the directory holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `kiln` binary under test: `$KILN_BIN`, or the one cargo built next to
/// the test executable (`target/<profile>/kiln`).
pub fn kiln_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/kiln
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("kiln");
    assert!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build -p kiln` (the README's test command does)",
        bin.display()
    );
    bin
}

/// The conformance data directory: `$KILN_CONFORMANCE_DIR`, or
/// `../shared/conformance` next to the workspace.
pub fn conformance_dir() -> PathBuf {
    match std::env::var_os("KILN_CONFORMANCE_DIR") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("../shared/conformance"),
    }
}

/// A `kiln` command with a private state dir.
pub fn kiln(root: &Path) -> Command {
    let mut c = Command::new(kiln_bin());
    c.arg("--root").arg(root);
    c
}

/// Run a command and return its output, failing the test with both streams
/// when it does not exit 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Run a command that must fail; return its output.
pub fn run_fail(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        !out.status.success(),
        "{cmd:?} unexpectedly succeeded\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether a host tool is on PATH. Tests that need one skip loudly when it is
/// missing outside CI, and fail in CI (where `.ci/run` installs everything).
pub fn require_tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("required tool `{name}` is not installed; .ci/run must install it");
        }
        eprintln!("SKIPPING: `{name}` is not installed on this machine");
    }
    found
}

/// Build the third-party-style test frontend (`tests/guests/testguest`) for
/// `wasm32-wasip2` once per test process and return the component's path.
pub fn testguest_wasm() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let root = workspace_root();
        let target = root.join("target/guests");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
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
        target.join("wasm32-wasip2/wasm/kiln_testguest.wasm")
    })
    .clone()
}
