//! The whole flow natively: a gateway whose results all read from one flat
//! file map (locals and exec outputs alike), so detect and build results
//! can be scripted.

use std::cell::RefCell;
use std::collections::BTreeMap;

use kiln_frontend::{FileStat, FrontendError, Gateway, ImageConfig, Location, Platform};
use prost::Message as _;
use serde_json::Value;

use super::*;

#[derive(Default)]
struct Flat {
    options: BTreeMap<String, String>,
    files: BTreeMap<String, Vec<u8>>,
    solved: RefCell<Vec<Vec<u8>>>,
    warnings: RefCell<Vec<String>>,
}

impl Flat {
    fn file(mut self, path: &str, data: &str) -> Self {
        self.files
            .insert(path.to_string(), data.as_bytes().to_vec());
        self
    }
    fn opt(mut self, k: &str, v: &str) -> Self {
        self.options.insert(k.into(), v.into());
        self
    }
    fn execs(&self) -> Vec<pb::ExecOp> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for def in self.solved.borrow().iter() {
            let d = pb::Definition::decode(def.as_slice()).unwrap();
            for b in &d.def {
                if !seen.insert(b.clone()) {
                    continue;
                }
                if let Ok(pb::Op {
                    op: Some(pb::op::Op::Exec(e)),
                    ..
                }) = pb::Op::decode(b.as_slice())
                {
                    out.push(e);
                }
            }
        }
        out
    }
}

fn stat(path: &str, dir: bool, size: u64) -> FileStat {
    FileStat {
        path: path.to_string(),
        mode: if dir { 0o040755 } else { 0o100644 },
        size,
        mtime_ns: 0,
        linkname: String::new(),
        uid: 0,
        gid: 0,
    }
}

impl Gateway for Flat {
    fn options(&self) -> Vec<(String, String)> {
        self.options.clone().into_iter().collect()
    }
    fn inputs(&self) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }
    fn solve(&self, definition: &[u8], _evaluate: bool) -> Result<String, FrontendError> {
        let mut s = self.solved.borrow_mut();
        s.push(definition.to_vec());
        Ok(format!("h{}", s.len()))
    }
    fn read_file(
        &self,
        _h: &str,
        path: &str,
        _offset: u64,
        _length: Option<u64>,
    ) -> Result<Vec<u8>, FrontendError> {
        self.files
            .get(path.trim_start_matches('/'))
            .cloned()
            .ok_or_else(|| FrontendError::new(format!("{path}: not found")))
    }
    fn read_dir(
        &self,
        _h: &str,
        path: &str,
        _p: Option<&str>,
    ) -> Result<Vec<FileStat>, FrontendError> {
        let prefix = path.trim_matches('/');
        let mut out: BTreeMap<String, FileStat> = BTreeMap::new();
        for (p, data) in &self.files {
            let rest = if prefix.is_empty() {
                p.as_str()
            } else {
                match p.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
                    Some(r) => r,
                    None => continue,
                }
            };
            match rest.split_once('/') {
                Some((d, _)) => out.insert(d.to_string(), stat(d, true, 0)),
                None => out.insert(rest.to_string(), stat(rest, false, data.len() as u64)),
            };
        }
        Ok(out.into_values().collect())
    }
    fn stat_file(&self, _h: &str, path: &str) -> Result<FileStat, FrontendError> {
        let d = self.read_file("", path, 0, None)?;
        Ok(stat(path, false, d.len() as u64))
    }
    fn resolve_image_config(
        &self,
        reference: &str,
        _p: Option<&Platform>,
        _m: &str,
    ) -> Result<ImageConfig, FrontendError> {
        Ok(ImageConfig {
            canonical_ref: reference.to_string(),
            digest: format!("sha256:{}", "1".repeat(64)),
            config: br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"User":"app"},"rootfs":{"type":"layers","diff_ids":["sha256:base"]}}"#.to_vec(),
        })
    }
    fn warn(&self, message: &str, _d: Option<&str>, _l: Option<&Location>) {
        self.warnings.borrow_mut().push(message.to_string());
    }
    fn log(&self, _m: &str) {}
}

fn bp(id: &str) -> String {
    format!("api = \"0.12\"\n[buildpack]\nid = \"{id}\"\nversion = \"1\"\n")
}

