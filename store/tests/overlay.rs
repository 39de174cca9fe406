//! Against the real kernel overlayfs: an upper dir written through a mount is
//! committed, viewed (copy fallback) and packed the way overlay shows it.
//! Needs root; skipped loudly without it (and fails under CI as root).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use kiln_store::layer::{self, PackOptions};
use kiln_store::{ContentStore, SnapshotStore};

fn mount(data: &str, target: &Path, cwd: &Path) -> bool {
    let out = Command::new("mount")
        .current_dir(cwd)
        .args(["-t", "overlay", "overlay", "-o", data])
        .arg(target)
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            let msg = String::from_utf8_lossy(&o.stderr).into_owned();
            if std::env::var_os("CI").is_some() && rustix::process::geteuid().is_root() {
                panic!("overlay mount failed under CI: {msg}");
            }
            eprintln!("\n*** SKIPPING overlay test: mount failed: {msg} ***\n");
            false
        }
        Err(e) => {
            eprintln!("\n*** SKIPPING overlay test: no mount(8): {e} ***\n");
            false
        }
    }
}

fn umount(target: &Path) {
    let st = Command::new("umount").arg(target).status().unwrap();
    assert!(st.success());
}

fn listing(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &p, out);
            } else {
                let body = if m.is_file() {
                    std::fs::read_to_string(&p).unwrap()
                } else {
                    String::new()
                };
                out.insert(format!("{rel}={body}"));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn overlay_upper_commit_view_and_layer() {
    let t = tempfile::tempdir().unwrap();
    let ss = SnapshotStore::new(t.path().join("state"))
        .unwrap()
        .without_sync();
    let cs = ContentStore::new(t.path().join("state")).unwrap();
    let base_src = t.path().join("base");
    for (p, body) in [("f", "f"), ("d/x", "x"), ("keep", "old"), ("e/y", "y")] {
        let p = base_src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let base = ss.create_from_dir(&base_src, None).unwrap();

    let active = ss.prepare(Some(&base)).unwrap();
    let lowers = ss.overlay_lowers(Some(&base), 500).unwrap();
    let data = lowers
        .mount_data_relative(&active.upper(), &active.work())
        .unwrap();
    let m = t.path().join("m");
    std::fs::create_dir(&m).unwrap();
    if !mount(&data, &m, &lowers.base) {
        ss.abort(active).unwrap();
        return;
    }
    std::fs::remove_file(m.join("f")).unwrap();
    std::fs::remove_dir_all(m.join("d")).unwrap();
    std::fs::create_dir(m.join("d")).unwrap();
    std::fs::write(m.join("d/new"), "new").unwrap();
    std::fs::write(m.join("keep"), "changed").unwrap();
    std::fs::write(m.join("tmpfile"), "t").unwrap();
    std::fs::remove_file(m.join("tmpfile")).unwrap();
    let through_mount = listing(&m);
    umount(&m);
    let top = ss.commit(active).unwrap();

    // The copy fallback shows what the mount showed.
    assert_eq!(listing(&ss.view(&top).unwrap()), through_mount);

    // And so does a read-only overlay of the committed chain.
    let ro = ss.overlay_lowers(Some(&top), 500).unwrap();
    let lowers_abs: Vec<String> = ro
        .absolute()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(mount(
        &format!("lowerdir={}", lowers_abs.join(":")),
        &m,
        t.path()
    ));
    let ro_listing = listing(&m);
    umount(&m);
    assert_eq!(ro_listing, through_mount);

    // The layer: whiteout for f only (tmpfile never existed below), opaque d.
    let blob = layer::pack_layer(&ss, &cs, &top, &PackOptions::default()).unwrap();
    let bytes = cs.read(&blob.digest).unwrap();
    let (_, r) = layer::decompress(&bytes[..]).unwrap();
    let names: Vec<String> = tar::Archive::new(r)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&".wh.f".to_string()), "{names:?}");
    assert!(names.contains(&"d/.wh..wh..opq".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("tmpfile")), "{names:?}");

    // Unpacked onto the base it gives the same tree again.
    let u =
        layer::unpack_layer_blob(&cs, &ss, Some(&base), &blob.digest, Some(&blob.diff_id)).unwrap();
    assert_eq!(listing(&ss.view(&u.id).unwrap()), through_mount);
}
