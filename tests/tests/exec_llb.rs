//! Hand-built LLB on stdin: a busybox image pulled from a loopback registry,
//! RUN steps in real containers through runc, exported as a directory and
//! as OCI and Docker tarballs that skopeo and umoci accept.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use kiln_e2e::{busybox, kiln, registry::Registry, require_tool};
use kiln_llb::builder::{MarshalOptions, image};

fn build_llb(root: &Path, def: &[u8], output: &str) -> std::process::Output {
    let mut child = kiln(root)
        .args(["build", "--progress", "plain", "--output", output])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(def).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "kiln failed\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_steps_on_a_pulled_base_image() {
    if !(require_tool("runc") && require_tool("skopeo") && require_tool("umoci")) {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let def = image(&base)
        .unwrap()
        .state()
        .run_shell(
            "echo built-by-kiln > /out.txt && rm /bin/vi && mkdir -p /data && id -u > /data/uid",
        )
        .build()
        .unwrap()
        .root()
        .marshal_to_vec(&MarshalOptions::default())
        .unwrap();

    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();

    // A directory.
    let dest = out.path().join("fs");
    let o = build_llb(
        root.path(),
        &def,
        &format!("type=local,dest={}", dest.display()),
    );
    ok(&o);
    assert_eq!(
        std::fs::read_to_string(dest.join("out.txt")).unwrap(),
        "built-by-kiln\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("data/uid")).unwrap(),
        "0\n"
    );
    assert!(dest.join("bin/busybox").exists());
    assert!(
        !dest.join("bin/vi").exists(),
        "a file deleted in RUN is gone from the result"
    );

    // Cached the second time: nothing runs again.
    let tar = out.path().join("img.oci.tar");
    let o = build_llb(
        root.path(),
        &def,
        &format!("type=oci,dest={},name=example/run:1", tar.display()),
    );
    ok(&o);
    let progress = String::from_utf8_lossy(&o.stderr);
    assert!(progress.contains("CACHED"), "{progress}");

    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", tar.display()))
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );

    // umoci sees the deletion as a whiteout applied.
    let layout = out.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(st.success());
    let bundle = out.path().join("bundle");
    let st = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(st.success(), "umoci unpack");
    assert!(bundle.join("rootfs/out.txt").exists());
    assert!(!bundle.join("rootfs/bin/vi").exists());
    assert!(bundle.join("rootfs/bin/sh").exists());

    let dtar = out.path().join("img.docker.tar");
    let o = build_llb(
        root.path(),
        &def,
        &format!("type=docker,dest={},name=example/run:1", dtar.display()),
    );
    ok(&o);
    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", dtar.display()))
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
}

#[test]
fn a_failing_run_says_what_failed() {
    if !require_tool("runc") {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let def = image(&base)
        .unwrap()
        .state()
        .run_shell("echo about to fail; exit 3")
        .build()
        .unwrap()
        .root()
        .marshal_to_vec(&MarshalOptions::default())
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = build_llb(
        root.path(),
        &def,
        &format!("type=local,dest={}", out.path().display()),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exit") && err.contains('3'), "{err}");
    assert!(err.contains("about to fail"), "{err}");
    assert!(err.contains("echo about to fail"), "{err}");
}
