//! `--export-cache` / `--import-cache`: a build exports its cache (registry,
//! local or inline), the state dir is wiped, and a rebuild with the import
//! runs nothing: every step is CACHED, the RUN steps (which append to a file
//! on a cache mount) leave no trace in the new root, and the image digest is
//! the same. `mode=min` keeps only the final image's chain, `mode=max` every
//! step.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_e2e::{busybox, kiln, rawjson_vertexes, registry::Registry, require_tool, run_ok};
use serde_json::Value;

fn tools() -> bool {
    require_tool("runc") && require_tool("skopeo") && require_tool("docker-registry")
}

const MULTISTAGE: &str = r#"ARG BASE
FROM ${BASE} AS build
RUN --mount=type=cache,target=/cache echo build >> /cache/runs && echo built > /out.txt

FROM ${BASE}
COPY --from=build /out.txt /srv/out.txt
RUN --mount=type=cache,target=/cache echo final >> /cache/runs && cat /srv/out.txt > /srv/copy.txt
COPY hello.txt /srv/hello.txt
"#;

const SINGLE: &str = r#"ARG BASE
FROM ${BASE}
RUN --mount=type=cache,target=/cache echo final >> /cache/runs && echo made > /made.txt
COPY hello.txt /srv/hello.txt
"#;

struct Ctx {
    dir: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Ctx {
    fn new(dockerfile: &str) -> Ctx {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
        Ctx {
            dir,
            out: tempfile::tempdir().unwrap(),
        }
    }

    /// Builds into an OCI tarball `out/<name>.tar` with extra flags.
    fn build(&self, root: &Path, base: &str, name: &str, extra: &[String]) -> (PathBuf, Output) {
        let tar = self.out.path().join(format!("{name}.tar"));
        let mut c: Command = kiln(root);
        c.args(["build", "--progress=rawjson", "--frontend=dockerfile.v0"])
            .arg(format!("--local=context={}", self.dir.path().display()))
            .arg(format!("--local=dockerfile={}", self.dir.path().display()))
            .arg(format!("--opt=build-arg:BASE={base}"))
            .arg(format!("--output=type=oci,dest={}", tar.display()))
            .args(extra);
        let o = run_ok(&mut c);
        (tar, o)
    }
}

/// Files named `runs` under the state dir's cache mounts: a RUN step that
/// ran left one.
fn cache_mount_runs(root: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                walk(&p, out);
            } else if e.file_name() == "runs" {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join("engine/v1/cachemounts"), &mut out);
    out
}

