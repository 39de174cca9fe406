//! The image config (Docker/OCI `config.json`) a stage builds up.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// Default `PATH` of a Linux image without one.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The runtime part of an image config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunConfig {
    /// `Env`, `KEY=VALUE`.
    pub env: Vec<String>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `User`.
    pub user: String,
    /// `ExposedPorts` keys (`80/tcp`).
    pub exposed_ports: BTreeSet<String>,
    /// `Volumes` keys.
    pub volumes: BTreeSet<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`.
    pub stop_signal: String,
    /// `Healthcheck` as JSON.
    pub healthcheck: Option<Value>,
    /// `Shell`.
    pub shell: Option<Vec<String>>,
    /// `OnBuild` triggers.
    pub on_build: Vec<String>,
    /// `ArgsEscaped` (Windows images).
    pub args_escaped: bool,
}

/// An image config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageSpec {
    /// `architecture`.
    pub architecture: String,
    /// `os`.
    pub os: String,
    /// `variant`.
    pub variant: String,
    /// `author`.
    pub author: String,
    /// `created` (RFC 3339), only with `SOURCE_DATE_EPOCH`.
    pub created: Option<String>,
    /// `config`.
    pub config: RunConfig,
    /// `rootfs.diff_ids` of the base image.
    pub diff_ids: Vec<String>,
    /// `history` entries.
    pub history: Vec<Value>,
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    })
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl ImageSpec {
    /// The config of `scratch` for a platform: PATH set, working dir `/`.
    pub fn empty(os: &str, architecture: &str, variant: &str) -> Self {
        ImageSpec {
            architecture: architecture.to_string(),
            os: os.to_string(),
            variant: variant.to_string(),
            config: RunConfig {
                env: vec![format!("PATH={DEFAULT_PATH}")],
                working_dir: "/".to_string(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Reads a config JSON; unknown fields are dropped.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        if !v.is_object() {
            return Err("image config is not a JSON object".into());
        }
        let c = v.get("config").cloned().unwrap_or(Value::Null);
        let config = RunConfig {
            env: c.get("Env").and_then(strings).unwrap_or_default(),
            cmd: c.get("Cmd").and_then(strings),
            entrypoint: c.get("Entrypoint").and_then(strings),
            working_dir: text(&c, "WorkingDir"),
            user: text(&c, "User"),
            exposed_ports: c.get("ExposedPorts").map(keys).unwrap_or_default(),
            volumes: c.get("Volumes").map(keys).unwrap_or_default(),
            labels: c
                .get("Labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            stop_signal: text(&c, "StopSignal"),
            healthcheck: c.get("Healthcheck").filter(|h| h.is_object()).cloned(),
            shell: c.get("Shell").and_then(strings).filter(|s| !s.is_empty()),
            on_build: c.get("OnBuild").and_then(strings).unwrap_or_default(),
            args_escaped: c
                .get("ArgsEscaped")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        Ok(ImageSpec {
            architecture: text(&v, "architecture"),
            os: text(&v, "os"),
            variant: text(&v, "variant"),
            author: text(&v, "author"),
            created: None,
            config,
            diff_ids: v
                .get("rootfs")
                .and_then(|r| r.get("diff_ids"))
                .and_then(strings)
                .unwrap_or_default(),
            history: v
                .get("history")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// Sets `KEY=VALUE` in `Env` (replacing an existing key in place).
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        for e in &mut self.config.env {
            if e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key {
                *e = entry;
                return;
            }
        }
        self.config.env.push(entry);
    }

    /// `Env` as pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.config
            .env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    }

    /// Appends a history entry.
    pub fn history(&mut self, created_by: String, empty_layer: bool) {
        let mut h = Map::new();
        if let Some(c) = &self.created {
            h.insert("created".into(), Value::String(c.clone()));
        }
        h.insert("created_by".into(), Value::String(created_by));
        h.insert(
            "comment".into(),
            Value::String("buildkit.dockerfile.v0".into()),
        );
        if empty_layer {
            h.insert("empty_layer".into(), Value::Bool(true));
        }
        self.history.push(Value::Object(h));
    }

    /// The config JSON, keys sorted, compact.
    pub fn to_json(&self) -> Vec<u8> {
        let c = &self.config;
        let mut config = Map::new();
        let set = |s: &BTreeSet<String>| {
            Value::Object(s.iter().map(|k| (k.clone(), json!({}))).collect())
        };
        if !c.user.is_empty() {
            config.insert("User".into(), json!(c.user));
        }
        if !c.exposed_ports.is_empty() {
            config.insert("ExposedPorts".into(), set(&c.exposed_ports));
        }
        config.insert("Env".into(), json!(c.env));
        if let Some(e) = &c.entrypoint {
            config.insert("Entrypoint".into(), json!(e));
        }
        if let Some(cmd) = &c.cmd {
            config.insert("Cmd".into(), json!(cmd));
        }
        if let Some(h) = &c.healthcheck {
            config.insert("Healthcheck".into(), h.clone());
        }
        if c.args_escaped {
            config.insert("ArgsEscaped".into(), json!(true));
        }
        if !c.volumes.is_empty() {
            config.insert("Volumes".into(), set(&c.volumes));
        }
        if !c.working_dir.is_empty() {
            config.insert("WorkingDir".into(), json!(c.working_dir));
        }
        if !c.labels.is_empty() {
            config.insert("Labels".into(), json!(c.labels));
        }
        if !c.stop_signal.is_empty() {
            config.insert("StopSignal".into(), json!(c.stop_signal));
        }
        if let Some(s) = &c.shell {
            config.insert("Shell".into(), json!(s));
        }
        if !c.on_build.is_empty() {
            config.insert("OnBuild".into(), json!(c.on_build));
        }
        let mut top = Map::new();
        top.insert("architecture".into(), json!(self.architecture));
        if !self.author.is_empty() {
            top.insert("author".into(), json!(self.author));
        }
        if let Some(cr) = &self.created {
            top.insert("created".into(), json!(cr));
        }
        top.insert("config".into(), Value::Object(config));
        top.insert("history".into(), Value::Array(self.history.clone()));
        top.insert("os".into(), json!(self.os));
        top.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": self.diff_ids}),
        );
        if !self.variant.is_empty() {
            top.insert("variant".into(), json!(self.variant));
        }
        let sorted = sort_keys(Value::Object(top));
        serde_json::to_vec(&sorted).unwrap_or_default()
    }
}

/// Recursively sorts object keys so the output does not depend on insertion
/// order.
pub(crate) fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<String, Value> =
                m.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// RFC 3339 UTC time of a unix timestamp (for `SOURCE_DATE_EPOCH`).
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
