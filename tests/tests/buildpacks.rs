//! The built-in `buildpacks.v0` frontend end to end: the shared fixture apps
//! (`shared/fixtures/buildpacks`) and small buildpacks written here, built
//! on a busybox image from a loopback registry, exported as OCI tarballs,
//! unpacked with umoci and run with runc.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_e2e::{busybox, kiln, registry::Registry, require_tool, workspace_root};
use serde_json::Value;

/// The shared fixtures: `$KILN_BUILDPACKS_FIXTURES` or
/// `../shared/fixtures/buildpacks` next to the workspace.
fn fixtures() -> PathBuf {
    match std::env::var_os("KILN_BUILDPACKS_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("../shared/fixtures/buildpacks"),
    }
}

/// The fixture buildpacks with `order.toml` at the root, the layout of a
/// `buildpacks` context that carries its own order.
fn fixture_buildpacks_with_order(dir: &Path) -> PathBuf {
    let fx = fixtures();
    let dest = dir.join("buildpacks-with-order");
    copy_tree(&fx.join("buildpacks"), &dest);
    std::fs::copy(fx.join("order.toml"), dest.join("order.toml")).unwrap();
    dest
}

fn copy_tree(src: &Path, dest: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dest)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {}", src.display());
}

fn tools() -> bool {
    require_tool("runc") && require_tool("skopeo") && require_tool("umoci") && busybox::available()
}

/// A registry with the busybox base image.
struct Env {
    _reg: Registry,
    base: String,
    root: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let reg = Registry::start();
        let base = busybox::push_base_image(&reg);
        Env {
            _reg: reg,
            base,
            root: tempfile::tempdir().unwrap(),
            out: tempfile::tempdir().unwrap(),
        }
    }

    /// `kiln build --frontend buildpacks.v0` into an OCI tarball.
    fn build(&self, app: &Path, buildpacks: &Path, opts: &[&str], name: &str) -> (Output, PathBuf) {
        self.build_in(self.root.path(), app, buildpacks, opts, name)
    }

    fn build_in(
        &self,
        root: &Path,
        app: &Path,
        buildpacks: &Path,
        opts: &[&str],
        name: &str,
    ) -> (Output, PathBuf) {
        let tar = self.out.path().join(format!("{name}.oci.tar"));
        let mut cmd = kiln(root);
        cmd.args([
            "build",
            "--progress",
            "plain",
            "--frontend",
            "buildpacks.v0",
        ])
        .arg(format!("--local=context={}", app.display()))
        .arg(format!("--local=buildpacks={}", buildpacks.display()))
        .arg(format!("--opt=build-image={}", self.base));
        for o in opts {
            cmd.arg(format!("--opt={o}"));
        }
        cmd.arg(format!(
            "--output=type=oci,dest={},name=example.com/{name}:1",
            tar.display()
        ));
        let out = cmd.output().expect("run kiln");
        (out, tar)
    }

    fn build_ok(&self, app: &Path, buildpacks: &Path, opts: &[&str], name: &str) -> Image {
        let (out, tar) = self.build(app, buildpacks, opts, name);
        assert_ok(&out);
        Image::unpack(&tar, &self.out.path().join(name))
    }
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "kiln failed\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An exported image: its config and unpacked bundle.
struct Image {
    config: Value,
    manifest_digest: String,
    bundle: PathBuf,
}

fn blob(layout: &Path, digest: &str) -> Value {
    let hex = digest.trim_start_matches("sha256:");
    let data = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    serde_json::from_slice(&data).unwrap()
}

