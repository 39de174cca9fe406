//! The buildpacks.v0 frontend.
