//! `kiln daemon` end to end: a daemon on a temp unix socket (or TCP with
//! mutual TLS) serving `kiln build/du/prune/debug info --addr`, checked
//! against embedded builds of the same inputs: same image digests, the same
//! errors, many clients at once, a client killed mid-build, secrets that
//! never reach the daemon's disk.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_e2e::{busybox, kiln, kiln_bin, registry::Registry, require_tool, run_fail, run_ok};

fn tools() -> bool {
    require_tool("runc") && require_tool("docker-registry") && busybox::available()
}

/// A running `kiln daemon`, stopped with SIGTERM when dropped.
struct Daemon {
    child: Option<Child>,
    root: tempfile::TempDir,
    dir: tempfile::TempDir,
    addr: String,
}

impl Daemon {
    /// A daemon on a unix socket in a temp dir.
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("unix://{}", dir.path().join("kiln.sock").display());
        Daemon::start_with(dir, addr, &[])
    }

    fn start_with(dir: tempfile::TempDir, addr: String, extra: &[String]) -> Daemon {
        let root = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = kiln(root.path())
            .args(["daemon", "--addr", &addr, "--log-level", "debug"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kiln daemon");
        let mut d = Daemon {
            child: Some(child),
            root,
            dir,
            addr,
        };
        d.wait_for_log("listening", Duration::from_secs(60));
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Waits until the log holds `needle`; panics with the log when the
    /// daemon exits or `limit` passes.
    fn wait_for_log(&mut self, needle: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kiln daemon exited with {st}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < limit,
                "no {needle:?} in the daemon log after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait (bounded) for the exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("kiln daemon ignored SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// `--addr` goes after the subcommand (it is a flag of build/du/prune/info).
fn client(d: &Daemon, args: &[&str]) -> Command {
    let mut c = Command::new(kiln_bin());
    c.args(args).arg("--addr").arg(&d.addr);
    c
}

/// `kiln build` of a Dockerfile context, with progress as given.
fn dockerfile_build(mut c: Command, ctx: &Path, progress: &str, extra: &[String]) -> Command {
    c.args([
        "build",
        "--progress",
        progress,
        "--frontend",
        "dockerfile.v0",
    ])
    .arg(format!("--local=context={}", ctx.display()))
    .arg(format!("--local=dockerfile={}", ctx.display()))
    .args(extra);
    c
}

/// A client of `d` (through `KILN_HOST`; the flag is `--addr`).
fn remote(d: &Daemon) -> Command {
    let mut c = Command::new(kiln_bin());
    c.env("KILN_HOST", &d.addr);
    c
}

/// Whether the plain progress in `err` shows the step named by `needle`
/// as cached.
fn cached(err: &str, needle: &str) -> bool {
    err.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split_whitespace().next())
        .any(|id| err.lines().any(|l| l == format!("{id} CACHED")))
}

/// The manifest digest in an OCI tarball's index.json.
fn manifest_digest(tar: &Path) -> String {
    let out = run_ok(Command::new("tar").arg("-xOf").arg(tar).arg("index.json"));
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Files under `dir` that contain `needle`.
fn grep_tree(dir: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let p = e.path();
        if ft.is_dir() {
            grep_tree(&p, needle, found);
        } else if ft.is_file() {
            let mut data = Vec::new();
            if std::fs::File::open(&p)
                .and_then(|mut f| f.read_to_end(&mut data))
                .is_ok()
                && contains_bytes(&data, needle)
            {
                found.push(p);
            }
        }
    }
}

#[test]
fn dockerfile_build_through_the_daemon_matches_embedded() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let d = Daemon::start();
    let ctx = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM ${BASE} AS build\nCOPY greeting.txt /src/greeting.txt\n\
         RUN sh -c 'tr a-z A-Z < /src/greeting.txt > /upper.txt'\n\
         FROM ${BASE}\nCOPY --from=build /upper.txt /upper.txt\nRUN echo done > /done\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("greeting.txt"), "hello\n").unwrap();
    std::fs::create_dir(ctx.path().join("sub")).unwrap();
    std::fs::write(ctx.path().join("sub/other.txt"), "other\n").unwrap();
    let arg = format!("--opt=build-arg:BASE={base}");
    // RUN writes files with the time of the run: both builds clamp mtimes.

    let embedded_root = tempfile::tempdir().unwrap();
    let e_tar = out.path().join("embedded.tar");
    run_ok(&mut dockerfile_build(
        kiln(embedded_root.path()),
        ctx.path(),
        "plain",
        &[
            arg.clone(),
            format!(
                "--output=type=oci,dest={},name=t:1,source-date-epoch=1700000000",
                e_tar.display()
            ),
        ],
    ));
    let r_tar = out.path().join("remote.tar");
    let r_dir = out.path().join("remote-dir");
    let o = run_ok(&mut dockerfile_build(
        remote(&d),
        ctx.path(),
        "plain",
        &[
            format!("--addr={}", d.addr),
            arg.clone(),
            format!(
                "--output=type=oci,dest={},name=t:1,source-date-epoch=1700000000",
                r_tar.display()
            ),
            format!("--output=type=local,dest={}", r_dir.display()),
        ],
    ));
    assert!(
        stderr(&o).contains("RUN sh -c"),
        "progress comes back:\n{}",
        stderr(&o)
    );
    assert_eq!(
        manifest_digest(&e_tar),
        manifest_digest(&r_tar),
        "the same image through the daemon"
    );
    assert_eq!(
        std::fs::read(&e_tar).unwrap(),
        std::fs::read(&r_tar).unwrap(),
        "the same tarball, byte for byte"
    );
    assert_eq!(
        std::fs::read_to_string(r_dir.join("upper.txt")).unwrap(),
        "HELLO\n"
    );
    assert!(
        d.log().contains("local=context files_requested=3"),
        "the first transfer sends every file:\n{}",
        d.log()
    );

    // A rebuild after one change sends that file only; an unchanged
    // rebuild sends nothing and is all cached.
    std::fs::write(ctx.path().join("greeting.txt"), "changed\n").unwrap();
    let r2 = out.path().join("remote2");
    run_ok(&mut dockerfile_build(
        remote(&d),
        ctx.path(),
        "plain",
        &[
            arg.clone(),
            format!("--output=type=local,dest={}", r2.display()),
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(r2.join("upper.txt")).unwrap(),
        "CHANGED\n"
    );
    assert!(
        d.log().contains("local=context files_requested=1"),
        "only the changed file is sent:\n{}",
        d.log()
    );
    let o = run_ok(&mut dockerfile_build(
        remote(&d),
        ctx.path(),
        "plain",
        &[arg.clone(), "--output=type=tar,dest=-".into()],
    ));
    assert!(
        d.log().contains("local=context files_requested=0"),
        "{}",
        d.log()
    );
    let err = stderr(&o);
    assert!(
        cached(&err, "RUN sh -c") && cached(&err, "RUN echo done"),
        "{err}"
    );
    let listing = run_ok(
        Command::new("tar")
            .arg("-t")
            .stdin(std::fs::File::open(write_tmp(&out, "stdout.tar", &o.stdout)).unwrap()),
    );
    assert!(String::from_utf8_lossy(&listing.stdout).contains("upper.txt"));

    // du, prune and info speak to the daemon's store.
    let regular_rows = || {
        let o = run_ok(&mut client(&d, &["du", "--format", "json"]));
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["type"] == "regular")
            .count()
    };
    assert!(regular_rows() > 0);
    let du = run_ok(&mut client(&d, &["du"]));
    let du = String::from_utf8_lossy(&du.stdout);
    assert!(du.contains("RECLAIMABLE") && du.contains("Total:"), "{du}");
    let info = run_ok(&mut client(&d, &["debug", "info"]));
    let info = String::from_utf8_lossy(&info.stdout);
    let root = d.root.path().canonicalize().unwrap();
    assert!(
        info.contains(&format!("Root:\t\t{}", root.display())),
        "{info}"
    );
    assert!(info.contains("Executor:\tOCI runtime"), "{info}");
    assert!(info.contains("GC policy:\tafter each build"), "{info}");
    let pruned = run_ok(&mut client(&d, &["prune", "--all"]));
    assert!(String::from_utf8_lossy(&pruned.stdout).contains("Total:"));
    assert_eq!(regular_rows(), 0, "prune --all removed the records");
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn buildpacks_build_through_the_daemon_matches_embedded() {
    if !tools() {
        return;
    }
    let fixtures = match std::env::var_os("KILN_BUILDPACKS_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => kiln_e2e::workspace_root().join("../shared/fixtures/buildpacks"),
    };
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let d = Daemon::start();
    let out = tempfile::tempdir().unwrap();
    let bps = out.path().join("buildpacks-with-order");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(fixtures.join("buildpacks"))
            .arg(&bps),
    );
    std::fs::copy(fixtures.join("order.toml"), bps.join("order.toml")).unwrap();
    let app = fixtures.join("apps/hello-sh");
    let build = |c: Command, tar: &Path| {
        let mut c = c;
        c.args([
            "build",
            "--progress",
            "plain",
            "--frontend",
            "buildpacks.v0",
        ])
        .arg(format!("--local=context={}", app.display()))
        .arg(format!("--local=buildpacks={}", bps.display()))
        .arg(format!("--opt=build-image={base}"))
        .arg(format!(
            "--output=type=oci,dest={},name=example.com/hello:1",
            tar.display()
        ));
        c
    };
    let embedded_root = tempfile::tempdir().unwrap();
    let e_tar = out.path().join("embedded.tar");
    run_ok(&mut build(kiln(embedded_root.path()), &e_tar));
    let r_tar = out.path().join("remote.tar");
    let mut c = build(remote(&d), &r_tar);
    c.arg(format!("--addr={}", d.addr));
    let o = run_ok(&mut c);
    assert!(stderr(&o).contains("hello-sh: building"), "{}", stderr(&o));
    assert_eq!(manifest_digest(&e_tar), manifest_digest(&r_tar));
}

#[test]
fn three_concurrent_clients_run_a_shared_stage_once() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let d = Daemon::start();
    let out = tempfile::tempdir().unwrap();
    // The shared stage counts its runs in a cache mount, and takes a while
    // so the three builds overlap.
    let shared = "ARG BASE\nFROM ${BASE} AS shared\n\
        RUN --mount=type=cache,id=runs,target=/runs sh -c 'echo run >> /runs/count; sleep 3; echo shared > /shared'\n";
    let mut children = Vec::new();
    for n in 0..3 {
        let ctx = out.path().join(format!("ctx{n}"));
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "{shared}FROM ${{BASE}}\nCOPY --from=shared /shared /shared\nRUN echo client{n} > /who\n"
            ),
        )
        .unwrap();
        let dest = out.path().join(format!("out{n}"));
        let child = dockerfile_build(
            remote(&d),
            &ctx,
            "rawjson",
            &[
                format!("--opt=build-arg:BASE={base}"),
                format!("--output=type=local,dest={}", dest.display()),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        children.push((n, dest, child));
    }
    for (n, dest, child) in children {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "client {n}: {}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(dest.join("who")).unwrap(),
            format!("client{n}\n")
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("shared")).unwrap(),
            "shared\n"
        );
        // rawjson progress came back to each client.
        assert!(
            stderr(&o)
                .lines()
                .any(|l| l.starts_with("{\"vertexes\"") && l.contains("echo run")),
            "{}",
            stderr(&o)
        );
    }
    // Read the counter through one more build on the same cache mount.
    let ctx = out.path().join("count");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nRUN --mount=type=cache,id=runs,target=/runs cp /runs/count /count\n",
    )
    .unwrap();
    let dest = out.path().join("count-out");
    run_ok(&mut dockerfile_build(
        remote(&d),
        &ctx,
        "plain",
        &[
            format!("--opt=build-arg:BASE={base}"),
            format!("--output=type=local,dest={}", dest.display()),
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(dest.join("count")).unwrap(),
        "run\n",
        "the shared stage ran exactly once"
    );
}

/// Whether a process with exactly this command line runs.
fn process_running(cmdline: &str) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                c.split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(&b' ')
                    == cmdline.as_bytes()
            })
            .unwrap_or(false)
    })
}

