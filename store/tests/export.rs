//! Exporters end to end: reproducible OCI/Docker tarballs, checked with
//! skopeo and umoci when they are installed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_store::exporter::{self, Dest, FsExportOptions, ImageExportOptions, ImageFormat};
use kiln_store::layer::Compression;
use kiln_store::{ContentStore, SnapshotId, SnapshotStore, fsutil};
use serde_json::Value;

const EPOCH: i64 = 1_700_000_000;

/// Source trees with fixed mtimes, shared by every build.
fn sources(t: &Path) -> (PathBuf, PathBuf) {
    let base = t.join("src-base");
    std::fs::create_dir_all(base.join("etc")).unwrap();
    std::fs::create_dir_all(base.join("usr/bin")).unwrap();
    std::fs::write(base.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(base.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(base.join("usr/bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::hard_link(base.join("usr/bin/tool"), base.join("usr/bin/tool2")).unwrap();
    std::os::unix::fs::symlink("tool", base.join("usr/bin/t")).unwrap();
    let up = t.join("src-up");
    std::fs::create_dir_all(up.join("etc")).unwrap();
    fsutil::make_whiteout(&up.join("etc"), "group".as_ref()).unwrap();
    std::fs::create_dir_all(up.join("app")).unwrap();
    std::fs::write(up.join("app/main"), "main").unwrap();
    for root in [&base, &up] {
        fix_times(root);
    }
    (base, up)
}

fn fix_times(p: &Path) {
    let m = std::fs::symlink_metadata(p).unwrap();
    if m.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            fix_times(&e.unwrap().path());
        }
    }
    fsutil::set_mtime(p, 1_600_000_000, 0).unwrap();
}

struct Fixture {
    _root: tempfile::TempDir,
    ss: SnapshotStore,
    cs: ContentStore,
    top: SnapshotId,
}

fn fixture(base: &Path, up: &Path) -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let ss = SnapshotStore::new(root.path()).unwrap();
    let cs = ContentStore::new(root.path()).unwrap();
    let b = ss.create_from_dir(base, None).unwrap();
    let u = ss.create_from_diff_dir(up, Some(&b)).unwrap();
    // An op that changed nothing: an empty diff.
    let a = ss.prepare(Some(&u)).unwrap();
    let top = ss.commit(a).unwrap();
    Fixture {
        _root: root,
        ss,
        cs,
        top,
    }
}

const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/app/main"]},
"history":[{"created_by":"base"},{"created_by":"COPY app /app"},{"created_by":"RUN true"}]}"#;

fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tar_entries(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut ar = tar::Archive::new(bytes);
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut v = Vec::new();
        e.read_to_end(&mut v).unwrap();
        out.insert(p, v);
    }
    out
}

fn tool(name: &str) -> bool {
    let found = Command::new(name).arg("--version").output().is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed but CI is set");
        }
        eprintln!("\n*** SKIPPING the {name} check: {name} is not on PATH ***\n");
    }
    found
}

