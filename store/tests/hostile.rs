//! Hostile archives: nothing may be written outside the target dir.

use std::path::Path;

use kiln_store::layer::{self, UnpackMode};
use kiln_store::{Error, SnapshotStore};

/// One tar entry with raw (unvalidated) name and link name.
fn raw_entry(out: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish(mut v: Vec<u8>) -> Vec<u8> {
    v.extend_from_slice(&[0u8; 1024]);
    v
}

fn unpack(bytes: &[u8], dest: &Path, mode: UnpackMode) -> kiln_store::Result<layer::UnpackReport> {
    match mode {
        UnpackMode::Plain => layer::unpack_archive(bytes, dest),
        UnpackMode::Layer => layer::unpack_tar(bytes, dest, UnpackMode::Layer),
    }
}

fn outside_untouched(outer: &Path) {
    let names: Vec<String> = std::fs::read_dir(outer)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["root".to_string()],
        "something was written next to the target"
    );
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    (t, root)
}

#[test]
fn dotdot_is_refused() {
    for mode in [UnpackMode::Plain, UnpackMode::Layer] {
        let (t, root) = setup();
        let mut v = Vec::new();
        raw_entry(&mut v, b"../x", tar::EntryType::Regular, b"", b"evil");
        let err = unpack(&finish(v), &root, mode).unwrap_err();
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
        let mut v = Vec::new();
        raw_entry(&mut v, b"a/../../x", tar::EntryType::Regular, b"", b"evil");
        assert!(unpack(&finish(v), &root, mode).is_err());
        outside_untouched(t.path());
    }
}

#[test]
fn absolute_path_is_made_relative() {
    let (t, root) = setup();
    let mut v = Vec::new();
    raw_entry(&mut v, b"/abs/file", tar::EntryType::Regular, b"", b"x");
    unpack(&finish(v), &root, UnpackMode::Plain).unwrap();
    assert_eq!(std::fs::read(root.join("abs/file")).unwrap(), b"x");
    outside_untouched(t.path());
}

#[test]
fn writes_through_symlinks_stay_inside() {
    for mode in [UnpackMode::Plain, UnpackMode::Layer] {
        let (t, root) = setup();
        let outer = t.path().to_str().unwrap().as_bytes().to_vec();
        let mut v = Vec::new();
        raw_entry(&mut v, b"abs", tar::EntryType::Symlink, &outer, b"");
        raw_entry(&mut v, b"abs/pwned", tar::EntryType::Regular, b"", b"evil");
        raw_entry(
            &mut v,
            b"rel",
            tar::EntryType::Symlink,
            b"../../../../..",
            b"",
        );
        raw_entry(&mut v, b"rel/pwned2", tar::EntryType::Regular, b"", b"evil");
        raw_entry(&mut v, b"root", tar::EntryType::Symlink, b"/", b"");
        raw_entry(
            &mut v,
            b"root/pwned3",
            tar::EntryType::Regular,
            b"",
            b"evil",
        );
        unpack(&finish(v), &root, mode).unwrap();
        outside_untouched(t.path());
        // Resolved as if root were `/`.
        assert!(
            root.join(t.path().strip_prefix("/").unwrap())
                .join("pwned")
                .is_file()
        );
        assert!(root.join("pwned2").is_file());
        assert!(root.join("pwned3").is_file());
        assert!(!Path::new("/pwned2").exists() && !Path::new("/pwned3").exists());
    }
}

#[test]
fn final_symlink_is_replaced_not_followed() {
    let (t, root) = setup();
    let victim = t.path().join("victim");
    let outer_file = victim.to_str().unwrap().as_bytes().to_vec();
    let mut v = Vec::new();
    raw_entry(&mut v, b"link", tar::EntryType::Symlink, &outer_file, b"");
    raw_entry(&mut v, b"link", tar::EntryType::Regular, b"", b"data");
    unpack(&finish(v), &root, UnpackMode::Plain).unwrap();
    assert!(!victim.exists());
    assert!(root.join("link").symlink_metadata().unwrap().is_file());
    outside_untouched(t.path());
}

#[test]
fn hardlinks_outside_are_refused() {
    for mode in [UnpackMode::Plain, UnpackMode::Layer] {
        for target in [&b"/etc/passwd"[..], b"../../../../etc/passwd", b"missing"] {
            let (t, root) = setup();
            let mut v = Vec::new();
            raw_entry(&mut v, b"pw", tar::EntryType::Link, target, b"");
            let err = unpack(&finish(v), &root, mode).unwrap_err();
            assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
            assert!(!root.join("pw").exists());
            outside_untouched(t.path());
        }
        // A hardlink through a symlinked dir to outside is refused too.
        let (t, root) = setup();
        let mut v = Vec::new();
        raw_entry(&mut v, b"etc", tar::EntryType::Symlink, b"/etc", b"");
        raw_entry(&mut v, b"pw", tar::EntryType::Link, b"etc/passwd", b"");
        assert!(unpack(&finish(v), &root, mode).is_err());
        assert!(!root.join("pw").exists());
        outside_untouched(t.path());
    }
}

#[test]
fn hardlink_inside_is_kept() {
    let (_t, root) = setup();
    let mut v = Vec::new();
    raw_entry(&mut v, b"a", tar::EntryType::Regular, b"", b"data");
    raw_entry(&mut v, b"b", tar::EntryType::Link, b"a", b"");
    unpack(&finish(v), &root, UnpackMode::Plain).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        root.join("a").metadata().unwrap().ino(),
        root.join("b").metadata().unwrap().ino()
    );
}

