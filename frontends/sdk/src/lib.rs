//! # kiln-frontend: write kiln frontends in Rust
//!
//! A kiln frontend is a WebAssembly component that turns some input (a
//! Dockerfile, an application tree, anything) into LLB, the build graph that
//! kiln solves. kiln runs the component in a sandbox: it has no filesystem,
//! no network and no environment of its own. Everything it reads comes
//! through the [`Gateway`]: frontend options, named inputs, files of solved
//! results (such as the `context` and `dockerfile` locals), image configs.
//!
//! ## A whole frontend
//!
//! ```
//! use kiln_frontend::llb::builder::{MarshalOptions, local};
//! use kiln_frontend::{BuildResult, Frontend, FrontendError, Gateway};
//!
//! struct Hello;
//!
//! impl Frontend for Hello {
//!     fn build(gw: &dyn Gateway) -> Result<BuildResult, FrontendError> {
//!         // Read `hello.txt` from the `context` local.
//!         let ctx = local("context").state();
//!         let def = ctx.marshal_to_vec(&MarshalOptions::default())?;
//!         let handle = gw.solve(&def, true)?;
//!         let text = gw.read_file(&handle, "hello.txt", 0, None)?;
//!         gw.log(&format!("read {} bytes", text.len()));
//!         // Return the context itself as the result.
//!         Ok(BuildResult::single(handle))
//!     }
//! }
//!
//! // In the frontend crate (a `cdylib` built for `wasm32-wasip2`):
//! kiln_frontend::export_frontend!(Hello);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` and run it:
//! `kiln build --frontend gateway.v0 --opt source=target/wasm32-wasip2/release/hello.wasm --local context=.`.
//!
//! ## Testing natively
//!
//! Frontend logic takes a `&dyn Gateway`, so unit tests run on the host with
//! [`testing::MockGateway`], no WebAssembly involved.
//!
//! ## Errors and locations
//!
//! Return [`FrontendError`] with a [`Location`] to point at the user's input
//! (`Dockerfile:12`); kiln prints the file, the line and the line's text.

#![warn(missing_docs)]

pub use kiln_llb as llb;

mod types;
pub use types::*;

pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;

/// What a frontend can ask of kiln while it builds.
///
/// Handles returned by [`Gateway::solve`] name results that the other calls
/// (and [`BuildResult`]) refer to.
pub trait Gateway {
    /// Frontend options (`--opt k=v`), sorted by key.
    fn options(&self) -> Vec<(String, String)>;
    /// Named inputs given by the caller: name and encoded `pb.Definition`.
    fn inputs(&self) -> Vec<(String, Vec<u8>)>;
    /// Submit an encoded `pb.Definition`; returns a handle for its result.
    /// With `evaluate` the host solves it before returning.
    fn solve(&self, definition: &[u8], evaluate: bool) -> Result<String, FrontendError>;
    /// Read `length` bytes (or to the end) from `offset` of a file in a result.
    fn read_file(
        &self,
        handle: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Vec<u8>, FrontendError>;
    /// List a directory of a result, optionally filtered by a name glob.
    fn read_dir(
        &self,
        handle: &str,
        path: &str,
        include_pattern: Option<&str>,
    ) -> Result<Vec<FileStat>, FrontendError>;
    /// Stat one path of a result (symlinks are not followed).
    fn stat_file(&self, handle: &str, path: &str) -> Result<FileStat, FrontendError>;
    /// Resolve an image reference to its digest and config JSON.
    /// `resolve_mode` is `default`, `pull` or `local`.
    fn resolve_image_config(
        &self,
        reference: &str,
        platform: Option<&Platform>,
        resolve_mode: &str,
    ) -> Result<ImageConfig, FrontendError>;
    /// A warning for the user, optionally with a detail and a location.
    fn warn(&self, message: &str, detail: Option<&str>, location: Option<&Location>);
    /// A line for the progress log.
    fn log(&self, message: &str);
}

/// A frontend: one function from the gateway's inputs to a result.
pub trait Frontend {
    /// Run the build.
    fn build(gateway: &dyn Gateway) -> Result<BuildResult, FrontendError>;
}

/// The options as a map, a convenience over [`Gateway::options`].
pub fn options_map(gw: &dyn Gateway) -> std::collections::BTreeMap<String, String> {
    gw.options().into_iter().collect()
}

/// Export a [`Frontend`] implementation as the component's `build`.
///
/// Use it once, at the top level of a `cdylib` crate built for
/// `wasm32-wasip2`. On other targets it expands to nothing, so the same
/// crate also builds natively for tests.
#[macro_export]
macro_rules! export_frontend {
    ($frontend:ty) => {
        // Natively the component export does not exist; naming the build
        // function keeps the frontend from looking like dead code.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn(
            &dyn $crate::Gateway,
        ) -> ::core::result::Result<$crate::BuildResult, $crate::FrontendError> =
            <$frontend as $crate::Frontend>::build;
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct KilnFrontendExport;
            impl $crate::guest::bindings::Guest for KilnFrontendExport {
                fn build() -> ::core::result::Result<
                    $crate::guest::bindings::kiln::gateway::types::BuildResult,
                    $crate::guest::bindings::kiln::gateway::types::FrontendError,
                > {
                    $crate::guest::run::<$frontend>()
                }
            }
            $crate::guest::bindings::export!(KilnFrontendExport with_types_in $crate::guest::bindings);
        };
    };
}
