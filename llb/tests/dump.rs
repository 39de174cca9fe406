//! `dump_json_lines` / `dump_dot` output shapes on definitions built with
//! the public builder API.

use kiln_llb::builder::{self, MarshalOptions, OpOptions};
use kiln_llb::dump::{dump_dot, dump_json_lines};
use kiln_llb::{Definition, pb};
use prost::Message;

fn checked(st: &builder::State) -> Definition {
    let def = st.marshal(&MarshalOptions::default()).unwrap();
    Definition::decode(&def.encode_to_vec()).unwrap()
}

const ALPINE: &str = "sha256:665ba8b2cdc0cb0200e2a42a6b3c0f8f684089f4cd1b81494fbb9805879120f7";

#[test]
fn image_and_terminal_lines() {
    let st = builder::image("alpine")
        .unwrap()
        .platform(builder::linux_amd64())
        .state();
    let def = checked(&st);
    let out = dump_json_lines(&def);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(out.ends_with('\n'));
    assert_eq!(
        lines[0],
        format!(
            r#"{{"Op":{{"Op":{{"source":{{"identifier":"docker-image://docker.io/library/alpine:latest"}}}},"platform":{{"Architecture":"amd64","OS":"linux"}},"constraints":{{}}}},"Digest":"{ALPINE}","OpMetadata":{{"caps":{{"source.image":true}}}}}}"#
        )
    );
    let terminal = def.terminal().digest.to_string();
    assert_eq!(
        lines[1],
        format!(
            r#"{{"Op":{{"inputs":[{{"digest":"{ALPINE}"}}],"Op":{{}}}},"Digest":"{terminal}","OpMetadata":{{"caps":{{"constraints":true,"platform":true}}}}}}"#
        )
    );
}

#[test]
fn exec_line_escapes_html_and_nests_op() {
    let base = builder::image("busybox")
        .unwrap()
        .platform(builder::linux_amd64())
        .state();
    let cache = builder::Mount::cache("/root/.cache", "c1", pb::CacheSharingOpt::Private);
    let st = base
        .run_shell("echo a > /b && true")
        .mount(cache)
        .remove_mount_stubs_recursive(false)
        .custom_name("RUN <echo>")
        .build()
        .unwrap()
        .root();
    let def = checked(&st);
    let out = dump_json_lines(&def);
    let line: &str = out.lines().nth(1).unwrap();
    assert!(
        line.starts_with(r#"{"Op":{"inputs":[{"digest":"sha256:08a03f3f"#),
        "{line}"
    );
    assert!(line.contains(
        r#""Op":{"exec":{"meta":{"args":["/bin/sh","-c","echo a \u003e /b \u0026\u0026 true"],"cwd":"/"},"mounts":[{"dest":"/"},{"input":-1,"dest":"/root/.cache","output":-1,"mountType":3,"cacheOpt":{"ID":"c1","sharing":1}}]}}"#
    ), "{line}");
    assert!(line.contains(r#""description":{"llb.customname":"RUN \u003cecho\u003e"}"#));
    // Every line parses as JSON.
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["Digest"].as_str().unwrap().starts_with("sha256:"));
    }
}

#[test]
fn file_actions_json_shape() {
    use builder::{ChownOpt, CopyOptions, MkdirOptions, SymlinkOptions, UserRef};
    let ctx = builder::local("context").state();
    let chain = builder::mkdir("/a", 0o755, MkdirOptions::default())
        .copy(
            &ctx,
            "x",
            "/a/",
            CopyOptions {
                owner: Some(ChownOpt {
                    user: Some(UserRef::Name("app".into())),
                    group: Some(UserRef::Id(0)),
                }),
                ..Default::default()
            },
        )
        .symlink("/a/x", "/l", SymlinkOptions::default());
    let st = builder::scratch().file(chain);
    let def = checked(&st);
    let out = dump_json_lines(&def);
    let line: &str = out.lines().nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let actions = &v["Op"]["Op"]["file"]["actions"];
    assert_eq!(
        actions[0].to_string(),
        r#"{"input":-1,"secondaryInput":-1,"output":-1,"Action":{"mkdir":{"path":"/a","mode":493,"timestamp":-1}}}"#
    );
    assert_eq!(
        actions[1].to_string(),
        r#"{"input":1,"secondaryInput":0,"output":-1,"Action":{"copy":{"src":"/x","dest":"/a/","owner":{"user":{"User":{"byName":{"name":"app","input":-1}}},"group":{"User":{}}},"mode":-1,"timestamp":-1}}}"#
    );
    assert_eq!(
        actions[2].to_string(),
        r#"{"input":2,"secondaryInput":-1,"output":0,"Action":{"symlink":{"oldpath":"/a/x","newpath":"/l","timestamp":-1}}}"#
    );
    assert!(v.get("Op").unwrap().get("platform").is_none());
}

#[test]
fn missing_metadata_prints_null() {
    let src = pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: "local://x".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_to_vec();
    let d = kiln_llb::Digest::of_bytes(&src);
    let term = pb::Op {
        inputs: vec![pb::Input {
            digest: d.to_string(),
            index: 0,
        }],
        ..Default::default()
    }
    .encode_to_vec();
    let bytes = pb::Definition {
        def: vec![src, term],
        ..Default::default()
    }
    .encode_to_vec();
    let def = Definition::decode(&bytes).unwrap();
    let out = dump_json_lines(&def);
    assert!(
        out.lines().all(|l| l.ends_with(r#""OpMetadata":null}"#)),
        "{out}"
    );
}

#[test]
fn dot_graph() {
    let base = builder::image("alpine")
        .unwrap()
        .platform(builder::linux_amd64())
        .state();
    let ctx = builder::local("context").state();
    let st = base
        .run(["make", "all"])
        .mount(builder::Mount::bind("/src", &ctx).readonly())
        .build()
        .unwrap()
        .root();
    let def = checked(&st);
    let dot = dump_dot(&def);
    let ops = def.entries();
    let d = |i: usize| ops[i].digest.to_string();
    let expected = format!(
        "digraph {{\n  \"{a}\" [label=\"docker-image://docker.io/library/alpine:latest\" shape=\"ellipse\"];\n  \"{c}\" [label=\"local://context\" shape=\"ellipse\"];\n  \"{e}\" [label=\"make all\" shape=\"box\"];\n  \"{t}\" [label=\"{t}\" shape=\"plaintext\"];\n  \"{a}\" -> \"{e}\" [label=\"\"];\n  \"{c}\" -> \"{e}\" [label=\"/src\"];\n  \"{e}\" -> \"{t}\" [label=\"\"];\n}}\n",
        a = d(0),
        c = d(1),
        e = d(2),
        t = d(3)
    );
    assert_eq!(dot, expected);

    let file = builder::scratch().file(
        builder::mkdir("/a", 0o755, Default::default())
            .symlink("/a", "/b", Default::default())
            .rm("/c", Default::default()),
    );
    let dot = dump_dot(&checked(&file));
    assert!(dot.contains(
        r#"[label="mkdir{path=/a},symlink{oldpath=/a, newpath=/b},rm{path=/c}" shape="note"];"#
    ));
}
