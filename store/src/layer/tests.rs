use std::io::Read;

use super::*;

fn entries(blob: &[u8]) -> Vec<(String, tar::EntryType, u64, u64)> {
    let (_, r) = decompress(blob).unwrap();
    let mut ar = tar::Archive::new(r);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.entry_type(),
                h.mtime().unwrap(),
                h.uid().unwrap(),
            )
        })
        .collect()
}

#[test]
fn pack_sorted_whiteouts_opaque_hardlinks_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let cs = ContentStore::new(t.path()).unwrap();
    let ss = SnapshotStore::new(t.path()).unwrap();
    let base = t.path().join("base");
    std::fs::create_dir_all(base.join("etc")).unwrap();
    std::fs::write(base.join("etc/group"), "g").unwrap();
    std::fs::create_dir_all(base.join("opt/old")).unwrap();
    let b = ss.create_from_dir(&base, None).unwrap();

    let up = t.path().join("up");
    std::fs::create_dir_all(up.join("etc")).unwrap();
    std::fs::create_dir_all(up.join("opt")).unwrap();
    std::fs::write(up.join("b.txt"), "b").unwrap();
    std::fs::write(up.join("a.txt"), "a").unwrap();
    std::fs::hard_link(up.join("a.txt"), up.join("z-link")).unwrap();
    std::os::unix::fs::symlink("/etc/group", up.join("sym")).unwrap();
    fsutil::make_whiteout(&up.join("etc"), "group".as_ref()).unwrap();
    // A whiteout for a name no lower has is dropped.
    fsutil::make_whiteout(&up.join("etc"), "never".as_ref()).unwrap();
    fsutil::set_opaque(&up.join("opt")).unwrap();
    std::fs::write(up.join("opt/new"), "n").unwrap();
    let top = ss.create_from_diff_dir(&up, Some(&b)).unwrap();

    let opts = PackOptions {
        source_date_epoch: Some(1000),
        ..Default::default()
    };
    let blob = pack_layer(&ss, &cs, &top, &opts).unwrap();
    let bytes = cs.read(&blob.digest).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    let es = entries(&bytes);
    let names: Vec<&str> = es.iter().map(|e| e.0.as_str()).collect();
    // `etc/` is as in the lower layer, so only its child is written.
    assert_eq!(
        names,
        vec![
            "a.txt",
            "b.txt",
            "etc/.wh.group",
            "opt/",
            "opt/.wh..wh..opq",
            "opt/new",
            "sym",
            "z-link"
        ]
    );
    assert!(es.iter().all(|e| e.2 <= 1000 && e.3 == 0));
    assert_eq!(es[7].1, tar::EntryType::Link);
    // A directory gets the epoch, whatever its own mtime (here 0, as a
    // layer unpacked from a cache has it).
    let opt = es.iter().find(|e| e.0 == "opt/").unwrap();
    assert_eq!(opt.2, 1000);
    let old = top_with_dir_mtime(&ss, &t, 5);
    let es = entries(
        &cs.read(&pack_layer(&ss, &cs, &old, &opts).unwrap().digest)
            .unwrap(),
    );
    assert_eq!(
        es.iter().map(|e| (e.0.as_str(), e.2)).collect::<Vec<_>>(),
        [("d/", 1000), ("d/f", 5)]
    );
    let none = PackOptions::default();
    let es = entries(
        &cs.read(&pack_layer(&ss, &cs, &old, &none).unwrap().digest)
            .unwrap(),
    );
    assert_eq!(
        es.iter().map(|e| (e.0.as_str(), e.2)).collect::<Vec<_>>(),
        [("d/", 0), ("d/f", 5)]
    );

    // diff id is the sha256 of the uncompressed tar.
    let (_, mut r) = decompress(&bytes[..]).unwrap();
    let mut raw = Vec::new();
    r.read_to_end(&mut raw).unwrap();
    assert_eq!(Digest::of_bytes(&raw), blob.diff_id);

    // Reproducible, and cached.
    let again = pack_dir(
        &cs,
        &ss.diff_dir(&top).unwrap(),
        &[ss.diff_dir(&b).unwrap()],
        &opts,
    )
    .unwrap();
    assert_eq!(again, blob);
    assert_eq!(pack_layer(&ss, &cs, &top, &opts).unwrap(), blob);

    // Round trip through unpack.
    let u = unpack_layer_blob(&cs, &ss, Some(&b), &blob.digest, Some(&blob.diff_id)).unwrap();
    let v = ss.view(&u.id).unwrap();
    assert!(!v.join("etc/group").exists());
    assert!(!v.join("opt/old").exists());
    assert_eq!(std::fs::read_to_string(v.join("opt/new")).unwrap(), "n");
    assert_eq!(
        std::fs::read_link(v.join("sym")).unwrap(),
        Path::new("/etc/group")
    );

    for c in [Compression::Zstd, Compression::Uncompressed] {
        let o = PackOptions {
            compression: c,
            ..opts.clone()
        };
        let z = pack_layer(&ss, &cs, &top, &o).unwrap();
        assert_eq!(z.diff_id, blob.diff_id);
        let u = unpack_layer_blob(&cs, &ss, Some(&b), &z.digest, Some(&blob.diff_id)).unwrap();
        assert_eq!(u.compression, c);
    }
}

