//! Compiles the built-in frontends to `wasm32-wasip2` and places them in
//! `OUT_DIR` for `include_bytes!`.
//!
//! - `KILN_PREBUILT_FRONTENDS=DIR` copies `kiln_dockerfile.wasm` and
//!   `kiln_buildpacks.wasm` from DIR instead of building.
//! - Without the `embed-frontends` feature nothing is built.
//!
//! It also generates the daemon's gRPC code from `proto/control.proto`
//! with protox (a protobuf compiler in Rust, so no `protoc` is needed).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const GUESTS: &[(&str, &str)] = &[
    ("kiln-dockerfile", "kiln_dockerfile.wasm"),
    ("kiln-buildpacks", "kiln_buildpacks.wasm"),
];

const WATCHED: &[&str] = &[
    "../wit",
    "../llb/src",
    "../llb/Cargo.toml",
    "../frontends/sdk/src",
    "../frontends/sdk/Cargo.toml",
    "../frontends/dockerfile/src",
    "../frontends/dockerfile/Cargo.toml",
    "../frontends/buildpacks/src",
    "../frontends/buildpacks/Cargo.toml",
    "../Cargo.lock",
];

fn main() {
    compile_protos();
    println!("cargo::rerun-if-env-changed=KILN_PREBUILT_FRONTENDS");
    if env::var_os("CARGO_FEATURE_EMBED_FRONTENDS").is_none() {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));

    if let Some(dir) = env::var_os("KILN_PREBUILT_FRONTENDS") {
        let dir = PathBuf::from(dir);
        for (_, file) in GUESTS {
            let src = dir.join(file);
            println!("cargo::rerun-if-changed={}", src.display());
            if let Err(e) = std::fs::copy(&src, out.join(file)) {
                fail(&format!(
                    "KILN_PREBUILT_FRONTENDS: cannot copy {}: {e}",
                    src.display()
                ));
            }
        }
        return;
    }

    for w in WATCHED {
        let p = manifest_dir.join(w);
        if p.exists() {
            println!("cargo::rerun-if-changed={}", p.display());
        } else {
            println!(
                "cargo::warning=build script watches {} which does not exist",
                p.display()
            );
        }
    }

    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(sysroot) = sysroot
        && !Path::new(&sysroot)
            .join("lib/rustlib/wasm32-wasip2/lib")
            .is_dir()
    {
        fail(
            "the Rust target `wasm32-wasip2` is not installed for this toolchain; run \
             `rustup target add wasm32-wasip2` (or build with --no-default-features to skip the \
             built-in frontends, or set KILN_PREBUILT_FRONTENDS=<dir of .wasm files>)",
        );
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out.join("wasm-target");
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(manifest_dir.join("../Cargo.toml"))
        .args(["--target", "wasm32-wasip2", "--profile", "wasm"])
        .arg("--target-dir")
        .arg(&target_dir);
    for (pkg, _) in GUESTS {
        cmd.args(["-p", pkg]);
    }
    // The outer build's flags are for the host, not for the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    // Cargo reads the build script's stdout: send the nested output to stderr.
    cmd.stdout(Stdio::from(std::io::stderr().try_clone_to_owned_stdio()));
    let status = cmd.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "building the built-in frontends for wasm32-wasip2 failed ({s})"
        )),
        Err(e) => fail(&format!(
            "cannot run cargo to build the built-in frontends: {e}"
        )),
    }
    for (_, file) in GUESTS {
        let built = target_dir.join("wasm32-wasip2/wasm").join(file);
        if let Err(e) = std::fs::copy(&built, out.join(file)) {
            fail(&format!(
                "built frontend {} is missing: {e}",
                built.display()
            ));
        }
    }
}

fn fail(msg: &str) -> ! {
    println!("cargo::error={msg}");
    eprintln!("error: {msg}");
    std::process::exit(1);
}

trait StderrStdio {
    fn try_clone_to_owned_stdio(&self) -> std::fs::File;
}

impl StderrStdio for std::io::Stderr {
    fn try_clone_to_owned_stdio(&self) -> std::fs::File {
        use std::os::fd::AsFd;
        let fd = self.as_fd().try_clone_to_owned().expect("dup stderr");
        std::fs::File::from(fd)
    }
}

/// `proto/control.proto` → `OUT_DIR/kiln.control.v1.rs` (messages, client
/// and server).
fn compile_protos() {
    let proto = "proto/control.proto";
    println!("cargo::rerun-if-changed={proto}");
    let fds = match protox::compile([proto], ["proto"]) {
        Ok(f) => f,
        Err(e) => fail(&format!("{proto}: {e}")),
    };
    if let Err(e) = tonic_prost_build::configure()
        .btree_map(".")
        .compile_fds(fds)
    {
        fail(&format!("generating gRPC code from {proto}: {e}"));
    }
}
