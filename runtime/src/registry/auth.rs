//! Registry credentials from the Docker CLI's `config.json`
//! (`auths.<host>.auth` = base64 of `user:password`, or separate
//! `username`/`password` fields). Credential helpers are not run.

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
}

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
/// silently turn into anonymous access).
pub fn load_credentials(path: &Path, registry: &str) -> Result<Option<Credentials>> {
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
}
