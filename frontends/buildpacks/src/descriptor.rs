//! `buildpack.toml` and `order.toml`: buildpack descriptors, group entries
//! and orders (Buildpack API 0.12 §buildpack.toml, Platform API §order.toml).

use kiln_frontend::FrontendError;

use crate::tomlx::{Doc, View};

/// Oldest and newest supported Buildpack API minor versions (`0.x`).
///
/// 0.9 is the first API where every process is exec'd directly with an
/// array `command`, which is what a baked image config can express.
pub const API_MIN_MINOR: u32 = 9;
/// Newest supported Buildpack API minor version.
pub const API_MAX_MINOR: u32 = 12;

/// A buildpack API version `0.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Api {
    /// The minor version.
    pub minor: u32,
}

impl Api {
    /// Parses `0.N`.
    pub fn parse(s: &str) -> Option<Api> {
        let (major, minor) = s.split_once('.')?;
        if major != "0" || minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Api {
            minor: minor.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0.{}", self.minor)
    }
}

/// One `[[targets]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// `os`, empty = any.
    pub os: String,
    /// `arch`, empty = any.
    pub arch: String,
    /// `variant`, empty = any.
    pub variant: String,
    /// `(name, version)` of each `[[targets.distros]]`.
    pub distros: Vec<(String, String)>,
}

/// A reference to a buildpack in a group or order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Buildpack ID.
    pub id: String,
    /// Version; `None` picks the only (or newest) version on disk.
    pub version: Option<String>,
    /// `optional = true`.
    pub optional: bool,
}

impl GroupEntry {
    /// A required entry.
    pub fn new(id: &str, version: Option<&str>) -> Self {
        GroupEntry {
            id: id.to_string(),
            version: version.map(str::to_string),
            optional: false,
        }
    }

    /// Parses `id[@version]` (the `buildpacks` option).
    pub fn parse_ref(s: &str) -> Result<GroupEntry, FrontendError> {
        let s = s.trim();
        let (id, version) = match s.split_once('@') {
            Some((id, v)) => (id, Some(v)),
            None => (s, None),
        };
        validate_id(id).map_err(|m| FrontendError::new(format!("buildpack {s:?}: {m}")))?;
        if version == Some("") {
            return Err(FrontendError::new(format!(
                "buildpack {s:?}: empty version after @"
            )));
        }
        Ok(GroupEntry::new(id, version))
    }

    /// `id@version` or `id`.
    pub fn display(&self) -> String {
        match &self.version {
            Some(v) => format!("{}@{v}", self.id),
            None => self.id.clone(),
        }
    }
}

/// An order: groups tried top to bottom.
pub type Order = Vec<Vec<GroupEntry>>;

/// What `buildpack.toml` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buildpack {
    /// File name for messages.
    pub file: String,
    /// `api`.
    pub api: Api,
    /// `buildpack.id`.
    pub id: String,
    /// `buildpack.version`.
    pub version: String,
    /// `buildpack.name`.
    pub name: String,
    /// `buildpack.homepage`.
    pub homepage: String,
    /// `buildpack.clear-env`.
    pub clear_env: bool,
    /// `[[targets]]` (from `[[stacks]]` with `id = "*"` nothing is added).
    pub targets: Vec<Target>,
    /// `[[order]]` of a composite buildpack (empty for a component).
    pub order: Order,
}

impl Buildpack {
    /// Whether this is a composite (order) buildpack.
    pub fn is_composite(&self) -> bool {
        !self.order.is_empty()
    }

    /// `id@version`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    /// `id` with `/` replaced by `_`, as used on disk.
    pub fn escaped_id(&self) -> String {
        escape_id(&self.id)
    }
}

/// A buildpack ID as a directory name (`/` becomes `_`).
pub fn escape_id(id: &str) -> String {
    id.replace('/', "_")
}

/// Checks an ID: letters, digits, `.`, `/`, `-`, `_`; not a reserved name.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the ID is empty".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_')))
    {
        return Err(format!("the ID {id:?} contains {c:?}"));
    }
    if matches!(id, "app" | "config" | "generated" | "sbom") {
        return Err(format!("the ID {id:?} is reserved"));
    }
    if id.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return Err(format!("the ID {id:?} has an empty or dot path part"));
    }
    Ok(())
}

/// Checks a version used as a directory name.
pub fn validate_version(v: &str) -> Result<(), String> {
    if v.is_empty() || v == "." || v == ".." || v.contains('/') {
        return Err(format!(
            "the version {v:?} is not usable as a directory name"
        ));
    }
    Ok(())
}

