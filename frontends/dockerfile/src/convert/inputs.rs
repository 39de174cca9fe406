//! `context:NAME=input:INPUT`: named contexts backed by a caller-provided
//! definition.
//!
//! The builder cannot start a graph from an existing `pb.Definition`, so
//! the conversion uses a placeholder `local://kiln.input/INPUT` source and,
//! after marshaling, splices the input's ops in: the placeholder is
//! dropped, edges to it are pointed at the input's head, and the digests of
//! the ops that changed (and everything after them) are recomputed along
//! with their metadata and source locations.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine as _;
use kiln_frontend::FrontendError;
use kiln_frontend::llb::builder::{self, State};
use kiln_frontend::llb::{Digest, pb};
use prost::Message;

use super::image::ImageSpec;

/// Identifier prefix of placeholder sources.
const PREFIX: &str = "local://kiln.input/";

/// The placeholder state for input `name`.
pub(crate) fn placeholder(name: &str) -> State {
    builder::local(format!("kiln.input/{name}")).state()
}

/// The image config from `input-metadata:NAME` (a JSON object whose
/// `containerimage.config` is base64), if any.
pub(crate) fn input_image(metadata: Option<&String>) -> Result<Option<ImageSpec>, String> {
    let Some(md) = metadata else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(md)
        .map_err(|e| format!("failed to parse input metadata {md}: {e}"))?;
    let Some(cfg) = v.get("containerimage.config").and_then(|c| c.as_str()) else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cfg)
        .map_err(|e| format!("input metadata containerimage.config is not base64: {e}"))?;
    ImageSpec::parse(&bytes).map(Some)
}

fn digest(bytes: &[u8]) -> String {
    Digest::of_bytes(bytes).to_string()
}

/// Replaces placeholder sources with the ops of the inputs they name.
pub(crate) fn splice(
    def: pb::Definition,
    inputs: &BTreeMap<String, Vec<u8>>,
) -> Result<pb::Definition, FrontendError> {
    let ops: Vec<pb::Op> = def
        .def
        .iter()
        .map(|b| pb::Op::decode(b.as_slice()))
        .collect::<Result<_, _>>()
        .map_err(|e| FrontendError::new(format!("decoding the converted LLB: {e}")))?;
    let is_placeholder = |op: &pb::Op| match &op.op {
        Some(pb::op::Op::Source(s)) => s.identifier.strip_prefix(PREFIX).map(str::to_string),
        _ => None,
    };
    if !ops.iter().any(|o| is_placeholder(o).is_some()) {
        return Ok(def);
    }

    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut metadata: BTreeMap<String, pb::OpMetadata> = BTreeMap::new();
    let mut source = def.source.clone().unwrap_or_default();
    let mut locations: BTreeMap<String, pb::Locations> = BTreeMap::new();
    let mut heads: HashMap<String, pb::Input> = HashMap::new();

    // The inputs' ops first (without their terminal ops).
    for (bytes, op) in def.def.iter().zip(&ops) {
        let Some(name) = is_placeholder(op) else {
            continue;
        };
        let data = inputs
            .get(&name)
            .ok_or_else(|| FrontendError::new(format!("invalid input {name}")))?;
        let input = pb::Definition::decode(data.as_slice())
            .map_err(|e| FrontendError::new(format!("input {name} is not a definition: {e}")))?;
        let Some((terminal, body)) = input.def.split_last() else {
            return Err(FrontendError::new(format!(
                "input {name} is an empty definition"
            )));
        };
        let head = pb::Op::decode(terminal.as_slice())
            .ok()
            .and_then(|t| t.inputs.first().cloned())
            .ok_or_else(|| FrontendError::new(format!("input {name} has no result")))?;
        heads.insert(digest(bytes), head);
        let offset = source.infos.len() as i32;
        if let Some(src) = &input.source {
            source.infos.extend(src.infos.iter().cloned());
            for (k, l) in &src.locations {
                let mut l = l.clone();
                for loc in &mut l.locations {
                    loc.source_index += offset;
                }
                locations
                    .entry(k.clone())
                    .or_default()
                    .locations
                    .extend(l.locations);
            }
        }
        for b in body {
            let d = digest(b);
            if seen.insert(d.clone()) {
                if let Some(m) = input.metadata.get(&d) {
                    metadata.insert(d, m.clone());
                }
                out.push(b.clone());
            }
        }
    }

    // Then the converted ops, re-pointed at the inputs' heads.
    let mut remap: HashMap<String, String> = HashMap::new();
    for (bytes, mut op) in def.def.iter().cloned().zip(ops) {
        let old = digest(&bytes);
        if heads.contains_key(&old) {
            continue;
        }
        let mut changed = false;
        for inp in &mut op.inputs {
            if let Some(h) = heads.get(&inp.digest) {
                *inp = pb::Input {
                    digest: h.digest.clone(),
                    index: h.index + inp.index,
                };
                changed = true;
            } else if let Some(n) = remap.get(&inp.digest) {
                inp.digest = n.clone();
                changed = true;
            }
        }
        let new_bytes = if changed { op.encode_to_vec() } else { bytes };
        let new = digest(&new_bytes);
        if new != old {
            remap.insert(old.clone(), new.clone());
        }
        if let Some(m) = def.metadata.get(&old) {
            metadata.insert(new.clone(), m.clone());
        }
        if let Some(l) = def.source.as_ref().and_then(|s| s.locations.get(&old)) {
            locations.insert(new.clone(), l.clone());
        }
        if seen.insert(new) {
            out.push(new_bytes);
        }
    }
    source.locations = locations;
    Ok(pb::Definition {
        def: out,
        metadata,
        source: Some(source),
    })
}
