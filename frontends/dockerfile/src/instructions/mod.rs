//! Typed Dockerfile instructions (in progress).
