//! The app's `project.toml` (project descriptor schemas 0.1, 0.2 and 0.3)
//! and the translation of its gitignore-style include/exclude patterns into
//! the dockerignore-style patterns kiln's local sources take.

use kiln_frontend::FrontendError;

use crate::descriptor::{GroupEntry, validate_id, validate_version};
use crate::tomlx::{Doc, View};

/// File name of the project descriptor at the app root.
pub const PROJECT_TOML: &str = "project.toml";

/// What the frontend uses from `project.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Project {
    /// `_.schema-version` (`0.1` when the file has no `[_]`).
    pub schema: String,
    /// `_.id`.
    pub id: String,
    /// `_.name`.
    pub name: String,
    /// `_.version`.
    pub version: String,
    /// `_.source-url`.
    pub source_url: String,
    /// Gitignore-style include patterns.
    pub include: Vec<String>,
    /// Gitignore-style exclude patterns.
    pub exclude: Vec<String>,
    /// `[[io.buildpacks.group]]`: an explicit group.
    pub group: Vec<GroupEntry>,
    /// `[[io.buildpacks.pre.group]]`.
    pub pre: Vec<GroupEntry>,
    /// `[[io.buildpacks.post.group]]`.
    pub post: Vec<GroupEntry>,
    /// `[[io.buildpacks.build.env]]`, in file order.
    pub env: Vec<(String, String)>,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
}

fn parse_entries(v: &View<'_>, key: &str) -> Result<Vec<GroupEntry>, FrontendError> {
    let mut out = Vec::new();
    for e in v.tables(key)? {
        if e.has("uri") {
            return Err(e.err(
                "uri",
                "buildpacks by URI are not supported: put the buildpack in the `buildpacks` context and refer to it by id and version",
            ));
        }
        if e.has("script") {
            return Err(e.err(
                "script",
                "inline buildpacks are not supported: put the buildpack in the `buildpacks` context",
            ));
        }
        let id = e.str("id")?;
        validate_id(id).map_err(|m| e.err("id", m))?;
        let version = e.opt_str("version")?;
        if let Some(ver) = version {
            validate_version(ver).map_err(|m| e.err("version", m))?;
        }
        out.push(GroupEntry {
            id: id.to_string(),
            version: version.map(str::to_string),
            optional: false,
        });
    }
    Ok(out)
}

fn parse_env(
    v: &View<'_>,
    key: &str,
    out: &mut Vec<(String, String)>,
) -> Result<(), FrontendError> {
    for e in v.tables(key)? {
        let name = e.str("name")?;
        crate::env::validate_name(name).map_err(|m| e.err("name", m))?;
        let value = e.str("value")?;
        out.push((name.to_string(), value.to_string()));
    }
    Ok(())
}

/// Parses `project.toml`.
pub fn parse_project(data: &[u8]) -> Result<Project, FrontendError> {
    let doc = Doc::parse(PROJECT_TOML, data)?;
    let root = doc.root();
    let mut p = Project::default();
    match root.opt_table("_")? {
        Some(meta) => {
            p.schema = meta.opt_str("schema-version")?.unwrap_or("0.2").to_string();
            if !matches!(p.schema.as_str(), "0.2" | "0.3") {
                return Err(meta.err(
                    "schema-version",
                    format!("{:?} is not supported (0.1, 0.2 and 0.3 are)", p.schema),
                ));
            }
            p.id = meta.opt_str("id")?.unwrap_or("").to_string();
            p.name = meta.opt_str("name")?.unwrap_or("").to_string();
            p.version = meta.opt_str("version")?.unwrap_or("").to_string();
            p.source_url = meta.opt_str("source-url")?.unwrap_or("").to_string();
            if let Some(io) = root.opt_table("io")?
                && let Some(bp) = io.opt_table("buildpacks")?
            {
                p.include = bp.str_list("include")?;
                p.exclude = bp.str_list("exclude")?;
                if !p.include.is_empty() && !p.exclude.is_empty() {
                    return Err(bp.err_here("give either include or exclude, not both"));
                }
                p.group = parse_entries(&bp, "group")?;
                if let Some(pre) = bp.opt_table("pre")? {
                    p.pre = parse_entries(&pre, "group")?;
                }
                if let Some(post) = bp.opt_table("post")? {
                    p.post = parse_entries(&post, "group")?;
                }
                if let Some(build) = bp.opt_table("build")? {
                    parse_env(&build, "env", &mut p.env)?;
                }
                if let Some(env) = bp.opt_table("env")? {
                    parse_env(&env, "build", &mut p.env)?;
                }
            }
        }
        None => {
            p.schema = "0.1".into();
            if root.has("io") {
                p.warnings.push(
                    "project.toml has [io.buildpacks] but no [_] table: read as schema 0.1, add [_] schema-version = \"0.2\"".into(),
                );
            }
            if let Some(meta) = root.opt_table("project")? {
                p.id = meta.opt_str("id")?.unwrap_or("").to_string();
                p.name = meta.opt_str("name")?.unwrap_or("").to_string();
                p.version = meta.opt_str("version")?.unwrap_or("").to_string();
                p.source_url = meta.opt_str("source-url")?.unwrap_or("").to_string();
            }
            if let Some(build) = root.opt_table("build")? {
                p.include = build.str_list("include")?;
                p.exclude = build.str_list("exclude")?;
                if !p.include.is_empty() && !p.exclude.is_empty() {
                    return Err(build.err_here("give either include or exclude, not both"));
                }
                p.group = parse_entries(&build, "buildpacks")?;
                parse_env(&build, "env", &mut p.env)?;
            }
        }
    }
    Ok(p)
}

