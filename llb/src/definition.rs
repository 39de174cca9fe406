//! A decoded and checked LLB [`Definition`].
//!
//! [`Definition::decode`] is the entry point for untrusted bytes (a frontend's
//! result, `kiln debug dump-llb` input, `kiln build` from stdin). It never
//! panics: every problem is a [`DefinitionError`]. Each op keeps the exact
//! bytes it arrived in, and its digest is computed over those bytes, as the
//! BuildKit daemon does. Encoding back with [`Definition::encode`] reproduces
//! the input of any deterministic (Go or kiln) marshal byte for byte.
//!
//! Uses [`crate::pb`] and [`crate::digest`] only.

use std::collections::BTreeMap;

use prost::Message;

use crate::digest::{Digest, DigestParseError};
use crate::pb;

/// Why a byte string is not a usable LLB definition.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The outer `pb.Definition` message does not decode.
    #[error("definition is not a valid pb.Definition message")]
    Decode(#[source] prost::DecodeError),
    /// One `def` entry does not decode as a `pb.Op`.
    #[error("def entry {index} is not a valid pb.Op message")]
    DecodeOp {
        /// Position in `Definition.def`.
        index: usize,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
    /// Fewer than two entries: there must be at least one op and the terminal.
    #[error("invalid LLB: definition has {count} op(s), at least 2 are required")]
    TooFewOps {
        /// Number of `def` entries.
        count: usize,
    },
    /// The last entry is not a terminal pseudo-op.
    #[error("terminal op {digest} is invalid: {reason}")]
    BadTerminal {
        /// Digest of the last entry.
        digest: Digest,
        /// What is wrong.
        reason: &'static str,
    },
    /// A non-terminal entry has no operation (`op` oneof unset).
    #[error("op {digest} has no operation set")]
    MissingOperation {
        /// Digest of the op.
        digest: Digest,
    },
    /// An input's digest string is malformed.
    #[error("op {op} input {input} has a malformed digest")]
    InvalidInputDigest {
        /// Digest of the op holding the input.
        op: Digest,
        /// Position in `Op.inputs`.
        input: usize,
        /// The parse error.
        #[source]
        source: DigestParseError,
    },
    /// An input names a digest that is not in `def`.
    #[error("op {op} input {input} names {target}, which is not in the definition")]
    DanglingInput {
        /// Digest of the op holding the input.
        op: Digest,
        /// Position in `Op.inputs`.
        input: usize,
        /// The missing digest.
        target: Digest,
    },
    /// An input's output index is negative or beyond the target's outputs.
    #[error("op {op} input {input} uses output {index} of {target}, which has {outputs} output(s)")]
    OutputOutOfRange {
        /// Digest of the op holding the input.
        op: Digest,
        /// Position in `Op.inputs`.
        input: usize,
        /// The referenced op.
        target: Digest,
        /// The requested output index.
        index: i64,
        /// How many outputs the target has.
        outputs: u64,
    },
    /// An index inside an op (mount input, file action input, merge/diff
    /// input) points outside the op's inputs.
    #[error("op {op}: {field} = {value} is out of range (allowed: {min} to {max})")]
    IndexOutOfRange {
        /// Digest of the op.
        op: Digest,
        /// Which field, e.g. `mounts[2].input`.
        field: String,
        /// The value found.
        value: i64,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// The input edges form a cycle.
    #[error("op {digest} depends on itself through its inputs")]
    Cycle {
        /// An op on the cycle.
        digest: Digest,
    },
}

/// One `def` entry: the op, its exact bytes and their digest.
#[derive(Debug, Clone, PartialEq)]
pub struct OpEntry {
    /// `sha256` of [`OpEntry::bytes`].
    pub digest: Digest,
    /// The decoded op.
    pub op: pb::Op,
    /// The bytes exactly as stored in the definition.
    pub bytes: Vec<u8>,
}

/// A checked LLB definition: every input resolves, the graph is acyclic and
/// the last entry is a terminal op naming the result.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    ops: Vec<OpEntry>,
    index: BTreeMap<Digest, usize>,
    metadata: BTreeMap<String, pb::OpMetadata>,
    source: Option<pb::Source>,
}

impl Definition {
    /// Decodes and checks a marshaled `pb.Definition`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DefinitionError> {
        let def = pb::Definition::decode(bytes).map_err(DefinitionError::Decode)?;
        Self::from_pb(def)
    }

    /// Checks an already decoded `pb.Definition`.
    pub fn from_pb(def: pb::Definition) -> Result<Self, DefinitionError> {
        let pb::Definition {
            def: raw,
            metadata,
            source,
        } = def;
        if raw.len() < 2 {
            return Err(DefinitionError::TooFewOps { count: raw.len() });
        }
        let mut ops = Vec::with_capacity(raw.len());
        let mut index = BTreeMap::new();
        for (i, bytes) in raw.into_iter().enumerate() {
            let op = pb::Op::decode(bytes.as_slice())
                .map_err(|source| DefinitionError::DecodeOp { index: i, source })?;
            let digest = Digest::of_bytes(&bytes);
            index.entry(digest.clone()).or_insert(i);
            ops.push(OpEntry { digest, op, bytes });
        }
        let out = Definition {
            ops,
            index,
            metadata,
            source,
        };
        out.check()?;
        Ok(out)
    }

    fn check(&self) -> Result<(), DefinitionError> {
        let (terminal, body) = self
            .ops
            .split_last()
            .ok_or(DefinitionError::TooFewOps { count: 0 })?;
        let bad_terminal = |reason| DefinitionError::BadTerminal {
            digest: terminal.digest.clone(),
            reason,
        };
        if terminal.op.op.is_some() {
            return Err(bad_terminal("it has an operation set"));
        }
        if terminal.op.inputs.len() != 1 {
            return Err(bad_terminal("it must have exactly one input"));
        }
        for entry in body {
            if entry.op.op.is_none() {
                return Err(DefinitionError::MissingOperation {
                    digest: entry.digest.clone(),
                });
            }
            check_internal_indexes(entry)?;
        }
        // Edges: every input resolves to an op with that output.
        let mut edges: Vec<Vec<usize>> = Vec::with_capacity(self.ops.len());
        for entry in &self.ops {
            let mut targets = Vec::with_capacity(entry.op.inputs.len());
            for (i, input) in entry.op.inputs.iter().enumerate() {
                let target: Digest =
                    input
                        .digest
                        .parse()
                        .map_err(|source| DefinitionError::InvalidInputDigest {
                            op: entry.digest.clone(),
                            input: i,
                            source,
                        })?;
                let Some(&t) = self.index.get(&target) else {
                    return Err(DefinitionError::DanglingInput {
                        op: entry.digest.clone(),
                        input: i,
                        target,
                    });
                };
                if let Some(outputs) = output_count(&self.ops[t].op)
                    && (input.index < 0 || input.index as u64 >= outputs)
                {
                    return Err(DefinitionError::OutputOutOfRange {
                        op: entry.digest.clone(),
                        input: i,
                        target,
                        index: input.index,
                        outputs,
                    });
                }
                if input.index < 0 {
                    return Err(DefinitionError::OutputOutOfRange {
                        op: entry.digest.clone(),
                        input: i,
                        target,
                        index: input.index,
                        outputs: 0,
                    });
                }
                targets.push(t);
            }
            edges.push(targets);
        }
        self.check_acyclic(&edges)
    }

    /// Iterative three-colour DFS, so hostile deep graphs cannot overflow
    /// the stack.
    fn check_acyclic(&self, edges: &[Vec<usize>]) -> Result<(), DefinitionError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut mark = vec![Mark::New; self.ops.len()];
        for start in 0..self.ops.len() {
            if mark[start] != Mark::New {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            mark[start] = Mark::Active;
            while let Some(top) = stack.last_mut() {
                let (node, next) = *top;
                if let Some(&child) = edges[node].get(next) {
                    top.1 += 1;
                    match mark[child] {
                        Mark::New => {
                            mark[child] = Mark::Active;
                            stack.push((child, 0));
                        }
                        Mark::Active => {
                            return Err(DefinitionError::Cycle {
                                digest: self.ops[child].digest.clone(),
                            });
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark[node] = Mark::Done;
                    stack.pop();
                }
            }
        }
        Ok(())
    }

    /// Encodes the definition; equal to the decoded bytes for any input that
    /// was itself marshaled deterministically.
    pub fn encode(&self) -> Vec<u8> {
        self.to_pb().encode_to_vec()
    }

    /// The protobuf form.
    pub fn to_pb(&self) -> pb::Definition {
        pb::Definition {
            def: self.ops.iter().map(|e| e.bytes.clone()).collect(),
            metadata: self.metadata.clone(),
            source: self.source.clone(),
        }
    }

    /// All entries in `def` order, the terminal op last.
    pub fn entries(&self) -> &[OpEntry] {
        &self.ops
    }

    /// The real ops (every entry but the terminal one), in `def` order.
    pub fn ops(&self) -> &[OpEntry] {
        &self.ops[..self.ops.len() - 1]
    }

    /// The terminal pseudo-op.
    pub fn terminal(&self) -> &OpEntry {
        &self.ops[self.ops.len() - 1]
    }

    /// The result: digest and output index named by the terminal op.
    pub fn head(&self) -> (Digest, i64) {
        let input = &self.terminal().op.inputs[0];
        // `check` parsed this digest already.
        let digest = input
            .digest
            .parse()
            .unwrap_or_else(|_| self.terminal().digest.clone());
        (digest, input.index)
    }

    /// The entry with this digest.
    pub fn get(&self, digest: &Digest) -> Option<&OpEntry> {
        self.index.get(digest).map(|&i| &self.ops[i])
    }

    /// Metadata of the op with this digest.
    pub fn metadata(&self, digest: &Digest) -> Option<&pb::OpMetadata> {
        self.metadata.get(digest.as_str())
    }

    /// The whole metadata map, keyed by digest string.
    pub fn metadata_map(&self) -> &BTreeMap<String, pb::OpMetadata> {
        &self.metadata
    }

    /// Source maps, if any.
    pub fn source(&self) -> Option<&pb::Source> {
        self.source.as_ref()
    }
}

/// How many outputs an op has, when that is knowable from the op alone.
fn output_count(op: &pb::Op) -> Option<u64> {
    use pb::op::Op as K;
    match op.op.as_ref()? {
        K::Source(_) | K::File(_) | K::Merge(_) | K::Diff(_) => Some(1),
        K::Exec(e) => Some(
            e.mounts
                .iter()
                .filter(|m| m.output >= 0)
                .map(|m| (m.output as u64).saturating_add(1))
                .max()
                .unwrap_or(0),
        ),
        K::Build(_) | K::Passthrough(_) => None,
    }
}

fn check_internal_indexes(entry: &OpEntry) -> Result<(), DefinitionError> {
    use pb::op::Op as K;
    let n = entry.op.inputs.len() as i64;
    let check = |field: String, value: i64, min: i64, max: i64| {
        if value < min || value > max {
            Err(DefinitionError::IndexOutOfRange {
                op: entry.digest.clone(),
                field,
                value,
                min,
                max,
            })
        } else {
            Ok(())
        }
    };
    match &entry.op.op {
        Some(K::Exec(e)) => {
            for (i, m) in e.mounts.iter().enumerate() {
                check(format!("mounts[{i}].input"), m.input, -1, n - 1)?;
                check(format!("mounts[{i}].output"), m.output, -1, i64::MAX)?;
            }
        }
        Some(K::File(f)) => {
            for (i, a) in f.actions.iter().enumerate() {
                let max = n + i as i64 - 1;
                check(format!("actions[{i}].input"), a.input, -1, max)?;
                check(
                    format!("actions[{i}].secondaryInput"),
                    a.secondary_input,
                    -1,
                    max,
                )?;
            }
        }
        Some(K::Merge(m)) => {
            for (i, inp) in m.inputs.iter().enumerate() {
                check(format!("inputs[{i}].input"), inp.input, 0, n - 1)?;
            }
        }
        Some(K::Diff(d)) => {
            if let Some(l) = &d.lower {
                check("lower.input".into(), l.input, -1, n - 1)?;
            }
            if let Some(u) = &d.upper {
                check("upper.input".into(), u.input, -1, n - 1)?;
            }
        }
        Some(K::Build(b)) => {
            for (name, inp) in &b.inputs {
                check(format!("inputs[{name:?}].input"), inp.input, 0, n - 1)?;
            }
        }
        Some(K::Source(_)) | Some(K::Passthrough(_)) | None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source_op(id: &str) -> Vec<u8> {
        pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: id.into(),
                ..Default::default()
            })),
            constraints: Some(Default::default()),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn terminal(digest: &str, index: i64) -> Vec<u8> {
        pb::Op {
            inputs: vec![pb::Input {
                digest: digest.into(),
                index,
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn def_bytes(def: Vec<Vec<u8>>) -> Vec<u8> {
        pb::Definition {
            def,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn decodes_and_round_trips() {
        let src = source_op("local://context");
        let d = Digest::of_bytes(&src);
        let mut def = pb::Definition {
            def: vec![src.clone(), terminal(d.as_str(), 0)],
            ..Default::default()
        };
        def.metadata.insert(
            d.to_string(),
            pb::OpMetadata {
                ignore_cache: true,
                ..Default::default()
            },
        );
        def.source = Some(Default::default());
        let bytes = def.encode_to_vec();
        let checked = Definition::decode(&bytes).unwrap();
        assert_eq!(checked.encode(), bytes);
        assert_eq!(checked.ops().len(), 1);
        assert_eq!(checked.head(), (d.clone(), 0));
        assert_eq!(checked.get(&d).unwrap().bytes, src);
        assert!(checked.metadata(&d).unwrap().ignore_cache);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Definition::decode(&[0xff, 0xff]),
            Err(DefinitionError::Decode(_))
        ));
        let bytes = def_bytes(vec![vec![0x0a, 0x05], vec![]]);
        assert!(matches!(
            Definition::decode(&bytes),
            Err(DefinitionError::DecodeOp { index: 0, .. })
        ));
    }

    #[test]
    fn rejects_too_few_ops() {
        let err = Definition::decode(&def_bytes(vec![source_op("x")])).unwrap_err();
        assert!(matches!(err, DefinitionError::TooFewOps { count: 1 }));
        assert!(err.to_string().contains("invalid LLB"));
        let err = Definition::decode(&[]).unwrap_err();
        assert!(matches!(err, DefinitionError::TooFewOps { count: 0 }));
    }

    #[test]
    fn rejects_bad_terminal() {
        let a = source_op("a");
        let b = source_op("b");
        let err = Definition::decode(&def_bytes(vec![a.clone(), b])).unwrap_err();
        assert!(matches!(err, DefinitionError::BadTerminal { .. }));
        let empty_terminal = pb::Op::default().encode_to_vec();
        let err = Definition::decode(&def_bytes(vec![a, empty_terminal])).unwrap_err();
        assert!(matches!(err, DefinitionError::BadTerminal { .. }));
    }

    #[test]
    fn rejects_dangling_and_malformed_inputs() {
        let a = source_op("a");
        let other = Digest::of_bytes(b"other");
        let err = Definition::decode(&def_bytes(vec![a.clone(), terminal(other.as_str(), 0)]))
            .unwrap_err();
        assert!(matches!(err, DefinitionError::DanglingInput { .. }));
        let err = Definition::decode(&def_bytes(vec![a.clone(), terminal("sha256:nope", 0)]))
            .unwrap_err();
        assert!(matches!(err, DefinitionError::InvalidInputDigest { .. }));
        let d = Digest::of_bytes(&a);
        let err =
            Definition::decode(&def_bytes(vec![a.clone(), terminal(d.as_str(), 1)])).unwrap_err();
        assert!(matches!(
            err,
            DefinitionError::OutputOutOfRange {
                index: 1,
                outputs: 1,
                ..
            }
        ));
        let err = Definition::decode(&def_bytes(vec![a, terminal(d.as_str(), -1)])).unwrap_err();
        assert!(matches!(
            err,
            DefinitionError::OutputOutOfRange { index: -1, .. }
        ));
    }

    #[test]
    fn rejects_op_without_operation_and_bad_mount_index() {
        let a = source_op("a");
        let da = Digest::of_bytes(&a);
        let hollow = pb::Op {
            inputs: vec![pb::Input {
                digest: da.to_string(),
                index: 0,
            }],
            constraints: Some(Default::default()),
            ..Default::default()
        }
        .encode_to_vec();
        let dh = Digest::of_bytes(&hollow);
        let err = Definition::decode(&def_bytes(vec![
            a.clone(),
            hollow,
            terminal(dh.as_str(), 0),
        ]))
        .unwrap_err();
        assert!(matches!(err, DefinitionError::MissingOperation { .. }));

        let exec = pb::Op {
            inputs: vec![pb::Input {
                digest: da.to_string(),
                index: 0,
            }],
            op: Some(pb::op::Op::Exec(pb::ExecOp {
                meta: Some(pb::Meta {
                    args: vec!["true".into()],
                    ..Default::default()
                }),
                mounts: vec![pb::Mount {
                    input: 3,
                    dest: "/".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }
        .encode_to_vec();
        let de = Digest::of_bytes(&exec);
        let err =
            Definition::decode(&def_bytes(vec![a, exec, terminal(de.as_str(), 0)])).unwrap_err();
        assert!(
            matches!(&err, DefinitionError::IndexOutOfRange { field, value: 3, .. } if field == "mounts[0].input"),
            "{err}"
        );
    }
}
