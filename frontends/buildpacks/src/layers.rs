//! What a buildpack leaves in its layers directory: `<layer>.toml` (types
//! and metadata), `launch.toml` (processes, labels), `build.toml` (unmet
//! plan entries), and the env files of each layer. Also the merge of
//! processes across buildpacks and the build/launch environments that
//! layers contribute.

use std::collections::BTreeMap;

use kiln_frontend::FrontendError;

use crate::env::{Env, ROOT_DIRS, root_dir_vars};
use crate::tomlx::Doc;

/// Layer names that are the metadata files' own names.
pub const RESERVED_LAYER_NAMES: &[&str] = &["build", "launch", "store"];

/// `[types]` of a `<layer>.toml`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Types {
    /// In the image.
    pub launch: bool,
    /// Visible to later buildpacks.
    pub build: bool,
    /// Kept for the next build.
    pub cache: bool,
}

impl Types {
    /// No type set: a scratch layer that is dropped after the build.
    pub fn ignored(&self) -> bool {
        !self.launch && !self.build && !self.cache
    }
}

/// Parses a `<layer>.toml`: its types and `[metadata]`.
pub fn parse_layer_toml(file: &str, data: &[u8]) -> Result<(Types, toml::Table), FrontendError> {
    let doc = Doc::parse(file, data)?;
    let root = doc.root();
    for k in ["launch", "build", "cache"] {
        if root.has(k) {
            return Err(root.err(k, "layer types belong in the [types] table"));
        }
    }
    let types = match root.opt_table("types")? {
        Some(t) => Types {
            launch: t.bool_or_false("launch")?,
            build: t.bool_or_false("build")?,
            cache: t.bool_or_false("cache")?,
        },
        None => Types::default(),
    };
    let metadata = match root.opt_table("metadata")? {
        Some(m) => m.table().clone(),
        None => toml::Table::new(),
    };
    Ok((types, metadata))
}

/// The `<layer>.toml` written into the build cache: metadata only, no
/// `[types]`, so a buildpack has to declare the types again.
pub fn cached_layer_toml(metadata: &toml::Table) -> String {
    if metadata.is_empty() {
        return String::new();
    }
    let mut root = toml::Table::new();
    root.insert("metadata".into(), toml::Value::Table(metadata.clone()));
    toml::to_string(&root).unwrap_or_default()
}

/// A `[[processes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// `type`.
    pub kind: String,
    /// `command` (array).
    pub command: Vec<String>,
    /// `args`.
    pub args: Vec<String>,
    /// `default`.
    pub default: bool,
    /// `working-dir`.
    pub working_dir: Option<String>,
    /// The buildpack that declared it.
    pub buildpack_id: String,
}

/// `launch.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launch {
    /// `[[labels]]` as `(key, value)`.
    pub labels: Vec<(String, String)>,
    /// `[[processes]]`.
    pub processes: Vec<Process>,
    /// Whether `[[slices]]` were given (kiln puts the app in one layer).
    pub has_slices: bool,
}