#[test]
fn oci_tarball_is_reproducible_and_consistent() {
    let t = tempfile::tempdir().unwrap();
    let (base, up) = sources(t.path());
    let mut outputs = Vec::new();
    for i in 0..2 {
        let f = fixture(&base, &up);
        let dest = t.path().join(format!("out{i}.tar"));
        let dest_s = dest.to_str().unwrap().to_owned();
        let epoch = EPOCH.to_string();
        let opts = ImageExportOptions::from_attrs(
            ImageFormat::Oci,
            &attrs(&[
                ("dest", &dest_s),
                ("name", "example.com/kiln/test:v1"),
                ("source-date-epoch", &epoch),
                ("annotation.org.opencontainers.image.title", "t"),
                ("annotation-index.kiln.index", "i"),
                ("annotation-manifest-descriptor[linux/amd64].kiln.desc", "d"),
            ]),
        )
        .unwrap();
        let r = exporter::export_image(&f.ss, &f.cs, Some(&f.top), Some(CONFIG.as_bytes()), &opts)
            .unwrap();
        outputs.push((std::fs::read(&dest).unwrap(), r));
    }
    assert_eq!(
        outputs[0].0, outputs[1].0,
        "two builds gave different tarballs"
    );
    assert_eq!(outputs[0].1, outputs[1].1);

    let (bytes, r) = &outputs[0];
    let files = tar_entries(bytes);
    let names: Vec<&String> = files.keys().collect();
    assert!(names.iter().any(|n| *n == "oci-layout") && names.iter().any(|n| *n == "index.json"));
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let m = &index["manifests"][0];
    assert_eq!(m["digest"], r.manifest_digest.as_str());
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "v1");
    assert_eq!(
        m["annotations"]["io.containerd.image.name"],
        "example.com/kiln/test:v1"
    );
    assert_eq!(m["annotations"]["kiln.desc"], "d");
    assert_eq!(m["platform"]["architecture"], "amd64");
    assert_eq!(m["platform"]["os"], "linux");
    assert_eq!(index["annotations"]["kiln.index"], "i");
    let manifest: Value =
        serde_json::from_slice(&files[&format!("blobs/sha256/{}", r.manifest_digest.hex())])
            .unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.title"],
        "t"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "the empty diff is skipped");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let config: Value =
        serde_json::from_slice(&files[&format!("blobs/sha256/{}", r.config_digest.hex())]).unwrap();
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    let hist = config["history"].as_array().unwrap();
    assert_eq!(hist.len(), 3);
    assert_eq!(hist[2]["empty_layer"], true);
    // Every blob is where the manifest says, with the right digest.
    for l in layers {
        let d: String = l["digest"].as_str().unwrap().into();
        let blob = &files[&format!("blobs/sha256/{}", &d[7..])];
        assert_eq!(kiln_store::Digest::of_bytes(blob).to_string(), d);
        assert_eq!(blob.len() as u64, l["size"].as_u64().unwrap());
    }
    // Outer tar: fixed owners and times.
    let mut ar = tar::Archive::new(&bytes[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().uid().unwrap(), 0);
        assert_eq!(e.header().mtime().unwrap(), EPOCH as u64);
    }

    let path = t.path().join("out0.tar");
    if tool("skopeo") {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", path.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    }
    if tool("umoci") {
        let layout = t.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        kiln_store::layer::unpack_archive(&bytes[..], &layout).unwrap();
        let bundle = t.path().join("bundle");
        let out = Command::new("umoci")
            .arg("unpack")
            .arg("--rootless")
            .arg("--image")
            .arg(format!("{}:v1", layout.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umoci: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rootfs = bundle.join("rootfs");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("app/main")).unwrap(),
            "main"
        );
        assert!(rootfs.join("etc/passwd").is_file());
        assert!(!rootfs.join("etc/group").exists(), "whiteout not applied");
        assert_eq!(
            std::fs::read_link(rootfs.join("usr/bin/t")).unwrap(),
            Path::new("tool")
        );
    }
}

