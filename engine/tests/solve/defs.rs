//! Hand-built definitions from raw pb structs.

use std::collections::BTreeMap;

use kiln_llb::pb;
use kiln_llb::pb::file_action::Action;
use prost::Message;
use sha2::{Digest as _, Sha256};

#[derive(Default)]
pub struct Def {
    ops: Vec<Vec<u8>>,
    pub metadata: BTreeMap<String, pb::OpMetadata>,
}

pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

impl Def {
    pub fn add(&mut self, op: pb::Op) -> String {
        let b = op.encode_to_vec();
        let d = digest(&b);
        if !self.ops.contains(&b) {
            self.ops.push(b);
        }
        d
    }

    pub fn name(&mut self, d: &str, name: &str) {
        self.metadata
            .entry(d.to_owned())
            .or_default()
            .description
            .insert("llb.customname".into(), name.into());
    }

    pub fn finish(&self, head: &str) -> Vec<u8> {
        let mut ops = self.ops.clone();
        let term = pb::Op {
            inputs: vec![pb::Input {
                digest: head.into(),
                index: 0,
            }],
            ..Default::default()
        };
        ops.push(term.encode_to_vec());
        pb::Definition {
            def: ops,
            metadata: self.metadata.clone(),
            source: None,
        }
        .encode_to_vec()
    }
}

pub fn input(d: &str) -> pb::Input {
    pb::Input {
        digest: d.into(),
        index: 0,
    }
}

pub fn local(name: &str, attrs: &[(&str, &str)]) -> pb::Op {
    let mut a: BTreeMap<String, String> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    a.entry("local.unique".into())
        .or_insert_with(|| "u1".into());
    pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: format!("local://{name}"),
            attrs: a,
        })),
        ..Default::default()
    }
}

pub fn file(inputs: &[&str], actions: Vec<pb::FileAction>) -> pb::Op {
    pb::Op {
        inputs: inputs.iter().map(|d| input(d)).collect(),
        op: Some(pb::op::Op::File(pb::FileOp { actions })),
        ..Default::default()
    }
}

pub fn act(input: i64, secondary: i64, action: Action) -> pb::FileAction {
    pb::FileAction {
        input,
        secondary_input: secondary,
        output: 0,
        action: Some(action),
    }
}

pub fn mkdir(path: &str) -> Action {
    Action::Mkdir(pb::FileActionMkDir {
        path: path.into(),
        mode: 0o755,
        make_parents: true,
        owner: None,
        timestamp: -1,
    })
}

pub fn mkfile(path: &str, data: &[u8]) -> Action {
    Action::Mkfile(pb::FileActionMkFile {
        path: path.into(),
        mode: 0o644,
        data: data.to_vec(),
        owner: None,
        timestamp: -1,
    })
}

pub fn copy(src: &str, dest: &str) -> pb::FileActionCopy {
    pb::FileActionCopy {
        src: src.into(),
        dest: dest.into(),
        mode: -1,
        timestamp: -1,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        follow_symlink: true,
        ..Default::default()
    }
}
