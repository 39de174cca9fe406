//! Merge and diff ops.

use super::state::{Output, State};
use super::{Constraints, Vertex, VertexKind};

/// Merges states, later ones on top. Scratch inputs are dropped; with none
/// left the result is scratch, with one it is that state unchanged.
pub fn merge(inputs: &[State]) -> State {
    merge_with(inputs, Constraints::default())
}

/// [`merge`] with op constraints.
pub fn merge_with(inputs: &[State], mut constraints: Constraints) -> State {
    let kept: Vec<&State> = inputs.iter().filter(|s| !s.is_scratch()).collect();
    match kept.as_slice() {
        [] => State::scratch(),
        [one] => (*one).clone(),
        _ => {
            constraints.add_cap("mergeop");
            let outputs = kept.iter().filter_map(|s| s.output().cloned()).collect();
            let vertex = Vertex {
                kind: VertexKind::Merge(outputs),
                constraints,
            };
            kept[0].with_output(Some(Output::new(vertex, 0)))
        }
    }
}

/// The changes that turn `lower` into `upper` (the result keeps `lower`'s
/// settings). A scratch `lower` gives `upper` itself; two scratch states
/// give scratch.
pub fn diff(lower: &State, upper: &State) -> State {
    diff_with(lower, upper, Constraints::default())
}

/// [`diff`] with op constraints.
pub fn diff_with(lower: &State, upper: &State, mut constraints: Constraints) -> State {
    if lower.is_scratch() {
        return upper.clone();
    }
    constraints.add_cap("diffop");
    let vertex = Vertex {
        kind: VertexKind::Diff {
            lower: lower.output().cloned(),
            upper: upper.output().cloned(),
        },
        constraints,
    };
    lower.with_output(Some(Output::new(vertex, 0)))
}
