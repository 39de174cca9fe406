//! Registry credentials from the Docker CLI's `config.json`: a credential
//! helper named by `credHelpers.<host>` or `credsStore`
//! (`docker-credential-<name> get`), else `auths.<host>.auth` (base64 of
//! `user:password`) or separate `username`/`password` fields.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::{Error, Result};

/// A user name and password. `Debug` never prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// How long a credential helper may take.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// The host part of an `auths` key: keys may be `host`, `host:port`,
/// `https://host/v1/`...
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Names a registry host goes by in `auths` (Docker Hub has several).
fn aliases(registry: &str) -> Vec<&str> {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
        }
        other => vec![other],
    }
}

/// Credentials for `registry` from the Docker config at `path`. A missing
/// file means no credentials; a malformed one is an error (so a typo does not
/// silently turn into anonymous access). Helpers are looked up in `PATH`.
pub fn load_credentials(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    load_credentials_with_helpers(path, registry, &dirs)
}

/// [`load_credentials`] looking for `docker-credential-*` helpers in
/// `helper_dirs`.
pub fn load_credentials_with_helpers(
    path: &Path,
    registry: &str,
    helper_dirs: &[PathBuf],
) -> Result<Option<Credentials>> {
    let bytes = match fs_err::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::DockerConfig {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let bad = |msg: String| Error::DockerConfig {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
    };
    let cfg: DockerConfig =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let names = aliases(registry);

    // A helper named for this host must work; the global store may be a
    // leftover from another machine (Docker Desktop's `desktop`), so a
    // missing one only warns and falls back to `auths`.
    let per_host = cfg
        .cred_helpers
        .iter()
        .find(|(k, _)| names.contains(&key_host(k)))
        .map(|(_, v)| v.clone())
        .filter(|h| !h.is_empty());
    if let Some(helper) = per_host {
        if let Some(c) = run_helper(path, &helper, registry, helper_dirs)? {
            return Ok(Some(c));
        }
    } else if let Some(store) = cfg.creds_store.as_deref().filter(|h| !h.is_empty()) {
        match run_helper(path, store, registry, helper_dirs) {
            Ok(Some(c)) => return Ok(Some(c)),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "ignoring the credentials store"),
        }
    }

    let Some((key, entry)) = cfg.auths.iter().find(|(k, _)| names.contains(&key_host(k))) else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad(format!("auths.{key}.auth is not base64")))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| bad(format!("auths.{key}.auth is not UTF-8")))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| bad(format!("auths.{key}.auth is not user:password")))?;
        return Ok(Some(Credentials {
            username: user.to_string(),
            password: pass.to_string(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

/// `docker-credential-<helper> get` with the server on stdin. "Not found"
/// (a non-zero exit) means no credentials; a missing helper binary is an
/// error naming it. Identity tokens (`<token>` user) are not supported and
/// count as no credentials.
fn run_helper(
    config: &Path,
    helper: &str,
    registry: &str,
    dirs: &[PathBuf],
) -> Result<Option<Credentials>> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let err = |msg: String| Error::DockerConfig {
        path: config.to_path_buf(),
        source: std::io::Error::other(msg),
    };
    if helper.contains('/') {
        return Err(err(format!(
            "credential helper name {helper:?} contains '/'"
        )));
    }
    let bin = format!("docker-credential-{helper}");
    let Some(exe) = dirs.iter().map(|d| d.join(&bin)).find(|p| p.is_file()) else {
        return Err(err(format!("credential helper `{bin}` is not installed")));
    };
    let server = match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    };
    let mut child = Command::new(&exe)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err(format!("cannot run `{}`: {e}", exe.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let deadline = std::time::Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!("`{bin} get` did not answer within 30 s")));
            }
        }
    };
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.by_ref().take(1 << 20).read_to_end(&mut out);
    }
    if !status.success() {
        return Ok(None);
    }
    let reply: HelperReply = serde_json::from_slice(&out)
        .map_err(|e| err(format!("`{bin} get` printed invalid JSON: {e}")))?;
    if reply.username.is_empty() || reply.username == "<token>" {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: reply.username,
        password: reply.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_entries() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with:colons");
        fs_err::write(
            &p,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{b64}"}},"https://index.docker.io/v1/":{{"username":"bob","password":"pw"}}}}}}"#
            ),
        )
        .unwrap();
        let c = load_credentials(&p, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.password, "s3cret:with:colons");
        assert!(!format!("{c:?}").contains("s3cret"));
        let hub = load_credentials(&p, "docker.io").unwrap().unwrap();
        assert_eq!(hub.username, "bob");
        assert_eq!(load_credentials(&p, "ghcr.io").unwrap(), None);
        assert_eq!(
            load_credentials(&d.path().join("none.json"), "x").unwrap(),
            None
        );
        fs_err::write(&p, r#"{"auths":{"h":{"auth":"!!"}}}"#).unwrap();
        let e = load_credentials(&p, "h").unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
    }

    #[test]
    fn runs_credential_helpers() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        fs_err::create_dir_all(&bin).unwrap();
        let helper = bin.join("docker-credential-kilntest");
        fs_err::write(
            &helper,
            "#!/bin/sh\nread host\ncase $host in\n  reg.example:5000) printf '{\"ServerURL\":\"%s\",\"Username\":\"hu\",\"Secret\":\"hs\"}' \"$host\" ;;\n  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        )
        .unwrap();
        fs_err::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = d.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("file:pw");
        fs_err::write(
            &p,
            format!(
                r#"{{"credHelpers":{{"reg.example:5000":"kilntest"}},"credsStore":"kilntest","auths":{{"other.example":{{"auth":"{b64}"}}}}}}"#
            ),
        )
        .unwrap();
        let dirs = [bin];
        let c = load_credentials_with_helpers(&p, "reg.example:5000", &dirs)
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("hu", "hs"));
        // The store does not know this host: fall back to auths.
        let c = load_credentials_with_helpers(&p, "other.example", &dirs)
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "file");
        assert_eq!(
            load_credentials_with_helpers(&p, "ghcr.io", &dirs).unwrap(),
            None
        );
        // A per-host helper that is not installed is an error naming it...
        let e = load_credentials_with_helpers(&p, "reg.example:5000", &[]).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
        let chain = std::error::Error::source(&e).unwrap().to_string();
        assert!(chain.contains("docker-credential-kilntest"), "{chain}");
        // ...while a missing global store falls back to auths.
        let c = load_credentials_with_helpers(&p, "other.example", &[])
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "file");
    }
}
