//! A [`Gateway`] for native unit tests of frontend logic.
//!
//! [`MockGateway`] serves options, named inputs and files from memory. A
//! `solve` records the definition and returns a handle; files are looked up
//! by local name, so a frontend that solves `local://context` and reads
//! `Dockerfile` from the handle sees the files added with
//! [`MockGateway::with_file`].

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::{FileStat, FrontendError, Gateway, ImageConfig, Location, Platform};

/// An in-memory gateway.
#[derive(Default)]
pub struct MockGateway {
    options: BTreeMap<String, String>,
    inputs: Vec<(String, Vec<u8>)>,
    /// local name → path → content
    files: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    images: BTreeMap<String, ImageConfig>,
    solved: RefCell<Vec<Vec<u8>>>,
    handle_locals: RefCell<BTreeMap<String, String>>,
    /// Warnings received, as `(message, location)`.
    pub warnings: RefCell<Vec<(String, Option<Location>)>>,
    /// Log lines received.
    pub logs: RefCell<Vec<String>>,
}

impl MockGateway {
    /// An empty gateway.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a frontend option.
    pub fn with_option(mut self, k: &str, v: &str) -> Self {
        self.options.insert(k.to_string(), v.to_string());
        self
    }

    /// Add a file to a local (e.g. `("dockerfile", "Dockerfile", b"FROM scratch")`).
    pub fn with_file(mut self, local: &str, path: &str, content: &[u8]) -> Self {
        self.files
            .entry(local.to_string())
            .or_default()
            .insert(path.trim_start_matches('/').to_string(), content.to_vec());
        self
    }

    /// Answer `resolve_image_config` for `reference` with this config JSON.
    pub fn with_image(mut self, reference: &str, config: &[u8]) -> Self {
        self.images.insert(
            reference.to_string(),
            ImageConfig {
                canonical_ref: reference.to_string(),
                digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                    .to_string(),
                config: config.to_vec(),
            },
        );
        self
    }

    /// Add a named input.
    pub fn with_input(mut self, name: &str, definition: Vec<u8>) -> Self {
        self.inputs.push((name.to_string(), definition));
        self
    }

    /// The definitions passed to `solve`, in order.
    pub fn solved(&self) -> Vec<Vec<u8>> {
        self.solved.borrow().clone()
    }

    fn local_of(&self, handle: &str) -> Result<String, FrontendError> {
        self.handle_locals
            .borrow()
            .get(handle)
            .cloned()
            .ok_or_else(|| FrontendError::new(format!("handle {handle} reads no local")))
    }
}

/// The `local://NAME` that a definition's output is, if it is one.
fn local_name(def: &[u8]) -> Option<String> {
    use decode::decode_definition;
    use kiln_llb::pb;
    let d = decode_definition(def)?;
    let ops: Vec<pb::Op> = d.def.iter().filter_map(|b| decode::decode_op(b)).collect();
    ops.iter().find_map(|op| match &op.op {
        Some(pb::op::Op::Source(s)) => s.identifier.strip_prefix("local://").map(str::to_string),
        _ => None,
    })
}

mod decode {
    use kiln_llb::pb;
    use prost::Message;

    pub fn decode_definition(b: &[u8]) -> Option<pb::Definition> {
        pb::Definition::decode(b).ok()
    }

    pub fn decode_op(b: &[u8]) -> Option<pb::Op> {
        pb::Op::decode(b).ok()
    }
}

impl Gateway for MockGateway {
    fn options(&self) -> Vec<(String, String)> {
        self.options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn inputs(&self) -> Vec<(String, Vec<u8>)> {
        self.inputs.clone()
    }

    fn solve(&self, definition: &[u8], _evaluate: bool) -> Result<String, FrontendError> {
        let mut solved = self.solved.borrow_mut();
        solved.push(definition.to_vec());
        let handle = format!("mock-{}", solved.len());
        if let Some(name) = local_name(definition) {
            self.handle_locals.borrow_mut().insert(handle.clone(), name);
        }
        Ok(handle)
    }

    fn read_file(
        &self,
        handle: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Vec<u8>, FrontendError> {
        let local = self.local_of(handle)?;
        let data = self
            .files
            .get(&local)
            .and_then(|f| f.get(path.trim_start_matches('/')))
            .ok_or_else(|| FrontendError::new(format!("{path}: no such file in local {local}")))?;
        let start = (offset as usize).min(data.len());
        let end = match length {
            Some(n) => start.saturating_add(n as usize).min(data.len()),
            None => data.len(),
        };
        Ok(data[start..end].to_vec())
    }

    fn read_dir(
        &self,
        handle: &str,
        path: &str,
        _include_pattern: Option<&str>,
    ) -> Result<Vec<FileStat>, FrontendError> {
        let local = self.local_of(handle)?;
        let prefix = path.trim_matches('/');
        let files = self.files.get(&local).cloned().unwrap_or_default();
        Ok(files
            .iter()
            .filter_map(|(p, data)| {
                let rest = if prefix.is_empty() {
                    p.as_str()
                } else {
                    p.strip_prefix(prefix)?.strip_prefix('/')?
                };
                (!rest.contains('/')).then(|| FileStat {
                    path: rest.to_string(),
                    mode: 0o100644,
                    size: data.len() as u64,
                    mtime_ns: 0,
                    linkname: String::new(),
                    uid: 0,
                    gid: 0,
                })
            })
            .collect())
    }

    fn stat_file(&self, handle: &str, path: &str) -> Result<FileStat, FrontendError> {
        let data = self.read_file(handle, path, 0, None)?;
        Ok(FileStat {
            path: path.to_string(),
            mode: 0o100644,
            size: data.len() as u64,
            mtime_ns: 0,
            linkname: String::new(),
            uid: 0,
            gid: 0,
        })
    }

    fn resolve_image_config(
        &self,
        reference: &str,
        _platform: Option<&Platform>,
        _resolve_mode: &str,
    ) -> Result<ImageConfig, FrontendError> {
        self.images
            .get(reference)
            .cloned()
            .ok_or_else(|| FrontendError::new(format!("{reference}: image not found")))
    }

    fn warn(&self, message: &str, _detail: Option<&str>, location: Option<&Location>) {
        self.warnings
            .borrow_mut()
            .push((message.to_string(), location.cloned()));
    }

    fn log(&self, message: &str) {
        self.logs.borrow_mut().push(message.to_string());
    }
}
