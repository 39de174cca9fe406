//! `FROM scratch` Dockerfiles through the CLI, no container needed: COPY,
//! ADD of a local tar, WORKDIR, ENV, LABEL and multi-stage `COPY --from`,
//! exported with every local exporter and checked with skopeo and umoci;
//! caching read from `--progress=rawjson`; reproducible tarballs; two builds
//! on one root at once; path escapes refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_e2e::{kiln, require_tool, run_fail, run_ok};
use serde_json::Value;

const DOCKERFILE: &str = r#"FROM scratch AS assets
COPY data/ /assets/
ADD bundle.tar /unpacked/

FROM scratch
WORKDIR /app
ENV MODE=production GREETING="hello world"
LABEL org.example.team=build version=1
COPY hello.txt ./
COPY --from=assets /assets/ /app/assets/
COPY --from=assets /unpacked/ /app/unpacked/
CMD ["/app/run"]
"#;

/// A context: the Dockerfile, a file, a directory, and a tar to ADD.
fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(p.join("hello.txt"), b"hello\n").unwrap();
    std::fs::create_dir_all(p.join("data/sub")).unwrap();
    std::fs::write(p.join("data/a.txt"), b"a\n").unwrap();
    std::fs::write(p.join("data/sub/b.txt"), b"b\n").unwrap();
    let src = p.join("tar-src");
    std::fs::create_dir_all(src.join("inner")).unwrap();
    std::fs::write(src.join("inner/from-tar.txt"), b"from a tar\n").unwrap();
    let st = Command::new("tar")
        .arg("-cf")
        .arg(p.join("bundle.tar"))
        .arg("-C")
        .arg(&src)
        .arg("inner")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(&src).unwrap();
    dir
}

fn build(root: &Path, ctx: &Path, extra: &[String]) -> std::process::Output {
    let mut c = kiln(root);
    c.args(["build", "--frontend", "dockerfile.v0"])
        .arg(format!("--local=context={}", ctx.display()))
        .arg(format!("--local=dockerfile={}", ctx.display()))
        .args(extra);
    run_ok(&mut c)
}

