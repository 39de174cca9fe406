//! The WebAssembly side: bindings generated from `wit/gateway.wit` and the
//! adapter between them and the [`crate::Gateway`] trait.

use crate::{FileStat, Frontend, FrontendError, ImageConfig, Location, Platform};

#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "frontend",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "kiln_frontend::guest::bindings",
    });
}

use bindings::kiln::gateway::{gateway as gw, types as t};

fn err_from(e: t::FrontendError) -> FrontendError {
    FrontendError {
        message: e.message,
        location: e.location.map(loc_from),
    }
}

fn loc_from(l: t::Location) -> Location {
    Location {
        file: l.file,
        start_line: l.start_line,
        end_line: l.end_line,
    }
}

fn loc_to(l: &Location) -> t::Location {
    t::Location {
        file: l.file.clone(),
        start_line: l.start_line,
        end_line: l.end_line,
    }
}

fn stat_from(s: t::FileStat) -> FileStat {
    FileStat {
        path: s.path,
        mode: s.mode,
        size: s.size,
        mtime_ns: s.mtime_ns,
        linkname: s.linkname,
        uid: s.uid,
        gid: s.gid,
    }
}

/// The gateway of the running component.
pub struct HostGateway;

impl crate::Gateway for HostGateway {
    fn options(&self) -> Vec<(String, String)> {
        gw::options()
    }

    fn inputs(&self) -> Vec<(String, Vec<u8>)> {
        gw::inputs()
            .into_iter()
            .map(|i| (i.name, i.definition))
            .collect()
    }

    fn solve(&self, definition: &[u8], evaluate: bool) -> Result<String, FrontendError> {
        gw::solve(definition, evaluate).map_err(err_from)
    }

    fn read_file(
        &self,
        handle: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Vec<u8>, FrontendError> {
        gw::read_file(handle, path, offset, length).map_err(err_from)
    }

    fn read_dir(
        &self,
        handle: &str,
        path: &str,
        include_pattern: Option<&str>,
    ) -> Result<Vec<FileStat>, FrontendError> {
        gw::read_dir(handle, path, include_pattern)
            .map(|v| v.into_iter().map(stat_from).collect())
            .map_err(err_from)
    }

    fn stat_file(&self, handle: &str, path: &str) -> Result<FileStat, FrontendError> {
        gw::stat_file(handle, path).map(stat_from).map_err(err_from)
    }

    fn resolve_image_config(
        &self,
        reference: &str,
        platform: Option<&Platform>,
        resolve_mode: &str,
    ) -> Result<ImageConfig, FrontendError> {
        let p = platform.map(|p| t::Platform {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            cpu_variant: p.variant.clone(),
        });
        gw::resolve_image_config(reference, p.as_ref(), resolve_mode)
            .map(|c| ImageConfig {
                canonical_ref: c.canonical_ref,
                digest: c.digest,
                config: c.config,
            })
            .map_err(err_from)
    }

    fn warn(&self, message: &str, detail: Option<&str>, location: Option<&Location>) {
        let l = location.map(loc_to);
        gw::warn(message, detail, l.as_ref());
    }

    fn log(&self, message: &str) {
        gw::log(message);
    }
}

/// Run a [`Frontend`] against the host and convert its result. Used by
/// [`crate::export_frontend!`].
pub fn run<F: Frontend>() -> Result<t::BuildResult, t::FrontendError> {
    match F::build(&HostGateway) {
        Ok(r) => Ok(t::BuildResult {
            refs: r
                .refs
                .into_iter()
                .map(|(platform, handle)| t::ResultRef { platform, handle })
                .collect(),
            metadata: r.metadata,
        }),
        Err(e) => Err(t::FrontendError {
            message: e.message,
            location: e.location.as_ref().map(loc_to),
        }),
    }
}
