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
    reg: Registry,
    base: String,
    root: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let reg = Registry::start();
        let base = busybox::push_base_image(&reg);
        Env {
            reg,
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

#[test]
fn fixture_static_site_with_inline_order() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let fx = fixtures();
    let order = std::fs::read_to_string(fx.join("order.toml")).unwrap();
    let img = env.build_ok(
        &fx.join("apps/static-site"),
        &fx.join("buildpacks"),
        &[&format!("order={order}")],
        "static",
    );
    for f in ["index.html", "about.html"] {
        assert_eq!(
            img.read(&format!("/workspace/{f}")),
            std::fs::read_to_string(fx.join("apps/static-site").join(f)).unwrap()
        );
    }
    assert!(!img.exists("/workspace/notes.txt"));
    assert!(!img.exists("/workspace/project.toml"));
    assert!(img.executable("/layers/samples_static-files/static/bin/serve"));
    assert_eq!(
        img.read("/layers/samples_static-files/static/env.launch/STATIC_ROOT"),
        "/workspace"
    );
    assert_eq!(
        img.read("/layers/samples_static-files/static/env.launch/STATIC_MODE.default"),
        "production"
    );
    assert_eq!(
        img.read("/layers/samples_static-files/static/banner.txt"),
        "built-with-static-files"
    );
    assert!(!img.exists("/layers/samples_hello-sh"));

    let c = img.cfg();
    assert_eq!(c["Entrypoint"], serde_json::json!(["serve"]));
    assert!(c["Cmd"].as_array().is_none_or(|a| a.is_empty()));
    assert_eq!(c["WorkingDir"], "/workspace");
    assert_eq!(
        img.env(),
        env_with(
            &run_image_env(),
            &[
                &format!("PATH=/layers/samples_static-files/static/bin:{RUN_PATH}"),
                "STATIC_ROOT=/workspace",
                "STATIC_MODE=production",
                "CNB_LAYERS_DIR=/layers",
                "CNB_APP_DIR=/workspace",
            ]
        )
    );
    let bm = img.label_json("io.buildpacks.build.metadata");
    assert_eq!(bm["buildpacks"].as_array().unwrap().len(), 1);
    assert_eq!(bm["buildpacks"][0]["id"], "samples/static-files");
    assert_eq!(bm["buildpacks"][0]["version"], "0.0.1");
    let procs = bm["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2);
    let web = procs.iter().find(|p| p["type"] == "web").unwrap();
    assert_eq!(web["command"], serde_json::json!(["serve"]));
    assert!(web["args"].as_array().is_none_or(|a| a.is_empty()));
    assert_eq!(web["buildpackID"], "samples/static-files");
    let pages = procs.iter().find(|p| p["type"] == "pages").unwrap();
    assert_eq!(pages["command"], serde_json::json!(["cat"]));
    assert_eq!(pages["args"], serde_json::json!(["about.html"]));
    assert_eq!(pages["working-dir"], "/workspace");
    assert_eq!(bm["buildpack-default-process-type"], "web");
    let lm = img.label_json("io.buildpacks.lifecycle.metadata");
    assert_eq!(lm["buildpacks"][0]["key"], "samples/static-files");
    assert_eq!(lm["buildpacks"][0]["layers"]["static"]["launch"], true);
    assert_eq!(
        lm["buildpacks"][0]["layers"]["static"]["data"],
        serde_json::json!({"fixture": "static-files"})
    );
    assert!(img.label_json("io.buildpacks.project.metadata").is_object());
    assert!(img.label("org.example.hello-sh").is_none());

    let out = img.run(None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "<h1>Static fixture</h1>\n",
        "{}",
        stderr(&out)
    );
    assert!(out.status.success());
}

#[test]
fn fixture_no_group_passes() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let fx = fixtures();
    let app = env.out.path().join("only-project");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(
        fx.join("apps/hello-sh/project.toml"),
        app.join("project.toml"),
    )
    .unwrap();
    let bps = fixture_buildpacks_with_order(env.out.path());
    let (out, tar) = env.build(&app, &bps, &[], "none");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no buildpack group passed detection"), "{err}");
    assert!(
        err.contains("samples/hello-sh@0.0.1 did not pass detection"),
        "{err}"
    );
    assert!(
        err.contains("samples/static-files@0.0.1 did not pass detection"),
        "{err}"
    );
    assert!(!tar.exists(), "no image is written");
}

