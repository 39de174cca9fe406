//! kiln: a build engine in the BuildKit mould whose frontends are
//! WebAssembly components.
//!
//! This crate holds the layers above the engine: the frontend runtime
//! (`frontend`), the one in-process API (`control`), the command line
//! (`cli`), the daemon serving `control` over gRPC (`daemon`) and its client
//! (`remote`). The engine itself lives in `kiln-engine`, `kiln-store` and
//! `kiln-runtime`.

pub mod builtin;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod frontend;
pub mod remote;