fn parse_group_entries(
    group: &View<'_>,
    key: &str,
    need_version: bool,
) -> Result<Vec<GroupEntry>, FrontendError> {
    let mut out = Vec::new();
    for e in group.tables(key)? {
        let id = e.str("id")?;
        validate_id(id).map_err(|m| e.err("id", m))?;
        let version = e.opt_str("version")?;
        if need_version && version.is_none() {
            return Err(e.err("version", "is required"));
        }
        if let Some(v) = version {
            validate_version(v).map_err(|m| e.err("version", m))?;
        }
        out.push(GroupEntry {
            id: id.to_string(),
            version: version.map(str::to_string),
            optional: e.bool_or_false("optional")?,
        });
    }
    Ok(out)
}

/// Parses `[[order]]` / `[[order.group]]` of an `order.toml` or a composite
/// `buildpack.toml`.
pub fn parse_order(root: &View<'_>, need_version: bool) -> Result<Order, FrontendError> {
    let mut order = Vec::new();
    for o in root.tables("order")? {
        let group = parse_group_entries(&o, "group", need_version)?;
        if group.is_empty() {
            return Err(o.err("group", "is empty"));
        }
        order.push(group);
    }
    Ok(order)
}

/// Parses an `order.toml`.
pub fn parse_order_toml(file: &str, data: &[u8]) -> Result<Order, FrontendError> {
    let doc = Doc::parse(file, data)?;
    let order = parse_order(&doc.root(), false)?;
    if order.is_empty() {
        return Err(crate::tomlx::file_err(file, "order: no [[order]] groups"));
    }
    Ok(order)
}

/// Parses a `buildpack.toml`.
pub fn parse_buildpack(file: &str, data: &[u8]) -> Result<Buildpack, FrontendError> {
    let doc = Doc::parse(file, data)?;
    let root = doc.root();
    let api_s = root.str("api")?;
    let api = Api::parse(api_s)
        .ok_or_else(|| root.err("api", format!("{api_s:?} is not a version like \"0.12\"")))?;
    if api.minor < API_MIN_MINOR || api.minor > API_MAX_MINOR {
        return Err(root.err(
            "api",
            format!(
                "buildpack API {api} is not supported (kiln supports 0.{API_MIN_MINOR} to 0.{API_MAX_MINOR})"
            ),
        ));
    }
    let bp = root
        .opt_table("buildpack")?
        .ok_or_else(|| root.err("buildpack", "is required"))?;
    let id = bp.str("id")?;
    validate_id(id).map_err(|m| bp.err("id", m))?;
    let version = bp.str("version")?;
    validate_version(version).map_err(|m| bp.err("version", m))?;
    let mut targets = Vec::new();
    for t in root.tables("targets")? {
        let mut distros = Vec::new();
        for d in t.tables("distros")? {
            distros.push((
                d.opt_str("name")?.unwrap_or("").to_string(),
                d.opt_str("version")?.unwrap_or("").to_string(),
            ));
        }
        targets.push(Target {
            os: t.opt_str("os")?.unwrap_or("").to_string(),
            arch: t.opt_str("arch")?.unwrap_or("").to_string(),
            variant: t.opt_str("variant")?.unwrap_or("").to_string(),
            distros,
        });
    }
    let order = parse_order(&root, true)?;
    if !order.is_empty() && root.has("stacks") {
        return Err(root.err(
            "stacks",
            "a buildpack with [[order]] cannot have [[stacks]]",
        ));
    }
    Ok(Buildpack {
        file: file.to_string(),
        api,
        id: id.to_string(),
        version: version.to_string(),
        name: bp.opt_str("name")?.unwrap_or("").to_string(),
        homepage: bp.opt_str("homepage")?.unwrap_or("").to_string(),
        clear_env: bp.bool_or_false("clear-env")?,
        targets,
        order,
    })
}

/// The run image's target, for `[[targets]]` matching and `CNB_TARGET_*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageTarget {
    /// `os`.
    pub os: String,
    /// `architecture`.
    pub arch: String,
    /// `variant`.
    pub variant: String,
    /// `io.buildpacks.base.distro.name` label.
    pub distro_name: String,
    /// `io.buildpacks.base.distro.version` label.
    pub distro_version: String,
}

