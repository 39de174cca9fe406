//! Unit tests of the flow with `MockGateway`: option and input errors,
//! and the LLB of a detect exec.

use super::readback::tail;
use super::*;
use kiln_frontend::testing::MockGateway;

#[test]
fn missing_build_image_is_a_clear_error() {
    let gw = MockGateway::new();
    let e = run(&gw).unwrap_err();
    assert!(e.message.contains("build-image"), "{e}");
}

#[test]
fn unknown_image_names_the_option() {
    let gw = MockGateway::new().with_option("build-image", "example.com/nope:1");
    let e = run(&gw).unwrap_err();
    assert!(
        e.message.starts_with("build image example.com/nope:1"),
        "{e}"
    );
}

const IMAGE: &str = "example.com/base:1";
const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","SECRET=x"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
const ORDER: &[u8] = b"[[order]]\n[[order.group]]\nid = \"a/b\"\nversion = \"1.0.0\"\n";

fn bp_toml(clear_env: bool) -> Vec<u8> {
    format!(
        "api = \"0.12\"\n[buildpack]\nid = \"a/b\"\nversion = \"1.0.0\"\nclear-env = {clear_env}\n"
    )
    .into_bytes()
}

fn gateway(project: &[u8], clear_env: bool) -> MockGateway {
    MockGateway::new()
        .with_option("build-image", IMAGE)
        .with_image(IMAGE, CONFIG)
        .with_file("context", "project.toml", project)
        .with_file("context", "app.txt", b"app")
        .with_file("buildpacks", "order.toml", ORDER)
        .with_file(
            "buildpacks",
            "a_b/1.0.0/buildpack.toml",
            &bp_toml(clear_env),
        )
}

fn exec_ops(def: &[u8]) -> Vec<pb::ExecOp> {
    use prost::Message as _;
    let d = pb::Definition::decode(def).unwrap();
    d.def
        .iter()
        .filter_map(|b| pb::Op::decode(b.as_slice()).ok())
        .filter_map(|op| match op.op {
            Some(pb::op::Op::Exec(e)) => Some(e),
            _ => None,
        })
        .collect()
}

const PROJECT: &[u8] =
    b"[_]\nschema-version = \"0.2\"\n[[io.buildpacks.build.env]]\nname = \"FOO\"\nvalue = \"bar\"\n";

#[test]
fn detect_exec_gets_the_contract() {
    let gw = gateway(PROJECT, false);
    // The mock cannot run execs, so the run stops when it reads the
    // detect results; the LLB it solved is what is checked.
    let e = run(&gw).unwrap_err();
    assert!(e.message.contains("detect/a_b/1.0.0/code"), "{e}");
    let solved = gw.solved();
    let execs = exec_ops(solved.last().unwrap());
    assert_eq!(execs.len(), 1);
    let ex = &execs[0];
    let meta = ex.meta.as_ref().unwrap();
    assert_eq!(meta.args[..2], ["/bin/sh".to_string(), "-c".to_string()]);
    assert!(meta.args[2].contains("'/cnb/buildpacks/a_b/1.0.0'/bin/detect '/platform'"));
    assert_eq!(meta.cwd, "/workspace");
    for want in [
        "PATH=/bin",
        "FOO=bar",
        "CNB_BUILDPACK_DIR=/cnb/buildpacks/a_b/1.0.0",
        "CNB_PLATFORM_DIR=/platform",
        "CNB_BUILD_PLAN_PATH=/cnb/detect/a_b/1.0.0/plan.toml",
        "CNB_TARGET_OS=linux",
        "CNB_TARGET_ARCH=amd64",
        "CNB_EXEC_ENV=production",
    ] {
        assert!(
            meta.env.iter().any(|e| e == want),
            "{want} missing: {:?}",
            meta.env
        );
    }
    assert!(
        !meta.env.iter().any(|e| e.starts_with("SECRET=")),
        "only the pass-through variables of the build image reach buildpacks"
    );
    assert_eq!(ex.network, pb::NetMode::None as i32);
    let mount = |d: &str| ex.mounts.iter().find(|m| m.dest == d).unwrap();
    assert!(mount("/workspace").readonly);
    assert_eq!(mount("/workspace").selector, "workspace");
    assert!(mount("/platform").readonly);
    assert_eq!(mount("/cnb/buildpacks/a_b/1.0.0").selector, "a_b/1.0.0");
    assert!(!mount("/cnb/detect").readonly);
}

#[test]
fn clear_env_keeps_platform_env_out() {
    let gw = gateway(PROJECT, true);
    assert!(run(&gw).is_err());
    let execs = exec_ops(gw.solved().last().unwrap());
    let env = &execs[0].meta.as_ref().unwrap().env;
    assert!(!env.iter().any(|e| e == "FOO=bar"), "{env:?}");
    assert!(env.iter().any(|e| e == "CNB_PLATFORM_DIR=/platform"));
}

#[test]
fn input_errors_name_file_and_key() {
    let gw = gateway(b"[_]\n[io.buildpacks]\ninclude = \"*.html\"\n", false);
    let e = run(&gw).unwrap_err();
    assert_eq!(
        e.message,
        "project.toml: io.buildpacks.include: must be an array of strings, not string"
    );

    let gw = gateway(PROJECT, false).with_file("buildpacks", "order.toml", b"[[order]]\n");
    let e = run(&gw).unwrap_err();
    assert_eq!(e.message, "order.toml: order[0].group: is empty");

    let gw = gateway(PROJECT, false).with_option("buildpacks", "c/d@2");
    let e = run(&gw).unwrap_err();
    assert!(
        e.message
            .contains("buildpack c/d@2 is not in the buildpacks context"),
        "{e}"
    );

    let gw = gateway(PROJECT, false).with_file(
        "buildpacks",
        "a_b/1.0.0/buildpack.toml",
        b"api = \"0.12\"\n[buildpack]\nid = \"x\"\nversion = \"1.0.0\"\n",
    );
    let e = run(&gw).unwrap_err();
    assert!(e.message.contains("declares x@1.0.0"), "{e}");

    let gw = gateway(PROJECT, false).with_option("process-type", "");
    assert!(run(&gw).is_err());
}

#[test]
fn no_order_says_how_to_give_one() {
    let gw = MockGateway::new()
        .with_option("build-image", IMAGE)
        .with_image(IMAGE, CONFIG)
        .with_file("context", "app.txt", b"app")
        .with_file("buildpacks", "a_b/1.0.0/buildpack.toml", &bp_toml(false));
    let e = run(&gw).unwrap_err();
    assert!(e.message.contains("no order.toml"), "{e}");
    assert!(e.message.contains("--opt buildpacks="), "{e}");
}

#[test]
fn target_env_defaults() {
    let t = ImageTarget {
        os: "linux".into(),
        arch: "arm64".into(),
        variant: "v8".into(),
        ..Default::default()
    };
    assert_eq!(
        target_env(&t),
        vec![
            ("CNB_TARGET_OS".to_string(), "linux".to_string()),
            ("CNB_TARGET_ARCH".to_string(), "arm64".to_string()),
            ("CNB_TARGET_ARCH_VARIANT".to_string(), "v8".to_string()),
        ]
    );
    assert_eq!(
        cnb_user(&Env::from_list(&["CNB_USER_ID=1000", "CNB_GROUP_ID=1001"])),
        Some((1000, 1001))
    );
    assert_eq!(cnb_user(&Env::from_list(&["CNB_USER_ID=x"])), None);
    assert_eq!(tail("ok\n"), "ok");
}
