//! `git://` sources against a repository in a temp dir.

use std::path::Path;
use std::process::Command;

use kiln_llb::pb;

use crate::defs::*;
use crate::{count, engine, session};

fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_source_checks_out_refs_and_follows_new_commits() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("SKIPPING git source test: git is missing");
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    run(repo.path(), &["init", "-q", "-b", "main"]);
    fs_err::create_dir_all(repo.path().join("docs")).unwrap();
    fs_err::write(repo.path().join("docs/readme"), "one").unwrap();
    fs_err::write(repo.path().join("top"), "top").unwrap();
    run(repo.path(), &["add", "."]);
    run(repo.path(), &["commit", "-q", "-m", "one"]);
    let url = format!("file://{}", repo.path().display());
    let def_for = |fragment: &str| {
        let mut def = Def::default();
        let src = def.add(pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: format!("git://example.invalid/repo.git#{fragment}"),
                attrs: [("git.fullurl".to_owned(), url.clone())]
                    .into_iter()
                    .collect(),
            })),
            ..Default::default()
        });
        def.finish(&src)
    };
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let (s, _) = session(&[]);
    let r = e.solve(&def_for("main"), s).await.unwrap();
    assert_eq!(e.read_file(&r, "/docs/readme", 0, None).unwrap(), b"one");
    assert!(e.stat(&r, "/.git").is_err());
    let (s, _) = session(&[]);
    let r = e.solve(&def_for("main:docs"), s).await.unwrap();
    assert_eq!(e.read_file(&r, "/readme", 0, None).unwrap(), b"one");
    let (s, buf) = session(&[]);
    e.solve(&def_for("main"), s).await.unwrap();
    assert_eq!(count(&buf.text(), "CACHED"), 1, "{}", buf.text());
    let first = run(repo.path(), &["rev-parse", "HEAD"]).trim().to_owned();
    fs_err::write(repo.path().join("docs/readme"), "two").unwrap();
    run(repo.path(), &["commit", "-q", "-am", "two"]);
    let (s, _) = session(&[]);
    let r = e.solve(&def_for("main"), s).await.unwrap();
    assert_eq!(e.read_file(&r, "/docs/readme", 0, None).unwrap(), b"two");
    // Pinned to the first commit.
    let (s, _) = session(&[]);
    let r = e.solve(&def_for(&first), s).await.unwrap();
    assert_eq!(e.read_file(&r, "/docs/readme", 0, None).unwrap(), b"one");
    let (s, _) = session(&[]);
    assert!(e.solve(&def_for("no-such-branch"), s).await.is_err());
}