/// Every file under `dir` with its content (directories as `<dir>`).
fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(rel, "<dir>".into());
                walk(base, &p, out);
            } else if ft.is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else {
                out.insert(
                    rel,
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn expected_tree() -> BTreeMap<String, String> {
    [
        ("app", "<dir>"),
        ("app/hello.txt", "hello\n"),
        ("app/assets", "<dir>"),
        ("app/assets/a.txt", "a\n"),
        ("app/assets/sub", "<dir>"),
        ("app/assets/sub/b.txt", "b\n"),
        ("app/unpacked", "<dir>"),
        ("app/unpacked/inner", "<dir>"),
        ("app/unpacked/inner/from-tar.txt", "from a tar\n"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

#[test]
fn local_and_tar_exports_hold_what_the_dockerfile_says() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("fs");
    build(
        root.path(),
        ctx.path(),
        &[format!("--output=type=local,dest={}", dest.display())],
    );
    assert_eq!(tree(&dest), expected_tree());

    let tar = out.path().join("fs.tar");
    build(
        root.path(),
        ctx.path(),
        &[format!("--output=type=tar,dest={}", tar.display())],
    );
    let unpacked = out.path().join("untar");
    std::fs::create_dir(&unpacked).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(tree(&unpacked), expected_tree());
}

#[test]
fn oci_and_docker_exports_are_accepted_by_skopeo_and_umoci() {
    if !(require_tool("skopeo") && require_tool("umoci")) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("img.tar");
    build(
        root.path(),
        ctx.path(),
        &[format!(
            "--output=type=oci,dest={},name=example.com/scratch:1",
            oci.display()
        )],
    );
    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", oci.display()))
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Labels"]["org.example.team"], "build");
    assert_eq!(v["Labels"]["version"], "1");
    let env: Vec<&str> = v["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"MODE=production"), "{env:?}");
    assert!(env.contains(&"GREETING=hello world"), "{env:?}");

    let config = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", oci.display()))
        .output()
        .unwrap();
    let c: Value = serde_json::from_slice(&config.stdout).unwrap();
    assert_eq!(c["config"]["WorkingDir"], "/app");
    assert_eq!(c["config"]["Cmd"], serde_json::json!(["/app/run"]));

    let layout = out.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    assert!(
        Command::new("tar")
            .arg("-xf")
            .arg(&oci)
            .arg("-C")
            .arg(&layout)
            .status()
            .unwrap()
            .success()
    );
    let bundle = out.path().join("bundle");
    let st = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(tree(&bundle.join("rootfs")), expected_tree());

    let docker = out.path().join("img.docker.tar");
    build(
        root.path(),
        ctx.path(),
        &[format!(
            "--output=type=docker,dest={},name=example.com/scratch:1",
            docker.display()
        )],
    );
    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", docker.display()))
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
}

fn vertexes(stderr: &[u8]) -> BTreeMap<String, (String, bool)> {
    kiln_e2e::rawjson_vertexes(stderr)
}

#[test]
fn caching_follows_content_not_mtimes() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let out = tempfile::tempdir().unwrap();
    let args = |n: &str| {
        vec![
            "--progress=rawjson".to_string(),
            format!("--output=type=local,dest={}", out.path().join(n).display()),
        ]
    };
    let first = build(root.path(), ctx.path(), &args("1"));
    let v1 = vertexes(&first.stderr);
    assert!(
        !v1.is_empty(),
        "rawjson shows vertexes: {}",
        String::from_utf8_lossy(&first.stderr)
    );

    // Nothing changed: every vertex CACHED.
    let second = build(root.path(), ctx.path(), &args("2"));
    let v2 = vertexes(&second.stderr);
    assert!(v2.values().all(|(_, c)| *c), "all cached: {v2:?}");

    // A new mtime, same content: still all cached.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.path().join("hello.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
        .unwrap();
    drop(f);
    let third = build(root.path(), ctx.path(), &args("3"));
    let v3 = vertexes(&third.stderr);
    assert!(
        v3.values().all(|(_, c)| *c),
        "touch keeps the cache: {v3:?}"
    );

    // New content: only what reads the file re-runs, and explain-cache says why.
    std::fs::write(ctx.path().join("hello.txt"), b"hello again\n").unwrap();
    let mut a = args("4");
    a.push("--explain-cache".into());
    let fourth = build(root.path(), ctx.path(), &a);
    let v4 = vertexes(&fourth.stderr);
    let rerun: Vec<&String> = v4.values().filter(|(_, c)| !c).map(|(n, _)| n).collect();
    assert!(!rerun.is_empty(), "something re-runs: {v4:?}");
    assert!(
        rerun.iter().any(|n| n.contains("COPY hello.txt")),
        "the COPY of hello.txt re-runs: {rerun:?}"
    );
    // The `assets` stage reads only data/ and bundle.tar: it stays cached.
    let assets: Vec<_> = v4
        .values()
        .filter(|(n, _)| n.starts_with("[assets"))
        .collect();
    assert!(!assets.is_empty(), "{v4:?}");
    assert!(
        assets.iter().all(|(_, c)| *c),
        "the assets stage stays cached: {assets:?}"
    );
    // Steps before the changed COPY in the final stage stay cached too.
    assert!(
        v4.values().any(|(n, c)| *c && n.contains("WORKDIR")),
        "WORKDIR stays cached: {v4:?}"
    );
    let log = String::from_utf8_lossy(&fourth.stderr);
    assert!(
        log.contains("hello.txt"),
        "explain-cache names the file: {log}"
    );
    assert_eq!(
        std::fs::read(out.path().join("4/app/hello.txt")).unwrap(),
        b"hello again\n"
    );
}

#[test]
fn two_fresh_roots_give_byte_identical_oci_tarballs() {
    let ctx = context();
    let out = tempfile::tempdir().unwrap();
    let mut tars: Vec<PathBuf> = Vec::new();
    for i in 0..2 {
        let root = tempfile::tempdir().unwrap();
        let tar = out.path().join(format!("img{i}.tar"));
        build(
            root.path(),
            ctx.path(),
            &[format!("--output=type=oci,dest={},name=x:1", tar.display())],
        );
        tars.push(tar);
    }
    let a = std::fs::read(&tars[0]).unwrap();
    let b = std::fs::read(&tars[1]).unwrap();
    assert!(a == b, "the two OCI tarballs differ");
}

#[test]
fn two_builds_on_one_root_at_once() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let out = tempfile::tempdir().unwrap();
    let spawn = |n: &str| {
        let mut c = kiln(root.path());
        c.args(["build", "--frontend", "dockerfile.v0"])
            .arg(format!("--local=context={}", ctx.path().display()))
            .arg(format!("--local=dockerfile={}", ctx.path().display()))
            .arg(format!(
                "--output=type=local,dest={}",
                out.path().join(n).display()
            ))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let a = spawn("a");
    let b = spawn("b");
    for (n, child) in [("a", a), ("b", b)] {
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "build {n}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(tree(&out.path().join(n)), expected_tree(), "build {n}");
    }
}

#[test]
fn path_escapes_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"host secret\n").unwrap();
    let out = tempfile::tempdir().unwrap();

    // COPY ../x
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY ../secret.txt /\n",
    )
    .unwrap();
    let o = run_fail(
        kiln(root.path())
            .args(["build", "--frontend", "dockerfile.v0"])
            .arg(format!("--local=context={}", ctx.path().display()))
            .arg(format!("--local=dockerfile={}", ctx.path().display()))
            .arg(format!(
                "--output=type=local,dest={}",
                out.path().join("a").display()
            )),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.path().join("a/secret.txt").exists());

    // A symlink in the context that points out of it.
    let ctx = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), ctx.path().join("link")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY link /copied\n",
    )
    .unwrap();
    let mut c = kiln(root.path());
    c.args(["build", "--frontend", "dockerfile.v0"])
        .arg(format!("--local=context={}", ctx.path().display()))
        .arg(format!("--local=dockerfile={}", ctx.path().display()))
        .arg(format!(
            "--output=type=local,dest={}",
            out.path().join("b").display()
        ));
    let o = c.output().unwrap();
    let copied = out.path().join("b/copied");
    if o.status.success() {
        // Docker semantics: the link itself is copied, never its target.
        let md = std::fs::symlink_metadata(&copied).unwrap();
        assert!(
            md.file_type().is_symlink(),
            "the symlink is copied as a symlink"
        );
    }
    if let Ok(data) = std::fs::read(&copied)
        && std::fs::symlink_metadata(&copied)
            .map(|m| !m.file_type().is_symlink())
            .unwrap_or(false)
    {
        assert_ne!(
            data, b"host secret\n",
            "the host file leaked into the image"
        );
    }

    // ADD of a crafted tar with ../ entries and an absolute symlink.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("evil.tar"), evil_tar()).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nADD evil.tar /x/\n",
    )
    .unwrap();
    let mut c = kiln(root.path());
    c.args(["build", "--frontend", "dockerfile.v0"])
        .arg(format!("--local=context={}", ctx.path().display()))
        .arg(format!("--local=dockerfile={}", ctx.path().display()))
        .arg(format!(
            "--output=type=local,dest={}",
            out.path().join("c").display()
        ));
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // Nothing was written next to the state dir or the output.
    for dir in [root.path().parent().unwrap(), out.path()] {
        assert!(
            !dir.join("escaped.txt").exists(),
            "tar entry escaped to {}",
            dir.display()
        );
    }
    assert!(!Path::new("/tmp/escaped.txt").exists());
    assert_eq!(
        std::fs::read(outside.path().join("secret.txt")).unwrap(),
        b"host secret\n"
    );
}

