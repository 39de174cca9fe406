//! The dockerfile.v0 frontend.

pub mod convert;
pub mod instructions;
pub mod parser;
pub mod shell;

/// The built-in `dockerfile.v0` frontend.
pub struct DockerfileFrontend;

impl kiln_frontend::Frontend for DockerfileFrontend {
    fn build(
        gw: &dyn kiln_frontend::Gateway,
    ) -> Result<kiln_frontend::BuildResult, kiln_frontend::FrontendError> {
        convert::convert(gw)
    }
}

kiln_frontend::export_frontend!(DockerfileFrontend);
