use kiln_engine::SolveError;
use kiln_llb::pb;
use kiln_llb::pb::file_action::Action;
use prost::Message;

use crate::defs::*;
use crate::{engine, session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_are_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let (s, _) = session(&[]);
    let mut def = Def::default();
    let a = def.add(file(&[], vec![act(-1, -1, mkfile("/a", b"1"))]));
    let good = def.finish(&a);
    // Truncated bytes.
    let err = e
        .solve(&good[..good.len() - 3], s.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, SolveError::Definition(_)), "{err:?}");
    // Garbage.
    let err = e.solve(b"\xff\xff\xff", s.clone()).await.unwrap_err();
    assert!(matches!(err, SolveError::Definition(_)), "{err:?}");
    // Empty.
    assert!(e.solve(b"", s.clone()).await.is_err());
    // Missing input.
    let mut def = Def::default();
    let b = def.add(file(
        &["sha256:0000000000000000000000000000000000000000000000000000000000000000"],
        vec![act(0, -1, mkfile("/b", b""))],
    ));
    let err = e.solve(&def.finish(&b), s.clone()).await.unwrap_err();
    assert!(
        crate::chain(&err).contains("not in the definition"),
        "{}",
        crate::chain(&err)
    );
    // Unsupported op kind names the vertex.
    let mut def = Def::default();
    let bo = def.add(pb::Op {
        op: Some(pb::op::Op::Build(pb::BuildOp::default())),
        ..Default::default()
    });
    def.name(&bo, "nested build");
    let err = e.solve(&def.finish(&bo), s.clone()).await.unwrap_err();
    let msg = crate::chain(&err);
    assert!(
        msg.contains("nested build") && msg.contains("BuildOp"),
        "{msg}"
    );
    // Unknown source scheme.
    let mut def = Def::default();
    let g = def.add(pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: "gopher://x".into(),
            attrs: Default::default(),
        })),
        ..Default::default()
    });
    let err = e.solve(&def.finish(&g), s.clone()).await.unwrap_err();
    assert!(
        crate::chain(&err).contains("gopher"),
        "{}",
        crate::chain(&err)
    );
    // File action index out of range.
    let mut def = Def::default();
    let f = def.add(file(&[], vec![act(5, -1, mkfile("/x", b""))]));
    let err = e.solve(&def.finish(&f), s.clone()).await.unwrap_err();
    assert!(
        crate::chain(&err).contains("out of range"),
        "{}",
        crate::chain(&err)
    );
    // An op whose bytes are not an Op at all.
    let defn = pb::Definition {
        def: vec![vec![0x0a, 0x05, 1], vec![]],
        ..Default::default()
    }
    .encode_to_vec();
    assert!(e.solve(&defn, s).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_names_the_vertex_and_stops_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let mut def = Def::default();
    let l = def.add(local("context", &[]));
    let bad = def.add(file(
        &[&l],
        vec![act(
            -1,
            0,
            Action::Copy(pb::FileActionCopy {
                allow_wildcard: false,
                ..copy("/missing", "/x")
            }),
        )],
    ));
    def.name(&bad, "[3/4] COPY missing /x");
    let other = def.add(file(&[], vec![act(-1, -1, mkfile("/ok", b""))]));
    let top = def.add(pb::Op {
        inputs: vec![input(&bad), input(&other)],
        op: Some(pb::op::Op::Merge(pb::MergeOp {
            inputs: vec![pb::MergeInput { input: 0 }, pb::MergeInput { input: 1 }],
        })),
        ..Default::default()
    });
    let (s, buf) = session(&[("context", ctx.path())]);
    let err = e.solve(&def.finish(&top), s).await.unwrap_err();
    match &err {
        SolveError::Vertex {
            digest,
            name,
            error,
        } => {
            assert_eq!(digest, &bad);
            assert_eq!(name, "[3/4] COPY missing /x");
            assert!(
                format!("{error:#}").contains("/missing not found"),
                "{error:#}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = buf.text();
    assert!(
        text.contains("ERROR: copy /missing to /x: /missing not found"),
        "{text}"
    );
    assert!(
        !text.contains("#5 merge"),
        "the merge never started: {text}"
    );
    // Missing local is a clear error too.
    let (s, _) = session(&[]);
    let err = e.solve(&def.finish(&l), s).await.unwrap_err();
    assert!(
        crate::chain(&err).contains("local \"context\" is not provided"),
        "{}",
        crate::chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_definitions_never_panic() {
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let mut def = Def::default();
    let a = def.add(file(
        &[],
        vec![
            pb::FileAction {
                output: -1,
                ..act(-1, -1, mkdir("/d"))
            },
            act(0, -1, mkfile("/d/f", b"x")),
        ],
    ));
    let b = def.add(file(
        &[&a, &a],
        vec![act(0, 1, Action::Copy(copy("/d", "/e")))],
    ));
    let good = def.finish(&b);
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= flip;
            let (s, _) = session(&[]);
            // Any outcome but a panic is fine.
            let _ = e.solve(&bad, s).await;
        }
        let (s, _) = session(&[]);
        let _ = e.solve(&good[..i], s).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_session_stops_the_solve() {
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    // A local source over a fifo-free but large tree would be slow to set
    // up; instead cancel before solving and check the result is Cancelled
    // or names no vertex as failed.
    let mut def = Def::default();
    let a = def.add(file(&[], vec![act(-1, -1, mkfile("/a", b"1"))]));
    let (s, _) = session(&[]);
    s.cancel.cancel();
    let err = e.solve(&def.finish(&a), s).await.unwrap_err();
    assert!(matches!(err, SolveError::Cancelled), "{err:?}");
}
