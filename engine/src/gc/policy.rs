//! The automatic GC policy, read from `kiln.toml` in the state dir.
//!
//! ```toml
//! [gc]
//! enabled = true            # default true
//! max-used-space = "80%"    # bytes, "512MB"-style units or a share of the disk
//! reserved-space = "10%"
//! min-free-space = "0"      # off unless set
//!
//! [[gc.policy]]             # tried in order after every build
//! filters = ["type==source.local", "type==exec.cachemount"]  # any one matches
//! keep-duration = "48h"
//! max-used-space = "512MB"
//! all = false
//! ```
//!
//! Without `[[gc.policy]]` entries the defaults follow BuildKit's: local
//! sources, cache mounts and git checkouts unused for 48 h or beyond
//! 512 MB go first; then records unused for 60 days; then least recently
//! used records until the cache fits the global limits. The global limits
//! default to a `max-used-space` of 80 % of the disk (at most 100 GB) and a
//! `reserved-space` of 10 % of the disk (at most 10 GB). `min-free-space`
//! is off by default: on a disk shared with other work, free space is not
//! the build cache's to manage.
//!
//! The limits bound the build cache (records, cache mounts and
//! unreferenced data), not compiled frontends or the metadata database.
//!
//! The same file holds the limits of remote sources:
//!
//! ```toml
//! [sources]
//! http-max-size = "8GB"     # largest ADD <url> body; KILN_HTTP_MAX_BYTES overrides
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::{Filter, PruneOptions};

/// `kiln.toml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    gc: GcSection,
    #[serde(default)]
    sources: SourcesSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SourcesSection {
    http_max_size: Option<String>,
}

/// `[sources]` of `kiln.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcesConfig {
    /// The largest body an http source may download, when set.
    pub http_max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct GcSection {
    enabled: Option<bool>,
    max_used_space: Option<String>,
    reserved_space: Option<String>,
    min_free_space: Option<String>,
    #[serde(default)]
    policy: Vec<PolicySection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PolicySection {
    #[serde(default)]
    filters: Vec<String>,
    keep_duration: Option<String>,
    max_used_space: Option<String>,
    reserved_space: Option<String>,
    min_free_space: Option<String>,
    #[serde(default)]
    all: bool,
}

/// One policy step, resolved to bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// Alternatives: a record matching any one entry (each entry's
    /// comma-separated filters all hold) is considered.
    pub filters: Vec<String>,
    /// Keep records used within this long.
    pub keep_duration: Option<Duration>,
    /// Upper bound of the cache.
    pub max_used: Option<u64>,
    /// Never prune below this.
    pub reserved: Option<u64>,
    /// Prune until this much is free.
    pub min_free: Option<u64>,
    /// Include cache mounts and everything else.
    pub all: bool,
}

impl GcPolicy {
    /// The prune runs this step makes (one per filter alternative).
    pub fn prune_options(&self) -> Result<Vec<PruneOptions>> {
        let base = PruneOptions {
            keep_duration: self.keep_duration,
            keep_bytes: self.max_used,
            reserved_bytes: self.reserved,
            min_free_bytes: self.min_free,
            all: false,
            filters: Vec::new(),
        };
        if self.filters.is_empty() {
            let mut o = base;
            // `all` widens the set to cache mounts; limits still apply.
            if self.all {
                o.filters = Filter::parse_all(&["reclaimable==true".to_owned()])?;
            }
            return Ok(vec![o]);
        }
        self.filters
            .iter()
            .map(|f| {
                let mut o = base.clone();
                o.filters = Filter::parse_all(std::slice::from_ref(f))?;
                Ok(o)
            })
            .collect()
    }
}

/// The GC configuration of one state dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcConfig {
    /// Run the policy after builds.
    pub enabled: bool,
    /// The steps, in order.
    pub policies: Vec<GcPolicy>,
    /// Where it came from (for `kiln debug info`).
    pub source: String,
}

