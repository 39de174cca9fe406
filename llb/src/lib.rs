//! BuildKit-compatible LLB for kiln: the `ops.proto` messages, vertex
//! digests, checked `Definition` decoding, a State-style builder for
//! frontends and `dump-llb` style dumps.
//!
//! * [`pb`] — the protobuf messages, byte-identical to Go's deterministic
//!   marshal.
//! * [`Digest`] — `sha256:<hex>` of an op's exact bytes.
//! * [`Definition`] — decode untrusted bytes into a checked graph and encode
//!   it back.
//! * [`builder`] — build graphs ([`builder::image`], [`builder::State::run`],
//!   [`builder::State::file`], ...) and marshal them.
//! * [`dump`] — `buildctl debug dump-llb` JSON lines and `--dot` output.
//!
//! The crate has no I/O, clock or randomness, so it builds for
//! `wasm32-wasip2` frontends as well as for the host.
//!
//! ```
//! use kiln_llb::builder::{self, MarshalOptions};
//! use kiln_llb::{Definition, dump};
//! use prost::Message;
//!
//! let base = builder::image("alpine").unwrap().state();
//! let built = base.run_shell("echo hi > /greeting").build().unwrap().root();
//! let bytes = built.marshal(&MarshalOptions::default()).unwrap().encode_to_vec();
//!
//! let def = Definition::decode(&bytes).unwrap();
//! assert_eq!(def.ops().len(), 2);
//! assert_eq!(dump::dump_json_lines(&def).lines().count(), 3);
//! ```

#![warn(missing_docs)]

pub mod builder;
pub mod definition;
pub mod digest;
pub mod dump;
pub mod pb;

pub use definition::{Definition, DefinitionError, OpEntry};
pub use digest::{Digest, DigestParseError};
/// The protobuf runtime the [`pb`] types implement ([`prost::Message`] for
/// `encode_to_vec` / `decode`), re-exported so users need no version match.
pub use prost;