fn valid_process_type(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parses `launch.toml`.
pub fn parse_launch(file: &str, data: &[u8], buildpack_id: &str) -> Result<Launch, FrontendError> {
    let doc = Doc::parse(file, data)?;
    let root = doc.root();
    let mut l = Launch::default();
    for lab in root.tables("labels")? {
        l.labels
            .push((lab.str("key")?.to_string(), lab.str("value")?.to_string()));
    }
    let mut defaults = 0;
    for p in root.tables("processes")? {
        let kind = p.str("type")?;
        if !valid_process_type(kind) {
            return Err(p.err(
                "type",
                format!("{kind:?} may only contain letters, digits, '.', '_' and '-'"),
            ));
        }
        if l.processes.iter().any(|q| q.kind == kind) {
            return Err(p.err("type", format!("process type {kind:?} is declared twice")));
        }
        let command = match p.get("command") {
            Some(toml::Value::String(s)) => vec![s.clone()],
            _ => p.str_list("command")?,
        };
        if command.is_empty() {
            return Err(p.err("command", "is required and must not be empty"));
        }
        let default = p.bool_or_false("default")?;
        if default {
            defaults += 1;
            if defaults > 1 {
                return Err(p.err("default", "only one process may be the default"));
            }
        }
        l.processes.push(Process {
            kind: kind.to_string(),
            command,
            args: p.str_list("args")?,
            default,
            working_dir: p.opt_str("working-dir")?.map(str::to_string),
            buildpack_id: buildpack_id.to_string(),
        });
    }
    l.has_slices = root.has("slices");
    Ok(l)
}

/// Parses `build.toml`: the names of `[[unmet]]`.
pub fn parse_build_toml(file: &str, data: &[u8]) -> Result<Vec<String>, FrontendError> {
    let doc = Doc::parse(file, data)?;
    let root = doc.root();
    root.tables("unmet")?
        .iter()
        .map(|u| u.str("name").map(str::to_string))
        .collect()
}

/// Merges processes of the group in order: a later buildpack's process of
/// the same type replaces the earlier one; the default is the last process
/// declared default, and a later non-default redefinition of the default
/// type clears it. Returns the processes sorted by type and the default type.
pub fn merge_processes(per_buildpack: &[Vec<Process>]) -> (Vec<Process>, Option<String>) {
    let mut by_type: BTreeMap<String, Process> = BTreeMap::new();
    let mut default: Option<String> = None;
    for list in per_buildpack {
        for p in list {
            if p.default {
                default = Some(p.kind.clone());
            } else if default.as_deref() == Some(p.kind.as_str()) {
                default = None;
            }
            by_type.insert(p.kind.clone(), p.clone());
        }
    }
    (by_type.into_values().collect(), default)
}

/// Everything read back about one layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    /// Layer name.
    pub name: String,
    /// Types.
    pub types: Types,
    /// `[metadata]`.
    pub metadata: toml::Table,
    /// Whether `<layer>/` exists.
    pub has_dir: bool,
    /// Which of `bin`, `lib`, `include`, `pkgconfig` exist.
    pub root_dirs: Vec<String>,
    /// `env/` files.
    pub env: Vec<(String, String)>,
    /// `env.build/` files.
    pub env_build: Vec<(String, String)>,
    /// `env.launch/` files.
    pub env_launch: Vec<(String, String)>,
    /// `env.launch/<process>/` files.
    pub env_launch_proc: BTreeMap<String, Vec<(String, String)>>,
    /// Whether `exec.d/` exists (not supported in a baked image).
    pub has_exec_d: bool,
}

/// What one buildpack's build produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildOutput {
    /// Buildpack ID.
    pub id: String,
    /// Escaped ID (directory name under `/layers`).
    pub escaped: String,
    /// Version.
    pub version: String,
    /// Layers with a `<layer>.toml`, by name.
    pub layers: Vec<Layer>,
    /// `launch.toml`.
    pub launch: Launch,
}

impl BuildOutput {
    /// Absolute path of a layer directory.
    pub fn layer_path(&self, layer: &str) -> String {
        format!("/layers/{}/{layer}", self.escaped)
    }
}

/// Adds what `out`'s build layers contribute for later buildpacks: for each
/// build layer in name order, its `bin`/`lib`/`include`/`pkgconfig` dirs,
/// then `env/`, then `env.build/`. Returns ignored env file names.
pub fn apply_build_layers(env: &mut Env, out: &BuildOutput) -> Vec<String> {
    let mut ignored = Vec::new();
    for l in out.layers.iter().filter(|l| l.types.build && l.has_dir) {
        let path = out.layer_path(&l.name);
        for d in ROOT_DIRS {
            if l.root_dirs.iter().any(|x| x == d) {
                for var in root_dir_vars(d, false) {
                    env.prepend_path(var, &format!("{path}/{d}"));
                }
            }
        }
        ignored.extend(env.apply_dir(&l.env));
        ignored.extend(env.apply_dir(&l.env_build));
    }
    ignored
}

