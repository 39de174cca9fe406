//! Turning a graph of [`Vertex`]es into a `pb::Definition`.
//!
//! Ops are emitted in post order (inputs before their users), each distinct
//! digest once, followed by the terminal pseudo-op. Every op gets a
//! metadata entry (possibly empty), the terminal one carries the
//! definition-level caps, and `Definition.source` is present (possibly
//! empty) for every non-scratch graph, as with BuildKit's Go client.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use prost::Message;

use super::state::Output;
use super::{BuildError, Constraints, SourceMap, Vertex, VertexKind, linux_amd64, merge_metadata};
use crate::digest::Digest;
use crate::pb;

/// How the default `PATH` of exec ops is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultPath {
    /// The daemon's capabilities are unknown: leave `PATH` alone.
    #[default]
    Unknown,
    /// The daemon fills in `PATH` (`exec.meta.setsdefaultpath`): leave it
    /// alone and require the capability.
    DaemonSets,
    /// The daemon does not: add the Unix default `PATH` when absent (never
    /// on Windows).
    ClientSets,
}

/// Options for [`super::State::marshal`].
#[derive(Debug, Clone, Default)]
pub struct MarshalOptions {
    /// Platform for ops that have none of their own (default
    /// `linux/amd64`).
    pub platform: Option<pb::Platform>,
    /// Worker constraints added to every op (before the op's own).
    pub worker_constraints: Vec<String>,
    /// Metadata merged under every op's own (e.g. `ignore_cache` for
    /// `--no-cache`).
    pub metadata: pb::OpMetadata,
    /// Default `PATH` handling for exec ops.
    pub default_path: DefaultPath,
}

pub(crate) struct Marshaler<'a> {
    opts: &'a MarshalOptions,
    done: HashMap<usize, Digest>,
    def: Vec<Vec<u8>>,
    seen: HashSet<Digest>,
    metadata: BTreeMap<String, pb::OpMetadata>,
    maps: Vec<Arc<SourceMap>>,
    locations: BTreeMap<String, pb::Locations>,
}

fn key(v: &Arc<Vertex>) -> usize {
    Arc::as_ptr(v) as usize
}

impl<'a> Marshaler<'a> {
    pub(crate) fn new(opts: &'a MarshalOptions) -> Self {
        Marshaler {
            opts,
            done: HashMap::new(),
            def: Vec::new(),
            seen: HashSet::new(),
            metadata: BTreeMap::new(),
            maps: Vec::new(),
            locations: BTreeMap::new(),
        }
    }

    pub(crate) fn options(&self) -> &MarshalOptions {
        self.opts
    }

    /// The input edge for an already marshaled output.
    pub(crate) fn input(&self, out: &Output) -> pb::Input {
        pb::Input {
            digest: self
                .done
                .get(&key(&out.vertex))
                .map(ToString::to_string)
                .unwrap_or_default(),
            index: out.index,
        }
    }

    pub(crate) fn run(mut self, head: Option<&Output>) -> Result<pb::Definition, BuildError> {
        let Some(head) = head else {
            // Like BuildKit: scratch is an empty definition without source
            // maps.
            return Ok(pb::Definition::default());
        };
        // Iterative post-order DFS, so long chains cannot exhaust the stack.
        let mut stack: Vec<(Arc<Vertex>, bool)> = vec![(head.vertex.clone(), false)];
        while let Some((v, expanded)) = stack.pop() {
            if self.done.contains_key(&key(&v)) {
                continue;
            }
            if expanded {
                self.emit(&v)?;
                continue;
            }
            stack.push((v.clone(), true));
            for input in v.inputs().into_iter().rev() {
                if !self.done.contains_key(&key(&input.vertex)) {
                    stack.push((input.vertex.clone(), false));
                }
            }
        }

        let terminal = pb::Op {
            inputs: vec![self.input(head)],
            ..Default::default()
        }
        .encode_to_vec();
        let terminal_digest = Digest::of_bytes(&terminal);
        let mut md = self
            .metadata
            .get(terminal_digest.as_str())
            .cloned()
            .unwrap_or_default();
        md.caps.insert("constraints".into(), true);
        md.caps.insert("platform".into(), true);
        for m in self.metadata.values() {
            if m.ignore_cache {
                md.caps.insert("meta.ignorecache".into(), true);
            }
            if !m.description.is_empty() {
                md.caps.insert("meta.description".into(), true);
            }
            if m.export_cache.is_some() {
                md.caps.insert("meta.exportcache".into(), true);
            }
        }
        self.metadata.insert(terminal_digest.to_string(), md);
        self.def.push(terminal);

        let infos = self
            .maps
            .iter()
            .map(|m| pb::SourceInfo {
                filename: m.filename.clone(),
                data: m.data.clone(),
                definition: m.definition.clone(),
                language: m.language.clone(),
            })
            .collect();
        Ok(pb::Definition {
            def: self.def,
            metadata: self.metadata,
            source: Some(pb::Source {
                locations: self.locations,
                infos,
            }),
        })
    }

