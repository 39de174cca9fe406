//! BuildKit-compatible LLB: the `ops.proto` messages, digests, `Definition`
//! encoding and a builder API for frontends.

pub mod builder;
pub mod definition;
pub mod digest;
pub mod dump;
pub mod pb;

pub use definition::{Definition, DefinitionError, OpEntry};
pub use digest::{Digest, DigestParseError};
