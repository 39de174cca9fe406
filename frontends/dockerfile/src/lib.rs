//! The dockerfile.v0 frontend.

pub mod instructions;
pub mod parser;
pub mod shell;
