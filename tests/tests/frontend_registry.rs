//! Frontends distributed through a registry: `kiln frontend push`, loading
//! by reference (pinned by digest), offline reuse from the cache, and
//! `# syntax=` forwarding from a Dockerfile.

use kiln_e2e::{kiln, registry::Registry, require_tool, run_fail, run_ok, testguest_wasm};

fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hi from the context\n").unwrap();
    dir
}

fn llb_mentions_greeting(root: &std::path::Path, def: &std::path::Path) {
    let out = run_ok(kiln(root).args(["debug", "dump-llb"]).arg(def));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("/greeting.txt"), "{text}");
}

#[test]
fn push_then_build_by_digest_then_offline() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start();
    let root = tempfile::tempdir().unwrap();
    let reference = format!("{}/kiln/testguest:1", reg.host());
    let out = run_ok(
        kiln(root.path())
            .args(["frontend", "push"])
            .arg(testguest_wasm())
            .arg(&reference),
    );
    let pinned = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        pinned.starts_with(&reference) && pinned.contains("@sha256:"),
        "{pinned}"
    );

    // A fresh state dir pulls it; a digest-pinned build.
    let state = tempfile::tempdir().unwrap();
    let ctx = context();
    let def = state.path().join("out.pb");
    let out = run_ok(
        kiln(state.path())
            .args(["build", "--progress", "plain", "--frontend", "gateway.v0"])
            .arg(format!("--opt=source={pinned}"))
            .arg(format!("--local=context={}", ctx.path().display()))
            .arg(format!("--output=type=llb,dest={}", def.display())),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("(pulled)"), "{log}");
    llb_mentions_greeting(state.path(), &def);

    // `--frontend REF` directly, by tag.
    run_ok(
        kiln(state.path())
            .args(["build", "--frontend", &reference])
            .arg(format!("--local=context={}", ctx.path().display()))
            .arg(format!("--output=type=llb,dest={}", def.display())),
    );

    // The registry goes away; both the pinned and the tagged reference
    // still build from what the store holds.
    drop(reg);
    for source in [&pinned, &reference] {
        let out = run_ok(
            kiln(state.path())
                .args(["build", "--progress", "plain", "--frontend", "gateway.v0"])
                .arg(format!("--opt=source={source}"))
                .arg(format!("--local=context={}", ctx.path().display()))
                .arg(format!("--output=type=llb,dest={}", def.display())),
        );
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("cached"), "{source}: {log}");
        assert!(
            log.contains("loaded from the compiled-artifact cache"),
            "{log}"
        );
    }
}

#[test]
fn syntax_directive_forwards_to_a_registry_frontend() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start();
    let root = tempfile::tempdir().unwrap();
    let reference = format!("{}/kiln/testguest:syntax", reg.host());
    run_ok(
        kiln(root.path())
            .args(["frontend", "push"])
            .arg(testguest_wasm())
            .arg(&reference),
    );

    let ctx = context();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("# syntax={reference}\nTHIS IS NOT A DOCKERFILE THE BUILT-IN WOULD ACCEPT\n"),
    )
    .unwrap();
    let def = root.path().join("out.pb");
    let out = run_ok(
        kiln(root.path())
            .args([
                "build",
                "--progress",
                "plain",
                "--frontend",
                "dockerfile.v0",
            ])
            .arg(format!("--local=context={}", ctx.path().display()))
            .arg(format!("--local=dockerfile={}", ctx.path().display()))
            .arg(format!("--output=type=llb,dest={}", def.display())),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(&reference), "{log}");
    assert!(log.contains("testguest read"), "{log}");
    llb_mentions_greeting(root.path(), &def);
}

#[test]
fn not_a_frontend_and_missing_references_fail_clearly() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start();
    let root = tempfile::tempdir().unwrap();
    let base = kiln_e2e::busybox::push_base_image(&reg);
    let out = run_fail(
        kiln(root.path())
            .args(["build", "--frontend", "gateway.v0"])
            .arg(format!("--opt=source={base}")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a kiln frontend"), "{err}");

    let out = run_fail(
        kiln(root.path())
            .args(["build", "--frontend", "gateway.v0"])
            .arg(format!("--opt=source={}/kiln/nothing:1", reg.host())),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kiln/nothing"), "{err}");
}

/// The test guest with its gateway import renamed to another version
/// (same length, so the component stays well-formed).
fn wrong_version_guest(dir: &std::path::Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(testguest_wasm()).unwrap();
    let from = b"kiln:gateway/gateway@0.1.0";
    let to = b"kiln:gateway/gateway@0.9.0";
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            n += 1;
        }
        i += 1;
    }
    assert!(n > 0, "the guest names its gateway import");
    let p = dir.join("wrong-version.wasm");
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn wrong_version_corrupt_module_and_digest_mismatch_fail_precisely() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ctx = context();

    // A component built for another gateway version.
    let wrong = wrong_version_guest(work.path());
    let out = run_fail(
        kiln(root.path())
            .args(["build", "--frontend", "gateway.v0"])
            .arg(format!("--opt=source={}", wrong.display()))
            .arg(format!("--local=context={}", ctx.path().display())),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kiln:gateway@0.9.0") && err.contains("kiln:gateway@0.1.0"),
        "{err}"
    );

    // A corrupt module.
    let corrupt = work.path().join("corrupt.wasm");
    let mut bytes = std::fs::read(testguest_wasm()).unwrap();
    let half = bytes.len() / 2;
    bytes.truncate(half);
    std::fs::write(&corrupt, &bytes).unwrap();
    let out = run_fail(
        kiln(root.path())
            .args(["build", "--frontend", "gateway.v0"])
            .arg(format!("--opt=source={}", corrupt.display())),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a valid component"), "{err}");

    // A pulled component whose stored bytes no longer match their digest.
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start();
    let reference = format!("{}/kiln/testguest:mismatch", reg.host());
    let out = run_ok(
        kiln(root.path())
            .args(["frontend", "push"])
            .arg(testguest_wasm())
            .arg(&reference),
    );
    let pinned = String::from_utf8(out.stdout).unwrap().trim().to_string();
    drop(reg);
    let layer = kiln_llb::Digest::of_bytes(&std::fs::read(testguest_wasm()).unwrap());
    let blob = root.path().join("content/blobs/sha256").join(layer.hex());
    let mut data = std::fs::read(&blob).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&blob, &data).unwrap();
    let out = run_fail(
        kiln(root.path())
            .args(["build", "--frontend", "gateway.v0"])
            .arg(format!("--opt=source={pinned}"))
            .arg(format!("--local=context={}", ctx.path().display())),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not match digest") && err.contains(layer.as_str()),
        "{err}"
    );
}
