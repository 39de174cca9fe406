//! Git repositories served by `git daemon` on a free loopback port, with a
//! work tree per repository to commit and push from. The daemon's log
//! counts `upload-pack` requests (one per ls-remote or fetch).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An empty file to use as git's global config, so the user's settings do
/// not leak in (not `/dev/null`: a test elsewhere may have replaced it).
fn empty_config() -> &'static Path {
    static P: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("kiln-e2e-gitconfig-{}", std::process::id()));
        std::fs::write(&p, b"").unwrap();
        p
    })
}

/// Runs `git` in `dir` with a fixed identity; panics with stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "kiln-e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.invalid")
        .env("GIT_COMMITTER_NAME", "kiln-e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", empty_config())
        .output()
        .unwrap_or_else(|e| panic!("spawn git: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `<git --exec-path>/git-daemon`.
fn daemon_bin() -> PathBuf {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("run git --exec-path");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("git-daemon")
}

/// A `git daemon` exporting every bare repository under its base dir.
pub struct GitServer {
    base: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl GitServer {
    /// Starts the daemon (retrying on another port if one was taken).
    pub fn start() -> GitServer {
        let base = tempfile::tempdir().unwrap();
        let log = base.path().join("daemon.log");
        std::fs::create_dir_all(base.path().join("srv")).unwrap();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            // `git daemon` would run `git-daemon` as a child it does not
            // pass a kill on to: start the daemon binary itself.
            let child = Command::new(daemon_bin())
                .arg("--reuseaddr")
                .arg("--export-all")
                .arg("--verbose")
                .arg(format!("--base-path={}", base.path().join("srv").display()))
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", empty_config())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn();
            let mut child = child.expect("spawn git daemon");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return GitServer {
                        base,
                        port,
                        child: Some(child),
                        log,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "git daemon did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `git://127.0.0.1:<port>/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.port)
    }

    /// A new bare repository `<name>.git` with a work tree to push from
    /// (branch `main`).
    pub fn repo(&self, name: &str) -> Repo {
        let bare = self.base.path().join("srv").join(format!("{name}.git"));
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        let work = self.base.path().join("work").join(name);
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo { work, bare }
    }

    /// `upload-pack` requests served so far (ls-remote and fetch each make
    /// one).
    pub fn upload_packs(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Request upload-pack"))
            .count()
    }

    /// Stops the daemon: later fetches fail.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A work tree whose `origin` is a served bare repository.
pub struct Repo {
    /// The work tree.
    pub work: PathBuf,
    /// The served bare repository.
    pub bare: PathBuf,
}

impl Repo {
    /// Writes a file (parents created).
    pub fn write(&self, path: &str, content: &str) -> &Repo {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    /// Creates a symlink `path` → `target`.
    pub fn symlink(&self, path: &str, target: &str) -> &Repo {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
        self
    }

    /// Runs git in the work tree.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.work, args)
    }

    /// Commits everything and returns the commit hash.
    pub fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Pushes `main` and every tag to the served repository.
    pub fn push(&self) {
        self.git(&["push", "-q", "origin", "main", "--tags", "--force"]);
    }
}
