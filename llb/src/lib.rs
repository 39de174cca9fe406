//! BuildKit-compatible LLB: the `ops.proto` messages, digests, `Definition`
//! encoding and a builder API for frontends.

pub mod pb;
