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
