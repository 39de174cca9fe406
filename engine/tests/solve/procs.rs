//! Two processes on one state root.

use std::process::Command;

use kiln_llb::pb;

use crate::defs::*;
use crate::{engine, session};

fn def() -> (Vec<u8>, String) {
    let mut def = Def::default();
    let l = def.add(local("context", &[]));
    let a = def.add(file(
        &[&l],
        vec![act(-1, 0, pb::file_action::Action::Copy(copy("/", "/ctx")))],
    ));
    let b = def.add(file(&[&a], vec![act(0, -1, mkfile("/done", b"yes"))]));
    (def.finish(&b), b)
}

/// Run by `two_processes_share_a_root` in child processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper run in a child process"]
async fn child_solve_helper() {
    let Ok(root) = std::env::var("KILN_TEST_CHILD_ROOT") else {
        return;
    };
    let ctx = std::env::var("KILN_TEST_CHILD_CTX").unwrap();
    let e = engine(std::path::Path::new(&root));
    let (bytes, _) = def();
    for _ in 0..5 {
        let (s, _) = session(&[("context", std::path::Path::new(&ctx))]);
        let r = e.solve(&bytes, s).await.unwrap();
        assert_eq!(e.read_file(&r, "/done", 0, None).unwrap(), b"yes");
        assert_eq!(e.read_file(&r, "/ctx/f", 0, None).unwrap(), b"content");
    }
}

#[test]
fn two_processes_share_a_root() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("f"), "content").unwrap();
    let exe = std::env::current_exe().unwrap();
    let spawn = || {
        Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "procs::child_solve_helper",
                "--nocapture",
            ])
            .env("KILN_TEST_CHILD_ROOT", root.path())
            .env("KILN_TEST_CHILD_CTX", ctx.path())
            .spawn()
            .unwrap()
    };
    let mut a = spawn();
    let mut b = spawn();
    let (sa, sb) = (a.wait().unwrap(), b.wait().unwrap());
    assert!(sa.success() && sb.success(), "{sa:?} {sb:?}");
}
