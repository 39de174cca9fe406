//! Content store, snapshots, layer tars and image exporters.
