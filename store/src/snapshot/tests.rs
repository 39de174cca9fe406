use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use super::*;

fn write(p: &Path, s: &str) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, s).unwrap();
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

#[test]
fn id_validation() {
    assert!("abc-DEF_09".parse::<SnapshotId>().is_ok());
    for bad in ["", "a/b", "..", "a b", &"x".repeat(65)] {
        assert!(bad.parse::<SnapshotId>().is_err(), "{bad}");
    }
}

#[test]
fn chain_view_whiteout_opaque() {
    let t = tempfile::tempdir().unwrap();
    let s = SnapshotStore::new(t.path().join("state")).unwrap();

    let base = t.path().join("base");
    write(&base.join("etc/passwd"), "root");
    write(&base.join("etc/group"), "g");
    write(&base.join("usr/bin/a"), "a");
    write(&base.join("usr/bin/b"), "b");
    let b = s.create_from_dir(&base, None).unwrap();

    // Second layer in upper form: delete etc/group, make usr/bin opaque.
    let up = t.path().join("up");
    fs::create_dir_all(up.join("etc")).unwrap();
    fsutil::make_whiteout(&up.join("etc"), "group".as_ref()).unwrap();
    write(&up.join("usr/bin/c"), "c");
    fsutil::set_opaque(&up.join("usr/bin")).unwrap();
    let top = s.create_from_diff_dir(&up, Some(&b)).unwrap();

    assert_eq!(s.chain(&top).unwrap(), vec![b.clone(), top.clone()]);
    assert_eq!(s.info(&top).unwrap().parent, Some(b.clone()));
    let v = s.view(&top).unwrap();
    assert_eq!(read(&v.join("etc/passwd")), "root");
    assert!(!v.join("etc/group").exists());
    assert!(!v.join("usr/bin/a").exists());
    assert_eq!(read(&v.join("usr/bin/c")), "c");
    // The view holds no markers.
    assert!(
        fsutil::sorted_children(&v.join("usr/bin")).unwrap() == vec![std::ffi::OsString::from("c")]
    );

    let lowers = s.overlay_lowers(Some(&top), 500).unwrap();
    assert_eq!(
        lowers.relative,
        vec![
            format!("committed/{top}/diff"),
            format!("committed/{b}/diff")
        ]
    );
    assert!(lowers.absolute()[0].is_dir());
    let flat = s.overlay_lowers(Some(&top), 1).unwrap();
    assert_eq!(flat.relative, vec![format!("views/{top}")]);

    // Removal is refused while a child exists.
    assert!(matches!(s.remove(&b), Err(Error::SnapshotInUse { .. })));
    assert!(s.usage(&top).unwrap() > 0);
    s.remove(&top).unwrap();
    assert!(!s.exists(&top));
    assert!(!s.root().join("views").join(top.as_str()).exists());
    s.remove(&b).unwrap();
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn copy_mode_commit_records_changes_only() {
    let t = tempfile::tempdir().unwrap();
    let s = SnapshotStore::new(t.path()).unwrap();
    let a = s.prepare_copy(None).unwrap();
    write(&a.root().join("keep"), "k");
    write(&a.root().join("gone"), "g");
    write(&a.root().join("d/x"), "x");
    fs::hard_link(a.root().join("keep"), a.root().join("keep2")).unwrap();
    let base = s.commit(a).unwrap();
    let d = s.diff_dir(&base).unwrap();
    assert_eq!(
        fs::metadata(d.join("keep")).unwrap().ino(),
        fs::metadata(d.join("keep2")).unwrap().ino()
    );

    let a = s.prepare_copy(Some(&base)).unwrap();
    fs::remove_file(a.root().join("gone")).unwrap();
    write(&a.root().join("d/y"), "y");
    fs::set_permissions(
        a.root().join("keep"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let top = s.commit(a).unwrap();
    let diff = s.diff_dir(&top).unwrap();
    let names = fsutil::sorted_children(&diff).unwrap();
    assert!(
        names.contains(&"d".into()) && names.contains(&"keep".into()),
        "{names:?}"
    );
    // d/x is unchanged, so only d/y is recorded.
    assert_eq!(
        fsutil::sorted_children(&diff.join("d")).unwrap(),
        vec![std::ffi::OsString::from("y")]
    );
    let gone = fsutil::lstat(&diff.join("gone")).unwrap();
    let marker = fsutil::lstat(&diff.join(".wh.gone")).unwrap();
    assert!(gone.is_some_and(|m| m.file_type().is_char_device()) || marker.is_some());
    let v = s.view(&top).unwrap();
    assert!(!v.join("gone").exists());
    assert_eq!(read(&v.join("d/x")), "x");
    assert_eq!(fs::metadata(v.join("keep")).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn overlay_mode_commit_and_abort() {
    let t = tempfile::tempdir().unwrap();
    let s = SnapshotStore::new(t.path()).unwrap();
    let a = s.prepare(None).unwrap();
    assert!(a.work().is_dir());
    write(&a.upper().join("f"), "1");
    let id = s.commit(a).unwrap();
    assert_eq!(read(&s.diff_dir(&id).unwrap().join("f")), "1");
    assert!(
        fsutil::sorted_children(&s.root().join("active"))
            .unwrap()
            .is_empty()
    );
    let a = s.prepare(Some(&id)).unwrap();
    let l = s.overlay_lowers(a.parent(), 500).unwrap();
    let data = l.mount_data(&a.upper(), &a.work()).unwrap();
    assert!(data.contains("redirect_dir=off"));
    s.abort(a).unwrap();
    assert!(
        fsutil::sorted_children(&s.root().join("active"))
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        s.prepare(Some(&"nope".parse().unwrap())),
        Err(Error::SnapshotNotFound(_))
    ));
}

#[test]
fn recover_clears_half_written_state() {
    let t = tempfile::tempdir().unwrap();
    let s = SnapshotStore::new(t.path()).unwrap();
    let a = s.prepare(None).unwrap();
    write(&a.upper().join("f"), "1");
    std::mem::forget(a);
    fs::create_dir(s.root().join("tmp/commit-half")).unwrap();
    s.recover().unwrap();
    assert!(s.list().unwrap().is_empty());
    assert!(
        fsutil::sorted_children(&s.root().join("tmp"))
            .unwrap()
            .is_empty()
    );
    assert!(
        fsutil::sorted_children(&s.root().join("active"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn views_build_on_ancestor_views() {
    let t = tempfile::tempdir().unwrap();
    let s = SnapshotStore::new(t.path()).unwrap();
    let a = s.prepare_copy(None).unwrap();
    write(&a.root().join("keep"), "k");
    write(&a.root().join("change"), "old");
    write(&a.root().join("d/gone"), "g");
    let base = s.commit(a).unwrap();
    let bv = s.view(&base).unwrap();
    let a = s.prepare_copy(Some(&base)).unwrap();
    write(&a.root().join("change"), "new");
    fs::remove_file(a.root().join("d/gone")).unwrap();
    let top = s.commit(a).unwrap();
    let tv = s.view(&top).unwrap();
    // Unchanged files share the inode; changed ones do not touch the base view.
    assert_eq!(
        fs::metadata(bv.join("keep")).unwrap().ino(),
        fs::metadata(tv.join("keep")).unwrap().ino()
    );
    assert_eq!(read(&bv.join("change")), "old");
    assert_eq!(read(&tv.join("change")), "new");
    assert!(bv.join("d/gone").exists() && !tv.join("d/gone").exists());
    s.drop_views().unwrap();
    assert!(
        fsutil::sorted_children(&s.root().join("views"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(read(&s.view(&top).unwrap().join("change")), "new");
}

#[test]
fn long_chains_fit_the_mount_option_limit() {
    let t = tempfile::tempdir().unwrap();
    let s = SnapshotStore::new(t.path()).unwrap().without_sync();
    let mut top: Option<SnapshotId> = None;
    for _ in 0..150 {
        let a = s.prepare(top.as_ref()).unwrap();
        top = Some(s.commit(a).unwrap());
    }
    let a = s.prepare(top.as_ref()).unwrap();
    let full = s.overlay_lowers(top.as_ref(), 500).unwrap();
    assert_eq!(full.relative.len(), 150);
    assert!(full.mount_data(&a.upper(), &a.work()).is_none());
    assert!(full.mount_data_relative(&a.upper(), &a.work()).is_none());
    let fit = s
        .overlay_lowers_fitting(top.as_ref(), &a.upper(), &a.work())
        .unwrap();
    assert!(fit.relative.len() < 150);
    assert!(fit.relative.last().unwrap().starts_with("views/"));
    assert!(fit.mount_data_relative(&a.upper(), &a.work()).is_some());
    assert!(fit.absolute().iter().all(|p| p.is_dir()));
    s.abort(a).unwrap();
}
