//! The built-in Dockerfile frontend runs as WebAssembly inside kiln:
//! `kiln build --frontend dockerfile.v0 --output type=llb` writes the LLB it
//! produced, `dump-llb` shows it, and the digests are the same on every run.

use kiln_e2e::{busybox, kiln, registry::Registry, require_tool, run_fail, run_ok};
use serde_json::Value;

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
ARG BASE
FROM ${BASE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/.cache make all

FROM scratch
COPY --from=build /src/out /out
LABEL a=b
ENTRYPOINT ["/out"]
"#;

fn llb(
    root: &std::path::Path,
    ctx: &std::path::Path,
    dest: &std::path::Path,
    base: &str,
) -> Vec<Value> {
    run_ok(
        kiln(root)
            .args(["build", "--frontend", "dockerfile.v0"])
            .arg(format!("--opt=build-arg:BASE={base}"))
            .arg(format!("--local=context={}", ctx.display()))
            .arg(format!("--local=dockerfile={}", ctx.display()))
            .arg(format!("--output=type=llb,dest={}", dest.display())),
    );
    let out = run_ok(kiln(root).args(["debug", "dump-llb"]).arg(dest));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn dockerfile_llb_is_stable_between_runs() {
    if !require_tool("docker-registry") {
        return;
    }
    // The frontend resolves the base image's config: serve one on loopback.
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.path().join("Makefile"), "all:\n\techo hi > out\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    // Two runs, two fresh state dirs.
    let r1 = tempfile::tempdir().unwrap();
    let r2 = tempfile::tempdir().unwrap();
    let a = llb(r1.path(), ctx.path(), &out.path().join("a.pb"), &base);
    let b = llb(r2.path(), ctx.path(), &out.path().join("b.pb"), &base);
    assert_eq!(
        std::fs::read(out.path().join("a.pb")).unwrap(),
        std::fs::read(out.path().join("b.pb")).unwrap()
    );
    let digests = |v: &[Value]| {
        v.iter()
            .map(|l| l["Digest"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(digests(&a), digests(&b));

    // What the LLB says.
    let ops: Vec<&Value> = a.iter().map(|l| &l["Op"]["Op"]).collect();
    let image = ops.iter().find_map(|o| {
        o["source"]["identifier"]
            .as_str()
            .filter(|i| i.starts_with("docker-image://"))
    });
    // Pinned to the digest the frontend resolved, as BuildKit does.
    let image = image.expect("an image source");
    assert!(
        image.starts_with(&format!("docker-image://{base}@sha256:")),
        "{image}"
    );
    assert!(
        ops.iter()
            .any(|o| o["source"]["identifier"] == "local://context")
    );
    let exec = ops
        .iter()
        .find(|o| o["exec"].is_object())
        .expect("an exec op");
    let args = exec["exec"]["meta"]["args"].as_array().unwrap();
    assert_eq!(args[0], "/bin/sh");
    assert_eq!(args[2], "make all");
    assert_eq!(exec["exec"]["meta"]["cwd"], "/src");
    let mounts = exec["exec"]["mounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["dest"] == "/root/.cache" && m["mountType"] == 3),
        "{mounts:?}"
    );
    assert!(
        ops.iter()
            .any(|o| o["file"]["actions"][0]["Action"]["copy"]["src"] == "/src/out")
    );
}

#[test]
fn dockerfile_errors_name_the_line() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY a b\nFROBNICATE now\n",
    )
    .unwrap();
    let o = run_fail(
        kiln(root.path())
            .args(["build", "--frontend", "dockerfile.v0"])
            .arg(format!("--local=context={}", ctx.path().display()))
            .arg(format!("--local=dockerfile={}", ctx.path().display())),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains('3') && err.to_lowercase().contains("frobnicate"),
        "{err}"
    );
}

#[test]
fn a_failing_step_points_at_its_dockerfile_line() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY missing.txt /x\n",
    )
    .unwrap();
    let o = run_fail(
        kiln(root.path())
            .args(["build", "--frontend", "dockerfile.v0"])
            .arg(format!("--local=context={}", ctx.path().display()))
            .arg(format!("--local=dockerfile={}", ctx.path().display())),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("2 | COPY missing.txt /x"), "{err}");
    assert!(err.contains("missing.txt"), "{err}");
}