#[test]
fn a_killed_client_cancels_only_its_build() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let mut d = Daemon::start();
    let out = tempfile::tempdir().unwrap();
    let ctx = out.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "ARG BASE\nARG DELAY\nFROM ${BASE}\nARG DELAY\nRUN sleep ${DELAY}\nRUN echo after > /after\n",
    )
    .unwrap();
    let progress = out.path().join("victim.progress");
    let mut victim = dockerfile_build(
        remote(&d),
        &ctx,
        "plain",
        &[
            format!("--opt=build-arg:BASE={base}"),
            "--opt=build-arg:DELAY=3671".into(),
            format!(
                "--output=type=local,dest={}",
                out.path().join("v").display()
            ),
        ],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&progress).unwrap())
    .spawn()
    .unwrap();
    // Wait until the long step runs in a container.
    let start = Instant::now();
    while !process_running("sleep 3671") {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the long step never started:\n{}\n{}",
            std::fs::read_to_string(&progress).unwrap_or_default(),
            d.log()
        );
        if let Some(st) = victim.try_wait().unwrap() {
            panic!(
                "the client ended early with {st}:\n{}",
                std::fs::read_to_string(&progress).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Another client builds at the same time, and is not disturbed.
    let other_ctx = out.path().join("other");
    std::fs::create_dir(&other_ctx).unwrap();
    std::fs::write(
        other_ctx.join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nRUN sleep 2 && echo other > /other\n",
    )
    .unwrap();
    let other = dockerfile_build(
        remote(&d),
        &other_ctx,
        "plain",
        &[
            format!("--opt=build-arg:BASE={base}"),
            format!(
                "--output=type=local,dest={}",
                out.path().join("o").display()
            ),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    victim.kill().unwrap();
    victim.wait().unwrap();
    d.wait_for_log("client went away; build cancelled", Duration::from_secs(60));
    let start = Instant::now();
    while process_running("sleep 3671") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the cancelled step still runs:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = other.wait_with_output().unwrap();
    assert!(o.status.success(), "the other client: {}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.path().join("o/other")).unwrap(),
        "other\n"
    );
    // The daemon still serves, and the same build succeeds.
    run_ok(&mut client(&d, &["debug", "info"]));
    run_ok(&mut dockerfile_build(
        remote(&d),
        &ctx,
        "plain",
        &[
            format!("--opt=build-arg:BASE={base}"),
            "--opt=build-arg:DELAY=1".into(),
            format!(
                "--output=type=local,dest={}",
                out.path().join("v2").display()
            ),
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(out.path().join("v2/after")).unwrap(),
        "after\n"
    );

    // SIGTERM with a build running: the build is cancelled, its client
    // told so, and the daemon exits cleanly.
    let running = dockerfile_build(
        remote(&d),
        &ctx,
        "plain",
        &[
            format!("--opt=build-arg:BASE={base}"),
            "--opt=build-arg:DELAY=3672".into(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let start = Instant::now();
    while !process_running("sleep 3672") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the long step never started:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = d.stop();
    assert!(st.success(), "{st}:\n{}", d.log());
    let o = running.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cancelled"), "{}", stderr(&o));
    let start = Instant::now();
    while process_running("sleep 3672") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the step outlived the daemon"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_secret_through_the_daemon_lands_nowhere_under_its_root() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let mut d = Daemon::start();
    let out = tempfile::tempdir().unwrap();
    let ctx = out.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let secret = "kiln-daemon-s3cr3t-51c0e9";
    std::fs::write(
        ctx.join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\n\
         RUN --mount=type=secret,id=tok,required=true sh -c 'cat /run/secrets/tok | wc -c | tr -d \" \" > /len'\n\
         RUN --mount=type=secret,id=tok,env=TOK sh -c 'test \"${#TOK}\" -gt 10 && echo ok > /envok'\n",
    )
    .unwrap();
    let sfile = out.path().join("secret.txt");
    std::fs::write(&sfile, secret).unwrap();
    let dest = out.path().join("o");
    let tar = out.path().join("img.tar");
    let o = run_ok(&mut dockerfile_build(
        remote(&d),
        &ctx,
        "plain",
        &[
            format!("--opt=build-arg:BASE={base}"),
            format!("--secret=id=tok,src={}", sfile.display()),
            format!("--secret=id=unused,src={}", sfile.display()),
            format!("--output=type=local,dest={}", dest.display()),
            format!("--output=type=oci,dest={},name=s:1", tar.display()),
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(dest.join("len")).unwrap(),
        format!("{}\n", secret.len())
    );
    assert_eq!(std::fs::read_to_string(dest.join("envok")).unwrap(), "ok\n");
    // Secrets are asked for when a step needs them: `tok` once for both
    // steps, `unused` never.
    let asked = |d: &Daemon, id: &str| {
        d.log()
            .lines()
            .filter(|l| l.contains("asking the client for a secret") && l.contains(id))
            .count()
    };
    assert_eq!(asked(&d, "tok"), 1, "{}", d.log());
    assert_eq!(asked(&d, "unused"), 0, "{}", d.log());
    // A cached rebuild runs no step, so it asks for nothing.
    let o2 = run_ok(&mut dockerfile_build(
        remote(&d),
        &ctx,
        "plain",
        &[
            format!("--opt=build-arg:BASE={base}"),
            format!("--secret=id=tok,src={}", sfile.display()),
        ],
    ));
    assert_eq!(asked(&d, "tok"), 1, "{}", d.log());
    // A secret the client does not have fails the step that needs it,
    // naming the secret.
    let o3 = run_fail(&mut dockerfile_build(
        remote(&d),
        &ctx,
        "plain",
        &[format!("--opt=build-arg:BASE={base}"), "--no-cache".into()],
    ));
    assert!(
        stderr(&o3).contains("secret \"tok\" is not provided"),
        "{}",
        stderr(&o3)
    );
    d.stop();
    let mut found = Vec::new();
    grep_tree(d.root.path(), secret.as_bytes(), &mut found);
    assert!(
        found.is_empty(),
        "the secret is on the daemon's disk: {found:?}"
    );
    assert!(
        !d.log().contains(secret),
        "the secret is in the daemon's log"
    );
    for o in [&o, &o2, &o3] {
        assert!(!stderr(o).contains(secret), "the secret is in the progress");
    }
    assert!(!contains_bytes(
        &std::fs::read(&tar).unwrap(),
        secret.as_bytes()
    ));
}

/// A CA, and certificates it signs (PEM), written to `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

fn make_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    name: &str,
    server: bool,
) -> (String, String) {
    let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    p.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn make_pki(dir: &Path) -> Pki {
    let ca = make_ca("kiln test CA");
    let other = make_ca("some other CA");
    let w = |name: &str, data: &str| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let (sc, sk) = leaf(&ca, "kiln daemon", true);
    let (cc, ck) = leaf(&ca, "kiln client", false);
    let (xc, xk) = leaf(&other, "stranger", false);
    Pki {
        ca: w("ca.pem", &ca.pem()),
        server_cert: w("server.pem", &sc),
        server_key: w("server-key.pem", &sk),
        client_cert: w("client.pem", &cc),
        client_key: w("client-key.pem", &ck),
        stranger_cert: w("stranger.pem", &xc),
        stranger_key: w("stranger-key.pem", &xk),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_with_mutual_tls_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let addr = format!("tcp://127.0.0.1:{}", free_port());
    // TCP without TLS material is refused up front.
    let o = run_fail(
        kiln(dir.path().join("r").as_path())
            .args(["daemon", "--addr", &addr])
            .stdin(Stdio::null()),
    );
    assert!(stderr(&o).contains("--tlscacert"), "{}", stderr(&o));

    let d = Daemon::start_with(
        dir,
        addr.clone(),
        &[
            format!("--tlscacert={}", pki.ca.display()),
            format!("--tlscert={}", pki.server_cert.display()),
            format!("--tlskey={}", pki.server_key.display()),
        ],
    );
    let with = |c: &mut Command, cert: Option<(&Path, &Path)>| {
        c.arg(format!("--tlscacert={}", pki.ca.display()));
        if let Some((cert, key)) = cert {
            c.arg(format!("--tlscert={}", cert.display()))
                .arg(format!("--tlskey={}", key.display()));
        }
    };
    let mut ok = client(&d, &["debug", "info"]);
    with(&mut ok, Some((&pki.client_cert, &pki.client_key)));
    let o = run_ok(&mut ok);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("Daemon:\t\t{addr}")),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // A build over TCP (no container needed).
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    std::fs::write(ctx.path().join("f"), "over tls\n").unwrap();
    let dest = ctx.path().join("out");
    let mut b = dockerfile_build(
        remote(&d),
        ctx.path(),
        "plain",
        &[format!("--output=type=local,dest={}", dest.display())],
    );
    with(&mut b, Some((&pki.client_cert, &pki.client_key)));
    run_ok(&mut b);
    assert_eq!(
        std::fs::read_to_string(dest.join("f")).unwrap(),
        "over tls\n"
    );

    // No client certificate, or one from another CA: refused.
    let mut none = client(&d, &["debug", "info"]);
    with(&mut none, None);
    let o = run_fail(&mut none);
    eprintln!("without a client certificate: {}", stderr(&o));
    assert!(stderr(&o).contains("kiln daemon"), "{}", stderr(&o));
    let mut stranger = client(&d, &["debug", "info"]);
    with(&mut stranger, Some((&pki.stranger_cert, &pki.stranger_key)));
    let o = run_fail(&mut stranger);
    eprintln!("with a certificate from another CA: {}", stderr(&o));
    assert!(
        d.log().contains("listening"),
        "the daemon keeps serving: {}",
        d.log()
    );
    run_ok(&mut ok);
}

#[test]
fn one_daemon_per_root_same_errors_and_a_clean_stop() {
    let mut d = Daemon::start();
    let sock = d.dir.path().join("kiln.sock");
    assert!(sock.exists());
    // A second daemon on the same root refuses, naming the first.
    let o = run_fail(
        kiln(d.root.path())
            .args([
                "daemon",
                "--addr",
                &format!("unix://{}", d.dir.path().join("second.sock").display()),
            ])
            .stdin(Stdio::null()),
    );
    let err = stderr(&o);
    assert!(
        err.contains("another kiln daemon") && err.contains("is already serving"),
        "{err}"
    );

    // A failing build gives the same error and exit code either way.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY missing.txt /\n",
    )
    .unwrap();
    let embedded_root = tempfile::tempdir().unwrap();
    let e = run_fail(&mut dockerfile_build(
        kiln(embedded_root.path()),
        ctx.path(),
        "quiet",
        &[],
    ));
    let r = run_fail(&mut dockerfile_build(remote(&d), ctx.path(), "quiet", &[]));
    assert_eq!(e.status.code(), r.status.code());
    assert_eq!(stderr(&e), stderr(&r));
    assert!(stderr(&r).contains("missing.txt"), "{}", stderr(&r));

    // LLB on stdin and a `type=llb` output work the same way.
    let def = run_ok(&mut dockerfile_build(
        kiln(embedded_root.path()),
        ctx.path(),
        "quiet",
        &["--output=type=llb,dest=-".into()],
    ))
    .stdout;
    let def2 = run_ok(&mut dockerfile_build(
        remote(&d),
        ctx.path(),
        "quiet",
        &["--output=type=llb,dest=-".into()],
    ))
    .stdout;
    assert!(!def.is_empty());
    assert_eq!(def, def2);

    // SIGTERM: a clean exit, the socket is gone, clients get a clear error.
    let st = d.stop();
    assert!(st.success(), "{st}:\n{}", d.log());
    assert!(!sock.exists(), "the socket is removed");
    assert!(d.log().contains("stopping"), "{}", d.log());
    let o = run_fail(&mut client(&d, &["du"]));
    assert!(
        stderr(&o).contains("cannot reach the kiln daemon at unix://"),
        "{}",
        stderr(&o)
    );
    // KILN_HOST works like --addr.
    let o = run_fail(Command::new(kiln_bin()).arg("du").env("KILN_HOST", &d.addr));
    assert!(
        stderr(&o).contains("cannot reach the kiln daemon"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn two_daemons_share_a_registry_cache() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let first = Daemon::start();
    let second = Daemon::start();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nRUN echo expensive > /result\n",
    )
    .unwrap();
    let cache = format!("{}/cache/app:buildcache", reg.host());
    let arg = format!("--opt=build-arg:BASE={base}");
    run_ok(&mut dockerfile_build(
        remote(&first),
        ctx.path(),
        "plain",
        &[
            arg.clone(),
            format!("--export-cache=type=registry,ref={cache},mode=max"),
        ],
    ));
    // Another replica, with an empty root, finds the step in the registry.
    let o = run_ok(&mut dockerfile_build(
        remote(&second),
        ctx.path(),
        "rawjson",
        &[
            arg.clone(),
            format!("--import-cache=type=registry,ref={cache}"),
        ],
    ));
    let err = stderr(&o);
    let run_cached = err
        .lines()
        .any(|l| l.contains("RUN echo expensive") && l.contains("\"cached\":true"));
    assert!(run_cached, "the RUN step ran again:\n{err}");
}

/// The digests (hex) of the blobs in a cache directory.
fn blob_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn a_local_cache_dir_lives_on_the_client() {
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let first = Daemon::start();
    let second = Daemon::start();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nRUN echo expensive > /result\nCOPY Dockerfile /df\n",
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("c");
    let arg = format!("--opt=build-arg:BASE={base}");
    let export = format!("--export-cache=type=local,dest={},mode=max", dir.display());
    let import = format!("--import-cache=type=local,src={}", dir.display());
    run_ok(&mut dockerfile_build(
        remote(&first),
        ctx.path(),
        "plain",
        &[arg.clone(), export.clone()],
    ));
    // Written on this side, as an OCI layout tagged `latest`.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let tags: Vec<_> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["annotations"]["org.opencontainers.image.ref.name"].clone())
        .collect();
    assert_eq!(tags, [serde_json::json!("latest")], "{index}");
    assert!(dir.join("oci-layout").is_file());
    let blobs = blob_names(&dir);
    assert!(blobs.len() >= 4, "{blobs:?}");
    for b in &blobs {
        assert!(!b.starts_with('.'), "a temp file was left: {b}");
    }

    // Another daemon with an empty root reads it from this side: the RUN
    // step is cached; exporting again leaves the same blobs, one tag.
    let o = run_ok(&mut dockerfile_build(
        remote(&second),
        ctx.path(),
        "rawjson",
        &[arg.clone(), import.clone(), export.clone()],
    ));
    let err = stderr(&o);
    let run_cached = err
        .lines()
        .any(|l| l.contains("RUN echo expensive") && l.contains("\"cached\":true"));
    assert!(run_cached, "the RUN step ran again:\n{err}");
    assert_eq!(blob_names(&dir), blobs);
    let index2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index2["manifests"].as_array().unwrap().len(), 1, "{index2}");
    // The second export sent back none of the blobs already here.
    let sent = second
        .log()
        .lines()
        .filter(|l| l.contains("cache sent"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(sent.len(), 1, "{}", second.log());
    assert!(sent[0].contains("blobs=0"), "{sent:?}");

    // A changed context: only the COPY step's blob is new.
    std::fs::write(ctx.path().join("extra"), "x").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nRUN echo expensive > /result\nCOPY Dockerfile /df\n# changed\n",
    )
    .unwrap();
    run_ok(&mut dockerfile_build(
        remote(&second),
        ctx.path(),
        "plain",
        &[arg.clone(), import.clone(), export.clone()],
    ));
    let sent = second
        .log()
        .lines()
        .rfind(|l| l.contains("cache sent"))
        .unwrap()
        .to_owned();
    assert!(!sent.contains("blobs=0"), "{sent}");
    let after = blob_names(&dir);
    assert!(after.len() > blobs.len());
    assert!(blobs.iter().all(|b| after.contains(b)), "old blobs kept");

    // A cache dir that is not there is a warning, as embedded, and never
    // a directory of the daemon's machine.
    let o = run_ok(&mut dockerfile_build(
        remote(&second),
        ctx.path(),
        "plain",
        &[
            arg,
            format!(
                "--import-cache=type=local,src={}",
                second.root.path().display()
            ),
        ],
    ));
    assert!(
        stderr(&o).contains("is not an OCI layout"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn ssh_agent_is_forwarded_from_the_client() {
    if !(tools() && require_tool("gcc")) {
        return;
    }
    let reg = Registry::start();
    let base = busybox::push_base_image(&reg);
    let d = Daemon::start();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nCOPY sockclient /usr/bin/sockclient\n\
         RUN --mount=type=ssh sh -c 'sockclient > /reply'\n\
         RUN --mount=type=ssh,id=other,required=false sh -c 'sockclient > /other || echo none > /other'\n",
    )
    .unwrap();
    kiln_e2e::build_sockclient(&ctx.path().join("sockclient"));

    // A stand-in agent on the client's side: it answers one line.
    let out = tempfile::tempdir().unwrap();
    let sock = out.path().join("agent.sock");
    let server = kiln_e2e::pong_agent(&sock);
    let dest = out.path().join("o");
    let o = run_ok(&mut dockerfile_build(
        remote(&d),
        ctx.path(),
        "plain",
        &[
            format!("--opt=build-arg:BASE={base}"),
            format!("--ssh=default={}", sock.display()),
            format!("--output=type=local,dest={}", dest.display()),
        ],
    ));
    server.join().unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.join("reply")).unwrap(),
        "pong:ping\n",
        "{}",
        stderr(&o)
    );
    // `other` was not given: an optional mount is left out.
    assert_eq!(
        std::fs::read_to_string(dest.join("other")).unwrap(),
        "none\n"
    );

    // An agent the client cannot reach fails the step, and the daemon
    // goes on serving.
    let gone = out.path().join("gone.sock");
    let o = run_fail(&mut dockerfile_build(
        remote(&d),
        ctx.path(),
        "plain",
        &[
            format!("--opt=build-arg:BASE={base}"),
            format!("--ssh=default={}", gone.display()),
            "--no-cache".into(),
        ],
    ));
    assert!(stderr(&o).contains("sockclient"), "{}", stderr(&o));
    assert!(
        d.log().contains("could not reach its ssh agent"),
        "{}",
        d.log()
    );
    run_ok(&mut client(&d, &["debug", "info"]));
}
