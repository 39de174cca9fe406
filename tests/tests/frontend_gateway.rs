//! A frontend that is not built in, loaded by path with
//! `--frontend gateway.v0 --opt source=PATH`: it reads a file from a
//! `--local`, builds LLB and returns it; `type=llb` writes that LLB and
//! `dump-llb` shows it.

use kiln_e2e::{kiln, run_fail, run_ok, testguest_wasm};
use serde_json::Value;

fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hello from a local\n").unwrap();
    dir
}

fn dump(root: &std::path::Path, def: &std::path::Path) -> Vec<Value> {
    let out = run_ok(kiln(root).args(["debug", "dump-llb"]).arg(def));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn gateway_frontend_by_path_reads_a_local_and_returns_llb() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let out_dir = tempfile::tempdir().unwrap();
    let def = out_dir.path().join("result.pb");
    let wasm = testguest_wasm();
    let out = run_ok(
        kiln(root.path())
            .args(["build", "--progress", "plain", "--frontend", "gateway.v0"])
            .arg(format!("--opt=source={}", wasm.display()))
            .arg(format!("--local=context={}", ctx.path().display()))
            .arg(format!("--output=type=llb,dest={}", def.display())),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("testguest read 19 bytes from hello.txt"),
        "{stderr}"
    );

    let lines = dump(root.path(), &def);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let mkfile = &lines[0]["Op"]["Op"]["file"]["actions"][0]["Action"]["mkfile"];
    assert_eq!(mkfile["path"], "/greeting.txt");
    let data = mkfile["data"].as_str().unwrap();
    assert_eq!(data, base64_of(b"hello from a local\n-- via testguest\n"));

    // The same inputs give the same LLB, and the second start of the
    // frontend comes from the compiled-artifact cache.
    let def2 = out_dir.path().join("again.pb");
    let out = run_ok(
        kiln(root.path())
            .args(["build", "--progress", "plain", "--frontend", "gateway.v0"])
            .arg(format!("--opt=source={}", wasm.display()))
            .arg(format!("--local=context={}", ctx.path().display()))
            .arg(format!("--output=type=llb,dest={}", def2.display())),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loaded from the compiled-artifact cache"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&def).unwrap(), std::fs::read(&def2).unwrap());
}

#[test]
fn frontend_errors_and_unknown_names_are_clear() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let wasm = testguest_wasm();
    let out = run_fail(
        kiln(root.path())
            .args(["build", "--frontend", "gateway.v0", "--opt", "mode=error"])
            .arg(format!("--opt=source={}", wasm.display()))
            .arg(format!("--local=context={}", ctx.path().display())),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Testfile:3: the test guest reports an error here"),
        "{err}"
    );

    let out = run_fail(kiln(root.path()).args(["build", "--frontend", "nosuch.v9"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown frontend") && err.contains("dockerfile.v0"),
        "{err}"
    );

    let out = run_fail(kiln(root.path()).args(["build", "--frontend", "gateway.v0"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--opt source="), "{err}");
}

#[test]
fn hostile_frontend_through_the_cli_names_the_limit() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let wasm = testguest_wasm();
    let out = run_fail(
        kiln(root.path())
            .args([
                "build",
                "--frontend",
                "gateway.v0",
                "--opt",
                "mode=loop",
                "--frontend-timeout",
                "0.5",
            ])
            .arg(format!("--opt=source={}", wasm.display()))
            .arg(format!("--local=context={}", ctx.path().display())),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CPU time limit") && err.contains("--frontend-timeout"),
        "{err}"
    );
}

fn base64_of(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}