#[test]
fn second_build_is_cached_and_output_reproducible() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let fx = fixtures();
    let bps = fixture_buildpacks_with_order(env.out.path());
    let app = fx.join("apps/hello-sh");
    let (first, tar1) = env.build(&app, &bps, &[], "first");
    assert_ok(&first);
    assert!(
        stderr(&first).contains("hello-sh: building"),
        "{}",
        stderr(&first)
    );
    let (second, tar2) = env.build(&app, &bps, &[], "second");
    assert_ok(&second);
    let err = stderr(&second);
    assert!(
        !err.contains("hello-sh: found hello.sh"),
        "detect ran again:\n{err}"
    );
    assert!(
        !err.contains("hello-sh: building"),
        "build ran again:\n{err}"
    );
    for line in err
        .lines()
        .filter(|l| l.contains("[buildpacks] detect") || l.contains("[buildpacks] build"))
    {
        let id = line.split_whitespace().next().unwrap();
        assert!(
            err.lines()
                .any(|l| l.starts_with(id) && l.contains("CACHED")),
            "{line} was not cached:\n{err}"
        );
    }
    let a = Image::unpack(&tar1, &env.out.path().join("u1"));
    let b = Image::unpack(&tar2, &env.out.path().join("u2"));
    assert_eq!(a.config, b.config);

    // From an empty state dir the image is byte for byte the same.
    let other_root = tempfile::tempdir().unwrap();
    let (third, tar3) = env.build_in(other_root.path(), &app, &bps, &[], "third");
    assert_ok(&third);
    let c = Image::unpack(&tar3, &env.out.path().join("u3"));
    assert_eq!(
        a.manifest_digest, c.manifest_digest,
        "a fresh build gives the same image"
    );
}