impl Project {
    /// `io.buildpacks.project.metadata`: the declared version and source
    /// URL, as pack writes them; `{}` when there is neither.
    pub fn metadata_json(&self) -> serde_json::Value {
        if self.version.is_empty() && self.source_url.is_empty() {
            return serde_json::json!({});
        }
        let mut source = serde_json::Map::new();
        source.insert("type".into(), "project".into());
        if !self.version.is_empty() {
            source.insert(
                "version".into(),
                serde_json::json!({"declared": self.version}),
            );
        }
        if !self.source_url.is_empty() {
            source.insert(
                "metadata".into(),
                serde_json::json!({"url": self.source_url}),
            );
        }
        serde_json::json!({ "source": source })
    }
}

/// Translates gitignore patterns (as `project.toml` uses them) into kiln's
/// dockerignore-style patterns. A pattern without an inner `/` matches at any
/// depth in gitignore, so it gets a `**/` prefix; one with an inner or
/// leading `/` is anchored at the app root. A trailing `/` (directories
/// only) cannot be expressed and is dropped, so such a pattern also matches
/// files of that name.
pub fn gitignore_to_patterns(patterns: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for raw in patterns {
        let mut p = raw.trim_end_matches([' ', '\t', '\r', '\n']);
        if p.is_empty() || p.starts_with('#') {
            continue;
        }
        let negate = p.starts_with('!');
        if negate {
            p = &p[1..];
        }
        let mut p = if let Some(rest) = p.strip_prefix('\\') {
            rest.to_string()
        } else {
            p.to_string()
        };
        while p.ends_with('/') {
            p.pop();
        }
        if p.is_empty() {
            continue;
        }
        let anchored = p.contains('/');
        let body = p.trim_start_matches('/');
        if body.is_empty() {
            continue;
        }
        let pat = if anchored || body.starts_with("**/") || body == "**" {
            body.to_string()
        } else {
            format!("**/{body}")
        };
        out.push(if negate { format!("!{pat}") } else { pat });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_hello_sh() {
        let p = parse_project(
            br#"
[_]
schema-version = "0.2"
id = "io.example.hello-sh"
name = "Hello sh fixture app"
version = "1.0.0"

[io.buildpacks]
exclude = ["*.draft"]

[[io.buildpacks.build.env]]
name = "HELLO_BUILT_BY"
value = "buildpacks-frontend"
"#,
        )
        .unwrap();
        assert_eq!(p.schema, "0.2");
        assert_eq!(p.exclude, vec!["*.draft"]);
        assert_eq!(
            p.env,
            vec![("HELLO_BUILT_BY".into(), "buildpacks-frontend".into())]
        );
        assert_eq!(
            p.metadata_json(),
            serde_json::json!({"source":{"type":"project","version":{"declared":"1.0.0"}}})
        );
    }

    #[test]
    fn groups_and_errors() {
        let p = parse_project(
            br#"
[_]
schema-version = "0.3"
[[io.buildpacks.group]]
id = "a"
version = "1"
[[io.buildpacks.pre.group]]
id = "pre"
[[io.buildpacks.post.group]]
id = "post"
[[io.buildpacks.env.build]]
name = "X"
value = "1"
"#,
        )
        .unwrap();
        assert_eq!(p.group, vec![GroupEntry::new("a", Some("1"))]);
        assert_eq!(p.pre, vec![GroupEntry::new("pre", None)]);
        assert_eq!(p.post, vec![GroupEntry::new("post", None)]);
        assert_eq!(p.env, vec![("X".into(), "1".into())]);

        let e =
            parse_project(b"[_]\n[io.buildpacks]\ninclude=[\"a\"]\nexclude=[\"b\"]\n").unwrap_err();
        assert_eq!(
            e.message,
            "project.toml: io.buildpacks: give either include or exclude, not both"
        );
        let e = parse_project(b"[_]\n[[io.buildpacks.build.env]]\nname = \"X\"\n").unwrap_err();
        assert_eq!(
            e.message,
            "project.toml: io.buildpacks.build.env[0].value: is required"
        );
        let e = parse_project(b"[_]\n[[io.buildpacks.group]]\nuri = \"http://x\"\n").unwrap_err();
        assert!(
            e.message
                .starts_with("project.toml: io.buildpacks.group[0].uri: "),
            "{e}"
        );
        let e = parse_project(b"[_]\nschema-version = \"9\"\n").unwrap_err();
        assert!(
            e.message.starts_with("project.toml: _.schema-version:"),
            "{e}"
        );
        let e = parse_project(b"[_]\n[[io.buildpacks.build.env]]\nname = \"A=B\"\nvalue = \"\"\n")
            .unwrap_err();
        assert!(
            e.message
                .starts_with("project.toml: io.buildpacks.build.env[0].name:"),
            "{e}"
        );
    }

    #[test]
    fn schema_0_1() {
        let p = parse_project(
            br#"
[project]
id = "p"
version = "2"
[build]
include = ["src/"]
[[build.buildpacks]]
id = "x/y"
version = "1"
[[build.env]]
name = "A"
value = "b"
"#,
        )
        .unwrap();
        assert_eq!(p.schema, "0.1");
        assert_eq!(p.include, vec!["src/"]);
        assert_eq!(p.group, vec![GroupEntry::new("x/y", Some("1"))]);
        assert_eq!(p.env, vec![("A".into(), "b".into())]);
    }

    #[test]
    fn gitignore_translation() {
        let pats: Vec<String> = [
            "*.draft",
            "/build",
            "docs/*.md",
            "tmp/",
            "!keep.draft",
            "# c",
            "",
            "\\#hash",
            "**/x",
            "a/**",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            gitignore_to_patterns(&pats),
            vec![
                "**/*.draft",
                "build",
                "docs/*.md",
                "**/tmp",
                "!**/keep.draft",
                "**/#hash",
                "**/x",
                "a/**"
            ]
        );
    }
}
