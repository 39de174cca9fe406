//! A throwaway local registry for e2e tests: Debian's `docker-registry`
//! (distribution v2) on a free loopback port, storage in a temp dir, and an
//! optional htpasswd (bcrypt) user. Stopped and deleted on drop.
//!
//! ```no_run
//! let reg = kiln_e2e::registry::Registry::start();
//! let image = kiln_e2e::busybox::push_base_image(&reg);
//! assert!(image.starts_with("127.0.0.1:"));
//! ```

use std::io::{Read, Write};

use base64::Engine as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry binary Debian's `docker-registry` package installs.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry. Dropping it kills the process and removes its storage.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host())
            .field("auth", &self.credentials.is_some())
            .finish()
    }
}

/// Whether the registry binary is installed (tests skip loudly when not, and
/// fail under `CI`).
pub fn available() -> bool {
    if Path::new(REGISTRY_BIN).is_file() {
        return true;
    }
    let msg =
        format!("SKIPPING: {REGISTRY_BIN} is not installed (apt-get install docker-registry)");
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; .ci/run must install it");
    }
    eprintln!("{msg}");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// GET `path` on 127.0.0.1:`port` and return the HTTP status, if any.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Registry {
    /// Start an anonymous registry. Panics (failing the test) if it does not
    /// answer `/v2/` within 15 s.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Start a registry that requires basic auth for `user`/`password`
    /// (htpasswd with a bcrypt hash).
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user.to_string(), password.to_string())))
    }

    fn start_inner(credentials: Option<(String, String)>) -> Self {
        let mut last_err = String::new();
        // A port picked as free can be taken before the registry binds it.
        for _ in 0..3 {
            match Self::try_start(credentials.clone()) {
                Ok(r) => return r,
                Err(e) => last_err = e,
            }
        }
        panic!("cannot start {REGISTRY_BIN}: {last_err}");
    }

    fn try_start(credentials: Option<(String, String)>) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-registry-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let port = free_port();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        let mut auth = String::new();
        if let Some((user, pass)) = &credentials {
            // Cost 5 keeps each request fast; the registry checks every one.
            let hash = bcrypt::hash_with_result(pass, 5)
                .map_err(|e| format!("bcrypt: {e}"))?
                .format_for_version(bcrypt::Version::TwoA);
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n"))
                .map_err(|e| format!("{}: {e}", htpasswd.display()))?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: 127.0.0.1:{port}\n  headers:\n    X-Content-Type-Options: [nosniff]\nhealth:\n  storagedriver:\n    enabled: false\n{auth}",
            data.display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, config).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let mut child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = http_status(port, "/v2/")
                && (status == 200 || status == 401)
            {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("exited with {st}: {log}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!(
                    "no answer on 127.0.0.1:{port}/v2/ within 15 s: {log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            child,
            dir,
            port,
            credentials,
        })
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The user and password, for an auth registry.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's storage directory.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A directory that lives as long as the registry, for test files.
    pub fn scratch_dir(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// The registry's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Write a Docker `config.json` with this registry's credentials into
    /// `dir` (use it as `$DOCKER_CONFIG`); returns the file's path.
    pub fn write_docker_config(&self, dir: &Path) -> PathBuf {
        let (user, pass) = self
            .credentials()
            .expect("write_docker_config needs a registry started with auth");
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let json = serde_json::json!({ "auths": { self.host(): { "auth": auth } } });
        std::fs::create_dir_all(dir).expect("create docker config dir");
        let path = dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&json).expect("json"))
            .expect("write docker config");
        path
    }

    /// `--creds user:pass` style string for skopeo, if the registry has auth.
    pub fn skopeo_creds(&self) -> Option<String> {
        self.credentials().map(|(u, p)| format!("{u}:{p}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_starts_and_stops() {
        if !available() {
            return;
        }
        let reg = Registry::start();
        assert_eq!(http_status(reg.port(), "/v2/"), Some(200));
        let port = reg.port();
        drop(reg);
        assert_eq!(http_status(port, "/v2/"), None);
        let reg = Registry::start_with_auth("kiln", "hunter2");
        assert_eq!(http_status(reg.port(), "/v2/"), Some(401), "{}", reg.log());
    }
}
