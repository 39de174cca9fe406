use std::sync::Arc;

use kiln_llb::pb;
use kiln_llb::pb::file_action::Action;

use crate::defs::*;
use crate::{count, session, session_with};

fn context() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs_err::write(d.path().join("a.txt"), "alpha").unwrap();
    fs_err::create_dir_all(d.path().join("sub")).unwrap();
    fs_err::write(d.path().join("sub/b.txt"), "beta").unwrap();
    fs_err::write(d.path().join("debug.log"), "noise").unwrap();
    fs_err::write(d.path().join("keep.log"), "kept").unwrap();
    d
}

/// local → (copy all, mkdir, mkfile) and a second copy of only `sub/`.
fn graph() -> (Vec<u8>, usize) {
    let mut def = Def::default();
    let l = def.add(local(
        "context",
        &[("local.excludepatterns", r#"["*.log","!keep.log"]"#)],
    ));
    def.name(&l, "[internal] load context");
    let all = def.add(file(
        &[&l],
        vec![
            pb::FileAction {
                output: -1,
                ..act(-1, -1, mkdir("/out"))
            },
            pb::FileAction {
                output: -1,
                ..act(1, -1, mkfile("/out/hello", b"hi"))
            },
            act(2, 0, Action::Copy(copy("/", "/out/ctx"))),
        ],
    ));
    def.name(&all, "[1/2] COPY . /out/ctx");
    let sub = def.add(file(
        &[&all, &l],
        vec![act(0, 1, Action::Copy(copy("/sub", "/only-sub")))],
    ));
    def.name(&sub, "[2/2] COPY sub /only-sub");
    (def.finish(&sub), 3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_copy_mkdir_mkfile_roundtrip_and_cache() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let e = engine(root.path());
    let (def, n) = graph();
    let (s, buf) = session(&[("context", ctx.path())]);
    let r = e.solve(&def, s).await.unwrap();
    let text = buf.text();
    assert_eq!(count(&text, " DONE "), n, "{text}");
    assert_eq!(e.read_file(&r, "/out/hello", 0, None).unwrap(), b"hi");
    assert_eq!(
        e.read_file(&r, "out/ctx/a.txt", 1, Some(3)).unwrap(),
        b"lph"
    );
    assert_eq!(
        e.read_file(&r, "/only-sub/b.txt", 0, None).unwrap(),
        b"beta"
    );
    let names: Vec<String> = e
        .read_dir(&r, "/out/ctx", None)
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(names, ["a.txt", "keep.log", "sub"]);
    let only_txt: Vec<String> = e
        .read_dir(&r, "/out/ctx", Some("*.txt"))
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(only_txt, ["a.txt"]);
    let st = e.stat(&r, "/out/hello").unwrap();
    assert_eq!(st.size, 2);
    assert_eq!(st.mode & 0o777, 0o644);
    assert!(e.read_file(&r, "/out", 0, None).is_err());

    // Second solve: everything cached, same result.
    let (s, buf) = session(&[("context", ctx.path())]);
    let r2 = e.solve(&def, s).await.unwrap();
    let text = buf.text();
    assert_eq!(count(&text, "CACHED"), n, "{text}");
    assert_eq!(count(&text, " DONE "), 0, "{text}");
    assert_eq!(r2, r);

    // Touching a file (same content, new mtime) keeps everything cached.
    let f = fs_err::File::options()
        .write(true)
        .open(ctx.path().join("a.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    drop(f);
    let (s, buf) = session(&[("context", ctx.path())]);
    e.solve(&def, s).await.unwrap();
    assert_eq!(count(&buf.text(), "CACHED"), n, "{}", buf.text());

    // An ignored file changing changes nothing.
    fs_err::write(ctx.path().join("debug.log"), "other noise").unwrap();
    let (s, buf) = session(&[("context", ctx.path())]);
    e.solve(&def, s).await.unwrap();
    assert_eq!(count(&buf.text(), "CACHED"), n, "{}", buf.text());

    // Changing a.txt re-runs the source and the full copy, but not the
    // copy of sub/ (its content did not change) ... which still depends on
    // the full copy as its base, so it re-runs too. Explain names the file.
    fs_err::write(ctx.path().join("a.txt"), "ALPHA").unwrap();
    let (s, buf) = session_with(|s| s.explain_cache = true, &[("context", ctx.path())]);
    let r3 = e.solve(&def, s).await.unwrap();
    let text = buf.text();
    assert_eq!(count(&text, " DONE "), 3, "{text}");
    assert!(
        text.contains(
            "cache miss: context file content changed in local \"context\": a.txt (changed)"
        ),
        "{text}"
    );
    assert!(text.contains("cache miss: input 0 changed"), "{text}");
    assert_eq!(
        e.read_file(&r3, "out/ctx/a.txt", 0, None).unwrap(),
        b"ALPHA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_is_keyed_by_the_content_it_reads() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let e = engine(root.path());
    let mut def = Def::default();
    let l = def.add(local("context", &[]));
    let base = def.add(file(&[], vec![act(-1, -1, mkdir("/app"))]));
    let c = def.add(file(
        &[&base, &l],
        vec![act(0, 1, Action::Copy(copy("/sub", "/app/")))],
    ));
    def.name(&c, "COPY sub /app/");
    let bytes = def.finish(&c);
    let (s, _) = session(&[("context", ctx.path())]);
    e.solve(&bytes, s).await.unwrap();
    // a.txt is outside what the copy reads: only the source re-runs.
    fs_err::write(ctx.path().join("a.txt"), "changed").unwrap();
    let (s, buf) = session_with(|s| s.explain_cache = true, &[("context", ctx.path())]);
    let r = e.solve(&bytes, s).await.unwrap();
    let text = buf.text();
    assert_eq!(count(&text, " DONE "), 1, "{text}");
    assert_eq!(count(&text, "CACHED"), 2, "{text}");
    assert_eq!(e.read_file(&r, "/app/b.txt", 0, None).unwrap(), b"beta");
    // sub/b.txt changes: the copy re-runs and explain says why.
    fs_err::write(ctx.path().join("sub/b.txt"), "BETA").unwrap();
    let (s, buf) = session_with(|s| s.explain_cache = true, &[("context", ctx.path())]);
    let r = e.solve(&bytes, s).await.unwrap();
    let text = buf.text();
    assert_eq!(count(&text, " DONE "), 2, "{text}");
    assert!(
        text.contains("content of \"/sub\" in input 1 changed"),
        "{text}"
    );
    assert_eq!(e.read_file(&r, "/app/b.txt", 0, None).unwrap(), b"BETA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_and_ignore_cache_rerun() {
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let mut def = Def::default();
    let a = def.add(file(&[], vec![act(-1, -1, mkfile("/a", b"1"))]));
    let b = def.add(file(&[&a], vec![act(0, -1, mkfile("/b", b"2"))]));
    let bytes = def.finish(&b);
    let (s, _) = session(&[]);
    e.solve(&bytes, s).await.unwrap();
    let (s, buf) = session_with(|s| s.no_cache = true, &[]);
    e.solve(&bytes, s).await.unwrap();
    assert_eq!(count(&buf.text(), " DONE "), 2, "{}", buf.text());
    def.metadata.entry(b.clone()).or_default().ignore_cache = true;
    let bytes = def.finish(&b);
    let (s, buf) = session(&[]);
    let r = e.solve(&bytes, s).await.unwrap();
    assert_eq!(count(&buf.text(), " DONE "), 1, "{}", buf.text());
    assert_eq!(count(&buf.text(), "CACHED"), 1, "{}", buf.text());
    assert_eq!(e.read_file(&r, "/a", 0, None).unwrap(), b"1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_actions_chain_rm_symlink_merge_diff() {
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let mut def = Def::default();
    let a = def.add(file(
        &[],
        vec![
            pb::FileAction {
                output: -1,
                ..act(-1, -1, mkdir("/x/y"))
            },
            pb::FileAction {
                output: -1,
                ..act(0, -1, mkfile("/x/y/f", b"f"))
            },
            pb::FileAction {
                output: -1,
                ..act(1, -1, mkfile("/x/gone", b"g"))
            },
            pb::FileAction {
                output: -1,
                ..act(
                    2,
                    -1,
                    Action::Rm(pb::FileActionRm {
                        path: "/x/go*".into(),
                        allow_not_found: false,
                        allow_wildcard: true,
                    }),
                )
            },
            act(
                3,
                -1,
                Action::Symlink(pb::FileActionSymlink {
                    oldpath: "y/f".into(),
                    newpath: "/x/link".into(),
                    owner: None,
                    timestamp: -1,
                }),
            ),
        ],
    ));
    let b = def.add(file(&[], vec![act(-1, -1, mkfile("/other", b"o"))]));
    let m = def.add(pb::Op {
        inputs: vec![input(&a), input(&b)],
        op: Some(pb::op::Op::Merge(pb::MergeOp {
            inputs: vec![pb::MergeInput { input: 0 }, pb::MergeInput { input: 1 }],
        })),
        ..Default::default()
    });
    let (s, _) = session(&[]);
    let r = e.solve(&def.finish(&m), s.clone()).await.unwrap();
    assert_eq!(e.read_file(&r, "/x/link", 0, None).unwrap(), b"f");
    assert_eq!(e.stat(&r, "/x/link").unwrap().linkname, "y/f");
    assert!(e.stat(&r, "/x/gone").is_err());
    assert_eq!(e.read_file(&r, "/other", 0, None).unwrap(), b"o");
    let d = def.add(pb::Op {
        inputs: vec![input(&b), input(&m)],
        op: Some(pb::op::Op::Diff(pb::DiffOp {
            lower: Some(pb::LowerDiffInput { input: 0 }),
            upper: Some(pb::UpperDiffInput { input: 1 }),
        })),
        ..Default::default()
    });
    let r = e.solve(&def.finish(&d), s).await.unwrap();
    assert_eq!(e.read_file(&r, "/x/y/f", 0, None).unwrap(), b"f");
    assert!(
        e.stat(&r, "/other").is_err(),
        "diff keeps only the upper's changes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_options_modes_owners_wildcards() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let e = engine(root.path());
    let mut def = Def::default();
    let l = def.add(local("context", &[]));
    let base = def.add(file(
        &[],
        vec![
            pb::FileAction {
                output: -1,
                ..act(-1, -1, mkdir("/etc"))
            },
            pb::FileAction {
                output: -1,
                ..act(
                    0,
                    -1,
                    mkfile(
                        "/etc/passwd",
                        b"root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
                    ),
                )
            },
            act(1, -1, mkfile("/etc/group", b"root:x:0:\nstaff:x:50:\n")),
        ],
    ));
    let named = |n: &str| pb::UserOpt {
        user: Some(pb::user_opt::User::ByName(pb::NamedUserOpt {
            name: n.into(),
            input: 0,
        })),
    };
    let c = def.add(file(
        &[&base, &l],
        vec![
            pb::FileAction {
                output: -1,
                ..act(
                    0,
                    1,
                    Action::Copy(pb::FileActionCopy {
                        owner: Some(pb::ChownOpt {
                            user: Some(named("app")),
                            group: None,
                        }),
                        mode_str: "u+x".into(),
                        ..copy("/*.txt", "/dst/")
                    }),
                )
            },
            pb::FileAction {
                output: -1,
                ..act(
                    2,
                    1,
                    Action::Copy(pb::FileActionCopy {
                        owner: Some(pb::ChownOpt {
                            user: Some(named("app")),
                            group: Some(named("staff")),
                        }),
                        mode: 0o600,
                        timestamp: 1_000_000_000_000_000_000,
                        exclude_patterns: vec!["*.log".into()],
                        ..copy("/", "/all")
                    }),
                )
            },
            act(
                3,
                1,
                Action::Copy(pb::FileActionCopy {
                    allow_empty_wildcard: true,
                    ..copy("/nothing*", "/none/")
                }),
            ),
        ],
    ));
    let (s, _) = session(&[("context", ctx.path())]);
    let r = e.solve(&def.finish(&c), s).await.unwrap();
    let st = e.stat(&r, "/dst/a.txt").unwrap();
    assert_eq!((st.uid, st.gid), (1000, 1001));
    assert_eq!(st.mode & 0o777, 0o744);
    let st = e.stat(&r, "/all/sub/b.txt").unwrap();
    assert_eq!((st.uid, st.gid, st.mode & 0o777), (1000, 50, 0o600));
    assert_eq!(st.mtime_ns, 1_000_000_000_000_000_000);
    assert!(e.stat(&r, "/all/keep.log").is_err());
    assert!(e.stat(&r, "/none").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_root_solve_concurrently() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let e1 = engine(root.path());
    let e2 = engine(root.path());
    let (def, _) = graph();
    let (s1, b1) = session(&[("context", ctx.path())]);
    let (s2, b2) = session(&[("context", ctx.path())]);
    let (r1, r2) = tokio::join!(e1.solve(&def, s1), e2.solve(&def, s2));
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(e1.read_file(&r1, "/out/hello", 0, None).unwrap(), b"hi");
    assert_eq!(e2.read_file(&r2, "/out/hello", 0, None).unwrap(), b"hi");
    let _ = (b1, b2);
    // A third engine opened later sees the records.
    let e3 = engine(root.path());
    let (s3, b3) = session(&[("context", ctx.path())]);
    e3.solve(&def, s3).await.unwrap();
    assert_eq!(count(&b3.text(), "CACHED"), 3, "{}", b3.text());
    let _ = Arc::strong_count(&e1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_solves_run_each_vertex_once() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let e = engine(root.path());
    let (def, n) = graph();
    let (s1, b1) = session(&[("context", ctx.path())]);
    let (s2, b2) = session(&[("context", ctx.path())]);
    let (r1, r2) = tokio::join!(e.solve(&def, s1), e.solve(&def, s2));
    assert_eq!(r1.unwrap(), r2.unwrap());
    let done = count(&b1.text(), " DONE ") + count(&b2.text(), " DONE ");
    assert_eq!(done, n, "{}\n---\n{}", b1.text(), b2.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_ops_never_change_their_base() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs_err::create_dir_all(ctx.path().join("pkg/etc")).unwrap();
    fs_err::write(ctx.path().join("pkg/etc/conf"), "from-tar").unwrap();
    let st = std::process::Command::new("tar")
        .args(["-czf", "pkg.tar.gz", "-C", "pkg", "."])
        .current_dir(ctx.path())
        .status()
        .unwrap();
    assert!(st.success());
    let e = engine(root.path());
    let mut def = Def::default();
    let l = def.add(local(
        "context",
        &[("local.includepattern", r#"["pkg.tar.gz"]"#)],
    ));
    let base = def.add(file(
        &[],
        vec![
            pb::FileAction {
                output: -1,
                ..act(-1, -1, mkdir("/etc"))
            },
            pb::FileAction {
                output: -1,
                ..act(0, -1, mkfile("/etc/conf", b"base"))
            },
            act(1, -1, mkfile("/keep", b"keep")),
        ],
    ));
    let top = def.add(file(
        &[&base, &l],
        vec![
            pb::FileAction {
                output: -1,
                ..act(0, -1, mkfile("/keep", b"changed"))
            },
            pb::FileAction {
                output: -1,
                ..act(
                    2,
                    1,
                    Action::Copy(pb::FileActionCopy {
                        attempt_unpack_docker_compatibility: true,
                        ..copy("/pkg.tar.gz", "/")
                    }),
                )
            },
            act(
                3,
                -1,
                Action::Rm(pb::FileActionRm {
                    path: "/etc".into(),
                    allow_not_found: false,
                    allow_wildcard: false,
                }),
            ),
        ],
    ));
    let mid = def.add(file(
        &[&base, &l],
        vec![act(
            0,
            1,
            Action::Copy(pb::FileActionCopy {
                attempt_unpack_docker_compatibility: true,
                ..copy("/pkg.tar.gz", "/")
            }),
        )],
    ));
    let (s, _) = session(&[("context", ctx.path())]);
    let r_top = e.solve(&def.finish(&top), s.clone()).await.unwrap();
    assert_eq!(e.read_file(&r_top, "/keep", 0, None).unwrap(), b"changed");
    assert!(e.stat(&r_top, "/etc").is_err());
    let r_mid = e.solve(&def.finish(&mid), s.clone()).await.unwrap();
    assert_eq!(
        e.read_file(&r_mid, "/etc/conf", 0, None).unwrap(),
        b"from-tar"
    );
    assert_eq!(e.read_file(&r_mid, "/keep", 0, None).unwrap(), b"keep");
    let r_base = e.solve(&def.finish(&base), s).await.unwrap();
    assert_eq!(e.read_file(&r_base, "/etc/conf", 0, None).unwrap(), b"base");
    assert_eq!(e.read_file(&r_base, "/keep", 0, None).unwrap(), b"keep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_snapshots_are_misses_and_prune_empties_the_cache() {
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let mut def = Def::default();
    let a = def.add(file(&[], vec![act(-1, -1, mkfile("/a", b"1"))]));
    def.name(&a, "make a");
    let b = def.add(file(&[&a], vec![act(0, -1, mkfile("/b", b"2"))]));
    let bytes = def.finish(&b);
    let (s, _) = session(&[]);
    let r = e.solve(&bytes, s).await.unwrap();
    let du: Vec<_> = e
        .du()
        .unwrap()
        .into_iter()
        .filter(|u| u.id.starts_with("sha256:"))
        .collect();
    assert_eq!(du.len(), 2);
    assert!(du.iter().any(|u| u.description == "make a"), "{du:?}");
    // As after a crash between commit and record: the record names a
    // snapshot that is gone. The record is ignored and the vertex re-runs.
    let id = r.snapshot.clone().unwrap();
    let committed = root.path().join("snapshots/v1/committed").join(id.as_str());
    fs_err::remove_dir_all(&committed).unwrap();
    let _ = fs_err::remove_dir_all(root.path().join("snapshots/v1/views").join(id.as_str()));
    let (s, buf) = session(&[]);
    let r2 = e.solve(&bytes, s).await.unwrap();
    assert_eq!(count(&buf.text(), "CACHED"), 1, "{}", buf.text());
    assert_eq!(e.read_file(&r2, "/b", 0, None).unwrap(), b"2");
    let removed = e
        .prune(&kiln_engine::PruneOptions {
            all: true,
            ..Default::default()
        })
        .unwrap();
    let records = |rows: &[kiln_engine::UsageRecord]| {
        rows.iter().filter(|r| r.id.starts_with("sha256:")).count()
    };
    assert_eq!(records(&removed), 2);
    assert_eq!(records(&e.du().unwrap()), 0);
    let (s, buf) = session(&[]);
    e.solve(&bytes, s).await.unwrap();
    assert_eq!(count(&buf.text(), " DONE "), 2, "{}", buf.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_option_that_changed() {
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let build = |mode: i32, label: &str| {
        let mut def = Def::default();
        let a = def.add(file(&[], vec![act(-1, -1, mkfile("/a", b"1"))]));
        let b = def.add(file(
            &[&a],
            vec![act(
                0,
                -1,
                Action::Mkfile(pb::FileActionMkFile {
                    path: "/b".into(),
                    mode,
                    data: b"2".to_vec(),
                    owner: None,
                    timestamp: -1,
                }),
            )],
        ));
        def.name(&b, label);
        def.finish(&b)
    };
    let (s, _) = session(&[]);
    e.solve(&build(0o644, "[2/2] COPY --chmod=644 b /b"), s)
        .await
        .unwrap();
    let (s, buf) = session_with(|s| s.explain_cache = true, &[]);
    e.solve(&build(0o755, "[2/2] COPY --chmod=755 b /b"), s)
        .await
        .unwrap();
    let text = buf.text();
    assert!(text.contains("mkfile.mode changed (420 → 493)"), "{text}");
    // A brand-new step says so.
    let (s, buf) = session_with(|s| s.explain_cache = true, &[]);
    let mut def = Def::default();
    let c = def.add(file(&[], vec![act(-1, -1, mkfile("/c", b"3"))]));
    e.solve(&def.finish(&c), s).await.unwrap();
    assert!(
        buf.text()
            .contains("cache miss: no record (first build of this step)"),
        "{}",
        buf.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_context_reuses_unchanged_files() {
    use std::os::unix::fs::MetadataExt;
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let e = engine(root.path());
    let mut def = Def::default();
    let l = def.add(local("context", &[]));
    let bytes = def.finish(&l);
    let (s, _) = session(&[("context", ctx.path())]);
    let r1 = e.solve(&bytes, s).await.unwrap();
    fs_err::write(ctx.path().join("a.txt"), "new alpha").unwrap();
    let (s, _) = session(&[("context", ctx.path())]);
    let r2 = e.solve(&bytes, s).await.unwrap();
    assert_ne!(r1, r2);
    let diff = |r: &kiln_engine::SolvedRef| {
        root.path()
            .join("snapshots/v1/committed")
            .join(r.snapshot.as_ref().unwrap().as_str())
            .join("diff")
    };
    let b1 = fs_err::metadata(diff(&r1).join("sub/b.txt")).unwrap();
    let b2 = fs_err::metadata(diff(&r2).join("sub/b.txt")).unwrap();
    assert_eq!(b1.ino(), b2.ino(), "unchanged file is shared");
    let a1 = fs_err::metadata(diff(&r1).join("a.txt")).unwrap();
    let a2 = fs_err::metadata(diff(&r2).join("a.txt")).unwrap();
    assert_ne!(a1.ino(), a2.ino());
    assert_eq!(e.read_file(&r2, "a.txt", 0, None).unwrap(), b"new alpha");
    assert_eq!(e.read_file(&r1, "a.txt", 0, None).unwrap(), b"alpha");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selections_of_one_local_keep_their_own_records() {
    // A frontend reads `.dockerignore` alone and then the whole context,
    // from the same local name: each selection is compared with its own
    // last transfer, so a miss names only the file that changed.
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let e = engine(root.path());
    let one = |attrs: &[(&str, &str)]| {
        let mut def = Def::default();
        let l = def.add(local("context", attrs));
        def.finish(&l)
    };
    let only_a = one(&[("local.includepattern", r#"["a.txt"]"#)]);
    let all = one(&[]);
    for _ in 0..2 {
        for def in [&only_a, &all] {
            let (s, _) = session(&[("context", ctx.path())]);
            e.solve(def, s).await.unwrap();
        }
    }
    fs_err::write(ctx.path().join("sub/b.txt"), "BETA").unwrap();
    let (s, _) = session(&[("context", ctx.path())]);
    e.solve(&only_a, s).await.unwrap();
    let (s, buf) = session_with(|s| s.explain_cache = true, &[("context", ctx.path())]);
    e.solve(&all, s).await.unwrap();
    let text = buf.text();
    assert!(
        text.contains(
            "cache miss: context file content changed in local \"context\": sub/b.txt (changed)"
        ),
        "{text}"
    );
}
