//! The buildpacks.v0 frontend: Cloud Native Buildpacks (Buildpack API
//! 0.9–0.12) without the lifecycle binary and without network.
//!
//! The app (`--local context`), the buildpacks (`--local buildpacks`, laid
//! out `<id with / as _>/<version>/`) and an order become LLB: one exec per
//! `bin/detect` and per `bin/build` in the build image, solved step by step
//! and read back through the gateway; the frontend itself resolves the
//! build plan, tracks layers and computes the environments. The result is
//! the run image plus one layer per launch layer, the app and
//! `/layers/config/metadata.toml`, with the default process and its launch
//! environment baked into the image config (there is no launcher).
//!
//! Modules: [`options`], [`project`], [`descriptor`] and [`order`] read the
//! inputs; [`detect`] resolves groups and plans; [`env`](mod@env) and [`layers`]
//! hold the env-file and layer rules; [`steps`] builds the LLB; [`image`]
//! writes the config and labels; [`frontend`] drives the gateway.

pub mod descriptor;
pub mod detect;
pub mod env;
pub mod frontend;
pub mod image;
pub mod layers;
pub mod options;
pub mod order;
pub mod project;
pub mod steps;
pub mod tomlx;

/// The built-in `buildpacks.v0` frontend.
pub struct BuildpacksFrontend;

impl kiln_frontend::Frontend for BuildpacksFrontend {
    fn build(
        gw: &dyn kiln_frontend::Gateway,
    ) -> Result<kiln_frontend::BuildResult, kiln_frontend::FrontendError> {
        frontend::run(gw)
    }
}

kiln_frontend::export_frontend!(BuildpacksFrontend);