/// Every vertex but the local sources (`[internal] load …`: the client's
/// files are read on every build) must be reported CACHED.
fn assert_all_cached(o: &Output) {
    let v = rawjson_vertexes(&o.stderr);
    assert!(!v.is_empty(), "no progress seen");
    let ran: Vec<&String> = v
        .values()
        .filter(|(name, cached)| !cached && !name.starts_with("[internal] load"))
        .map(|(name, _)| name)
        .collect();
    assert!(
        ran.is_empty(),
        "steps ran instead of coming from the imported cache: {ran:?}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The manifest digest an OCI tarball's index names.
fn image_digest(tar: &Path) -> String {
    let o = Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg("index.json")
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

/// Layer digests of the image in an OCI tarball.
fn image_layers(tar: &Path) -> BTreeSet<String> {
    let digest = image_digest(tar);
    let hex = digest.trim_start_matches("sha256:");
    let o = Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg(format!("blobs/sha256/{hex}"))
        .output()
        .unwrap();
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// The manifest and cache config of a `type=local` cache.
fn local_cache(dir: &Path) -> (Value, Value) {
    let idx: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        std::fs::read(
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let m: Value =
        serde_json::from_slice(&blob(idx["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let c: Value = serde_json::from_slice(&blob(m["config"]["digest"].as_str().unwrap())).unwrap();
    (m, c)
}

fn manifest_layers(m: &Value) -> BTreeSet<String> {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

fn descriptions(c: &Value) -> Vec<String> {
    c["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["description"].as_str().unwrap().to_owned())
        .collect()
}

/// Build with `export`, check the first build ran the RUN steps, wipe the
/// root, rebuild with `import`: all cached, no RUN, same image digest.
fn roundtrip(dockerfile: &str, base: &str, export: &[String], import: &[String]) {
    let ctx = Ctx::new(dockerfile);
    let root1 = tempfile::tempdir().unwrap();
    let (tar1, _) = ctx.build(root1.path(), base, "first", export);
    assert!(
        !cache_mount_runs(root1.path()).is_empty(),
        "the first build should have run its RUN steps"
    );
    drop(root1);
    let root2 = tempfile::tempdir().unwrap();
    let (tar2, o) = ctx.build(root2.path(), base, "second", import);
    assert_all_cached(&o);
    assert_eq!(
        cache_mount_runs(root2.path()),
        Vec::<PathBuf>::new(),
        "a RUN step ran again after the import"
    );
    assert_eq!(image_digest(&tar1), image_digest(&tar2));
    assert_eq!(
        std::fs::read(&tar1).unwrap(),
        std::fs::read(&tar2).unwrap(),
        "the OCI tarballs differ"
    );
}

#[test]
fn registry_cache_max_survives_a_wiped_root() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let r = format!("{}/cache:x", reg.host());
    roundtrip(
        MULTISTAGE,
        &base,
        &[format!("--export-cache=type=registry,ref={r},mode=max")],
        &[format!("--import-cache=type=registry,ref={r}")],
    );
}

#[test]
fn local_cache_max_survives_a_wiped_root() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let cache = tempfile::tempdir().unwrap();
    let d = cache.path().join("c");
    roundtrip(
        MULTISTAGE,
        &base,
        &[format!(
            "--export-cache=type=local,dest={},mode=max",
            d.display()
        )],
        &[format!("--import-cache=type=local,src={}", d.display())],
    );
}

#[test]
fn inline_cache_is_imported_from_the_pushed_image() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let image = format!("{}/app:inline", reg.host());
    let push = format!("--output=type=image,name={image},push=true");
    roundtrip(
        SINGLE,
        &base,
        &["--export-cache=type=inline".to_string(), push.clone()],
        &[
            format!("--import-cache=type=registry,ref={image}"),
            "--export-cache=type=inline".to_string(),
            push,
        ],
    );
}

#[test]
fn min_keeps_the_final_chain_and_max_every_step() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let ctx = Ctx::new(MULTISTAGE);
    let root = tempfile::tempdir().unwrap();
    let caches = tempfile::tempdir().unwrap();
    let min = caches.path().join("min");
    let max = caches.path().join("max");
    let (tar, _) = ctx.build(
        root.path(),
        &base,
        "img",
        &[
            format!("--export-cache=type=local,dest={},mode=min", min.display()),
            format!("--export-cache=type=local,dest={},mode=max", max.display()),
        ],
    );
    let (min_m, min_c) = local_cache(&min);
    let (max_m, max_c) = local_cache(&max);
    let image = image_layers(&tar);
    // min: exactly the image's layers.
    assert_eq!(manifest_layers(&min_m), image);
    // max: those and the build stage's own layer.
    let extra: BTreeSet<String> = manifest_layers(&max_m)
        .difference(&image)
        .cloned()
        .collect();
    assert!(
        manifest_layers(&max_m).is_superset(&image) && !extra.is_empty(),
        "max should add the build stage's layer: max {:?}, image {:?}",
        manifest_layers(&max_m),
        image
    );
    let min_d = descriptions(&min_c);
    let max_d = descriptions(&max_c);
    let build_step = |d: &Vec<String>| d.iter().any(|x| x.contains("echo built"));
    assert!(
        build_step(&max_d),
        "max lacks the build stage RUN: {max_d:?}"
    );
    assert!(
        !build_step(&min_d),
        "min has the build stage RUN: {min_d:?}"
    );
    assert!(min_d.iter().any(|x| x.contains("echo final")), "{min_d:?}");
    assert!(min_d.len() < max_d.len());
    // Local sources never leave the machine.
    assert!(
        !max_d.iter().any(|x| x.starts_with("local://")),
        "{max_d:?}"
    );
}

#[test]
fn a_blob_missing_from_a_local_cache_reruns_its_step() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let ctx = Ctx::new(MULTISTAGE);
    let caches = tempfile::tempdir().unwrap();
    let dir = caches.path().join("c");
    let root1 = tempfile::tempdir().unwrap();
    let (tar1, _) = ctx.build(
        root1.path(),
        &base,
        "first",
        &[format!(
            "--export-cache=type=local,dest={},mode=max",
            dir.display()
        )],
    );
    drop(root1);
    // Lose the build stage's layer (in the cache, not in the image).
    let (m, _) = local_cache(&dir);
    let extra: Vec<String> = manifest_layers(&m)
        .difference(&image_layers(&tar1))
        .cloned()
        .collect();
    assert_eq!(extra.len(), 1, "{extra:?}");
    std::fs::remove_file(
        dir.join("blobs/sha256")
            .join(extra[0].trim_start_matches("sha256:")),
    )
    .unwrap();
    // The build stage's RUN runs again (its output feeds a COPY key), the
    // rest comes from the cache, and the image is the same.
    let root2 = tempfile::tempdir().unwrap();
    let (tar2, o) = ctx.build(
        root2.path(),
        &base,
        "second",
        &[format!("--import-cache=type=local,src={}", dir.display())],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 layer blob(s) are missing from the cache directory"),
        "{err}"
    );
    let runs: Vec<String> = cache_mount_runs(root2.path())
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(runs, ["build\n"], "only the build stage's RUN ran");
    assert_eq!(image_digest(&tar1), image_digest(&tar2));
}

#[test]
fn an_imported_cache_gives_the_same_image_under_any_source_date_epoch() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let ctx = Ctx::new(MULTISTAGE);
    let caches = tempfile::tempdir().unwrap();
    let dir = caches.path().join("c");
    let epoch = |name: &str, e: &str| {
        format!(
            "--output=type=oci,dest={},source-date-epoch={e}",
            ctx.out.path().join(format!("{name}-epoch.tar")).display()
        )
    };
    // Build without an epoch; export the cache (packed without one) and
    // push an inline cache packed with epoch 1700000000.
    let image = format!("{}/app:epoch", reg.host());
    let root = tempfile::tempdir().unwrap();
    ctx.build(
        root.path(),
        &base,
        "cached",
        &[
            format!("--export-cache=type=local,dest={},mode=max", dir.display()),
            epoch("pushed", "1700000000"),
            format!("--output=type=image,name={image},push=true,source-date-epoch=1700000000"),
            "--export-cache=type=inline".into(),
        ],
    );
    drop(root);
    // The same build from scratch, with an epoch.
    let root = tempfile::tempdir().unwrap();
    ctx.build(root.path(), &base, "fresh", &[epoch("fresh", "1600000000")]);
    let fresh_epoch = ctx.out.path().join("fresh-epoch.tar");
    drop(root);
    // From the local cache (no epoch) into an image with one.
    let root = tempfile::tempdir().unwrap();
    let (_, o) = ctx.build(
        root.path(),
        &base,
        "from-local",
        &[
            format!("--import-cache=type=local,src={}", dir.display()),
            epoch("from-local", "1600000000"),
        ],
    );
    assert_all_cached(&o);
    assert_eq!(
        image_digest(&ctx.out.path().join("from-local-epoch.tar")),
        image_digest(&fresh_epoch),
        "an epoch image from a cache packed without one"
    );
    drop(root);
    // From the inline cache (epoch 1700000000; the final stage only) into
    // an image with an earlier epoch.
    let root = tempfile::tempdir().unwrap();
    let (_, o) = ctx.build(
        root.path(),
        &base,
        "from-inline",
        &[
            format!("--import-cache=type=registry,ref={image}"),
            epoch("from-inline", "1600000000"),
        ],
    );
    let v = rawjson_vertexes(&o.stderr);
    assert!(
        v.values()
            .any(|(n, cached)| n.contains("echo final") && *cached),
        "{v:?}"
    );
    // (Clamping to 1700000000 lost the files' later mtimes: an image
    // without an epoch, or with a later one, cannot be had from this cache
    // as a fresh build gives it, but an earlier epoch can.)
    assert_eq!(
        image_digest(&ctx.out.path().join("from-inline-epoch.tar")),
        image_digest(&fresh_epoch)
    );
}

#[test]
fn import_is_lazy_for_hits_whose_dependents_hit_too() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    // The dep stage's layer is only mounted into the final RUN, whose key
    // depends on the dep stage's key, not its content.
    let ctx = Ctx::new(
        r#"ARG BASE
FROM ${BASE} AS dep
RUN head -c 300000 /dev/urandom > /big.bin && echo dep > /dep.txt

FROM ${BASE}
RUN --mount=from=dep,target=/d cat /d/dep.txt > /copied.txt
"#,
    );
    let caches = tempfile::tempdir().unwrap();
    let dir = caches.path().join("c");
    let root1 = tempfile::tempdir().unwrap();
    ctx.build(
        root1.path(),
        &base,
        "first",
        &[format!(
            "--export-cache=type=local,dest={},mode=max",
            dir.display()
        )],
    );
    let (_, config) = local_cache(&dir);
    let rec = config["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["description"].as_str().unwrap().contains("/big.bin"))
        .expect("the dep stage's record is exported")
        .clone();
    let top = rec["outputs"][0].as_u64().unwrap() as usize;
    let dep_blob = config["layers"][top]["digest"].as_str().unwrap().to_owned();

    let root2 = tempfile::tempdir().unwrap();
    let (tar, o) = ctx.build(
        root2.path(),
        &base,
        "second",
        &[format!("--import-cache=type=local,src={}", dir.display())],
    );
    assert_all_cached(&o);
    let blob = root2
        .path()
        .join("content/blobs/sha256")
        .join(dep_blob.trim_start_matches("sha256:"));
    assert!(
        !blob.exists(),
        "the dep stage's layer {dep_blob} was fetched although nothing needed it"
    );
    // The result itself is complete.
    assert!(!image_layers(&tar).is_empty());
}

#[test]
fn cache_errors_are_clear_and_ignore_error_downgrades_them() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY a /\n").unwrap();
    std::fs::write(ctx.path().join("a"), "a\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let cmd = |extra: &[&str]| {
        let mut c = kiln(root.path());
        c.args(["build", "--progress=plain", "--frontend=dockerfile.v0"])
            .arg(format!("--local=context={}", ctx.path().display()))
            .arg(format!("--local=dockerfile={}", ctx.path().display()))
            .arg(format!("--output=type=local,dest={}", out.path().display()))
            .args(extra);
        c
    };
    // Nothing listens on port 1.
    let o = kiln_e2e::run_fail(&mut cmd(&[
        "--export-cache=type=registry,ref=127.0.0.1:1/c:x",
    ]));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("exporting cache type=registry") && e.contains("127.0.0.1:1/c:x"),
        "{e}"
    );
    let o = run_ok(&mut cmd(&[
        "--export-cache=type=registry,ref=127.0.0.1:1/c:x,ignore-error=true",
    ]));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("warning: exporting cache type=registry failed"),
        "{e}"
    );
    // A missing import is a warning: the first build has no cache yet.
    let o = run_ok(&mut cmd(&[
        "--import-cache=type=local,src=/nonexistent/cache",
    ]));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("warning: importing cache type=local"), "{e}");
    // Bad options are refused before anything runs.
    let o = kiln_e2e::run_fail(&mut cmd(&["--export-cache=type=s3,bucket=x"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"s3\" is not supported"));
    let o = kiln_e2e::run_fail(&mut cmd(&[
        "--export-cache=type=local,dest=/tmp/x,mode=most",
    ]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("mode="));
}