/// Two buildpacks: `t/tools` provides `tool` with a build layer and a
/// cached layer, `t/app` requires it and adds a launch layer and the
/// default process.
fn two_buildpacks() -> Flat {
    Flat::default()
        .opt("build-image", "example.com/base:1")
        .opt("run-image", "example.com/run:1")
        .opt("cache-id", "ns")
        .file("app.txt", "app")
        .file(
            "order.toml",
            "[[order]]\n[[order.group]]\nid = \"t/tools\"\nversion = \"1\"\n[[order.group]]\nid = \"t/app\"\nversion = \"1\"\n",
        )
        .file("t_tools/1/buildpack.toml", &bp("t/tools"))
        .file("t_app/1/buildpack.toml", &bp("t/app"))
        .file("detect/t_tools/1/code", "0\n")
        .file("detect/t_tools/1/plan.toml", "[[provides]]\nname = \"tool\"\n")
        .file("detect/t_app/1/code", "0\n")
        .file(
            "detect/t_app/1/plan.toml",
            "[[requires]]\nname = \"tool\"\n[requires.metadata]\nv = \"1\"\n",
        )
        // What t/tools leaves behind.
        .file("layers/t_tools/bin.toml", "[types]\nbuild = true\n")
        .file("layers/t_tools/bin/bin/tool", "#!/bin/sh\n")
        .file("layers/t_tools/bin/env.build/TOOL_HOME", "/opt/tool")
        .file("layers/t_tools/deps.toml", "[types]\ncache = true\n[metadata]\nk = 1\n")
        .file("layers/t_tools/deps/x", "x")
        .file("layers/t_tools/scratch.toml", "")
        .file("layers/t_tools/scratch/y", "y")
        // What t/app leaves behind.
        .file("layers/t_app/web.toml", "[types]\nlaunch = true\n[metadata]\nm = \"v\"\n")
        .file("layers/t_app/web/bin/serve", "#!/bin/sh\n")
        .file("layers/t_app/web/env.launch/MODE.default", "prod")
        .file("layers/t_app/web/env.launch/web/PORT", "8080")
        .file(
            "layers/t_app/launch.toml",
            "[[labels]]\nkey = \"k\"\nvalue = \"v\"\n[[processes]]\ntype = \"web\"\ncommand = [\"serve\"]\nargs = [\"--fast\"]\ndefault = true\n",
        )
}

fn env_of(e: &pb::ExecOp) -> Vec<String> {
    e.meta.as_ref().unwrap().env.clone()
}

fn name_has(e: &pb::ExecOp, s: &str) -> bool {
    e.meta.as_ref().unwrap().args.iter().any(|a| a.contains(s))
}