#[test]
fn empty_diff_has_no_entries() {
    let t = tempfile::tempdir().unwrap();
    let cs = ContentStore::new(t.path()).unwrap();
    let ss = SnapshotStore::new(t.path()).unwrap();
    let a = ss.prepare(None).unwrap();
    let id = ss.commit(a).unwrap();
    let blob = pack_layer(&ss, &cs, &id, &PackOptions::default()).unwrap();
    assert_eq!(blob.entries, 0);
}

#[test]
fn sniff() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    b.append_data(&mut h, "x", &b"x"[..]).unwrap();
    let raw = b.into_inner().unwrap();
    assert_eq!(
        sniff_archive(&raw[..]).unwrap(),
        Some(Detected::Known(Compression::Uncompressed))
    );
    let mut gz = Compressor::new(Vec::new(), Compression::Gzip, None).unwrap();
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(
        sniff_archive(&gz[..]).unwrap(),
        Some(Detected::Known(Compression::Gzip))
    );
    assert_eq!(sniff_archive(&b"hello world, not a tar"[..]).unwrap(), None);
    assert_eq!(sniff_archive(&b"BZh91AY"[..]).unwrap(), None);
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    std::io::Write::write_all(&mut bz, &raw).unwrap();
    let bz = bz.finish().unwrap();
    assert_eq!(sniff_archive(&bz[..]).unwrap(), Some(Detected::Bzip2));
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut &raw[..], &mut xz).unwrap();
    assert_eq!(sniff_archive(&xz[..]).unwrap(), Some(Detected::Xz));
    for archive in [&bz, &xz, &gz] {
        let d = tempfile::tempdir().unwrap();
        unpack_archive(&archive[..], d.path()).unwrap();
        assert_eq!(std::fs::read(d.path().join("x")).unwrap(), b"x");
    }
    // Layers stay gzip/zstd/plain.
    assert!(matches!(
        decompress(&bz[..]),
        Err(Error::UnsupportedCompression("bzip2"))
    ));
}

#[test]
fn redirect_xattr_is_refused_and_user_xattrs_kept() {
    let t = tempfile::tempdir().unwrap();
    let cs = ContentStore::new(t.path()).unwrap();
    let up = t.path().join("up");
    std::fs::create_dir_all(up.join("d")).unwrap();
    std::fs::write(up.join("f"), "x").unwrap();
    fsutil::set_xattr(&up.join("f"), "user.kiln", b"v");
    fsutil::set_xattr(&up.join("f"), "trusted.overlay.origin", b"junk");
    let has_user = rustix::fs::lgetxattr_query(up.join("f").as_path(), "user.kiln").is_ok();
    let blob = pack_dir(&cs, &up, &[], &PackOptions::default()).unwrap();
    let bytes = cs.read(&blob.digest).unwrap();
    let (_, r) = decompress(&bytes[..]).unwrap();
    let mut ar = tar::Archive::new(r);
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                seen.push(x.unwrap().key().unwrap().to_owned());
            }
        }
    }
    assert!(!seen.iter().any(|k| k.contains("overlay")), "{seen:?}");
    if has_user {
        assert_eq!(seen, vec!["SCHILY.xattr.user.kiln".to_string()]);
    }

    // A redirect (overlay mounted without redirect_dir=off) cannot become a layer.
    if rustix::fs::lsetxattr(
        up.join("d").as_path(),
        "trusted.overlay.redirect",
        b"/x",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok()
    {
        let err = pack_dir(&cs, &up, &[], &PackOptions::default()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedOverlay { .. }), "{err}");
    }
}

