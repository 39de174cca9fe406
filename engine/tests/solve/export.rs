use std::collections::BTreeMap;

use kiln_llb::pb;

use crate::defs::*;
use crate::{engine, session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_local_tar_and_oci() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let mut def = Def::default();
    let a = def.add(file(
        &[],
        vec![
            pb::FileAction {
                output: -1,
                ..act(-1, -1, mkdir("/app"))
            },
            act(0, -1, mkfile("/app/x", b"x")),
        ],
    ));
    let b = def.add(file(&[&a], vec![act(0, -1, mkfile("/app/y", b"y"))]));
    let (s, _) = session(&[]);
    let r = e.solve(&def.finish(&b), s.clone()).await.unwrap();
    let attrs =
        |k: &str, v: &std::path::Path| BTreeMap::from([(k.to_owned(), v.display().to_string())]);
    let dir = out.path().join("local");
    e.export(Some(&r), None, "local", &attrs("dest", &dir), s.clone())
        .await
        .unwrap();
    assert_eq!(fs_err::read_to_string(dir.join("app/x")).unwrap(), "x");
    assert_eq!(fs_err::read_to_string(dir.join("app/y")).unwrap(), "y");
    let tar = out.path().join("fs.tar");
    e.export(Some(&r), None, "tar", &attrs("dest", &tar), s.clone())
        .await
        .unwrap();
    assert!(fs_err::metadata(&tar).unwrap().len() > 0);
    let oci = out.path().join("img.tar");
    let res = e
        .export(Some(&r), None, "oci", &attrs("dest", &oci), s.clone())
        .await
        .unwrap();
    assert!(
        res.metadata["containerimage.digest"].starts_with("sha256:"),
        "{res:?}"
    );
    // The same result exports to the same image.
    let oci2 = out.path().join("img2.tar");
    let res2 = e
        .export(Some(&r), None, "oci", &attrs("dest", &oci2), s.clone())
        .await
        .unwrap();
    assert_eq!(
        res.metadata["containerimage.digest"],
        res2.metadata["containerimage.digest"]
    );
    // No ref: an empty image.
    let empty = out.path().join("empty.tar");
    e.export(None, None, "docker", &attrs("dest", &empty), s.clone())
        .await
        .unwrap();
    assert!(
        e.export(Some(&r), None, "nope", &BTreeMap::new(), s)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layout_source_roundtrip() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let mut def = Def::default();
    let a = def.add(file(
        &[],
        vec![
            pb::FileAction {
                output: -1,
                ..act(-1, -1, mkdir("/app"))
            },
            act(0, -1, mkfile("/app/x", b"layer1")),
        ],
    ));
    let b = def.add(file(&[&a], vec![act(0, -1, mkfile("/app/y", b"layer2"))]));
    let (s, _) = session(&[]);
    let r = e.solve(&def.finish(&b), s.clone()).await.unwrap();
    let layout = out.path().join("layout");
    let attrs = BTreeMap::from([
        ("dest".to_owned(), layout.display().to_string()),
        ("tar".to_owned(), "false".to_owned()),
    ]);
    let res = e.export(Some(&r), None, "oci", &attrs, s).await.unwrap();
    let manifest = res.metadata["containerimage.digest"].clone();

    // Import it into a fresh root.
    let root2 = tempfile::tempdir().unwrap();
    let e2 = engine(root2.path());
    let mut def = Def::default();
    let src = def.add(pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: format!("oci-layout://mystore@{manifest}"),
            attrs: Default::default(),
        })),
        platform: Some(pb::Platform {
            architecture: kiln_store::exporter::host_arch().into(),
            os: "linux".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let top = def.add(file(&[&src], vec![act(0, -1, mkfile("/app/z", b"z"))]));
    let bytes = def.finish(&top);
    let (s, _) = crate::session_with(
        |s| {
            s.oci_layouts.insert("mystore".into(), layout.clone());
        },
        &[],
    );
    let r2 = e2.solve(&bytes, s.clone()).await.unwrap();
    assert_eq!(e2.read_file(&r2, "/app/x", 0, None).unwrap(), b"layer1");
    assert_eq!(e2.read_file(&r2, "/app/y", 0, None).unwrap(), b"layer2");
    assert_eq!(e2.read_file(&r2, "/app/z", 0, None).unwrap(), b"z");
    let (s, buf) = crate::session_with(
        |s| {
            s.oci_layouts.insert("mystore".into(), layout.clone());
        },
        &[],
    );
    e2.solve(&bytes, s).await.unwrap();
    assert_eq!(crate::count(&buf.text(), "CACHED"), 2, "{}", buf.text());
    // Without the store in the session: a clear error.
    let (s, _) = session(&[]);
    let err = e2.solve(&bytes, s).await.unwrap_err();
    assert!(
        crate::chain(&err).contains("\"mystore\" is not provided"),
        "{}",
        crate::chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_image_local_mode_without_a_pull_is_clear() {
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let mut def = Def::default();
    let src = def.add(pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: "docker-image://docker.io/library/busybox:latest".into(),
            attrs: BTreeMap::from([("image.resolvemode".to_owned(), "local".to_owned())]),
        })),
        ..Default::default()
    });
    let (s, _) = session(&[]);
    let err = e.solve(&def.finish(&src), s).await.unwrap_err();
    assert!(
        crate::chain(&err).contains("not available locally"),
        "{}",
        crate::chain(&err)
    );
}
