//! `RUN --mount=<csv>` specifications.
//!
//! The value is one CSV record of `key=value` fields (plus the bare flags
//! `ro`/`readonly`, `rw`/`readwrite`, `required`). Without an expander
//! (instruction parsing), values that reference variables are kept raw and
//! only checked once the converter re-parses with expansion; `from=` may never
//! use variables (except a trailing `$`). Unlike BuildKit, the type-dependent
//! checks run after all fields are read, so field order does not matter.

use thiserror::Error;

use crate::shell::ShellError;

/// The kind of a `RUN` mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// A read-only (by default) view of a stage, image or the context.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// A memory-backed scratch directory.
    Tmpfs,
    /// A build secret as a file (or environment variable).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "bind" => Self::Bind,
            "cache" => Self::Cache,
            "tmpfs" => Self::Tmpfs,
            "secret" => Self::Secret,
            "ssh" => Self::Ssh,
            _ => return None,
        })
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Cache => "cache",
            Self::Tmpfs => "tmpfs",
            Self::Secret => "secret",
            Self::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    /// Used by all writers at once (the default).
    Shared,
    /// Each concurrent writer gets its own copy.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// One parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    /// The flag value as written.
    pub raw: String,
    /// `type=` (default `bind`).
    pub mount_type: MountType,
    /// `from=`: stage, image or named context.
    pub from: Option<String>,
    /// `source=` / `src=`.
    pub source: Option<String>,
    /// `target=` / `dst=` / `destination=`.
    pub target: Option<String>,
    /// Effective read-only state (explicit, or the type's default).
    pub read_only: bool,
    /// `id=` (cache id or secret/ssh id).
    pub id: Option<String>,
    /// `sharing=` (cache only).
    pub sharing: Option<CacheSharing>,
    /// `required` (secret/ssh only).
    pub required: bool,
    /// `mode=` in octal (secret/ssh/cache).
    pub mode: Option<u32>,
    /// `uid=` (secret/ssh/cache).
    pub uid: Option<u32>,
    /// `gid=` (secret/ssh/cache).
    pub gid: Option<u32>,
    /// `size=` in bytes (tmpfs only).
    pub size: Option<u64>,
    /// `env=`: expose the secret as this environment variable.
    pub env: Option<String>,
    /// Whether some values still reference variables (parse again with an
    /// expander before use).
    pub needs_expansion: bool,
}

