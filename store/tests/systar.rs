//! Interop with GNU tar: archives it writes unpack the same through kiln,
//! and kiln's layer tars list cleanly with it.

use std::path::Path;
use std::process::Command;

use kiln_store::layer::{self, PackOptions};
use kiln_store::{ContentStore, SnapshotStore};

fn have_tar() -> bool {
    let ok = Command::new("tar").arg("--version").output().is_ok();
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("tar is not installed but CI is set");
        }
        eprintln!("\n*** SKIPPING: tar is not on PATH ***\n");
    }
    ok
}

fn tree(root: &Path) {
    let long = "d".repeat(120);
    std::fs::create_dir_all(root.join(&long).join("sub")).unwrap();
    std::fs::write(root.join(&long).join("sub").join("f".repeat(130)), "long").unwrap();
    std::fs::write(root.join("a"), "a").unwrap();
    std::fs::hard_link(root.join("a"), root.join("b")).unwrap();
    std::os::unix::fs::symlink(format!("{long}/sub"), root.join("link")).unwrap();
}

#[test]
fn gnu_tar_archives_unpack() {
    if !have_tar() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    tree(&src);
    for (flag, name) in [
        ("-cf", "x.tar"),
        ("-czf", "x.tar.gz"),
        ("-cjf", "x.tar.bz2"),
        ("-cJf", "x.tar.xz"),
    ] {
        let archive = t.path().join(name);
        let st = Command::new("tar")
            .arg(flag)
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        if !st.success() {
            eprintln!("tar {flag} failed (compressor missing?), skipping {name}");
            continue;
        }
        let bytes = std::fs::read(&archive).unwrap();
        assert!(
            layer::sniff_archive(&bytes[..]).unwrap().is_some(),
            "{name}"
        );
        let out = t.path().join(format!("out-{name}"));
        std::fs::create_dir(&out).unwrap();
        layer::unpack_archive(&bytes[..], &out).unwrap();
        let diff = Command::new("diff")
            .arg("-r")
            .arg("--no-dereference")
            .arg(&src)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            diff.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&diff.stdout)
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            out.join("a").metadata().unwrap().ino(),
            out.join("b").metadata().unwrap().ino()
        );
    }
}

#[test]
fn gnu_tar_reads_layers() {
    if !have_tar() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    tree(&src);
    let ss = SnapshotStore::new(t.path().join("state")).unwrap();
    let cs = ContentStore::new(t.path().join("state")).unwrap();
    let id = ss.create_from_dir(&src, None).unwrap();
    let blob = layer::pack_layer(&ss, &cs, &id, &PackOptions::default()).unwrap();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(cs.path(&blob.digest))
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&src)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}
