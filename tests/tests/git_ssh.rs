//! Git sources over ssh: git reaches the server with the session's ssh
//! agent (`--ssh`, the source's `git.mountsshsock`) and never with one the
//! kiln process happens to inherit, embedded and through a daemon (whose
//! agent socket is forwarded from the client).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_e2e::gitserver::git;
use kiln_e2e::sshserver::SshServer;
use kiln_e2e::{kiln, kiln_bin, require_tool, run_fail, run_ok};

fn tools() -> bool {
    require_tool("git") && require_tool("sshd") && require_tool("ssh-agent")
}

/// A bare repository with one commit on `main`.
fn repo(dir: &Path) -> std::path::PathBuf {
    let work = dir.join("work");
    let bare = dir.join("repo.git");
    std::fs::create_dir_all(&work).unwrap();
    git(
        dir,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README"), "over ssh\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    bare
}

fn build(cmd: &mut Command, ctx: &Path, dest: &Path, extra: &[String]) {
    cmd.args(["build", "--progress=plain", "--frontend=dockerfile.v0"])
        .arg(format!("--local=context={}", ctx.display()))
        .arg(format!("--local=dockerfile={}", ctx.display()))
        .arg(format!("--output=type=local,dest={}", dest.display()))
        .args(extra)
        // An agent of the process's own must not be used.
        .env_remove("SSH_AUTH_SOCK");
}

#[test]
fn git_over_ssh_uses_the_sessions_agent_only() {
    if !tools() {
        return;
    }
    let srv = SshServer::start();
    let t = tempfile::tempdir().unwrap();
    let bare = repo(t.path());
    let ctx = t.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD {}#main /src/\n", srv.url(&bare)),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let agent = format!("--ssh=default={}", srv.agent_sock().display());

    // No --ssh: refused, naming what to pass, even with the agent in the
    // process's environment.
    let mut c = kiln(root.path());
    build(&mut c, &ctx, &t.path().join("o1"), &[]);
    c.env("SSH_AUTH_SOCK", srv.agent_sock());
    let o = run_fail(&mut c);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ssh agent \"default\" is not provided by the session (pass --ssh default)"),
        "{err}"
    );

    // With it: fetched over ssh.
    let mut c = kiln(root.path());
    build(
        &mut c,
        &ctx,
        &t.path().join("o2"),
        std::slice::from_ref(&agent),
    );
    run_ok(&mut c);
    assert_eq!(
        std::fs::read_to_string(t.path().join("o2/src/README")).unwrap(),
        "over ssh\n",
        "{}",
        srv.log()
    );
    assert!(srv.log().contains("Accepted publickey"), "{}", srv.log());

    // Through a daemon, the client's agent is forwarded.
    let droot = tempfile::tempdir().unwrap();
    let sock = t.path().join("kiln.sock");
    let addr = format!("unix://{}", sock.display());
    let mut daemon = kiln(droot.path())
        .args(["daemon", "--addr", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no daemon socket"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut c = Command::new(kiln_bin());
    build(&mut c, &ctx, &t.path().join("o3"), &[agent]);
    c.arg("--addr").arg(&addr);
    let o = c.output().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(t.path().join("o3/src/README")).unwrap(),
        "over ssh\n"
    );
}

/// `kiln build` of hand-built LLB on stdin: the git source of `bare` with
/// `known_hosts`, into `dest`.
fn build_git_llb(
    root: &Path,
    srv: &SshServer,
    bare: &Path,
    known_hosts: &str,
    dest: &Path,
) -> std::process::Output {
    use kiln_llb::builder::{MarshalOptions, git as git_source};
    use std::io::Write as _;
    let def = git_source(srv.url(bare), "main")
        .known_ssh_hosts(known_hosts)
        .state()
        .marshal_to_vec(&MarshalOptions::default())
        .unwrap();
    let mut child = kiln(root)
        .args(["build", "--progress=plain"])
        .arg(format!("--output=type=local,dest={}", dest.display()))
        .arg(format!("--ssh=default={}", srv.agent_sock().display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&def).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn known_ssh_hosts_are_checked() {
    if !tools() {
        return;
    }
    let srv = SshServer::start();
    let t = tempfile::tempdir().unwrap();
    let bare = repo(t.path());
    let root = tempfile::tempdir().unwrap();
    // The server's own key: accepted.
    let o = build_git_llb(
        root.path(),
        &srv,
        &bare,
        &srv.known_hosts(),
        &t.path().join("ok"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(t.path().join("ok/README")).unwrap(),
        "over ssh\n"
    );
    // Another server's key for that address: refused before any fetch.
    let other = SshServer::start();
    let right = srv.known_hosts();
    let theirs = other.known_hosts();
    let host = right.split_whitespace().next().unwrap();
    let key: Vec<&str> = theirs.split_whitespace().skip(1).collect();
    let wrong = format!("{host} {}", key.join(" "));
    let fresh = tempfile::tempdir().unwrap();
    let o = build_git_llb(fresh.path(), &srv, &bare, &wrong, &t.path().join("no"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Host key verification failed"), "{err}");
}
