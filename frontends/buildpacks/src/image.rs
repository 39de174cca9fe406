//! The exported image's config: the run image's config with the default
//! process as `Entrypoint`/`Cmd`, its launch environment baked into `Env`,
//! `WorkingDir`, and the `io.buildpacks.*` labels; plus the
//! `/layers/config/metadata.toml` the lifecycle would write.

use serde_json::{Map, Value, json};

use crate::env::Env;
use crate::layers::{BuildOutput, Process};
use crate::steps::{APP_DIR, LAYERS_DIR};
use crate::tomlx::table_to_json;

/// The run image as resolved.
#[derive(Debug, Clone, Default)]
pub struct RunImage {
    /// The reference given.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// The config JSON.
    pub config: Value,
}

impl RunImage {
    /// `config.Env` of the image.
    pub fn env(&self) -> Env {
        env_of(&self.config)
    }

    /// The last `rootfs.diff_ids` entry.
    pub fn top_layer(&self) -> String {
        self.config
            .get("rootfs")
            .and_then(|r| r.get("diff_ids"))
            .and_then(Value::as_array)
            .and_then(|a| a.last())
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }
}

/// `config.Env` of an image config JSON.
pub fn env_of(config: &Value) -> Env {
    let list: Vec<String> = config
        .get("config")
        .and_then(|c| c.get("Env"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Env::from_list(&list)
}

/// A string field of `config`.
pub fn config_str(config: &Value, key: &str) -> String {
    config
        .get("config")
        .and_then(|c| c.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// A label of an image config.
pub fn label_of(config: &Value, key: &str) -> String {
    config
        .get("config")
        .and_then(|c| c.get("Labels"))
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Everything the config depends on.
pub struct ImageInputs<'a> {
    /// Run image.
    pub run: &'a RunImage,
    /// Build outputs of the group, in order.
    pub outputs: &'a [BuildOutput],
    /// `(id, version, homepage, api)` of the group.
    pub group: &'a [(String, String, String, String)],
    /// Merged processes (sorted by type).
    pub processes: &'a [Process],
    /// The process that becomes Entrypoint/Cmd.
    pub default_process: Option<&'a str>,
    /// `io.buildpacks.project.metadata`.
    pub project_metadata: Value,
    /// Extra labels (options).
    pub extra_labels: &'a [(String, String)],
}

fn process_json(p: &Process) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(p.kind));
    m.insert("command".into(), json!(p.command));
    m.insert("args".into(), json!(p.args));
    m.insert("direct".into(), json!(true));
    if let Some(w) = &p.working_dir {
        m.insert("working-dir".into(), json!(w));
    }
    m.insert("buildpackID".into(), json!(p.buildpack_id));
    Value::Object(m)
}

/// `io.buildpacks.build.metadata`.
pub fn build_metadata(inp: &ImageInputs<'_>) -> Value {
    let buildpacks: Vec<Value> = inp
        .group
        .iter()
        .map(|(id, version, homepage, _)| {
            let mut m = Map::new();
            m.insert("id".into(), json!(id));
            m.insert("version".into(), json!(version));
            if !homepage.is_empty() {
                m.insert("homepage".into(), json!(homepage));
            }
            Value::Object(m)
        })
        .collect();
    let mut m = Map::new();
    m.insert("bom".into(), Value::Null);
    m.insert("buildpacks".into(), Value::Array(buildpacks));
    m.insert(
        "launcher".into(),
        json!({"version": "", "source": {"git": {"repository": "", "commit": ""}}}),
    );
    m.insert(
        "processes".into(),
        Value::Array(inp.processes.iter().map(process_json).collect()),
    );
    if let Some(d) = inp.default_process {
        m.insert("buildpack-default-process-type".into(), json!(d));
    }
    Value::Object(m)
}

/// `io.buildpacks.lifecycle.metadata` (layer `sha`s are left empty: the
/// frontend does not see the diff IDs the exporter computes).
pub fn lifecycle_metadata(inp: &ImageInputs<'_>) -> Value {
    let buildpacks: Vec<Value> = inp
        .outputs
        .iter()
        .map(|o| {
            let mut layers = Map::new();
            for l in o.layers.iter().filter(|l| l.types.launch) {
                layers.insert(
                    l.name.clone(),
                    json!({
                        "sha": "",
                        "data": table_to_json(&l.metadata),
                        "launch": l.types.launch,
                        "build": l.types.build,
                        "cache": l.types.cache,
                    }),
                );
            }
            json!({"key": o.id, "version": o.version, "layers": Value::Object(layers)})
        })
        .collect();
    json!({
        "app": [{"sha": ""}],
        "config": {"sha": ""},
        "launcher": {"sha": ""},
        "buildpacks": buildpacks,
        "runImage": {
            "topLayer": inp.run.top_layer(),
            "reference": inp.run.digest,
            "image": inp.run.reference,
        },
    })
}

/// The final image config JSON.
pub fn image_config(inp: &ImageInputs<'_>, launch_env: &Env) -> Vec<u8> {
    let mut root = match &inp.run.config {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut cfg = match root.get("config") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let mut env = launch_env.clone();
    env.set("CNB_LAYERS_DIR", LAYERS_DIR);
    env.set("CNB_APP_DIR", APP_DIR);
    cfg.insert("Env".into(), json!(env.to_list()));
    let default = inp
        .default_process
        .and_then(|d| inp.processes.iter().find(|p| p.kind == d));
    match default {
        Some(p) => {
            cfg.insert("Entrypoint".into(), json!(p.command));
            cfg.insert("Cmd".into(), json!(p.args));
            cfg.insert(
                "WorkingDir".into(),
                json!(p.working_dir.as_deref().unwrap_or(APP_DIR)),
            );
        }
        None => {
            cfg.insert("WorkingDir".into(), json!(APP_DIR));
        }
    }
    let mut labels = match cfg.get("Labels") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for o in inp.outputs {
        for (k, v) in &o.launch.labels {
            labels.insert(k.clone(), json!(v));
        }
    }
    labels.insert(
        "io.buildpacks.build.metadata".into(),
        json!(build_metadata(inp).to_string()),
    );
    labels.insert(
        "io.buildpacks.lifecycle.metadata".into(),
        json!(lifecycle_metadata(inp).to_string()),
    );
    labels.insert(
        "io.buildpacks.project.metadata".into(),
        json!(inp.project_metadata.to_string()),
    );
    for (k, v) in inp.extra_labels {
        labels.insert(k.clone(), json!(v));
    }
    cfg.insert("Labels".into(), Value::Object(labels));
    root.insert("config".into(), Value::Object(cfg));
    // The exporter writes rootfs and created; history is kept from the run
    // image (the exporter adds entries for the new layers).
    root.remove("rootfs");
    serde_json::to_vec(&Value::Object(root)).unwrap_or_default()
}

/// `/layers/config/metadata.toml`.
pub fn metadata_toml(inp: &ImageInputs<'_>) -> String {
    use toml::{Table, Value as T};
    let mut root = Table::new();
    if let Some(d) = inp.default_process {
        root.insert("buildpack-default-process-type".into(), T::String(d.into()));
    }
    let bps: Vec<T> = inp
        .group
        .iter()
        .map(|(id, version, homepage, api)| {
            let mut t = Table::new();
            t.insert("id".into(), T::String(id.clone()));
            t.insert("version".into(), T::String(version.clone()));
            t.insert("api".into(), T::String(api.clone()));
            if !homepage.is_empty() {
                t.insert("homepage".into(), T::String(homepage.clone()));
            }
            T::Table(t)
        })
        .collect();
    root.insert("buildpacks".into(), T::Array(bps));
    let procs: Vec<T> = inp
        .processes
        .iter()
        .map(|p| {
            let mut t = Table::new();
            t.insert("type".into(), T::String(p.kind.clone()));
            t.insert(
                "command".into(),
                T::Array(p.command.iter().cloned().map(T::String).collect()),
            );
            t.insert(
                "args".into(),
                T::Array(p.args.iter().cloned().map(T::String).collect()),
            );
            t.insert("direct".into(), T::Boolean(true));
            if let Some(w) = &p.working_dir {
                t.insert("working-dir".into(), T::String(w.clone()));
            }
            t.insert("buildpack-id".into(), T::String(p.buildpack_id.clone()));
            T::Table(t)
        })
        .collect();
    root.insert("processes".into(), T::Array(procs));
    let labels: Vec<T> = inp
        .outputs
        .iter()
        .flat_map(|o| o.launch.labels.iter())
        .map(|(k, v)| {
            let mut t = Table::new();
            t.insert("key".into(), T::String(k.clone()));
            t.insert("value".into(), T::String(v.clone()));
            T::Table(t)
        })
        .collect();
    if !labels.is_empty() {
        root.insert("labels".into(), T::Array(labels));
    }
    toml::to_string(&root).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Launch, Layer, Types, launch_env};

    fn hello_output() -> BuildOutput {
        let mut meta = toml::Table::new();
        meta.insert("fixture".into(), toml::Value::String("hello-sh".into()));
        BuildOutput {
            id: "samples/hello-sh".into(),
            escaped: "samples_hello-sh".into(),
            version: "0.0.1".into(),
            layers: vec![Layer {
                name: "hello".into(),
                types: Types {
                    launch: true,
                    ..Default::default()
                },
                metadata: meta,
                has_dir: true,
                root_dirs: vec!["bin".into()],
                env: vec![("HELLO_GREETING".into(), "Howdy".into())],
                ..Default::default()
            }],
            launch: Launch {
                labels: vec![("org.example.hello-sh".into(), "yes".into())],
                processes: vec![],
                has_slices: false,
            },
        }
    }

    #[test]
    fn hello_sh_config() {
        let run = RunImage {
            reference: "busybox".into(),
            digest: "sha256:abc".into(),
            config: json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Env": ["PATH=/usr/sbin:/bin"], "Cmd": ["sh"], "User": "1000"},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:l1", "sha256:top"]},
            }),
        };
        let outputs = vec![hello_output()];
        let procs = vec![Process {
            kind: "web".into(),
            command: vec!["hello".into()],
            args: vec!["world".into()],
            default: true,
            working_dir: None,
            buildpack_id: "samples/hello-sh".into(),
        }];
        let group = vec![(
            "samples/hello-sh".to_string(),
            "0.0.1".to_string(),
            String::new(),
            "0.12".to_string(),
        )];
        let inp = ImageInputs {
            run: &run,
            outputs: &outputs,
            group: &group,
            processes: &procs,
            default_process: Some("web"),
            project_metadata: json!({}),
            extra_labels: &[],
        };
        let env = launch_env(&run.env(), &outputs, Some("web"));
        let cfg: Value = serde_json::from_slice(&image_config(&inp, &env)).unwrap();
        let c = &cfg["config"];
        assert_eq!(c["Entrypoint"], json!(["hello"]));
        assert_eq!(c["Cmd"], json!(["world"]));
        assert_eq!(c["WorkingDir"], json!("/workspace"));
        assert_eq!(c["User"], json!("1000"));
        assert_eq!(
            c["Env"],
            json!([
                "PATH=/layers/samples_hello-sh/hello/bin:/usr/sbin:/bin",
                "HELLO_GREETING=Howdy",
                "CNB_LAYERS_DIR=/layers",
                "CNB_APP_DIR=/workspace"
            ])
        );
        assert!(cfg.get("rootfs").is_none());
        let labels = &c["Labels"];
        assert_eq!(labels["org.example.hello-sh"], json!("yes"));
        let bm: Value =
            serde_json::from_str(labels["io.buildpacks.build.metadata"].as_str().unwrap()).unwrap();
        assert_eq!(bm["buildpacks"][0]["id"], json!("samples/hello-sh"));
        assert_eq!(bm["processes"][0]["buildpackID"], json!("samples/hello-sh"));
        assert_eq!(bm["processes"][0]["args"], json!(["world"]));
        assert_eq!(bm["buildpack-default-process-type"], json!("web"));
        let lm: Value =
            serde_json::from_str(labels["io.buildpacks.lifecycle.metadata"].as_str().unwrap())
                .unwrap();
        assert_eq!(lm["buildpacks"][0]["key"], json!("samples/hello-sh"));
        assert_eq!(
            lm["buildpacks"][0]["layers"]["hello"],
            json!({"sha": "", "data": {"fixture": "hello-sh"}, "launch": true, "build": false, "cache": false})
        );
        assert_eq!(lm["runImage"]["topLayer"], json!("sha256:top"));
        assert_eq!(labels["io.buildpacks.project.metadata"], json!("{}"));

        let md = metadata_toml(&inp);
        assert!(
            md.starts_with("buildpack-default-process-type = \"web\"\n"),
            "{md}"
        );
        assert!(md.contains("[[processes]]\nargs = [\"world\"]"), "{md}");
        assert!(md.contains("type = \"web\""), "{md}");
    }
}
