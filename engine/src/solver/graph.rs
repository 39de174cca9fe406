//! The vertex graph of one solve: validated, deduplicated by digest and
//! topologically ordered.

use std::collections::HashMap;

/// Why a graph cannot be solved.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The definition bytes do not decode.
    #[error("invalid LLB definition: {reason}")]
    Decode {
        /// What failed to decode.
        reason: String,
    },
    /// The definition has no ops.
    #[error("invalid LLB definition: no ops")]
    Empty,
    /// A vertex names an input digest that is not in the definition.
    #[error("vertex {digest} refers to input {input}, which is not in the definition")]
    MissingInput {
        /// The referring vertex.
        digest: String,
        /// The missing digest.
        input: String,
    },
    /// An input index is negative or past the producing op's outputs.
    #[error("vertex {digest} refers to output {index} of an input, which does not exist")]
    BadOutputIndex {
        /// The referring vertex.
        digest: String,
        /// The bad index.
        index: i64,
    },
    /// The inputs form a cycle.
    #[error("the definition has a cycle through vertex {digest}")]
    Cycle {
        /// A vertex on the cycle.
        digest: String,
    },
    /// A vertex cannot be turned into an op.
    #[error("vertex {name} ({digest}): {reason}")]
    Unsupported {
        /// The vertex.
        digest: String,
        /// Its display name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// A vertex as loaded from a definition, before ordering.
pub struct VertexSpec<O> {
    /// Vertex digest (`sha256:…`).
    pub digest: String,
    /// Display name.
    pub name: String,
    /// Inputs as (digest, output index).
    pub inputs: Vec<(String, i64)>,
    /// Number of outputs of this vertex.
    pub outputs: usize,
    /// `ignore_cache` from the op metadata.
    pub ignore_cache: bool,
    /// The op.
    pub op: O,
}

/// A vertex in a validated graph.
pub struct OrderedVertex<O> {
    /// Vertex digest.
    pub digest: String,
    /// Display name.
    pub name: String,
    /// Inputs as (position in `Graph::vertices`, output index).
    pub inputs: Vec<(usize, usize)>,
    /// Input digests, for progress.
    pub input_digests: Vec<String>,
    /// `ignore_cache` from the op metadata.
    pub ignore_cache: bool,
    /// The op.
    pub op: O,
}

/// A validated graph: vertices reachable from the head, inputs first.
pub struct Graph<O> {
    /// Vertices in topological order.
    pub vertices: Vec<OrderedVertex<O>>,
    head: (usize, usize),
}

impl<O> Graph<O> {
    /// Validates `specs` and orders the vertices reachable from
    /// `(head_digest, head_index)`.
    pub fn new(
        specs: Vec<VertexSpec<O>>,
        head_digest: &str,
        head_index: i64,
    ) -> Result<Graph<O>, GraphError> {
        if specs.is_empty() {
            return Err(GraphError::Empty);
        }
        let mut by_digest: HashMap<String, usize> = HashMap::new();
        let mut slots: Vec<Option<VertexSpec<O>>> = Vec::new();
        for s in specs {
            // Identical ops share a digest: keep one.
            if !by_digest.contains_key(&s.digest) {
                by_digest.insert(s.digest.clone(), slots.len());
                slots.push(Some(s));
            }
        }
        let &head = by_digest
            .get(head_digest)
            .ok_or_else(|| GraphError::MissingInput {
                digest: "(terminal)".into(),
                input: head_digest.to_owned(),
            })?;
        let outputs = |i: usize, slots: &[Option<VertexSpec<O>>]| {
            slots[i].as_ref().map(|s| s.outputs).unwrap_or(0)
        };
        if head_index < 0 || head_index as usize >= outputs(head, &slots) {
            return Err(GraphError::BadOutputIndex {
                digest: head_digest.to_owned(),
                index: head_index,
            });
        }
        // Iterative post-order DFS with colours for cycle detection.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut mark = vec![Mark::New; slots.len()];
        let mut order: Vec<usize> = Vec::new();
        let mut stack: Vec<(usize, usize)> = vec![(head, 0)];
        mark[head] = Mark::Active;
        while let Some(&(v, next)) = stack.last() {
            let spec = slots[v].as_ref().expect("slot present until moved");
            if next < spec.inputs.len() {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                let (ref d, idx) = spec.inputs[next];
                let &u = by_digest.get(d).ok_or_else(|| GraphError::MissingInput {
                    digest: spec.digest.clone(),
                    input: d.clone(),
                })?;
                if idx < 0 || idx as usize >= outputs(u, &slots) {
                    return Err(GraphError::BadOutputIndex {
                        digest: spec.digest.clone(),
                        index: idx,
                    });
                }
                match mark[u] {
                    Mark::New => {
                        mark[u] = Mark::Active;
                        stack.push((u, 0));
                    }
                    Mark::Active => {
                        return Err(GraphError::Cycle { digest: d.clone() });
                    }
                    Mark::Done => {}
                }
            } else {
                mark[v] = Mark::Done;
                order.push(v);
                stack.pop();
            }
        }
        let mut pos: HashMap<usize, usize> = HashMap::new();
        let mut vertices = Vec::with_capacity(order.len());
        for (p, &v) in order.iter().enumerate() {
            pos.insert(v, p);
            let spec = slots[v].take().expect("each vertex is ordered once");
            let inputs = spec
                .inputs
                .iter()
                .map(|(d, i)| (pos[&by_digest[d]], *i as usize))
                .collect();
            vertices.push(OrderedVertex {
                digest: spec.digest,
                name: spec.name,
                input_digests: spec.inputs.into_iter().map(|(d, _)| d).collect(),
                inputs,
                ignore_cache: spec.ignore_cache,
                op: spec.op,
            });
        }
        let head = (pos[&head], head_index as usize);
        Ok(Graph { vertices, head })
    }

    /// Position of the head vertex and its selected output.
    pub fn head(&self) -> (usize, usize) {
        self.head
    }
}
