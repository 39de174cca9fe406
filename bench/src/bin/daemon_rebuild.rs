//! A warm rebuild through `kiln daemon` against the same rebuild embedded,
//! and both against BuildKit's daemon when `$BUILDKIT_BIN` holds
//! `buildkitd` and `buildctl` (run as root: buildkitd needs it), and
//! against the BuildKit embedded in dockerd 20.10 when `$DOCKER_HOST` names
//! a dockerd that answers (`../shared/peers/dockerd-up.sh` starts one and
//! prints it). dockerd builds into its own image store
//! (`DOCKER_BUILDKIT=1 /usr/bin/docker build -t …`); it has no OCI
//! exporter in that version.
//!
//! The build is `FROM scratch` + `COPY . /app` of a context of `FILES`
//! small files (2,000 by default), exported as an OCI tarball, so it needs
//! no container runtime and no registry: what is timed is the client, the
//! frontend, the context check (and, through a daemon, its transfer), the
//! cache lookups and the export. Two scenarios, each the median of `RUNS`
//! runs (10 by default) after one untimed cold build:
//!
//! - warm: nothing changed;
//! - changed: one file of the context rewritten before each run.
//!
//! Run with `cargo run --release -p kiln-bench --bin daemon_rebuild`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_bench::{median, ms, ratio};

fn kiln_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().expect("dir").join("kiln")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn make_context(dir: &Path, files: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY . /app\n")?;
    for i in 0..files {
        let sub = dir.join(format!("d{:02}", i % 50));
        std::fs::create_dir_all(&sub)?;
        std::fs::write(sub.join(format!("f{i}.txt")), format!("file {i}\n"))?;
    }
    Ok(())
}