/// The launch environment of `process` (or of no particular process): for
/// each buildpack in group order, first the `bin`/`lib` dirs of all its
/// launch layers, then per layer `env/`, `env.launch/` and
/// `env.launch/<process>/`.
pub fn launch_env(base: &Env, outputs: &[BuildOutput], process: Option<&str>) -> Env {
    let mut env = base.clone();
    for out in outputs {
        let launch: Vec<&Layer> = out
            .layers
            .iter()
            .filter(|l| l.types.launch && l.has_dir)
            .collect();
        for l in &launch {
            let path = out.layer_path(&l.name);
            for d in ROOT_DIRS {
                if l.root_dirs.iter().any(|x| x == d) {
                    for var in root_dir_vars(d, true) {
                        env.prepend_path(var, &format!("{path}/{d}"));
                    }
                }
            }
        }
        for l in &launch {
            env.apply_dir(&l.env);
            env.apply_dir(&l.env_launch);
            if let Some(p) = process
                && let Some(files) = l.env_launch_proc.get(p)
            {
                env.apply_dir(files);
            }
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn layer_toml() {
        let (t, m) = parse_layer_toml(
            "hello.toml",
            b"[types]\nlaunch = true\nbuild = false\ncache = false\n[metadata]\nfixture = \"hello-sh\"\n",
        )
        .unwrap();
        assert_eq!(
            t,
            Types {
                launch: true,
                build: false,
                cache: false
            }
        );
        assert_eq!(m.get("fixture").and_then(|v| v.as_str()), Some("hello-sh"));
        let (t, _) = parse_layer_toml("x.toml", b"").unwrap();
        assert!(t.ignored());
        let e = parse_layer_toml("x.toml", b"launch = true\n").unwrap_err();
        assert_eq!(
            e.message,
            "x.toml: launch: layer types belong in the [types] table"
        );
        let e = parse_layer_toml("x.toml", b"[types]\ncache = \"yes\"\n").unwrap_err();
        assert_eq!(
            e.message,
            "x.toml: types.cache: must be a boolean, not string"
        );
        assert_eq!(
            cached_layer_toml(&m),
            "[metadata]\nfixture = \"hello-sh\"\n"
        );
        assert_eq!(cached_layer_toml(&toml::Table::new()), "");
    }

    #[test]
    fn launch_toml() {
        let l = parse_launch(
            "launch.toml",
            br#"
[[labels]]
key = "org.example.hello-sh"
value = "yes"
[[processes]]
type = "web"
command = ["hello"]
args = ["world"]
default = true
[[processes]]
type = "pages"
command = ["cat"]
args = ["about.html"]
working-dir = "/workspace"
"#,
            "samples/hello-sh",
        )
        .unwrap();
        assert_eq!(
            l.labels,
            vec![("org.example.hello-sh".into(), "yes".into())]
        );
        assert_eq!(l.processes.len(), 2);
        assert_eq!(l.processes[1].working_dir.as_deref(), Some("/workspace"));
        let e = parse_launch(
            "launch.toml",
            b"[[processes]]\ntype = \"a b\"\ncommand = [\"x\"]\n",
            "b",
        )
        .unwrap_err();
        assert!(
            e.message.starts_with("launch.toml: processes[0].type:"),
            "{e}"
        );
        let e = parse_launch(
            "launch.toml",
            b"[[processes]]\ntype = \"a\"\ncommand = []\n",
            "b",
        )
        .unwrap_err();
        assert!(e.message.contains("processes[0].command"), "{e}");
        assert_eq!(
            parse_build_toml("build.toml", b"[[unmet]]\nname = \"x\"\n").unwrap(),
            vec!["x"]
        );
    }

    fn proc(kind: &str, default: bool, bp: &str) -> Process {
        Process {
            kind: kind.into(),
            command: vec![kind.into()],
            args: vec![],
            default,
            working_dir: None,
            buildpack_id: bp.into(),
        }
    }

    #[test]
    fn process_merge() {
        let (ps, d) = merge_processes(&[
            vec![proc("web", true, "a"), proc("worker", false, "a")],
            vec![proc("web", false, "b")],
        ]);
        assert_eq!(
            d, None,
            "a later non-default redefinition clears the default"
        );
        assert_eq!(
            ps.iter().map(|p| p.kind.as_str()).collect::<Vec<_>>(),
            ["web", "worker"]
        );
        assert_eq!(ps[0].buildpack_id, "b");
        let (_, d) = merge_processes(&[vec![proc("web", true, "a")], vec![proc("cli", true, "b")]]);
        assert_eq!(d.as_deref(), Some("cli"));
        let (_, d) =
            merge_processes(&[vec![proc("web", true, "a")], vec![proc("cli", false, "b")]]);
        assert_eq!(d.as_deref(), Some("web"));
    }

    fn layer(name: &str, types: Types) -> Layer {
        Layer {
            name: name.into(),
            types,
            has_dir: true,
            ..Default::default()
        }
    }

    #[test]
    fn build_and_launch_env() {
        let mut build = layer(
            "tools",
            Types {
                build: true,
                ..Default::default()
            },
        );
        build.root_dirs = vec!["bin".into(), "lib".into()];
        build.env = files(&[("SHARED", "b")]);
        build.env_build = files(&[("ONLY_BUILD", "1")]);
        build.env_launch = files(&[("NOT_AT_BUILD", "1")]);
        let mut launch = layer(
            "run",
            Types {
                launch: true,
                ..Default::default()
            },
        );
        launch.root_dirs = vec!["bin".into(), "lib".into(), "include".into()];
        launch.env = files(&[("SHARED", "l")]);
        launch.env_launch = files(&[("MODE.default", "prod")]);
        launch
            .env_launch_proc
            .insert("web".into(), files(&[("PORT", "8080")]));
        let out = BuildOutput {
            id: "a/b".into(),
            escaped: "a_b".into(),
            version: "1".into(),
            layers: vec![launch, build],
            launch: Launch::default(),
        };
        let mut env = Env::from_list(&["PATH=/bin"]);
        apply_build_layers(&mut env, &out);
        assert_eq!(env.get("PATH"), Some("/layers/a_b/tools/bin:/bin"));
        assert_eq!(env.get("LIBRARY_PATH"), Some("/layers/a_b/tools/lib"));
        assert_eq!(env.get("SHARED"), Some("b"));
        assert_eq!(env.get("ONLY_BUILD"), Some("1"));
        assert_eq!(env.get("NOT_AT_BUILD"), None);
        assert_eq!(
            env.get("MODE"),
            None,
            "launch-only layers do not reach the build"
        );

        let base = Env::from_list(&["PATH=/usr/bin", "MODE=dev"]);
        let l = launch_env(&base, std::slice::from_ref(&out), Some("web"));
        assert_eq!(l.get("PATH"), Some("/layers/a_b/run/bin:/usr/bin"));
        assert_eq!(l.get("LD_LIBRARY_PATH"), Some("/layers/a_b/run/lib"));
        assert_eq!(l.get("LIBRARY_PATH"), None);
        assert_eq!(l.get("CPATH"), None);
        assert_eq!(l.get("SHARED"), Some("l"));
        assert_eq!(l.get("MODE"), Some("dev"));
        assert_eq!(l.get("PORT"), Some("8080"));
        assert_eq!(l.get("ONLY_BUILD"), None);
        let l = launch_env(&base, std::slice::from_ref(&out), Some("worker"));
        assert_eq!(l.get("PORT"), None);
    }
}
