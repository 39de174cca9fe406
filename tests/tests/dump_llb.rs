//! `kiln debug dump-llb` on Definitions made of the conformance digest
//! vectors: every op's `Digest` must be the one the vectors give, and the
//! Definition must round-trip byte for byte.

use std::io::Write as _;
use std::process::Stdio;

use kiln_e2e::{conformance_dir, kiln, run_ok};
use kiln_llb::pb;
use prost::Message as _;
use serde_json::Value;

struct Vector {
    name: String,
    bytes: Vec<u8>,
    digest: String,
}

fn vectors() -> Vec<Vector> {
    let path = conformance_dir().join("llb/digest-vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e} (set KILN_CONFORMANCE_DIR)", path.display()));
    let v: Value = serde_json::from_str(&text).expect("vectors are JSON");
    v["vectors"]
        .as_array()
        .expect("vectors array")
        .iter()
        .map(|x| Vector {
            name: x["name"].as_str().unwrap().to_string(),
            bytes: hex::decode(x["hex"].as_str().unwrap()).unwrap(),
            digest: x["digest"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn terminal(last: &[u8]) -> Vec<u8> {
    pb::Op {
        inputs: vec![pb::Input {
            digest: kiln_llb::Digest::of_bytes(last).to_string(),
            index: 0,
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

/// The image source op the exec vectors run on (`busybox:latest`, linux/amd64).
fn busybox_source() -> Vec<u8> {
    pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: "docker-image://docker.io/library/busybox:latest".into(),
            attrs: Default::default(),
        })),
        platform: Some(pb::Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        }),
        constraints: Some(pb::WorkerConstraints::default()),
        ..Default::default()
    }
    .encode_to_vec()
}

fn dump(bytes: &[u8], via_stdin: bool) -> Vec<Value> {
    let root = tempfile::tempdir().unwrap();
    let out = if via_stdin {
        let mut child = kiln(root.path())
            .args(["debug", "dump-llb"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    } else {
        let f = root.path().join("def.pb");
        std::fs::write(&f, bytes).unwrap();
        run_ok(kiln(root.path()).args(["debug", "dump-llb"]).arg(&f))
    };
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect()
}

#[test]
fn digests_match_the_vectors() {
    let vs = vectors();
    assert!(vs.len() >= 3, "expected at least 3 vectors");
    // Every vector without inputs on its own, as the single op of a
    // Definition (the exec vectors need their inputs: see the chain test).
    for v in vs.iter().filter(|v| !v.name.starts_with("exec")) {
        let def = pb::Definition {
            def: vec![v.bytes.clone(), terminal(&v.bytes)],
            ..Default::default()
        }
        .encode_to_vec();
        let lines = dump(&def, false);
        assert_eq!(
            lines.len(),
            2,
            "{}: one line per op plus the terminal",
            v.name
        );
        assert_eq!(lines[0]["Digest"], v.digest, "{}", v.name);
        assert_eq!(
            lines[1]["Op"]["inputs"][0]["digest"], v.digest,
            "{}",
            v.name
        );
    }
}

#[test]
fn a_chain_of_vectors_dumps_in_def_order() {
    let vs = vectors();
    let execs: Vec<&Vector> = vs.iter().filter(|v| v.name.starts_with("exec")).collect();
    assert!(execs.len() >= 2);
    let mut ops = vec![busybox_source()];
    ops.extend(execs.iter().map(|v| v.bytes.clone()));
    let last = ops.last().unwrap().clone();
    ops.push(terminal(&last));
    let def = pb::Definition {
        def: ops,
        ..Default::default()
    }
    .encode_to_vec();

    // Round trip through the library: decode then encode gives the same bytes.
    let decoded = kiln_llb::Definition::decode(&def).expect("valid definition");
    assert_eq!(decoded.encode(), def);

    let lines = dump(&def, true);
    assert_eq!(lines.len(), 2 + execs.len());
    assert_eq!(
        lines[0]["Digest"],
        "sha256:08a03f3ffe5fba421a6403c31e153425ced631d108868f30e04985f99d69326e",
        "busybox source digest"
    );
    for (i, v) in execs.iter().enumerate() {
        assert_eq!(lines[i + 1]["Digest"], v.digest, "{}", v.name);
        assert!(
            lines[i + 1]["Op"]["Op"]["exec"].is_object(),
            "{}",
            lines[i + 1]
        );
    }
    assert_eq!(lines.last().unwrap()["Op"]["Op"], serde_json::json!({}));
}

#[test]
fn dot_output_is_a_graph() {
    let vs = vectors();
    let v = &vs[0];
    let def = pb::Definition {
        def: vec![v.bytes.clone(), terminal(&v.bytes)],
        ..Default::default()
    }
    .encode_to_vec();
    let root = tempfile::tempdir().unwrap();
    let f = root.path().join("def.pb");
    std::fs::write(&f, &def).unwrap();
    let out = run_ok(
        kiln(root.path())
            .args(["debug", "dump-llb", "--dot"])
            .arg(&f),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("digraph"), "{text}");
    assert!(text.contains(&v.digest), "{text}");
}

#[test]
fn garbage_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let f = root.path().join("junk.pb");
    std::fs::write(&f, b"\xff\xff\xff not protobuf").unwrap();
    let out = kiln_e2e::run_fail(kiln(root.path()).args(["debug", "dump-llb"]).arg(&f));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
