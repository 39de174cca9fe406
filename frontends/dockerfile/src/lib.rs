//! The dockerfile.v0 frontend.
