//! Conformance: the LLB digest vectors in `shared/conformance/llb`.
//!
//! Each vector is decoded, re-encoded byte for byte and hashed; the ones
//! whose structure the builder can express are also rebuilt with the
//! builder API and compared byte for byte.

use std::path::{Path, PathBuf};

use kiln_llb::builder::{self, MarshalOptions, OpOptions};
use kiln_llb::{Definition, Digest, pb};
use prost::Message;

struct Vector {
    name: String,
    bytes: Vec<u8>,
    digest: String,
}

/// `$KILN_CONFORMANCE_DIR`, else the first `shared/conformance` found next
/// to the crate or one of its ancestors.
fn conformance_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_CONFORMANCE_DIR") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest.ancestors() {
        let candidate = dir.join("shared").join("conformance");
        if candidate.join("llb/digest-vectors.json").is_file() {
            return candidate;
        }
    }
    manifest.join("../../shared/conformance")
}

fn vectors() -> Vec<Vector> {
    let path = conformance_dir().join("llb/digest-vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("vector file is JSON");
    json["vectors"]
        .as_array()
        .expect("`vectors` array")
        .iter()
        .map(|v| Vector {
            name: v["name"].as_str().unwrap().to_owned(),
            bytes: hex::decode(v["hex"].as_str().unwrap()).unwrap(),
            digest: v["digest"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn vector(prefix: &str) -> Vector {
    vectors()
        .into_iter()
        .find(|v| v.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no vector named {prefix}…"))
}

#[test]
fn vectors_decode_hash_and_reencode() {
    let all = vectors();
    assert!(all.len() >= 3, "expected at least 3 vectors");
    for v in &all {
        let op = pb::Op::decode(v.bytes.as_slice()).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(
            op.encode_to_vec(),
            v.bytes,
            "{}: re-encoding differs",
            v.name
        );
        assert_eq!(Digest::of_bytes(&v.bytes).as_str(), v.digest, "{}", v.name);
        assert!(op.constraints.is_some(), "{}: constraints present", v.name);
    }
}

#[test]
fn image_vector_matches_builder() {
    let v = vector("image alpine");
    let st = builder::image("alpine")
        .unwrap()
        .platform(builder::linux_amd64())
        .state();
    let def = st.marshal(&MarshalOptions::default()).unwrap();
    assert_eq!(def.def.len(), 2);
    assert_eq!(hex::encode(&def.def[0]), hex::encode(&v.bytes));
    assert_eq!(Digest::of_bytes(&def.def[0]).as_str(), v.digest);
}

#[test]
fn exec_vectors_match_builder() {
    let first = vector("exec: /bin/sh -c 'echo hello");
    let second = vector("exec: /bin/sh -c 'test -s");
    let busybox = builder::image("busybox")
        .unwrap()
        .platform(builder::linux_amd64())
        .state()
        .add_env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    let run = |st: &builder::State, cmd: &str| {
        st.run_shell(cmd)
            .remove_mount_stubs_recursive(false)
            .build()
            .unwrap()
            .root()
    };
    let step1 = run(&busybox, "echo hello > /newfile");
    let step2 = run(&step1, "test -s /newfile");
    let def = step2.marshal(&MarshalOptions::default()).unwrap();
    assert_eq!(def.def.len(), 4, "busybox, two execs, terminal");
    assert_eq!(
        Digest::of_bytes(&def.def[0]).as_str(),
        "sha256:08a03f3ffe5fba421a6403c31e153425ced631d108868f30e04985f99d69326e",
        "busybox source digest"
    );
    assert_eq!(hex::encode(&def.def[1]), hex::encode(&first.bytes));
    assert_eq!(Digest::of_bytes(&def.def[1]).as_str(), first.digest);
    assert_eq!(hex::encode(&def.def[2]), hex::encode(&second.bytes));
    assert_eq!(Digest::of_bytes(&def.def[2]).as_str(), second.digest);

    // The whole definition decodes, checks and round-trips.
    let bytes = def.encode_to_vec();
    let checked = Definition::decode(&bytes).unwrap();
    assert_eq!(checked.encode(), bytes);
    assert_eq!(checked.head().0.as_str(), second.digest);
}