/// Writes a buildpack (API 0.12) with shell scripts for `bin/detect` and
/// `bin/build` into `<dir>/<escaped id>/<version>/`.
fn write_buildpack(dir: &Path, id: &str, version: &str, detect: &str, build: &str) {
    let root = dir.join(id.replace('/', "_")).join(version);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(
        root.join("buildpack.toml"),
        format!("api = \"0.12\"\n[buildpack]\nid = \"{id}\"\nversion = \"{version}\"\n"),
    )
    .unwrap();
    for (name, body) in [("detect", detect), ("build", build)] {
        let p = root.join("bin").join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn write(dir: &Path, name: &str, data: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

const WEB: &str = r#"cat >> "$CNB_LAYERS_DIR/launch.toml" <<'EOF'
[[processes]]
type = "web"
command = ["sh", "-c", "echo ok"]
default = true
EOF"#;

#[test]
fn detect_exit_codes_or_plans_and_optional_buildpacks() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let bps = env.out.path().join("bps");
    write_buildpack(
        &bps,
        "t/error",
        "1.0.0",
        "echo detect is broken; exit 3",
        "exit 1",
    );
    write_buildpack(&bps, "t/fail", "1.0.0", "exit 100", "exit 1");
    write_buildpack(
        &bps,
        "t/provider",
        "1.0.0",
        r#"cat > "$CNB_BUILD_PLAN_PATH" <<'EOF'
[[provides]]
name = "x"

[[or]]
[[or.provides]]
name = "y"
EOF"#,
        &format!(
            r#"mkdir -p "$CNB_LAYERS_DIR/p"
cp "$CNB_BP_PLAN_PATH" "$CNB_LAYERS_DIR/p/plan.toml"
printf '[types]\nlaunch = true\n' > "$CNB_LAYERS_DIR/p.toml"
{WEB}"#
        ),
    );
    write_buildpack(
        &bps,
        "t/requirer",
        "1.0.0",
        r#"cat > "$CNB_BUILD_PLAN_PATH" <<'EOF'
[[requires]]
name = "y"
[requires.metadata]
version = "2.0"
EOF"#,
        r#"mkdir -p "$CNB_LAYERS_DIR/r"
cp "$CNB_BP_PLAN_PATH" "$CNB_LAYERS_DIR/r/plan.toml"
printf '[types]\nlaunch = true\n' > "$CNB_LAYERS_DIR/r.toml""#,
    );
    write_buildpack(
        &bps,
        "t/opt",
        "1.0.0",
        r#"printf '[[provides]]\nname = "z"\n' > "$CNB_BUILD_PLAN_PATH""#,
        "echo optional buildpack must not build; exit 1",
    );
    write(
        &bps,
        "order.toml",
        r#"
[[order]]
[[order.group]]
id = "t/error"
version = "1.0.0"

[[order]]
[[order.group]]
id = "t/fail"
version = "1.0.0"
[[order.group]]
id = "t/provider"
version = "1.0.0"

[[order]]
[[order.group]]
id = "t/opt"
version = "1.0.0"
optional = true
[[order.group]]
id = "t/provider"
version = "1.0.0"
[[order.group]]
id = "t/requirer"
version = "1.0.0"
"#,
    );
    let app = env.out.path().join("app");
    write(&app, "README", "app\n");
    let (out, tar) = env.build(&app, &bps, &[], "detect");
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("buildpack t/error@1.0.0: detection failed: bin/detect exited with code 3"),
        "{err}"
    );
    let img = Image::unpack(&tar, &env.out.path().join("detect"));
    let bm = img.label_json("io.buildpacks.build.metadata");
    let ids: Vec<&str> = bm["buildpacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["t/provider", "t/requirer"],
        "the optional member dropped out"
    );
    assert!(!img.exists("/layers/t_opt"));
    // The provider chose its [[or]] alternative (y) and got the requirement.
    assert_eq!(
        img.read("/layers/t_provider/p/plan.toml"),
        "[[entries]]\nname = \"y\"\n\n[entries.metadata]\nversion = \"2.0\"\n"
    );
    assert_eq!(img.read("/layers/t_requirer/r/plan.toml"), "entries = []\n");
}

#[test]
fn env_files_and_layer_visibility() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let bps = env.out.path().join("bps");
    // t/one: a build-only layer "tools" and a launch-only layer "runtime".
    write_buildpack(
        &bps,
        "t/one",
        "1.0.0",
        "exit 0",
        r#"set -e
L="$CNB_LAYERS_DIR"
mkdir -p "$L/tools/bin" "$L/tools/env" "$L/tools/env.build" "$L/tools/env.launch"
printf '#!/bin/sh\necho tool-ok\n' > "$L/tools/bin/kiln-tool"
chmod 755 "$L/tools/bin/kiln-tool"
printf 'from-build-layer' > "$L/tools/env/SHARED"
printf 'yes' > "$L/tools/env.build/BUILD_ONLY"
printf 'p1' > "$L/tools/env/P.prepend"
printf ':' > "$L/tools/env/P.delim"
printf 'p0' > "$L/tools/env.build/P.prepend"
printf 'a1' > "$L/tools/env/A.append"
printf ',' > "$L/tools/env/A.delim"
printf 'a2' > "$L/tools/env.build/A.append"
printf ';' > "$L/tools/env.build/A.delim"
printf 'o1' > "$L/tools/env/O.override"
printf 'o2' > "$L/tools/env.build/O"
printf 'd-env' > "$L/tools/env/D.default"
printf 'd-build' > "$L/tools/env.build/D.default"
printf 'never' > "$L/tools/env.launch/TOOLS_LAUNCH"
printf '[types]\nbuild = true\n' > "$L/tools.toml"
mkdir -p "$L/runtime/env" "$L/runtime/env.launch/web" "$L/runtime/env.launch/other"
printf '1' > "$L/runtime/env/LAUNCH_VAR"
printf 'first' > "$L/runtime/env.launch/OVERRIDE"
printf 'd1' > "$L/runtime/env.launch/DEF.default"
printf 'lp1' > "$L/runtime/env/LP.prepend"
printf 'yes' > "$L/runtime/env.launch/web/PROC_ONLY"
printf 'no' > "$L/runtime/env.launch/other/OTHER_ONLY"
printf '[types]\nlaunch = true\n' > "$L/runtime.toml""#,
    );
    // t/two: records what it sees, and adds launch env of its own.
    write_buildpack(
        &bps,
        "t/two",
        "1.0.0",
        "exit 0",
        &format!(
            r#"set -e
L="$CNB_LAYERS_DIR"
mkdir -p "$L/seen/env.launch"
for v in SHARED BUILD_ONLY P A O D TOOLS_LAUNCH LAUNCH_VAR OVERRIDE EXTRA PATH; do
  eval "printf '%s=%s\n' $v \"\${{$v-unset}}\"" >> "$L/seen/env.txt"
done
kiln-tool >> "$L/seen/env.txt"
if [ -e /layers/t_one/runtime ]; then echo runtime-visible; else echo runtime-hidden; fi >> "$L/seen/env.txt"
printf 'second' > "$L/seen/env.launch/OVERRIDE"
printf 'd2' > "$L/seen/env.launch/DEF.default"
printf 'lp2' > "$L/seen/env.launch/LP.prepend"
printf ',' > "$L/seen/env.launch/LP.delim"
printf '[types]\nlaunch = true\n' > "$L/seen.toml"
{WEB}"#
        ),
    );
    write(
        &bps,
        "order.toml",
        "[[order]]\n[[order.group]]\nid = \"t/one\"\nversion = \"1.0.0\"\n[[order.group]]\nid = \"t/two\"\nversion = \"1.0.0\"\n",
    );
    let app = env.out.path().join("app");
    write(&app, "README", "app\n");
    // Platform env: a plain variable overrides, a path variable goes in
    // front of what the build layers added.
    let img = env.build_ok(
        &app,
        &bps,
        &["env:EXTRA=from-option", "env:PATH=/opt/platform"],
        "env",
    );

    assert_eq!(
        img.read("/layers/t_two/seen/env.txt"),
        "SHARED=from-build-layer\nBUILD_ONLY=yes\nP=p0p1\nA=a1;a2\nO=o2\nD=d-env\n\
         TOOLS_LAUNCH=unset\nLAUNCH_VAR=unset\nOVERRIDE=unset\nEXTRA=from-option\n\
         PATH=/opt/platform:/layers/t_one/tools/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         tool-ok\nruntime-hidden\n"
    );
    assert!(
        !img.exists("/layers/t_one/tools"),
        "build-only layers stay out of the image"
    );
    assert!(img.exists("/layers/t_one/runtime/env/LAUNCH_VAR"));
    assert_eq!(
        img.env(),
        env_with(
            &run_image_env(),
            &[
                "LAUNCH_VAR=1",
                "OVERRIDE=second",
                "DEF=d1",
                "LP=lp2,lp1",
                "PROC_ONLY=yes",
                "CNB_LAYERS_DIR=/layers",
                "CNB_APP_DIR=/workspace",
            ]
        )
    );
    let out = img.run(None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        stderr(&out)
    );
}