#[test]
fn two_buildpacks_end_to_end() {
    let gw = two_buildpacks();
    let r = run(&gw).unwrap();
    let execs = gw.execs();
    let builds: Vec<&pb::ExecOp> = execs.iter().filter(|e| name_has(e, "/bin/build")).collect();
    assert_eq!(builds.len(), 2);
    let (tools, app) = (builds[0], builds[1]);

    // t/tools: its plan, its cache mount, no earlier layers.
    let env = env_of(tools);
    assert!(env.contains(&"CNB_LAYERS_DIR=/layers/t_tools".to_string()));
    assert!(env.contains(&"CNB_BP_PLAN_PATH=/cnb/plan/plan.toml".to_string()));
    let cache = tools
        .mounts
        .iter()
        .find(|m| m.dest == "/cnb/cache")
        .unwrap();
    assert_eq!(
        cache.cache_opt.as_ref().unwrap().id,
        "kiln-buildpacks/ns/t/tools"
    );
    assert!(!tools.mounts.iter().any(|m| m.dest == "/layers/t_app"));

    // t/app sees t/tools' build layer (mounted, bin on PATH, env.build).
    let env = env_of(app);
    assert!(
        env.contains(&"PATH=/layers/t_tools/bin/bin:/bin".to_string()),
        "{env:?}"
    );
    assert!(env.contains(&"TOOL_HOME=/opt/tool".to_string()), "{env:?}");
    let earlier = app
        .mounts
        .iter()
        .find(|m| m.dest == "/layers/t_tools")
        .unwrap();
    assert!(earlier.readonly);

    // The plans each buildpack got.
    let plans: Vec<String> = gw
        .solved
        .borrow()
        .iter()
        .flat_map(|d| {
            let d = pb::Definition::decode(d.as_slice()).unwrap();
            d.def
                .iter()
                .filter_map(|b| pb::Op::decode(b.as_slice()).ok())
                .filter_map(|op| match op.op {
                    Some(pb::op::Op::File(f)) => Some(f),
                    _ => None,
                })
                .flat_map(|f| f.actions)
                .filter_map(|a| match a.action {
                    Some(pb::file_action::Action::Mkfile(m)) if m.path == "/plan.toml" => {
                        Some(String::from_utf8(m.data).unwrap())
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        plans.contains(
            &"[[entries]]\nname = \"tool\"\n\n[entries.metadata]\nv = \"1\"\n".to_string()
        ),
        "{plans:?}"
    );
    assert!(plans.contains(&"entries = []\n".to_string()), "{plans:?}");

    // The cache save of t/tools copies only the cache layer.
    let saves: Vec<&pb::ExecOp> = execs.iter().filter(|e| name_has(e, "rm -rf")).collect();
    assert_eq!(saves.len(), 2);
    let script = &saves[0].meta.as_ref().unwrap().args[2];
    assert!(script.contains("'/layers/t_tools/deps'"), "{script}");
    assert!(
        !script.contains("scratch") && !script.contains("t_tools/bin"),
        "{script}"
    );
    assert_eq!(saves[0].meta.as_ref().unwrap().user, "0:0");

    // The image config.
    let cfg: Value = serde_json::from_slice(&r.metadata[0].1).unwrap();
    let c = &cfg["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["serve"]));
    assert_eq!(c["Cmd"], serde_json::json!(["--fast"]));
    assert_eq!(c["User"], "app");
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/layers/t_app/web/bin:/bin",
            "MODE=prod",
            "PORT=8080",
            "CNB_LAYERS_DIR=/layers",
            "CNB_APP_DIR=/workspace"
        ])
    );
    assert_eq!(c["Labels"]["k"], "v");
    let lm: Value = serde_json::from_str(
        c["Labels"]["io.buildpacks.lifecycle.metadata"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(lm["buildpacks"][0]["layers"], serde_json::json!({}));
    assert_eq!(
        lm["buildpacks"][1]["layers"]["web"]["data"],
        serde_json::json!({"m": "v"})
    );
    assert_eq!(lm["runImage"]["image"], "example.com/run:1");
    assert!(
        gw.warnings.borrow().is_empty(),
        "{:?}",
        gw.warnings.borrow()
    );

    // The final graph starts from the run image, not the build image.
    let last = gw.solved.borrow().last().cloned().unwrap();
    let d = pb::Definition::decode(last.as_slice()).unwrap();
    let sources: Vec<String> = d
        .def
        .iter()
        .filter_map(|b| pb::Op::decode(b.as_slice()).ok())
        .filter_map(|op| match op.op {
            Some(pb::op::Op::Source(s)) => Some(s.identifier),
            _ => None,
        })
        .collect();
    assert!(
        sources
            .iter()
            .any(|s| s.starts_with("docker-image://example.com/run:1@")),
        "{sources:?}"
    );
}

#[test]
fn process_type_option_and_errors() {
    let gw = two_buildpacks().opt("process-type", "nope");
    let e = run(&gw).unwrap_err();
    assert!(e.message.contains("option process-type=nope"), "{e}");

    let gw = two_buildpacks().file("layers/t_app/gone.toml", "[types]\nlaunch = true\n");
    let e = run(&gw).unwrap_err();
    assert!(
        e.message
            .contains("buildpack t/app@1: layer gone has launch = true but no directory"),
        "{e}"
    );

    let gw = two_buildpacks().file("layers/t_app/web.toml", "launch = true\n");
    let e = run(&gw).unwrap_err();
    assert!(
        e.message
            .contains("web.toml: launch: layer types belong in the [types] table"),
        "{e}"
    );
    assert!(e.message.contains("t/app@1"), "{e}");

    let gw = two_buildpacks().file("layers/t_app/build.toml", "[[unmet]]\nname = \"other\"\n");
    let e = run(&gw).unwrap_err();
    assert!(
        e.message
            .contains("unmet \"other\", which is not in its plan"),
        "{e}"
    );
}

#[test]
fn detect_errors_are_warnings_naming_the_buildpack() {
    let gw = two_buildpacks().file("detect/t_app/1/code", "5\n");
    let e = run(&gw).unwrap_err();
    assert!(
        e.message.starts_with("no buildpack group passed detection"),
        "{e}"
    );
    assert!(
        e.message
            .contains("t/app@1 failed: bin/detect exited with code 5"),
        "{e}"
    );
    assert_eq!(
        gw.warnings.borrow().as_slice(),
        ["buildpack t/app@1: detection failed: bin/detect exited with code 5"]
    );
}

#[test]
fn composite_buildpacks_and_project_pre_groups() {
    // t/meta is a composite: [t/missing-detect] | [t/app]; project.toml adds
    // t/tools in front of every group of the order.
    let gw = two_buildpacks()
        .file(
            "order.toml",
            "[[order]]\n[[order.group]]\nid = \"t/meta\"\nversion = \"1\"\n",
        )
        .file(
            "t_meta/1/buildpack.toml",
            "api = \"0.12\"\n[buildpack]\nid = \"t/meta\"\nversion = \"1\"\n\
             [[order]]\n[[order.group]]\nid = \"t/other\"\nversion = \"1\"\n\
             [[order]]\n[[order.group]]\nid = \"t/app\"\nversion = \"1\"\n",
        )
        .file("t_other/1/buildpack.toml", &bp("t/other"))
        .file("detect/t_other/1/code", "100\n")
        .file(
            "project.toml",
            "[_]\nschema-version = \"0.2\"\n[[io.buildpacks.pre.group]]\nid = \"t/tools\"\nversion = \"1\"\n",
        );
    let r = run(&gw).unwrap();
    let cfg: Value = serde_json::from_slice(&r.metadata[0].1).unwrap();
    let bm: Value = serde_json::from_str(
        cfg["config"]["Labels"]["io.buildpacks.build.metadata"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let ids: Vec<&str> = bm["buildpacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["t/tools", "t/app"]);
    let md = String::from_utf8(r.metadata[0].1.clone()).unwrap();
    assert!(
        !md.contains("t/meta\""),
        "composites do not appear in the group"
    );
}