/// `10GB`, `512MB`, `1.5GiB`, `20%` (of `disk`), or plain bytes.
pub fn parse_size(s: &str, disk: Option<u64>) -> Result<u64> {
    let s = s.trim();
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p
            .trim()
            .parse()
            .with_context(|| format!("invalid share {s:?}"))?;
        if !(0.0..=100.0).contains(&p) {
            bail!("invalid share {s:?}: use 0% to 100%");
        }
        // Unknown disk size: fall back to 2 GB for a share, as BuildKit does.
        let d = disk.unwrap_or(2_000_000_000) as f64;
        return Ok((d * p / 100.0) as u64);
    }
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().with_context(|| format!("invalid size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => bail!("invalid size unit {other:?} in {s:?}"),
    };
    Ok((n * mult) as u64)
}

/// `48h`, `30m`, `10s`, `7d` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid duration {s:?}"))?;
    let mult = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => bail!("invalid duration unit {other:?} in {s:?}: use s, m, h or d"),
    };
    if !n.is_finite() || n < 0.0 {
        bail!("invalid duration {s:?}");
    }
    Ok(Duration::from_secs_f64(n * mult))
}

/// Reads `<root>/kiln.toml`: the GC policy and the source limits
/// (defaults when the file does not exist).
pub fn load_settings(root: &Path) -> Result<(GcConfig, SourcesConfig)> {
    let path = root.join("kiln.toml");
    let disk = super::disk_size(root);
    let (f, source) = match std::fs::read_to_string(&path) {
        Ok(text) => (
            toml::from_str::<File>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            path.display().to_string(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (File::default(), "defaults".into()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let gc = GcConfig::from_section(f.gc, disk, source.clone()).with_context(|| source.clone())?;
    let sources = SourcesConfig {
        http_max_bytes: f
            .sources
            .http_max_size
            .as_deref()
            .map(|v| {
                if v.trim().ends_with('%') {
                    bail!("sources http-max-size {v:?}: give a size, not a share of the disk");
                }
                parse_size(v, None).context("sources http-max-size")
            })
            .transpose()
            .with_context(|| source.clone())?,
    };
    Ok((gc, sources))
}

impl GcConfig {
    /// Reads `<root>/kiln.toml` (defaults when it does not exist).
    pub fn load(root: &Path) -> Result<GcConfig> {
        Ok(load_settings(root)?.0)
    }

    fn from_section(g: GcSection, disk: Option<u64>, source: String) -> Result<GcConfig> {
        let size = |s: &Option<String>, what: &str| -> Result<Option<u64>> {
            s.as_deref()
                .map(|v| parse_size(v, disk).with_context(|| format!("gc {what}")))
                .transpose()
        };
        let share = |p: f64, cap: u64| -> u64 {
            let d = disk.unwrap_or(2_000_000_000) as f64;
            ((d * p) as u64).min(cap)
        };
        let max_used =
            size(&g.max_used_space, "max-used-space")?.or(Some(share(0.8, 100_000_000_000)));
        let reserved =
            size(&g.reserved_space, "reserved-space")?.or(Some(share(0.1, 10_000_000_000)));
        let min_free = size(&g.min_free_space, "min-free-space")?.filter(|v| *v > 0);
        // A step bounded by the global limits.
        let global = |keep_duration, all| GcPolicy {
            filters: Vec::new(),
            keep_duration,
            max_used,
            reserved,
            min_free,
            all,
        };
        let policies = if g.policy.is_empty() {
            vec![
                GcPolicy {
                    filters: vec![
                        "type==source.local".into(),
                        "type==exec.cachemount".into(),
                        "type==source.git.checkout".into(),
                    ],
                    keep_duration: Some(Duration::from_secs(48 * 3600)),
                    max_used: Some(512_000_000),
                    reserved: None,
                    min_free: None,
                    all: false,
                },
                global(Some(Duration::from_secs(60 * 86400)), false),
                global(None, false),
                global(None, true),
            ]
        } else {
            let mut out = Vec::new();
            for (i, p) in g.policy.into_iter().enumerate() {
                let what = |k: &str| format!("gc.policy[{i}] {k}");
                for f in &p.filters {
                    Filter::parse_all(std::slice::from_ref(f)).with_context(|| what("filters"))?;
                }
                out.push(GcPolicy {
                    filters: p.filters,
                    keep_duration: p
                        .keep_duration
                        .as_deref()
                        .map(parse_duration)
                        .transpose()
                        .with_context(|| what("keep-duration"))?,
                    max_used: size(&p.max_used_space, &what("max-used-space"))?.or(max_used),
                    reserved: size(&p.reserved_space, &what("reserved-space"))?.or(reserved),
                    min_free: size(&p.min_free_space, &what("min-free-space"))?.or(min_free),
                    all: p.all,
                });
            }
            out
        };
        Ok(GcConfig {
            enabled: g.enabled.unwrap_or(true),
            policies,
            source,
        })
    }

    /// The smallest cache size at which some step may remove something
    /// without an age limit.
    pub fn trigger_bytes(&self) -> Option<u64> {
        self.policies
            .iter()
            .filter_map(|p| match (p.max_used, p.min_free) {
                (Some(m), _) => Some(m.max(p.reserved.unwrap_or(0))),
                (None, Some(_)) => Some(0),
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_and_files() {
        assert_eq!(parse_size("512MB", None).unwrap(), 512_000_000);
        assert_eq!(parse_size("1KiB", None).unwrap(), 1024);
        assert_eq!(parse_size("10%", Some(1000)).unwrap(), 100);
        assert!(parse_size("12XB", None).is_err());
        assert!(parse_size("120%", None).is_err());
        assert_eq!(parse_duration("48h").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("3w").is_err());

        let d = tempfile::tempdir().unwrap();
        let c = GcConfig::load(d.path()).unwrap();
        assert!(c.enabled);
        assert_eq!(c.policies.len(), 4);

        std::fs::write(
            d.path().join("kiln.toml"),
            "[gc]\nmax-used-space = \"2MB\"\nreserved-space = \"0\"\n[[gc.policy]]\nkeep-duration = \"1h\"\n\
             [[gc.policy]]\nfilters = [\"type==regular\"]\n",
        )
        .unwrap();
        let c = GcConfig::load(d.path()).unwrap();
        assert_eq!(c.policies.len(), 2);
        assert_eq!(c.policies[0].max_used, Some(2_000_000));
        assert_eq!(c.trigger_bytes(), Some(2_000_000));

        let (_, src) = load_settings(d.path()).unwrap();
        assert_eq!(src, SourcesConfig::default());
        std::fs::write(
            d.path().join("kiln.toml"),
            "[sources]\nhttp-max-size = \"2KiB\"\n",
        )
        .unwrap();
        let (gc, src) = load_settings(d.path()).unwrap();
        assert_eq!(src.http_max_bytes, Some(2048));
        assert!(gc.enabled);
        std::fs::write(
            d.path().join("kiln.toml"),
            "[sources]\nhttp-max-size = \"5%\"\n",
        )
        .unwrap();
        let e = load_settings(d.path()).unwrap_err();
        assert!(format!("{e:#}").contains("not a share"), "{e:#}");
        std::fs::write(d.path().join("kiln.toml"), "[gc]\nmax-used = 3\n").unwrap();
        let e = GcConfig::load(d.path()).unwrap_err();
        assert!(format!("{e:#}").contains("kiln.toml"), "{e:#}");
        std::fs::write(
            d.path().join("kiln.toml"),
            "[[gc.policy]]\nfilters = [\"colour==red\"]\n",
        )
        .unwrap();
        let e = GcConfig::load(d.path()).unwrap_err();
        assert!(format!("{e:#}").contains("colour"), "{e:#}");
    }
}
