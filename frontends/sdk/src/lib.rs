//! kiln frontend SDK.
