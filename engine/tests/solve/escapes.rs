use kiln_llb::pb;
use kiln_llb::pb::file_action::Action;

use crate::defs::*;
use crate::session;

fn outside() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs_err::write(d.path().join("secret"), "top secret").unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotdot_paths_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let (s, _) = session(&[]);
    for path in ["../x", "/a/../../x", "../../../../../tmp/kiln-escape"] {
        let mut def = Def::default();
        let f = def.add(file(&[], vec![act(-1, -1, mkfile(path, b"pwned"))]));
        let err = e.solve(&def.finish(&f), s.clone()).await.unwrap_err();
        assert!(
            crate::chain(&err).contains("escapes the root"),
            "{}",
            crate::chain(&err)
        );
    }
    assert!(!std::path::Path::new("/tmp/kiln-escape").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_symlinks_pointing_out_are_not_followed_out() {
    let root = tempfile::tempdir().unwrap();
    let out = outside();
    let ctx = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(out.path(), ctx.path().join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", ctx.path().join("up")).unwrap();
    fs_err::write(ctx.path().join("Dockerfile.real"), "FROM scratch").unwrap();
    std::os::unix::fs::symlink("Dockerfile.real", ctx.path().join("Dockerfile")).unwrap();
    std::os::unix::fs::symlink(out.path().join("secret"), ctx.path().join("Evilfile")).unwrap();
    let e = engine(root.path());
    // The links are copied as links; copying through them resolves inside
    // the snapshot, where nothing is found.
    let mut def = Def::default();
    let l = def.add(local("context", &[]));
    let secret_path = format!("/abs{}", out.path().join("secret").display());
    for src in ["/abs/secret", secret_path.as_str(), "/up/secret"] {
        let c = def.add(file(
            &[&l],
            vec![act(
                -1,
                0,
                Action::Copy(pb::FileActionCopy {
                    allow_wildcard: false,
                    ..copy(src, "/x")
                }),
            )],
        ));
        let (s, _) = session(&[("context", ctx.path())]);
        let err = e.solve(&def.finish(&c), s).await.unwrap_err();
        assert!(
            crate::chain(&err).contains("not found"),
            "{src}: {}",
            crate::chain(&err)
        );
    }
    // A followed path must stay inside the context.
    let mut def = Def::default();
    let l = def.add(local(
        "context",
        &[
            ("local.followpaths", r#"["Dockerfile"]"#),
            ("local.includepattern", r#"["Dockerfile"]"#),
        ],
    ));
    let (s, _) = session(&[("context", ctx.path())]);
    let r = e.solve(&def.finish(&l), s).await.unwrap();
    assert_eq!(
        e.read_file(&r, "Dockerfile", 0, None).unwrap(),
        b"FROM scratch"
    );
    assert!(
        e.stat(&r, "abs").is_err(),
        "include pattern keeps only the followed path"
    );
    let mut def = Def::default();
    let l = def.add(local(
        "context",
        &[
            ("local.followpaths", r#"["Evilfile"]"#),
            ("local.includepattern", r#"["Evilfile"]"#),
        ],
    ));
    let (s, _) = session(&[("context", ctx.path())]);
    let err = e.solve(&def.finish(&l), s).await.unwrap_err();
    assert!(
        crate::chain(&err).contains("points outside the context"),
        "{}",
        crate::chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_symlinks_stay_inside() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let target = out.path().display().to_string();
    let mut def = Def::default();
    let f = def.add(file(
        &[],
        vec![
            pb::FileAction {
                output: -1,
                ..act(
                    -1,
                    -1,
                    Action::Symlink(pb::FileActionSymlink {
                        oldpath: target.clone(),
                        newpath: "/abs".into(),
                        owner: None,
                        timestamp: -1,
                    }),
                )
            },
            pb::FileAction {
                output: -1,
                ..act(
                    0,
                    -1,
                    Action::Symlink(pb::FileActionSymlink {
                        oldpath: "../../../../../..".into(),
                        newpath: "/up".into(),
                        owner: None,
                        timestamp: -1,
                    }),
                )
            },
            pb::FileAction {
                output: -1,
                ..act(
                    1,
                    -1,
                    Action::Mkdir(pb::FileActionMkDir {
                        path: format!("/abs{target}"),
                        mode: 0o755,
                        make_parents: true,
                        owner: None,
                        timestamp: -1,
                    }),
                )
            },
            pb::FileAction {
                output: -1,
                ..act(2, -1, mkfile("/abs/pwned", b"x"))
            },
            act(3, -1, mkfile("/up/pwned2", b"x")),
        ],
    ));
    let (s, _) = session(&[]);
    let r = e.solve(&def.finish(&f), s).await.unwrap();
    // Everything landed inside the result's root.
    assert_eq!(
        e.read_file(&r, &format!("{target}/pwned"), 0, None)
            .unwrap(),
        b"x"
    );
    assert_eq!(e.read_file(&r, "/pwned2", 0, None).unwrap(), b"x");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing outside was touched"
    );
    // Reading through links is confined as well.
    assert!(e.read_file(&r, "/up/etc/passwd", 0, None).is_err());
    // rm of a link removes the link, not its target.
    let mut def2 = Def::default();
    let f2 = def2.add(file(
        &[],
        vec![
            pb::FileAction {
                output: -1,
                ..act(
                    -1,
                    -1,
                    Action::Symlink(pb::FileActionSymlink {
                        oldpath: target.clone(),
                        newpath: "/abs".into(),
                        owner: None,
                        timestamp: -1,
                    }),
                )
            },
            act(
                0,
                -1,
                Action::Rm(pb::FileActionRm {
                    path: "/abs".into(),
                    allow_not_found: false,
                    allow_wildcard: false,
                }),
            ),
        ],
    ));
    let (s, _) = session(&[]);
    e.solve(&def2.finish(&f2), s).await.unwrap();
    assert!(out.path().exists());
}