impl Image {
    fn unpack(tar: &Path, dir: &Path) -> Image {
        let layout = dir.join("layout");
        std::fs::create_dir_all(&layout).unwrap();
        let st = Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("-C")
            .arg(&layout)
            .status()
            .unwrap();
        assert!(st.success(), "untar {}", tar.display());
        let index = blob_file(&layout.join("index.json"));
        let manifest_digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let manifest = blob(&layout, &manifest_digest);
        let config = blob(&layout, manifest["config"]["digest"].as_str().unwrap());
        let bundle = dir.join("bundle");
        let out = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:1", layout.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umoci unpack: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Image {
            config,
            manifest_digest,
            bundle,
        }
    }

    fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    fn read(&self, path: &str) -> String {
        let p = self.rootfs().join(path.trim_start_matches('/'));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn exists(&self, path: &str) -> bool {
        self.rootfs()
            .join(path.trim_start_matches('/'))
            .symlink_metadata()
            .is_ok()
    }

    fn executable(&self, path: &str) -> bool {
        let m = std::fs::metadata(self.rootfs().join(path.trim_start_matches('/'))).unwrap();
        m.is_file() && m.permissions().mode() & 0o111 != 0
    }

    fn cfg(&self) -> &Value {
        &self.config["config"]
    }

    fn env(&self) -> Vec<String> {
        let mut v: Vec<String> = self.cfg()["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .filter(|s| !s.starts_with("CNB_PLATFORM_API=") && s != "CNB_DEPRECATION_MODE=quiet")
            .collect();
        v.sort();
        v
    }

    fn label(&self, key: &str) -> Option<String> {
        self.cfg()["Labels"][key].as_str().map(str::to_string)
    }

    fn label_json(&self, key: &str) -> Value {
        serde_json::from_str(&self.label(key).unwrap_or_else(|| panic!("no label {key}"))).unwrap()
    }

    /// Runs the image's entrypoint (with `args` instead of Cmd, if given)
    /// with runc in the unpacked bundle.
    fn run(&self, args: Option<&[&str]>) -> Output {
        let spec_path = self.bundle.join("config.json");
        let mut spec: Value = blob_file(&spec_path);
        if let Some(a) = args {
            let mut argv: Vec<Value> = self.cfg()["Entrypoint"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            argv.extend(a.iter().map(|s| Value::String(s.to_string())));
            spec["process"]["args"] = Value::Array(argv);
        }
        spec["process"]["terminal"] = Value::Bool(false);
        std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
        let id = format!(
            "kiln-bp-{}-{}",
            std::process::id(),
            self.bundle
                .parent()
                .and_then(|p| p.file_name())
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        Command::new("runc")
            .arg("run")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(&id)
            .output()
            .unwrap()
    }
}

fn blob_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn env_with(base: &[String], changes: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = base.to_vec();
    for c in changes {
        let name = c.split('=').next().unwrap();
        v.retain(|e| e.split('=').next() != Some(name));
        v.push(c.to_string());
    }
    v.sort();
    v
}

/// busybox's image env (what the run image sets).
fn run_image_env() -> Vec<String> {
    vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()]
}

const RUN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[test]
fn fixture_hello_sh() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let fx = fixtures();
    let bps = fixture_buildpacks_with_order(env.out.path());
    let img = env.build_ok(&fx.join("apps/hello-sh"), &bps, &[], "hello");

    // Filesystem.
    assert_eq!(
        img.read("/workspace/hello.sh"),
        std::fs::read_to_string(fx.join("apps/hello-sh/hello.sh")).unwrap()
    );
    assert!(img.executable("/workspace/hello.sh"));
    assert!(!img.exists("/workspace/notes.draft"));
    assert!(img.executable("/layers/samples_hello-sh/hello/bin/hello"));
    assert_eq!(
        img.read("/layers/samples_hello-sh/hello/env/HELLO_GREETING"),
        "Howdy"
    );
    assert_eq!(
        img.read("/layers/samples_hello-sh/hello/built-by"),
        "buildpacks-frontend"
    );
    assert!(!img.exists("/layers/samples_static-files"));
    assert!(img.exists("/workspace/project.toml"));
    let md = img.read("/layers/config/metadata.toml");
    assert!(
        md.contains("buildpack-default-process-type = \"web\""),
        "{md}"
    );
    assert!(!img.exists("/layers/samples_hello-sh/hello.toml"));
    assert!(!img.exists("/layers/samples_hello-sh/launch.toml"));

    // Config.
    let c = img.cfg();
    assert_eq!(c["Entrypoint"], serde_json::json!(["hello"]));
    assert_eq!(c["Cmd"], serde_json::json!(["world"]));
    assert_eq!(c["WorkingDir"], "/workspace");
    assert_eq!(
        img.env(),
        env_with(
            &run_image_env(),
            &[
                &format!("PATH=/layers/samples_hello-sh/hello/bin:{RUN_PATH}"),
                "HELLO_GREETING=Howdy",
                "CNB_LAYERS_DIR=/layers",
                "CNB_APP_DIR=/workspace",
            ]
        )
    );
    assert!(
        c.get("User")
            .is_none_or(|u| u.as_str().unwrap_or("").is_empty())
    );

    // Labels.
    assert_eq!(img.label("org.example.hello-sh").as_deref(), Some("yes"));
    let bm = img.label_json("io.buildpacks.build.metadata");
    assert_eq!(bm["buildpacks"].as_array().unwrap().len(), 1);
    assert_eq!(bm["buildpacks"][0]["id"], "samples/hello-sh");
    assert_eq!(bm["buildpacks"][0]["version"], "0.0.1");
    let procs = bm["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0]["type"], "web");
    assert_eq!(procs[0]["command"], serde_json::json!(["hello"]));
    assert_eq!(procs[0]["args"], serde_json::json!(["world"]));
    assert_eq!(procs[0]["buildpackID"], "samples/hello-sh");
    assert_eq!(procs[0]["direct"], true);
    assert_eq!(bm["buildpack-default-process-type"], "web");
    let lm = img.label_json("io.buildpacks.lifecycle.metadata");
    assert_eq!(lm["buildpacks"].as_array().unwrap().len(), 1);
    assert_eq!(lm["buildpacks"][0]["key"], "samples/hello-sh");
    assert_eq!(lm["buildpacks"][0]["version"], "0.0.1");
    let hello = &lm["buildpacks"][0]["layers"]["hello"];
    assert_eq!(hello["launch"], true);
    assert_eq!(hello["build"], false);
    assert_eq!(hello["cache"], false);
    assert_eq!(hello["data"], serde_json::json!({"fixture": "hello-sh"}));
    assert!(img.label_json("io.buildpacks.project.metadata").is_object());

    // Behaviour.
    let out = img.run(None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Howdy, world!\n",
        "{}",
        stderr(&out)
    );
    assert!(out.status.success());
    let out = img.run(Some(&["there"]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Howdy, there!\n",
        "{}",
        stderr(&out)
    );
}