/// Why a `--mount` value is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MountError {
    /// The CSV itself is broken.
    #[error("failed to parse csv mounts: {0}")]
    Csv(String),
    /// A field that is neither `key=value` nor a known bare flag.
    #[error("invalid field '{0}' must be a key=value pair")]
    NotKeyValue(String),
    /// An unknown key.
    #[error("unexpected key '{key}' in '{field}'")]
    UnknownKey {
        /// The key.
        key: String,
        /// The whole field.
        field: String,
    },
    /// A key that this mount type does not take.
    #[error("unexpected key '{key}' for mount type '{mount_type}'")]
    KeyNotForType {
        /// The key.
        key: String,
        /// The mount type.
        mount_type: &'static str,
    },
    /// `type=` with an unknown type.
    #[error("unsupported mount type {0:?}")]
    UnsupportedType(String),
    /// `sharing=` with an unknown mode.
    #[error("unsupported sharing value {0:?}")]
    UnsupportedSharing(String),
    /// A value that does not parse for its key.
    #[error("invalid value {value:?} for {key}")]
    BadValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `sharing=` on a non-cache mount.
    #[error("invalid cache sharing set for {0} mount")]
    SharingNotCache(&'static str),
    /// `from=` on a secret mount.
    #[error("secret mount should not have a from")]
    SecretFrom,
    /// A secret mount with neither source, target, id nor env.
    #[error("invalid secret mount. one of source, target required")]
    SecretTarget,
    /// A secret mount with both source and id.
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    /// A bind, cache or tmpfs mount without a target.
    #[error("mount type '{0}' requires a target")]
    MissingTarget(&'static str),
    /// `from=` using variables.
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    FromExpansion,
    /// Expanding a value failed.
    #[error("{0}")]
    Expand(ShellError),
}

/// Reads one CSV record like Go's `encoding/csv` (comma separator, `"`
/// quoting with `""` escapes, no lazy quotes).
fn read_csv_record(s: &str) -> Result<Vec<String>, MountError> {
    let line = s.split(['\n']).next().unwrap_or("").trim_end_matches('\r');
    if s.is_empty() {
        return Err(MountError::Csv("EOF".into()));
    }
    let chars: Vec<char> = line.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut field = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(MountError::Csv(
                            "extraneous or missing \" in quoted-field".into(),
                        ));
                    }
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        field.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        field.push(*c);
                        i += 1;
                    }
                }
            }
            match chars.get(i) {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {
                    fields.push(field);
                    i += 1;
                }
                Some(_) => {
                    return Err(MountError::Csv(
                        "extraneous or missing \" in quoted-field".into(),
                    ));
                }
            }
        } else {
            while let Some(c) = chars.get(i) {
                match c {
                    ',' => break,
                    '"' => return Err(MountError::Csv("bare \" in non-quoted-field".into())),
                    c => field.push(*c),
                }
                i += 1;
            }
            fields.push(field);
            if i >= chars.len() {
                return Ok(fields);
            }
            i += 1; // the comma
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// go-units `RAMInBytes`: `64m`, `1.5g`, `100`, `2GiB` (binary multiples).
fn parse_ram(s: &str) -> Option<u64> {
    let num_len = s
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (num, unit) = s.split_at(num_len);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = value * mult;
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn has_var(s: &str) -> bool {
    s.contains('$')
}

/// A value expander (e.g. the converter's word expansion).
pub type Expander<'a> = &'a mut dyn FnMut(&str) -> Result<String, ShellError>;

/// Parses a `--mount` value. With `expander = None` (instruction parsing)
/// values containing `$` are kept raw and left unchecked.
pub fn parse_mount(
    value: &str,
    mut expander: Option<Expander<'_>>,
) -> Result<RunMount, MountError> {
    let fields = read_csv_record(value)?;
    let mut m = RunMount {
        raw: value.to_string(),
        mount_type: MountType::Bind,
        from: None,
        source: None,
        target: None,
        read_only: true,
        id: None,
        sharing: None,
        required: false,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        env: None,
        needs_expansion: false,
    };
    let mut read_only: Option<bool> = None;
    let mut type_known = true;
    // Keys whose applicability depends on the type, checked at the end.
    let mut typed_keys: Vec<&'static str> = Vec::new();

    for field in &fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(val) = val else {
            match key.as_str() {
                "readonly" | "ro" => read_only = Some(true),
                "readwrite" | "rw" => read_only = Some(false),
                "required" => {
                    m.required = true;
                    typed_keys.push("required");
                }
                _ => return Err(MountError::NotKeyValue(field.clone())),
            }
            continue;
        };
        let mut val = val.to_string();
        if key == "from" && val.find('$').is_some_and(|i| i + 1 != val.len()) {
            return Err(MountError::FromExpansion);
        }
        let mut deferred = false;
        if let Some(ex) = expander.as_mut() {
            if key != "from" {
                val = ex(&val).map_err(MountError::Expand)?;
            }
        } else if has_var(&val) && key != "from" {
            deferred = true;
            m.needs_expansion = true;
        }
        let bad = |key: &str, value: &str| MountError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
        };
        match key.as_str() {
            "type" => {
                if deferred {
                    type_known = false;
                } else {
                    m.mount_type = MountType::parse(&val)
                        .ok_or_else(|| MountError::UnsupportedType(val.clone()))?;
                }
            }
            "from" => m.from = Some(val),
            "source" | "src" => m.source = Some(val),
            "target" | "dst" | "destination" => m.target = Some(val),
            "id" => m.id = Some(val),
            "readonly" | "ro" if !deferred => {
                read_only = Some(parse_bool(&val).ok_or_else(|| bad(&key, &val))?);
            }
            "readwrite" | "rw" if !deferred => {
                read_only = Some(!parse_bool(&val).ok_or_else(|| bad(&key, &val))?);
            }
            "required" => {
                typed_keys.push("required");
                if !deferred {
                    m.required = parse_bool(&val).ok_or_else(|| bad(&key, &val))?;
                }
            }
            "sharing" => {
                typed_keys.push("sharing");
                if !deferred {
                    m.sharing = Some(match val.to_ascii_lowercase().as_str() {
                        "shared" => CacheSharing::Shared,
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        _ => return Err(MountError::UnsupportedSharing(val)),
                    });
                }
            }
            "mode" => {
                typed_keys.push("mode");
                if !deferred {
                    m.mode = Some(u32::from_str_radix(&val, 8).map_err(|_| bad(&key, &val))?);
                }
            }
            "uid" | "gid" => {
                typed_keys.push(if key == "uid" { "uid" } else { "gid" });
                if !deferred {
                    let n: u32 = val.parse().map_err(|_| bad(&key, &val))?;
                    if key == "uid" {
                        m.uid = Some(n);
                    } else {
                        m.gid = Some(n);
                    }
                }
            }
            "size" => {
                typed_keys.push("size");
                if !deferred {
                    m.size = Some(parse_ram(&val).ok_or_else(|| bad(&key, &val))?);
                }
            }
            "env" => {
                typed_keys.push("env");
                m.env = Some(val);
            }
            "readonly" | "ro" | "readwrite" | "rw" => {}
            _ => {
                return Err(MountError::UnknownKey {
                    key,
                    field: field.clone(),
                });
            }
        }
    }

    let t = m.mount_type;
    m.read_only = read_only.unwrap_or(!matches!(t, MountType::Cache | MountType::Tmpfs));
    if !type_known {
        return Ok(m);
    }
    for key in typed_keys {
        let allowed = match key {
            "required" => matches!(t, MountType::Secret | MountType::Ssh),
            "mode" | "uid" | "gid" => {
                matches!(t, MountType::Secret | MountType::Ssh | MountType::Cache)
            }
            "size" => t == MountType::Tmpfs,
            "env" => t == MountType::Secret,
            _ => true,
        };
        if key == "sharing" && t != MountType::Cache {
            return Err(MountError::SharingNotCache(t.as_str()));
        }
        if !allowed {
            return Err(MountError::KeyNotForType {
                key: key.to_string(),
                mount_type: t.as_str(),
            });
        }
    }
    match t {
        MountType::Secret => {
            if m.from.is_some() {
                return Err(MountError::SecretFrom);
            }
            if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
                return Err(MountError::SecretTarget);
            }
            if m.source.is_some() && m.id.is_some() {
                return Err(MountError::SecretSourceAndId);
            }
        }
        MountType::Bind | MountType::Cache | MountType::Tmpfs => {
            if m.target.as_deref().is_none_or(str::is_empty) {
                return Err(MountError::MissingTarget(t.as_str()));
            }
        }
        MountType::Ssh => {}
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mount() {
        let m = parse_mount(
            "type=cache,target=/root/.cache,sharing=locked,id=x,mode=0755,uid=1",
            None,
        )
        .unwrap();
        assert_eq!(m.mount_type, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert!(!m.read_only);
    }

    #[test]
    fn defaults_and_flags() {
        let m = parse_mount("target=/src,from=build,source=/out", None).unwrap();
        assert_eq!((m.mount_type, m.read_only), (MountType::Bind, true));
        let m = parse_mount("dst=/src,rw", None).unwrap();
        assert!(!m.read_only);
        let m = parse_mount("type=secret,id=tok,required,env=TOKEN", None).unwrap();
        assert!(m.required && m.read_only);
        let m = parse_mount("type=tmpfs,dst=/t,size=64m", None).unwrap();
        assert_eq!(m.size, Some(64 * 1024 * 1024));
        let m = parse_mount("\"type=bind\",\"target=/a,b\"", None).unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse_mount("type=nope,target=/x", None),
            Err(MountError::UnsupportedType(_))
        ));
        assert!(matches!(
            parse_mount("target=/x,mode=0644", None),
            Err(MountError::KeyNotForType { .. })
        ));
        assert!(matches!(
            parse_mount("target=/x,sharing=shared", None),
            Err(MountError::SharingNotCache(_))
        ));
        assert!(matches!(
            parse_mount("type=cache,target=/x,sharing=x", None),
            Err(MountError::UnsupportedSharing(_))
        ));
        assert!(matches!(
            parse_mount("target", None),
            Err(MountError::NotKeyValue(_))
        ));
        assert!(matches!(
            parse_mount("bogus=1,target=/x", None),
            Err(MountError::UnknownKey { .. })
        ));
        assert!(matches!(
            parse_mount("type=secret", None),
            Err(MountError::SecretTarget)
        ));
        assert!(matches!(
            parse_mount("type=secret,id=a,source=b", None),
            Err(MountError::SecretSourceAndId)
        ));
        assert!(matches!(
            parse_mount("type=cache", None),
            Err(MountError::MissingTarget(_))
        ));
        assert!(matches!(
            parse_mount("from=$X,target=/x", None),
            Err(MountError::FromExpansion)
        ));
        assert!(matches!(
            parse_mount("target=/x,ro=maybe", None),
            Err(MountError::BadValue { .. })
        ));
        assert!(matches!(parse_mount("a\"b", None), Err(MountError::Csv(_))));
        assert!(matches!(parse_mount("", None), Err(MountError::Csv(_))));
    }

    #[test]
    fn deferred_and_expanded() {
        let m = parse_mount("type=$T,target=$DIR", None).unwrap();
        assert!(m.needs_expansion);
        let mut ex = |s: &str| -> Result<String, ShellError> {
            Ok(s.replace("$T", "cache").replace("$DIR", "/c"))
        };
        let m = parse_mount("type=$T,target=$DIR", Some(&mut ex)).unwrap();
        assert_eq!(
            (m.mount_type, m.target.as_deref()),
            (MountType::Cache, Some("/c"))
        );
    }
}