    fn emit(&mut self, v: &Arc<Vertex>) -> Result<(), BuildError> {
        let mut c: Constraints = v.constraints.clone();
        let platform = c
            .platform
            .clone()
            .or_else(|| self.opts.platform.clone())
            .unwrap_or_else(linux_amd64);
        let mut op = pb::Op::default();
        let keep_platform = match &v.kind {
            VertexKind::Source(s) => {
                op.op = Some(pb::op::Op::Source(super::source::to_pb(s)));
                s.is_platform_specific()
            }
            VertexKind::Exec(e) => {
                let os = self
                    .opts
                    .platform
                    .as_ref()
                    .or(c.platform.as_ref())
                    .map_or("linux", |p| p.os.as_str())
                    .to_owned();
                let (inputs, exec) = e.render(self, &mut c, &os);
                op.inputs = inputs;
                op.op = Some(pb::op::Op::Exec(exec));
                true
            }
            VertexKind::File(f) => {
                let (inputs, file) = f.render(self);
                op.inputs = inputs;
                op.op = Some(pb::op::Op::File(file));
                false
            }
            VertexKind::Merge(outs) => {
                op.inputs = outs.iter().map(|o| self.input(o)).collect();
                op.op = Some(pb::op::Op::Merge(pb::MergeOp {
                    inputs: (0..outs.len() as i64)
                        .map(|input| pb::MergeInput { input })
                        .collect(),
                }));
                false
            }
            VertexKind::Diff { lower, upper } => {
                let mut side = |o: &Option<Output>| match o {
                    Some(o) => {
                        op.inputs.push(self.input(o));
                        op.inputs.len() as i64 - 1
                    }
                    None => pb::EMPTY_INPUT,
                };
                let lower = side(lower);
                let upper = side(upper);
                op.op = Some(pb::op::Op::Diff(pb::DiffOp {
                    lower: Some(pb::LowerDiffInput { input: lower }),
                    upper: Some(pb::UpperDiffInput { input: upper }),
                }));
                false
            }
        };
        if keep_platform {
            op.platform = Some(platform);
        }
        let mut filter = self.opts.worker_constraints.clone();
        filter.extend(c.worker_constraints.iter().cloned());
        op.constraints = Some(pb::WorkerConstraints { filter });

        let bytes = op.encode_to_vec();
        let digest = Digest::of_bytes(&bytes);
        let md = merge_metadata(&self.opts.metadata, &c.metadata);
        let entry = self.metadata.entry(digest.to_string()).or_default();
        *entry = merge_metadata(entry, &md);
        for loc in &c.source_locations {
            let idx = match self.maps.iter().position(|m| **m == *loc.source_map) {
                Some(i) => i,
                None => {
                    self.maps.push(loc.source_map.clone());
                    self.maps.len() - 1
                }
            };
            self.locations
                .entry(digest.to_string())
                .or_default()
                .locations
                .push(pb::Location {
                    source_index: idx as i32,
                    ranges: loc.ranges.clone(),
                });
        }
        if self.seen.insert(digest.clone()) {
            self.def.push(bytes);
        }
        self.done.insert(key(v), digest);
        Ok(())
    }
}
