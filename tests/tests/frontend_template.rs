//! The frontend template (`examples/frontends/hello`), copied outside the
//! workspace with only the SDK as a dependency, builds and runs in kiln —
//! following the steps `docs/frontend-authors.md` gives, and no others.

use std::path::Path;
use std::process::Command;

use kiln_e2e::{kiln, run_ok, workspace_root};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "target" || name == "Cargo.lock" {
            continue;
        }
        let dst = to.join(&name);
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn template_builds_outside_the_workspace_and_runs() {
    let ws = workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let crate_dir = tmp.path().join("hello");
    // Step 1 of the guide: copy the template.
    copy_dir(&ws.join("examples/frontends/hello"), &crate_dir);
    // Step 2: point the SDK dependency at your kiln checkout.
    let manifest = crate_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let sdk = ws.join("frontends/sdk");
    let text = text.replace("../../../frontends/sdk", sdk.to_str().unwrap());
    std::fs::write(&manifest, text).unwrap();
    // Pin dependency versions to the ones kiln itself is tested with.
    std::fs::copy(ws.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Step 3: test natively.
    let st = Command::new(&cargo)
        .current_dir(&crate_dir)
        .args(["test", "--quiet"])
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .unwrap();
    assert!(st.success(), "cargo test of the template");
    // Step 4: build the component.
    let st = Command::new(&cargo)
        .current_dir(&crate_dir)
        .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release"])
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .unwrap();
    assert!(
        st.success(),
        "cargo build of the template for wasm32-wasip2"
    );
    let wasm = crate_dir.join("target/wasm32-wasip2/release/hello_frontend.wasm");
    assert!(wasm.exists());

    // Step 5: run it with kiln.
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), b"hello, template\n").unwrap();
    let root = tmp.path().join("root");
    let out_dir = tmp.path().join("out");
    run_ok(
        kiln(&root)
            .args(["build", "--frontend", "gateway.v0"])
            .arg(format!("--opt=source={}", wasm.display()))
            .arg(format!("--local=context={}", ctx.display()))
            .arg(format!("--output=type=local,dest={}", out_dir.display())),
    );
    assert_eq!(
        std::fs::read(out_dir.join("hello.txt")).unwrap(),
        b"hello, template\n"
    );
}
