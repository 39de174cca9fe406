//! Helpers for kiln's end-to-end tests: where the `kiln` binary and the
//! conformance data are, and small process utilities. Registry, base-image,
//! HTTP-server and git-server fixtures live in their own modules.

pub mod busybox;
pub mod gitserver;
pub mod httpserver;
pub mod registry;
pub mod sshserver;

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

/// The vertexes of a `--progress=rawjson` stream: digest → (name, cached).
pub fn rawjson_vertexes(stderr: &[u8]) -> std::collections::BTreeMap<String, (String, bool)> {
    let mut out = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(stderr).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for vx in v["vertexes"].as_array().into_iter().flatten() {
            let d = vx["digest"].as_str().unwrap_or_default().to_string();
            let name = vx["name"].as_str().unwrap_or_default().to_string();
            let cached = vx["cached"].as_bool().unwrap_or(false);
            let e: &mut (String, bool) = out.entry(d).or_insert((name, cached));
            e.1 |= cached;
        }
    }
    out
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

/// An OCI layout (tag `1`) whose single layer holds `../` paths, an absolute path, a
/// symlink to /tmp written through, and a hardlink to /etc/passwd.
pub fn hostile_oci_layout(dir: &Path, marker: &str) -> (PathBuf, String) {
    let body: &[u8] = b"NOT ON THE HOST\n";
    let dotdot = format!("../../../../../../tmp/{marker}-dotdot");
    let abs = format!("/tmp/{marker}-abs");
    let through = format!("tmplink/{marker}-link");
    let hard = format!("{marker}-hard");
    let t = raw_tar(&[
        (&dotdot, b'0', "", body),
        (&abs, b'0', "", body),
        ("tmplink", b'2', "/tmp", b""),
        (&through, b'0', "", body),
        (&hard, b'1', "/etc/passwd", b""),
    ]);
    use sha2::Digest as _;
    let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer = sha(&t);
    std::fs::write(blobs.join(&layer), &t).unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer}"]}}}}"#
    );
    let cd = sha(config.as_bytes());
    std::fs::write(blobs.join(&cd), &config).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer}","size":{}}}]}}"#,
        config.len(),
        t.len()
    );
    let md = sha(manifest.as_bytes());
    std::fs::write(blobs.join(&md), &manifest).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"1"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    (layout, format!("sha256:{md}"))
}

/// A ustar archive written byte by byte, entries exactly as given (names
/// with `..` or a leading `/`, links anywhere): `(name, type flag, link
/// target, content)`. Archive libraries refuse to write such entries, which is
/// why the hostile-input tests need this.
pub fn raw_tar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut t = Vec::new();
    for (name, kind, link, data) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = *kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        t.extend_from_slice(&h);
        t.extend_from_slice(data);
        t.resize(t.len().div_ceil(512) * 512, 0);
    }
    t.extend_from_slice(&[0u8; 1024]);
    t
}

/// An exclusive `flock` on a file, held by another process (as another
/// kiln would hold it) until dropped.
pub struct FlockHolder(std::process::Child);

impl FlockHolder {
    /// Takes the lock on `path` (waiting for it) and returns once held.
    pub fn hold(path: &Path) -> FlockHolder {
        let mut child = Command::new("flock")
            .arg(path)
            .args(["sh", "-c", "echo held; cat > /dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn flock");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().expect("piped")),
            &mut line,
        )
        .expect("read flock's output");
        assert_eq!(line, "held\n", "flock did not take {}", path.display());
        FlockHolder(child)
    }
}

impl Drop for FlockHolder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Compiles `tests/fixtures/sockclient.c` (static, so it runs in a busybox
/// image) to `dest`: it connects to `$SSH_AUTH_SOCK`, sends `ping`, and
/// prints the reply.
pub fn build_sockclient(dest: &Path) {
    let src = workspace_root().join("tests/fixtures/sockclient.c");
    run_ok(
        Command::new("gcc")
            .args(["-static", "-O1", "-o"])
            .arg(dest)
            .arg(&src),
    );
}

/// A stand-in ssh agent on a Unix socket at `sock`: it answers one
/// connection's first line with `pong:<line>`.
pub fn pong_agent(sock: &Path) -> std::thread::JoinHandle<()> {
    use std::io::{BufRead as _, Write as _};
    let listener = std::os::unix::net::UnixListener::bind(sock).expect("bind the agent socket");
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut w = conn;
        w.write_all(format!("pong:{line}").as_bytes()).unwrap();
    })
}
