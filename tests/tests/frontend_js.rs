//! A frontend written in JavaScript (`examples/frontends/js-hello`) builds
//! with the npm tools its lockfile pins, and runs in kiln: it reads a file
//! from the context, returns LLB it encoded by hand, and reports an error
//! with a location.

use std::path::Path;
use std::process::Command;

use kiln_e2e::{kiln, require_tool, run_fail, run_ok, workspace_root};

/// Copy the example's sources (not its `node_modules` or a built component).
fn copy_sources(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let skip = name == "node_modules" || name.to_string_lossy().ends_with(".wasm");
        if skip || !e.file_type().unwrap().is_file() {
            continue;
        }
        std::fs::copy(e.path(), to.join(&name)).unwrap();
    }
}

fn npm(dir: &Path) -> Command {
    let mut c = Command::new("npm");
    c.current_dir(dir)
        .env("npm_config_update_notifier", "false")
        .env("npm_config_fund", "false")
        .env("npm_config_audit", "false");
    c
}

#[test]
fn javascript_frontend_builds_with_npm_and_runs() {
    if !require_tool("npm") {
        return;
    }
    let ws = workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    // The same layout as the repository, so the README's commands (and the
    // relative WIT path in `npm run build`) work unchanged.
    let example = tmp.path().join("examples/frontends/js-hello");
    copy_sources(&ws.join("examples/frontends/js-hello"), &example);
    std::fs::create_dir_all(tmp.path().join("wit")).unwrap();
    std::fs::copy(
        ws.join("wit/gateway.wit"),
        tmp.path().join("wit/gateway.wit"),
    )
    .unwrap();

    run_ok(npm(&example).args(["ci", "--no-audit", "--no-fund"]));
    run_ok(npm(&example).args(["run", "build"]));
    let wasm = example.join("frontend.wasm");
    assert!(wasm.exists(), "npm run build wrote no frontend.wasm");

    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), b"hello from JavaScript\n").unwrap();
    std::fs::write(ctx.join("empty.txt"), b"").unwrap();
    let root = tmp.path().join("root");
    let out_dir = tmp.path().join("out");
    let out = run_ok(
        kiln(&root)
            .args(["build", "--frontend", "gateway.v0"])
            .arg(format!("--opt=source={}", wasm.display()))
            .arg(format!("--local=context={}", ctx.display()))
            .arg(format!("--output=type=local,dest={}", out_dir.display())),
    );
    assert_eq!(
        std::fs::read(out_dir.join("hello.txt")).unwrap(),
        b"hello from JavaScript\n"
    );
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("js-hello: 22 bytes from hello.txt"),
        "the frontend's log line is missing:\n{log}"
    );

    // An error thrown by `build` reaches the user with its location.
    let out = run_fail(
        kiln(&root)
            .args(["build", "--frontend", "gateway.v0"])
            .arg(format!("--opt=source={}", wasm.display()))
            .arg("--opt=file=empty.txt")
            .arg(format!("--local=context={}", ctx.display()))
            .arg(format!(
                "--output=type=local,dest={}",
                tmp.path().join("out2").display()
            )),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("empty.txt:1: empty.txt is empty"),
        "unexpected error output:\n{stderr}"
    );
}