#[test]
fn devices_are_skipped() {
    for mode in [UnpackMode::Plain, UnpackMode::Layer] {
        let (t, root) = setup();
        let mut v = Vec::new();
        raw_entry(&mut v, b"dev/null", tar::EntryType::Char, b"", b"");
        raw_entry(&mut v, b"dev/sda", tar::EntryType::Block, b"", b"");
        let rep = unpack(&finish(v), &root, mode).unwrap();
        assert_eq!(rep.skipped.len(), 2);
        assert!(!root.join("dev/null").exists() && !root.join("dev/sda").exists());
        outside_untouched(t.path());
    }
}

#[test]
fn overlay_xattrs_cannot_be_forged() {
    let (_t, root) = setup();
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..])])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "d/", std::io::empty()).unwrap();
    let bytes = b.into_inner().unwrap();
    layer::unpack_tar(&bytes[..], &root, UnpackMode::Layer).unwrap();
    assert!(root.join("d").is_dir());
    assert!(!kiln_store::fsutil::is_opaque(&root.join("d")));
}

#[test]
fn hostile_layer_creates_no_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let ss = SnapshotStore::new(t.path()).unwrap();
    let mut v = Vec::new();
    raw_entry(&mut v, b"ok", tar::EntryType::Regular, b"", b"fine");
    raw_entry(&mut v, b"../../x", tar::EntryType::Regular, b"", b"evil");
    assert!(layer::unpack_layer(&ss, None, &finish(v)[..], None).is_err());
    assert!(ss.list().unwrap().is_empty());
    assert!(
        kiln_store::fsutil::sorted_children(&ss.root().join("tmp"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn layer_whiteouts_become_overlay_markers() {
    let (_t, root) = setup();
    let mut v = Vec::new();
    raw_entry(&mut v, b"etc/", tar::EntryType::Directory, b"", b"");
    raw_entry(&mut v, b"etc/.wh.passwd", tar::EntryType::Regular, b"", b"");
    raw_entry(
        &mut v,
        b"opt/.wh..wh..opq",
        tar::EntryType::Regular,
        b"",
        b"",
    );
    raw_entry(&mut v, b"opt/x", tar::EntryType::Regular, b"", b"x");
    layer::unpack_tar(&finish(v)[..], &root, UnpackMode::Layer).unwrap();
    let wh = root.join("etc/passwd").symlink_metadata();
    let marker = root.join("etc/.wh.passwd").symlink_metadata();
    use std::os::unix::fs::FileTypeExt;
    assert!(wh.is_ok_and(|m| m.file_type().is_char_device()) || marker.is_ok());
    assert!(kiln_store::fsutil::is_opaque(&root.join("opt")));
    assert!(root.join("opt/x").is_file());
}

#[test]
fn lower_layer_symlinks_stay_inside() {
    let t = tempfile::tempdir().unwrap();
    let ss = SnapshotStore::new(t.path().join("state")).unwrap();
    let base = t.path().join("base");
    std::fs::create_dir(&base).unwrap();
    std::os::unix::fs::symlink(t.path(), base.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../..", base.join("rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", base.join("pw")).unwrap();
    let b = ss.create_from_dir(&base, None).unwrap();
    let before: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let mut v = Vec::new();
    raw_entry(&mut v, b"abs/pwned", tar::EntryType::Regular, b"", b"evil");
    raw_entry(&mut v, b"rel/pwned2", tar::EntryType::Regular, b"", b"evil");
    let u = layer::unpack_layer(&ss, Some(&b), &finish(v)[..], None).unwrap();
    let diff = ss.diff_dir(&u.id).unwrap();
    assert!(
        diff.join(t.path().strip_prefix("/").unwrap())
            .join("pwned")
            .is_file()
    );
    assert!(diff.join("pwned2").is_file());

    // Hardlinks through a lower symlink, or to a lower symlink's target, are refused.
    for target in [&b"abs/base/x"[..], b"pw/x"] {
        let mut v = Vec::new();
        raw_entry(&mut v, b"h", tar::EntryType::Link, target, b"");
        assert!(layer::unpack_layer(&ss, Some(&b), &finish(v)[..], None).is_err());
    }
    // A hardlink to the lower symlink itself copies the symlink, not /etc/passwd.
    let mut v = Vec::new();
    raw_entry(&mut v, b"h", tar::EntryType::Link, b"pw", b"");
    let u = layer::unpack_layer(&ss, Some(&b), &finish(v)[..], None).unwrap();
    let h = ss.diff_dir(&u.id).unwrap().join("h");
    assert!(h.symlink_metadata().unwrap().file_type().is_symlink());

    let after: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "something was written outside the store");
}

/// Mutated archives must fail cleanly (or extract inside), never panic.
#[test]
fn mutated_archives_do_not_panic() {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in [("a/b/c", &b"hello"[..]), ("a/x", b"x"), ("z", b"zz")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, p, data).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "l", "a/b").unwrap();
    let good = b.into_inner().unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let (t, root) = setup();
        let mut v = good.clone();
        for _ in 0..(1 + next() % 8) {
            let i = (next() as usize) % v.len();
            v[i] = next() as u8;
        }
        for mode in [UnpackMode::Plain, UnpackMode::Layer] {
            let _ = unpack(&v, &root, mode);
        }
        let _ = layer::unpack_archive(&v[..], &root);
        let _ = layer::sniff_archive(&v[..]);
        outside_untouched(t.path());
    }
}
