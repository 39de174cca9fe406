//! Frontend options (`--opt k=v`).
//!
//! | option | meaning |
//! | --- | --- |
//! | `build-image=REF` | image detect and build run in (required) |
//! | `run-image=REF` | base of the result (default: the build image) |
//! | `order=PATH` or inline TOML | the order: a file in the `buildpacks` context (default `order.toml`), or `[[order]]` TOML text |
//! | `buildpacks=id[@version],…` | one explicit group instead of the order |
//! | `env:NAME=VALUE` | platform env (`/platform/env/NAME`), after `project.toml`'s |
//! | `process-type=TYPE` | the process that becomes Entrypoint/Cmd |
//! | `exec-env=NAME` | `CNB_EXEC_ENV` (default `production`) |
//! | `cache-id=ID` | namespace of the build cache (default: the project id, else `default`) |
//! | `network=none\|host` | network of detect and build (default `none`) |
//! | `label:KEY=VALUE` | extra image labels |

use std::collections::BTreeMap;

use kiln_frontend::FrontendError;

use crate::descriptor::GroupEntry;

/// Name of the local that holds the app.
pub const CONTEXT_LOCAL: &str = "context";
/// Name of the local that holds the buildpacks (CNB buildpacks-dir layout).
pub const BUILDPACKS_LOCAL: &str = "buildpacks";

/// Where the order comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderSource {
    /// A file in the `buildpacks` local.
    File(String),
    /// TOML text given inline.
    Inline(String),
}

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `build-image`.
    pub build_image: String,
    /// `run-image`.
    pub run_image: String,
    /// `order`.
    pub order: OrderSource,
    /// Whether `order` was given explicitly.
    pub order_given: bool,
    /// `buildpacks`.
    pub buildpacks: Vec<GroupEntry>,
    /// `env:NAME=VALUE`, sorted by name.
    pub env: Vec<(String, String)>,
    /// `process-type`.
    pub process_type: Option<String>,
    /// `exec-env`.
    pub exec_env: String,
    /// `cache-id`.
    pub cache_id: Option<String>,
    /// Whether detect and build get the host network.
    pub network_host: bool,
    /// `label:KEY=VALUE`.
    pub labels: Vec<(String, String)>,
}

impl Options {
    /// Reads the options map.
    pub fn parse(map: &BTreeMap<String, String>) -> Result<Options, FrontendError> {
        let build_image = map
            .get("build-image")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                FrontendError::new(
                    "buildpacks.v0 needs a build image: add --opt build-image=REF (an image with /bin/sh; detect and build run in it)",
                )
            })?;
        let run_image = map
            .get("run-image")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| build_image.clone());
        let (order, order_given) = match map.get("order").map(|s| s.trim()) {
            None | Some("") => (OrderSource::File("order.toml".into()), false),
            Some(s) if s.contains("[[order") => (OrderSource::Inline(s.to_string()), true),
            Some(s) => {
                let p = s.trim_start_matches('/');
                if p.split('/').any(|c| c == "..") {
                    return Err(FrontendError::new(format!(
                        "option order={s}: the path must stay inside the buildpacks context"
                    )));
                }
                (OrderSource::File(p.to_string()), true)
            }
        };
        let buildpacks = match map.get("buildpacks") {
            None => Vec::new(),
            Some(s) => s
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| {
                    GroupEntry::parse_ref(p).map_err(|e| {
                        FrontendError::new(format!("option buildpacks: {}", e.message))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut env = Vec::new();
        let mut labels = Vec::new();
        for (k, v) in map {
            if let Some(name) = k.strip_prefix("env:") {
                crate::env::validate_name(name)
                    .map_err(|m| FrontendError::new(format!("option {k}: {m}")))?;
                env.push((name.to_string(), v.clone()));
            } else if let Some(name) = k.strip_prefix("label:") {
                if name.is_empty() {
                    return Err(FrontendError::new(format!("option {k}: empty label key")));
                }
                labels.push((name.to_string(), v.clone()));
            }
        }
        let exec_env = map
            .get("exec-env")
            .cloned()
            .unwrap_or_else(|| "production".into());
        if exec_env.is_empty() || exec_env.contains('/') {
            return Err(FrontendError::new(format!(
                "option exec-env={exec_env}: must be non-empty and contain no '/'"
            )));
        }
        let network_host = match map.get("network").map(String::as_str) {
            None | Some("none") | Some("") => false,
            Some("host") | Some("default") => true,
            Some(other) => {
                return Err(FrontendError::new(format!(
                    "option network={other}: use none or host"
                )));
            }
        };
        Ok(Options {
            build_image,
            run_image,
            order,
            order_given,
            buildpacks,
            env,
            process_type: map.get("process-type").cloned().filter(|s| !s.is_empty()),
            exec_env,
            cache_id: map.get("cache-id").cloned().filter(|s| !s.is_empty()),
            network_host,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let o = Options::parse(&map(&[("build-image", "busybox")])).unwrap();
        assert_eq!(o.run_image, "busybox");
        assert_eq!(o.order, OrderSource::File("order.toml".into()));
        assert!(!o.order_given);
        assert_eq!(o.exec_env, "production");
        assert!(!o.network_host);
        let e = Options::parse(&map(&[])).unwrap_err();
        assert!(e.message.contains("--opt build-image=REF"), "{e}");
    }

    #[test]
    fn all_options() {
        let o = Options::parse(&map(&[
            ("build-image", "b"),
            ("run-image", "r"),
            ("order", "orders/two.toml"),
            ("buildpacks", "a/b@1, c"),
            ("env:FOO", "bar"),
            ("env:A", "1"),
            ("label:x", "y"),
            ("process-type", "worker"),
            ("network", "host"),
            ("cache-id", "app"),
        ]))
        .unwrap();
        assert_eq!(o.run_image, "r");
        assert_eq!(o.order, OrderSource::File("orders/two.toml".into()));
        assert_eq!(
            o.buildpacks,
            vec![
                GroupEntry::new("a/b", Some("1")),
                GroupEntry::new("c", None)
            ]
        );
        assert_eq!(
            o.env,
            vec![("A".into(), "1".into()), ("FOO".into(), "bar".into())]
        );
        assert_eq!(o.labels, vec![("x".into(), "y".into())]);
        assert_eq!(o.process_type.as_deref(), Some("worker"));
        assert!(o.network_host);
        assert_eq!(o.cache_id.as_deref(), Some("app"));
        let o = Options::parse(&map(&[("build-image", "b"), ("order", "[[order]]\n")])).unwrap();
        assert!(matches!(o.order, OrderSource::Inline(_)));
        assert!(Options::parse(&map(&[("build-image", "b"), ("order", "../x")])).is_err());
        assert!(Options::parse(&map(&[("build-image", "b"), ("buildpacks", "a@")])).is_err());
        assert!(Options::parse(&map(&[("build-image", "b"), ("network", "bridge")])).is_err());
        assert!(Options::parse(&map(&[("build-image", "b"), ("exec-env", "a/b")])).is_err());
    }
}
