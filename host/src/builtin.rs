//! The built-in frontends, compiled to `wasm32-wasip2` by the build script
//! and embedded in the binary.

/// Names of the built-in frontends, in the order `--help` lists them.
pub const NAMES: &[&str] = &["dockerfile.v0", "buildpacks.v0"];

#[cfg(feature = "embed-frontends")]
static DOCKERFILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln_dockerfile.wasm"));
#[cfg(feature = "embed-frontends")]
static BUILDPACKS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln_buildpacks.wasm"));

/// The component bytes of a built-in frontend, by name.
///
/// `Err` says why a known name is unavailable (the binary was built without
/// embedding); `Ok(None)` means the name is not a built-in.
pub fn get(name: &str) -> Result<Option<&'static [u8]>, String> {
    #[cfg(feature = "embed-frontends")]
    {
        Ok(match name {
            "dockerfile.v0" | "dockerfile" => Some(DOCKERFILE),
            "buildpacks.v0" | "buildpacks" => Some(BUILDPACKS),
            _ => None,
        })
    }
    #[cfg(not(feature = "embed-frontends"))]
    {
        if NAMES.contains(&name) {
            return Err(format!(
                "{name} is not embedded in this kiln: it was built without the \
                 `embed-frontends` feature; load it by path with --frontend gateway.v0 --opt source=FILE"
            ));
        }
        Ok(None)
    }
}