/// A tar with `../../../../../../tmp/escaped.txt` and a symlink to `/tmp`
/// followed by a write through it.
fn evil_tar() -> Vec<u8> {
    kiln_e2e::raw_tar(&[
        ("../../../../../../tmp/escaped.txt", b'0', "", b"escaped\n"),
        ("tmplink", b'2', "/tmp", b""),
        ("tmplink/escaped.txt", b'0', "", b"escaped\n"),
    ])
}

#[test]
fn a_crafted_oci_layout_cannot_escape() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let marker = format!("kiln-ocilayout-{}", std::process::id());
    let (layout, digest) = kiln_e2e::hostile_oci_layout(work.path(), &marker);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM evil\nCOPY Dockerfile /built\n",
    )
    .unwrap();
    let dest = work.path().join("out");
    let o = kiln(root.path())
        .args(["build", "--frontend", "dockerfile.v0"])
        .arg(format!("--local=context={}", ctx.path().display()))
        .arg(format!("--local=dockerfile={}", ctx.path().display()))
        .arg(format!("--oci-layout=evil={}", layout.display()))
        .arg(format!("--opt=context:evil=oci-layout://evil@{digest}"))
        .arg(format!("--output=type=local,dest={}", dest.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    if !o.status.success() {
        assert!(
            err.contains("unsafe archive entry"),
            "refused for the right reason: {err}"
        );
    }
    for suffix in ["dotdot", "abs", "link", "hard"] {
        let p = PathBuf::from(format!("/tmp/{marker}-{suffix}"));
        assert!(!p.exists(), "{} was written on the host", p.display());
    }
    if o.status.success() {
        // Neutralised rather than refused: the entries stay inside the image.
        assert!(dest.join("built").exists());
        let passwd = std::fs::read("/etc/passwd").unwrap();
        if let Ok(h) = std::fs::read(dest.join(format!("{marker}-hard"))) {
            assert_ne!(h, passwd, "a hardlink pulled in the host's /etc/passwd");
        }
    }
}
