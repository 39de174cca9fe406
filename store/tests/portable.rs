//! The unprivileged marker forms: `.wh.NAME` files for deletions and a
//! `.wh..wh..opq` file for opaque dirs work end to end. Its own test binary,
//! because forcing the portable form is process-wide.

use kiln_store::layer::{self, PackOptions};
use kiln_store::{ContentStore, SnapshotStore, fsutil};

#[test]
fn portable_markers_round_trip() {
    fsutil::force_portable_markers(true);
    let t = tempfile::tempdir().unwrap();
    let ss = SnapshotStore::new(t.path()).unwrap();
    let cs = ContentStore::new(t.path()).unwrap();

    let a = ss.prepare_copy(None).unwrap();
    std::fs::create_dir_all(a.root().join("d/sub")).unwrap();
    std::fs::write(a.root().join("d/sub/f"), "f").unwrap();
    std::fs::write(a.root().join("gone"), "g").unwrap();
    // A user file with a whiteout-like name but ordinary permissions stays a file.
    std::fs::write(a.root().join(".wh.keep"), "").unwrap();
    let base = ss.commit(a).unwrap();

    let a = ss.prepare_copy(Some(&base)).unwrap();
    std::fs::remove_file(a.root().join("gone")).unwrap();
    let top = ss.commit(a).unwrap();
    let diff = ss.diff_dir(&top).unwrap();
    assert!(
        diff.join(".wh.gone").is_file(),
        "portable whiteout expected"
    );
    let v = ss.view(&top).unwrap();
    assert!(!v.join("gone").exists() && !v.join(".wh.gone").exists());
    assert!(v.join(".wh.keep").is_file());

    // Opaque dir through a layer: pack with the marker, unpack to a marker.
    let up = t.path().join("up");
    std::fs::create_dir_all(up.join("d")).unwrap();
    fsutil::set_opaque(&up.join("d")).unwrap();
    assert!(up.join("d/.wh..wh..opq").is_file());
    std::fs::write(up.join("d/new"), "n").unwrap();
    let o = ss.create_from_diff_dir(&up, Some(&top)).unwrap();
    let blob = layer::pack_layer(&ss, &cs, &o, &PackOptions::default()).unwrap();
    let u =
        layer::unpack_layer_blob(&cs, &ss, Some(&top), &blob.digest, Some(&blob.diff_id)).unwrap();
    for id in [&o, &u.id] {
        let v = ss.view(id).unwrap();
        assert!(
            !v.join("d/sub").exists(),
            "opaque dir must hide lower content"
        );
        assert!(v.join("d/new").is_file());
        assert!(!v.join("d/.wh..wh..opq").exists());
    }
    assert!(ss.diff_dir(&u.id).unwrap().join("d/.wh..wh..opq").is_file());
}