#[test]
fn cache_layers_are_restored_on_rebuild() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let bps = env.out.path().join("bps");
    write_buildpack(
        &bps,
        "t/cache",
        "1.0.0",
        "exit 0",
        &format!(
            r#"set -e
L="$CNB_LAYERS_DIR"
n=1
if [ -f "$L/deps/count" ]; then n=$(( $(cat "$L/deps/count") + 1 )); fi
meta=none
if [ -f "$L/deps.toml" ] && grep -q 'runs' "$L/deps.toml" && ! grep -q types "$L/deps.toml"; then meta=restored; fi
mkdir -p "$L/deps" "$L/report"
printf '%s' "$n" > "$L/deps/count"
printf '[types]\ncache = true\n[metadata]\nruns = %s\n' "$n" > "$L/deps.toml"
printf '%s %s' "$n" "$meta" > "$L/report/result"
printf '[types]\nlaunch = true\n' > "$L/report.toml"
{WEB}"#
        ),
    );
    write(
        &bps,
        "order.toml",
        "[[order]]\n[[order.group]]\nid = \"t/cache\"\nversion = \"1.0.0\"\n",
    );
    let app = env.out.path().join("app");
    write(&app, "version", "1\n");
    let img = env.build_ok(&app, &bps, &[], "cache1");
    assert_eq!(img.read("/layers/t_cache/report/result"), "1 none");
    assert!(
        !img.exists("/layers/t_cache/deps"),
        "cache-only layers stay out of the image"
    );
    write(&app, "version", "2\n");
    let img = env.build_ok(&app, &bps, &[], "cache2");
    assert_eq!(img.read("/layers/t_cache/report/result"), "2 restored");
    write(&app, "version", "3\n");
    let img = env.build_ok(&app, &bps, &[], "cache3");
    assert_eq!(img.read("/layers/t_cache/report/result"), "3 restored");
}

#[test]
fn failing_build_names_the_buildpack_and_shows_its_output() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let bps = env.out.path().join("bps");
    write_buildpack(
        &bps,
        "t/broken",
        "1.0.0",
        "exit 0",
        "echo compiling widgets\necho 'error: widget missing' >&2\nexit 7",
    );
    let app = env.out.path().join("app");
    write(&app, "README", "app\n");
    let (out, tar) = env.build(&app, &bps, &["buildpacks=t/broken"], "broken");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("buildpack t/broken@1.0.0: bin/build failed"),
        "{err}"
    );
    assert!(err.contains("exit code 7"), "{err}");
    assert!(err.contains("compiling widgets"), "{err}");
    assert!(err.contains("error: widget missing"), "{err}");
    assert!(!tar.exists());
}