fn run(mut c: Command) -> anyhow::Result<()> {
    let out = c.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{c:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Times `runs` builds made by `mk` after one untimed build; `before` runs
/// ahead of each timed build, outside the timing.
fn time_builds(
    runs: usize,
    mk: &dyn Fn() -> Command,
    before: &dyn Fn(usize),
) -> anyhow::Result<Duration> {
    run(mk())?;
    let mut v = Vec::new();
    for i in 0..runs {
        before(i);
        let t = Instant::now();
        run(mk())?;
        v.push(t.elapsed());
    }
    v.sort();
    Ok(median(&v))
}

/// A daemon child, stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_socket(p: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    while !p.exists() {
        if start.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("no socket at {} after 60 s", p.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

struct Scenario {
    warm: Duration,
    changed: Duration,
}

fn scenario(runs: usize, ctx: &Path, mk: &dyn Fn() -> Command) -> anyhow::Result<Scenario> {
    let warm = time_builds(runs, mk, &|_| {})?;
    let target = ctx.join("d00/f0.txt");
    let changed = time_builds(runs, mk, &|i| {
        let _ = std::fs::write(&target, format!("changed {i} {:?}\n", Instant::now()));
    })?;
    Ok(Scenario { warm, changed })
}

fn main() -> anyhow::Result<()> {
    let files = env_usize("FILES", 2000);
    let runs = env_usize("RUNS", 10);
    let dir = tempfile::tempdir()?;
    let ctx = dir.path().join("context");
    make_context(&ctx, files)?;
    let kiln = kiln_bin();
    let tar = dir.path().join("out.tar");
    let dockerfile_args = |c: &mut Command| {
        c.args(["--frontend", "dockerfile.v0", "--progress", "quiet"])
            .arg(format!("--local=context={}", ctx.display()))
            .arg(format!("--local=dockerfile={}", ctx.display()))
            .arg(format!("--output=type=oci,dest={}", tar.display()));
    };
    println!("context: {files} files; {runs} runs per scenario (median)");

    let embedded_root = dir.path().join("embedded-root");
    let embedded = scenario(runs, &ctx, &|| {
        let mut c = Command::new(&kiln);
        c.arg("--root").arg(&embedded_root).arg("build");
        dockerfile_args(&mut c);
        c
    })?;

    let daemon_root = dir.path().join("daemon-root");
    let sock = dir.path().join("kiln.sock");
    let addr = format!("unix://{}", sock.display());
    let _daemon = Daemon(
        Command::new(&kiln)
            .arg("--root")
            .arg(&daemon_root)
            .args(["daemon", "--addr", &addr, "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for_socket(&sock)?;
    let daemon = scenario(runs, &ctx, &|| {
        let mut c = Command::new(&kiln);
        c.arg("build").arg("--addr").arg(&addr);
        dockerfile_args(&mut c);
        c
    })?;

    println!(
        "warm     embedded {:>10}  daemon {:>10}  daemon/embedded {}",
        ms(embedded.warm),
        ms(daemon.warm),
        ratio(daemon.warm, embedded.warm)
    );
    println!(
        "changed  embedded {:>10}  daemon {:>10}  daemon/embedded {}",
        ms(embedded.changed),
        ms(daemon.changed),
        ratio(daemon.changed, embedded.changed)
    );

    dockerd_peer(runs, &ctx, &embedded, &daemon)?;

    let Some(bk) = std::env::var_os("BUILDKIT_BIN") else {
        println!(
            "(set BUILDKIT_BIN to a directory with buildkitd and buildctl to compare with BuildKit's daemon)"
        );
        return Ok(());
    };
    let bk = PathBuf::from(bk);
    let bk_sock = dir.path().join("buildkitd.sock");
    let bk_addr = format!("unix://{}", bk_sock.display());
    let _buildkitd = Daemon(
        Command::new(bk.join("buildkitd"))
            .arg("--root")
            .arg(dir.path().join("buildkit-root"))
            .arg("--addr")
            .arg(&bk_addr)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for_socket(&bk_sock)?;
    let buildkit = scenario(runs, &ctx, &|| {
        let mut c = Command::new(bk.join("buildctl"));
        c.arg("--addr").arg(&bk_addr).arg("build");
        dockerfile_args(&mut c);
        c
    })?;
    println!(
        "warm     buildkitd {:>10}  kiln daemon/buildkitd {}  kiln embedded/buildkitd {}",
        ms(buildkit.warm),
        ratio(daemon.warm, buildkit.warm),
        ratio(embedded.warm, buildkit.warm)
    );
    println!(
        "changed  buildkitd {:>10}  kiln daemon/buildkitd {}  kiln embedded/buildkitd {}",
        ms(buildkit.changed),
        ratio(daemon.changed, buildkit.changed),
        ratio(embedded.changed, buildkit.changed)
    );
    Ok(())
}

/// The docker 20.10 client (a newer one on PATH may insist on buildx).
const DOCKER: &str = "/usr/bin/docker";

/// The same scenarios through the BuildKit embedded in a running dockerd
/// (`$DOCKER_HOST`), when one answers.
fn dockerd_peer(
    runs: usize,
    ctx: &Path,
    embedded: &Scenario,
    daemon: &Scenario,
) -> anyhow::Result<()> {
    let Some(host) = std::env::var_os("DOCKER_HOST") else {
        println!(
            "(set DOCKER_HOST to a running dockerd, e.g. from ../shared/peers/dockerd-up.sh, to compare with the BuildKit embedded in dockerd)"
        );
        return Ok(());
    };
    let version = Command::new(DOCKER)
        .env("DOCKER_HOST", &host)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    let version = match version {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Ok(o) => {
            println!(
                "(dockerd at {} does not answer: {}; not compared)",
                host.to_string_lossy(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return Ok(());
        }
        Err(e) => {
            println!("({DOCKER}: {e}; dockerd not compared)");
            return Ok(());
        }
    };
    let tag = "kiln-bench/daemon-rebuild:latest";
    let docker = scenario(runs, ctx, &|| {
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_HOST", &host)
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "-q", "-t", tag])
            .arg(ctx);
        c
    })?;
    let _ = Command::new(DOCKER)
        .env("DOCKER_HOST", &host)
        .args(["image", "rm", "-f", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    println!("BuildKit embedded in dockerd {version} (docker build, image store):");
    println!(
        "warm     dockerd {:>10}  kiln daemon/dockerd {}  kiln embedded/dockerd {}",
        ms(docker.warm),
        ratio(daemon.warm, docker.warm),
        ratio(embedded.warm, docker.warm)
    );
    println!(
        "changed  dockerd {:>10}  kiln daemon/dockerd {}  kiln embedded/dockerd {}",
        ms(docker.changed),
        ratio(daemon.changed, docker.changed),
        ratio(embedded.changed, docker.changed)
    );
    Ok(())
}