#[test]
fn docker_tarball_loads() {
    let t = tempfile::tempdir().unwrap();
    let (base, up) = sources(t.path());
    let f = fixture(&base, &up);
    let dest = t.path().join("docker.tar");
    let mut opts = ImageExportOptions::new(ImageFormat::Docker);
    opts.dest = Dest::Path(dest.clone());
    opts.names = vec!["kiln-test:latest".into()];
    assert!(!opts.oci_mediatypes);
    let r =
        exporter::export_image(&f.ss, &f.cs, Some(&f.top), Some(CONFIG.as_bytes()), &opts).unwrap();
    assert_eq!(
        r.manifest_media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let files = tar_entries(&std::fs::read(&dest).unwrap());
    let mj: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(mj[0]["RepoTags"][0], "kiln-test:latest");
    assert_eq!(
        mj[0]["Config"],
        format!("blobs/sha256/{}", r.config_digest.hex())
    );
    assert_eq!(mj[0]["Layers"].as_array().unwrap().len(), 2);
    let manifest: Value =
        serde_json::from_slice(&files[&format!("blobs/sha256/{}", r.manifest_digest.hex())])
            .unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    if tool("skopeo") {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{}", dest.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn zstd_and_uncompressed_layouts() {
    let t = tempfile::tempdir().unwrap();
    let (base, up) = sources(t.path());
    let f = fixture(&base, &up);
    for (c, mt) in [
        (
            Compression::Zstd,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        (
            Compression::Uncompressed,
            "application/vnd.oci.image.layer.v1.tar",
        ),
    ] {
        let dir = t.path().join(format!("layout-{}", c.name()));
        let opts = ImageExportOptions::from_attrs(
            ImageFormat::Oci,
            &attrs(&[
                ("dest", dir.to_str().unwrap()),
                ("tar", "false"),
                ("compression", c.name()),
                ("name", "kiln/x:1"),
            ]),
        )
        .unwrap();
        let r = exporter::export_image(&f.ss, &f.cs, Some(&f.top), None, &opts).unwrap();
        let m: Value = serde_json::from_slice(
            &std::fs::read(dir.join("blobs/sha256").join(r.manifest_digest.hex())).unwrap(),
        )
        .unwrap();
        assert_eq!(m["layers"][0]["mediaType"], mt);
        let idx: Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
        // Read it back through the OCI layout reader.
        let root2 = tempfile::tempdir().unwrap();
        let ss2 = SnapshotStore::new(root2.path()).unwrap();
        let cs2 = ContentStore::new(root2.path()).unwrap();
        let layout = kiln_store::ocilayout::OciLayout::open(&dir).unwrap();
        let img = layout.resolve(Some("1"), None).unwrap();
        assert_eq!(img.manifest_digest, r.manifest_digest);
        let top = layout.unpack(&img, &cs2, &ss2).unwrap().unwrap();
        let v = ss2.view(&top).unwrap();
        assert_eq!(std::fs::read_to_string(v.join("app/main")).unwrap(), "main");
        assert!(!v.join("etc/group").exists());
        if tool("skopeo") {
            let out = Command::new("skopeo")
                .arg("inspect")
                .arg(format!("oci:{}:1", dir.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "skopeo: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn local_and_tar_exporters() {
    let t = tempfile::tempdir().unwrap();
    let (base, up) = sources(t.path());
    let f = fixture(&base, &up);
    let out = t.path().join("local");
    exporter::export_local(&f.ss, Some(&f.top), &out).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("app/main")).unwrap(),
        "main"
    );
    assert!(!out.join("etc/group").exists());
    assert!(out.join("etc/passwd").is_file());

    let tarf = t.path().join("fs.tar");
    let o = FsExportOptions::from_attrs(&attrs(&[
        ("dest", tarf.to_str().unwrap()),
        ("source-date-epoch", "5"),
    ]))
    .unwrap();
    exporter::export_tar(&f.ss, Some(&f.top), &o).unwrap();
    let bytes = std::fs::read(&tarf).unwrap();
    let files = tar_entries(&bytes);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert!(
        names.contains(&"app/main")
            && names.contains(&"etc/passwd")
            && !names.contains(&"etc/group")
    );
    let mut ar = tar::Archive::new(&bytes[..]);
    for e in ar.entries().unwrap() {
        assert!(e.unwrap().header().mtime().unwrap() <= 5);
    }
}

#[test]
fn bad_options_are_refused() {
    for kv in [
        ("compression", "lz4"),
        ("compression-level", "x"),
        ("oci-mediatypes", "maybe"),
        ("source-date-epoch", "-1"),
    ] {
        assert!(
            ImageExportOptions::from_attrs(ImageFormat::Oci, &attrs(&[kv])).is_err(),
            "{kv:?}"
        );
    }
    let e = ImageExportOptions::from_attrs(
        ImageFormat::Oci,
        &attrs(&[("compression", "gzip"), ("compression-level", "12")]),
    );
    assert!(e.is_err());
    let o = ImageExportOptions::from_attrs(ImageFormat::Oci, &attrs(&[("push", "true")])).unwrap();
    assert_eq!(o.ignored, vec!["push".to_string()]);
    assert!(
        ImageExportOptions::from_attrs(ImageFormat::Oci, &attrs(&[("annotation.", "y")])).is_err()
    );
}

#[test]
fn imported_layers_keep_their_blobs_unless_forced() {
    let t = tempfile::tempdir().unwrap();
    let (base, up) = sources(t.path());
    let f = fixture(&base, &up);
    let dir = t.path().join("layout");
    let mut opts = ImageExportOptions::new(ImageFormat::Oci);
    opts.dest = Dest::Path(dir.clone());
    opts.tar = false;
    opts.compression = Compression::Zstd;
    let orig =
        exporter::export_image(&f.ss, &f.cs, Some(&f.top), Some(CONFIG.as_bytes()), &opts).unwrap();

    let root2 = tempfile::tempdir().unwrap();
    let ss2 = SnapshotStore::new(root2.path()).unwrap();
    let cs2 = ContentStore::new(root2.path()).unwrap();
    let layout = kiln_store::ocilayout::OciLayout::open(&dir).unwrap();
    let img = layout.resolve(None, None).unwrap();
    let top = layout.unpack(&img, &cs2, &ss2).unwrap().unwrap();

    let digests = |r: &exporter::ImageExportResult| {
        r.layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>()
    };
    // Reused as they are (gzip requested, but the blobs exist as zstd).
    let mut o = ImageExportOptions::new(ImageFormat::Oci);
    o.dest = Dest::Path(t.path().join("again.tar"));
    let again = exporter::export_image(&ss2, &cs2, Some(&top), Some(&img.config), &o).unwrap();
    assert_eq!(digests(&again), digests(&orig));
    // Forced: repacked as gzip, same diff ids.
    o.force_compression = true;
    let forced = exporter::export_image(&ss2, &cs2, Some(&top), Some(&img.config), &o).unwrap();
    assert_ne!(digests(&forced), digests(&orig));
    assert!(
        forced
            .layers
            .iter()
            .all(|l| l.compression == Compression::Gzip)
    );
    let ids = |r: &exporter::ImageExportResult| {
        r.layers
            .iter()
            .map(|l| l.diff_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&forced), ids(&orig));
    // Docker media types cannot describe zstd: those blobs are repacked.
    let mut d = ImageExportOptions::new(ImageFormat::Docker);
    d.dest = Dest::Path(t.path().join("docker.tar"));
    let dock = exporter::export_image(&ss2, &cs2, Some(&top), Some(&img.config), &d).unwrap();
    assert!(
        dock.layers
            .iter()
            .all(|l| l.compression == Compression::Gzip)
    );
}

#[test]
fn oci_layout_platform_selection() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layout");
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = kiln_store::Digest::of_bytes(b);
        std::fs::write(blobs.join(d.hex()), b).unwrap();
        (d, b.len())
    };
    let mut manifests = Vec::new();
    for arch in ["arm64", "amd64", "riscv64"] {
        let cfg = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let (cd, cs) = put(cfg.as_bytes());
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[]}}"#
        );
        let (md, ms) = put(m.as_bytes());
        manifests.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#
        ));
    }
    let inner = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        manifests.join(",")
    );
    let (id, is) = put(inner.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{id}","size":{is},"annotations":{{"org.opencontainers.image.ref.name":"multi"}}}}]}}"#
        ),
    )
    .unwrap();
    let layout = kiln_store::ocilayout::OciLayout::open(&dir).unwrap();
    let p = kiln_store::ocilayout::Platform {
        os: "linux".into(),
        architecture: "riscv64".into(),
        variant: None,
    };
    let img = layout.resolve(Some("multi"), Some(&p)).unwrap();
    let cfg: Value = serde_json::from_slice(&img.config).unwrap();
    assert_eq!(cfg["architecture"], "riscv64");
    let by_digest = layout.resolve(Some(id.as_str()), Some(&p)).unwrap();
    assert_eq!(by_digest.manifest_digest, img.manifest_digest);
    assert!(layout.resolve(Some("nope"), None).is_err());
    let s390 = kiln_store::ocilayout::Platform {
        os: "linux".into(),
        architecture: "s390x".into(),
        variant: None,
    };
    assert!(layout.resolve(Some("multi"), Some(&s390)).is_err());
    // An image without layers unpacks to no snapshot.
    let root = tempfile::tempdir().unwrap();
    let ss = SnapshotStore::new(root.path()).unwrap();
    let cs = ContentStore::new(root.path()).unwrap();
    assert_eq!(layout.unpack(&img, &cs, &ss).unwrap(), None);
    // A tampered blob is refused.
    std::fs::write(blobs.join(img.config_digest.hex()), b"{}").unwrap();
    assert!(layout.resolve(Some("multi"), Some(&p)).is_err());
}