impl Env {
    /// Builds `dockerfile` (on the busybox base) with the Dockerfile
    /// frontend and pushes the image to the registry as `repo_tag`.
    fn push_dockerfile_image(&self, dockerfile: &str, repo_tag: &str) -> String {
        let ctx = self
            .out
            .path()
            .join(format!("df-{}", repo_tag.replace(['/', ':'], "_")));
        write(&ctx, "Dockerfile", &dockerfile.replace("BASE", &self.base));
        let tar = ctx.join("image.oci.tar");
        let out = kiln(self.root.path())
            .args([
                "build",
                "--progress",
                "plain",
                "--frontend",
                "dockerfile.v0",
            ])
            .arg(format!("--local=context={}", ctx.display()))
            .arg(format!("--local=dockerfile={}", ctx.display()))
            .arg(format!(
                "--output=type=oci,dest={},name=example.com/x:1",
                tar.display()
            ))
            .output()
            .unwrap();
        assert_ok(&out);
        let reference = format!("{}/{repo_tag}", self.reg.host());
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", tar.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }
}

fn owner(img: &Image, path: &str) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(img.rootfs().join(path.trim_start_matches('/'))).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn non_root_build_user_and_a_separate_run_image() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let build_image = env.push_dockerfile_image(
        "FROM BASE\nENV CNB_USER_ID=1000 CNB_GROUP_ID=1001\n",
        "cnb/build:1",
    );
    let run_image = env.push_dockerfile_image(
        "FROM BASE\nENV RUN_IMAGE=yes\nUSER 1002\nLABEL io.buildpacks.base.distro.name=busybox\n",
        "cnb/run:1",
    );
    let bps = env.out.path().join("bps");
    write_buildpack(
        &bps,
        "t/user",
        "1.0.0",
        "id -u > /dev/null",
        r#"set -e
L="$CNB_LAYERS_DIR"
n=1
if [ -f "$L/deps/count" ]; then n=$(( $(cat "$L/deps/count") + 1 )); fi
mkdir -p "$L/deps" "$L/who"
printf '%s' "$n" > "$L/deps/count"
printf '[types]\ncache = true\n' > "$L/deps.toml"
printf '%s:%s %s' "$(id -u)" "$(id -g)" "$n" > "$L/who/ids"
printf '[types]\nlaunch = true\n' > "$L/who.toml"
echo built > built.txt
cat >> "$L/launch.toml" <<'EOF'
[[processes]]
type = "web"
command = ["sh", "-c", "echo run-image=$RUN_IMAGE user=$(id -u)"]
default = true
EOF"#,
    );
    let app = env.out.path().join("app");
    write(&app, "version", "1\n");
    let opts = [
        &format!("build-image={build_image}")[..],
        &format!("run-image={run_image}")[..],
        "buildpacks=t/user@1.0.0",
    ];
    let img = env.build_ok(&app, &bps, &opts, "user1");
    assert_eq!(img.read("/layers/t_user/who/ids"), "1000:1001 1");
    assert_eq!(owner(&img, "/workspace/built.txt"), (1000, 1001));
    assert_eq!(owner(&img, "/workspace/version"), (1000, 1001));
    assert_eq!(owner(&img, "/layers/t_user/who/ids"), (1000, 1001));
    assert_eq!(img.cfg()["User"], "1002");
    assert!(
        img.env().contains(&"RUN_IMAGE=yes".to_string()),
        "{:?}",
        img.env()
    );
    assert!(
        !img.env().iter().any(|e| e.starts_with("CNB_USER_ID")),
        "{:?}",
        img.env()
    );
    assert_eq!(
        img.label("io.buildpacks.base.distro.name").as_deref(),
        Some("busybox")
    );
    let lm = img.label_json("io.buildpacks.lifecycle.metadata");
    assert_eq!(lm["runImage"]["image"], run_image.as_str());
    let out = img.run(None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "run-image=yes user=1002\n",
        "{}",
        stderr(&out)
    );

    // The build cache works for the non-root user too.
    write(&app, "version", "2\n");
    let img = env.build_ok(&app, &bps, &opts, "user2");
    assert_eq!(img.read("/layers/t_user/who/ids"), "1000:1001 2");
}