/// Whether a buildpack runs on `image` (no targets = any Linux).
pub fn target_matches(bp: &Buildpack, image: &ImageTarget) -> bool {
    if bp.targets.is_empty() {
        return image.os.is_empty() || image.os == "linux";
    }
    let field = |want: &str, have: &str| want.is_empty() || have.is_empty() || want == have;
    bp.targets.iter().any(|t| {
        field(&t.os, &image.os)
            && field(&t.arch, &image.arch)
            && field(&t.variant, &image.variant)
            && (t.distros.is_empty()
                || image.distro_name.is_empty()
                || t.distros
                    .iter()
                    .any(|(n, v)| field(n, &image.distro_name) && field(v, &image.distro_version)))
    })
}

/// Compares two version strings: numeric dot parts compare as numbers,
/// anything else as text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let mut ai = a.split('.');
    let mut bi = b.split('.');
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"
api = "0.12"
[buildpack]
id = "samples/hello-sh"
version = "0.0.1"
name = "Hello"
[[targets]]
os = "linux"
"#;

    #[test]
    fn parses_fixture_buildpack() {
        let bp = parse_buildpack("bp.toml", HELLO.as_bytes()).unwrap();
        assert_eq!(bp.id, "samples/hello-sh");
        assert_eq!(bp.escaped_id(), "samples_hello-sh");
        assert_eq!(bp.api, Api { minor: 12 });
        assert!(!bp.is_composite());
        assert_eq!(bp.targets.len(), 1);
        let linux = ImageTarget {
            os: "linux".into(),
            arch: "amd64".into(),
            ..Default::default()
        };
        assert!(target_matches(&bp, &linux));
        let win = ImageTarget {
            os: "windows".into(),
            ..Default::default()
        };
        assert!(!target_matches(&bp, &win));
    }

    #[test]
    fn unsupported_api_names_file_and_key() {
        let e = parse_buildpack(
            "x/buildpack.toml",
            b"api = \"0.4\"\n[buildpack]\nid = \"a\"\nversion = \"1\"\n",
        )
        .unwrap_err();
        assert!(
            e.message
                .starts_with("x/buildpack.toml: api: buildpack API 0.4"),
            "{e}"
        );
        let e = parse_buildpack("b.toml", b"api = \"0.10\"\n[buildpack]\nversion = \"1\"\n")
            .unwrap_err();
        assert_eq!(e.message, "b.toml: buildpack.id: is required");
        let e = parse_buildpack(
            "b.toml",
            b"api = \"0.10\"\n[buildpack]\nid = \"app\"\nversion = \"1\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("reserved"), "{e}");
    }

    #[test]
    fn parses_order() {
        let o = parse_order_toml(
            "order.toml",
            br#"
[[order]]
[[order.group]]
id = "a"
version = "1"
[[order.group]]
id = "b"
optional = true
[[order]]
[[order.group]]
id = "c"
version = "2"
"#,
        )
        .unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(
            o[0][1],
            GroupEntry {
                id: "b".into(),
                version: None,
                optional: true
            }
        );
        let e = parse_order_toml(
            "order.toml",
            b"[[order]]\n[[order.group]]\nversion = \"1\"\n",
        )
        .unwrap_err();
        assert_eq!(e.message, "order.toml: order[0].group[0].id: is required");
        assert!(parse_order_toml("order.toml", b"").is_err());
    }

    #[test]
    fn composite_needs_versions() {
        let e = parse_buildpack(
            "meta.toml",
            b"api = \"0.10\"\n[buildpack]\nid = \"m\"\nversion = \"1\"\n[[order]]\n[[order.group]]\nid = \"a\"\n",
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "meta.toml: order[0].group[0].version: is required"
        );
    }

    #[test]
    fn refs_and_versions() {
        assert_eq!(
            GroupEntry::parse_ref("a/b@1.2.3").unwrap(),
            GroupEntry::new("a/b", Some("1.2.3"))
        );
        assert_eq!(
            GroupEntry::parse_ref("a").unwrap(),
            GroupEntry::new("a", None)
        );
        assert!(GroupEntry::parse_ref("a@").is_err());
        assert!(GroupEntry::parse_ref("a b").is_err());
        assert!(GroupEntry::parse_ref("../x").is_err());
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("0.10.0", "0.9.1"), Greater);
        assert_eq!(compare_versions("1.0", "1.0"), Equal);
        assert_eq!(compare_versions("1.0", "1.0.1"), Less);
    }
}