#[test]
fn scratch_image_without_layers() {
    let t = tempfile::tempdir().unwrap();
    let ss = SnapshotStore::new(t.path()).unwrap();
    let cs = ContentStore::new(t.path()).unwrap();
    let dest = t.path().join("scratch.tar");
    let mut o = ImageExportOptions::new(ImageFormat::Oci);
    o.dest = Dest::Path(dest.clone());
    let r = exporter::export_image(&ss, &cs, None, None, &o).unwrap();
    assert!(r.layers.is_empty());
    let cfg: Value = serde_json::from_slice(&cs.read(&r.config_digest).unwrap()).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 0);
    assert_eq!(cfg["created"], exporter::FIXED_CREATED);
    if tool("skopeo") {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", dest.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tarf = t.path().join("fs.tar");
    let fo = FsExportOptions {
        dest: Dest::Path(tarf.clone()),
        source_date_epoch: None,
    };
    exporter::export_tar(&ss, None, &fo).unwrap();
    assert!(tar_entries(&std::fs::read(&tarf).unwrap()).is_empty());
}

#[test]
fn layout_dirs_keep_other_images_and_replace_the_same_name() {
    let t = tempfile::tempdir().unwrap();
    let (base, up) = sources(t.path());
    let f = fixture(&base, &up);
    let dir = t.path().join("layout");
    let export = |name: &str, top: Option<&SnapshotId>| {
        let mut o = ImageExportOptions::new(ImageFormat::Oci);
        o.dest = Dest::Path(dir.clone());
        o.tar = false;
        o.names = vec![name.to_string()];
        exporter::export_image(&f.ss, &f.cs, top, Some(CONFIG.as_bytes()), &o).unwrap()
    };
    let names = || -> Vec<(String, String)> {
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["annotations"]["io.containerd.image.name"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    m["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let a = export("docker.io/library/a:1", Some(&f.top));
    let b = export("docker.io/library/b:1", None);
    assert_eq!(
        names(),
        [
            (
                "docker.io/library/a:1".to_string(),
                a.manifest_digest.to_string()
            ),
            (
                "docker.io/library/b:1".to_string(),
                b.manifest_digest.to_string()
            ),
        ]
    );
    // `a` again, now an empty image: replaced, `b` kept; every blob the
    // index names is in the layout, and no temp file is left.
    let a2 = export("docker.io/library/a:1", None);
    assert_eq!(
        names(),
        [
            (
                "docker.io/library/b:1".to_string(),
                b.manifest_digest.to_string()
            ),
            (
                "docker.io/library/a:1".to_string(),
                a2.manifest_digest.to_string()
            ),
        ]
    );
    for e in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let n = e.unwrap().file_name().into_string().unwrap();
        assert!(!n.starts_with('.'), "temp file left: {n}");
    }
    for (_, d) in names() {
        assert!(dir.join("blobs/sha256").join(&d[7..]).is_file());
    }
    assert!(dir.join("oci-layout").is_file());
}

#[test]
fn unchanged_tarball_file_is_left_alone() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let (base, up) = sources(t.path());
    let f = fixture(&base, &up);
    let dest = t.path().join("out.tar");
    let dest_s = dest.to_str().unwrap().to_owned();
    let opts = |name: &str| {
        ImageExportOptions::from_attrs(
            ImageFormat::Oci,
            &attrs(&[("dest", &dest_s), ("name", name)]),
        )
        .unwrap()
    };
    let export = |o: &ImageExportOptions, prev: Option<&exporter::TarballStamp>| {
        exporter::export_image_file(&f.ss, &f.cs, Some(&f.top), Some(CONFIG.as_bytes()), o, prev)
            .unwrap()
    };
    let a = opts("example.com/kiln/a:v1");

    let first = export(&a, None);
    assert!(!first.reused);
    let stamp = first.stamp.clone().expect("a stamp for a file destination");
    let bytes = std::fs::read(&dest).unwrap();
    let ino = std::fs::metadata(&dest).unwrap().ino();

    // Same image, same untouched file: nothing is written.
    let again = export(&a, Some(&stamp));
    assert!(again.reused);
    assert_eq!(again.stamp.as_ref(), Some(&stamp));
    assert_eq!(again.result, first.result);
    assert_eq!(std::fs::metadata(&dest).unwrap().ino(), ino);

    // Another name changes index.json: the file is written again.
    let other = export(&opts("example.com/kiln/b:v1"), Some(&stamp));
    assert!(!other.reused);
    assert_ne!(std::fs::read(&dest).unwrap(), bytes);
    let other_stamp = other.stamp.unwrap();
    assert_ne!(other_stamp.plan, stamp.plan);

    // A file changed behind the exporter's back is replaced, even with the
    // stamp of the image it should hold.
    let first = export(&a, Some(&other_stamp));
    assert!(!first.reused);
    let stamp = first.stamp.unwrap();
    std::fs::write(&dest, b"not a tarball").unwrap();
    let healed = export(&a, Some(&stamp));
    assert!(!healed.reused);
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);

    // Stdout and tar=false give no stamp.
    let layout = t.path().join("layout");
    let layout_s = layout.to_str().unwrap().to_owned();
    let dir_opts = ImageExportOptions::from_attrs(
        ImageFormat::Oci,
        &attrs(&[("dest", &layout_s), ("tar", "false")]),
    )
    .unwrap();
    let d = export(&dir_opts, None);
    assert!(d.stamp.is_none() && !d.reused);
}