#[test]
fn unpack_onto_lowers_keeps_parent_attrs_follows_symlinks_copies_up() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = tempfile::tempdir().unwrap();
    let cs = ContentStore::new(t.path()).unwrap();
    let ss = SnapshotStore::new(t.path()).unwrap();
    let base = t.path().join("base");
    std::fs::create_dir_all(base.join("tmp")).unwrap();
    std::fs::set_permissions(base.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::create_dir_all(base.join("usr/lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib", base.join("lib")).unwrap();
    std::fs::create_dir_all(base.join("bin")).unwrap();
    std::fs::write(base.join("bin/busybox"), "bb").unwrap();
    let b = ss.create_from_dir(&base, None).unwrap();

    // A layer with no entries for its parent dirs, a path through the lower
    // `lib` symlink, and a hardlink to a file of the lower layer.
    let mut tb = tar::Builder::new(Vec::new());
    for (p, data) in [("tmp/x", &b"x"[..]), ("lib/libfoo.so", b"so")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tb.append_data(&mut h, p, data).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    tb.append_link(&mut h, "bin/sh", "bin/busybox").unwrap();
    let layer = tb.into_inner().unwrap();
    let (digest, _) = cs.write_bytes(&layer, None).unwrap();
    let u = unpack_layer_blob(&cs, &ss, Some(&b), &digest, None).unwrap();
    let diff = ss.diff_dir(&u.id).unwrap();
    assert_eq!(
        std::fs::metadata(diff.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert!(diff.join("usr/lib/libfoo.so").is_file());
    assert!(
        !diff.join("lib").exists(),
        "the lower symlink must not be shadowed by a dir"
    );
    assert_eq!(
        std::fs::metadata(diff.join("bin/sh")).unwrap().ino(),
        std::fs::metadata(diff.join("bin/busybox")).unwrap().ino()
    );
    let v = ss.view(&u.id).unwrap();
    assert_eq!(std::fs::read(v.join("lib/libfoo.so")).unwrap(), b"so");
    assert_eq!(std::fs::read(v.join("bin/sh")).unwrap(), b"bb");
    assert_eq!(
        std::fs::metadata(v.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
}

#[test]
fn whiteout_then_dir_in_one_layer_is_opaque() {
    let t = tempfile::tempdir().unwrap();
    let cs = ContentStore::new(t.path()).unwrap();
    let ss = SnapshotStore::new(t.path()).unwrap();
    let base = t.path().join("base");
    std::fs::create_dir_all(base.join("d/old")).unwrap();
    std::fs::create_dir_all(base.join("e/old")).unwrap();
    let b = ss.create_from_dir(&base, None).unwrap();
    let mut tb = tar::Builder::new(Vec::new());
    for (p, kind) in [
        (".wh.d", tar::EntryType::Regular),
        ("d/", tar::EntryType::Directory),
        (".wh.e", tar::EntryType::Regular),
        ("e/new", tar::EntryType::Regular),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o755);
        tb.append_data(&mut h, p, std::io::empty()).unwrap();
    }
    let (digest, _) = cs.write_bytes(&tb.into_inner().unwrap(), None).unwrap();
    let u = unpack_layer_blob(&cs, &ss, Some(&b), &digest, None).unwrap();
    let v = ss.view(&u.id).unwrap();
    assert!(v.join("d").is_dir() && !v.join("d/old").exists());
    assert!(v.join("e/new").is_file() && !v.join("e/old").exists());
}

/// A snapshot holding `d/f`, both with mtime `mtime`.
fn top_with_dir_mtime(ss: &SnapshotStore, t: &tempfile::TempDir, mtime: i64) -> SnapshotId {
    let up = t.path().join(format!("old-{mtime}"));
    std::fs::create_dir_all(up.join("d")).unwrap();
    std::fs::write(up.join("d/f"), "f").unwrap();
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime as u64);
    for p in [up.join("d/f"), up.join("d")] {
        std::fs::File::open(&p).unwrap().set_modified(when).unwrap();
    }
    ss.create_from_diff_dir(&up, None).unwrap()
}
