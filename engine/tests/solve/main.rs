//! End-to-end solves of hand-built LLB against a temp state root.

mod defs;
mod exec;
mod export;
// File ops run on two paths: a hardlink farm of the base (rootless, `Copy`)
// and an overlay mount of it (as root): every file test runs on both.
mod files {
    use crate::engine_copy as engine;
    include!("files.rs");
}
mod files_overlay {
    use crate::engine_overlay as engine;
    include!("files.rs");
}
mod escapes {
    use crate::engine_copy as engine;
    include!("escapes.rs");
}
mod escapes_overlay {
    use crate::engine_overlay as engine;
    include!("escapes.rs");
}
mod git;
mod graph;
mod http;
mod procs;
mod registry;
mod runc;

use std::path::Path;
use std::sync::Arc;

use kiln_engine::progress::SharedBuf;
use kiln_engine::{Engine, EngineConfig, Progress, ProgressMode, Session};

pub fn engine(root: &Path) -> Arc<Engine> {
    engine_copy(root)
}

/// An engine whose ops work on copies (no mounts).
pub fn engine_copy(root: &Path) -> Arc<Engine> {
    engine_mode(root, kiln_engine::ops::RootfsMode::Copy)
}

/// An engine whose file ops work on overlay mounts, as kiln does as root
/// (falls back to copies when not root).
pub fn engine_overlay(root: &Path) -> Arc<Engine> {
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() == 0 };
    engine_mode(
        root,
        if root_user {
            kiln_engine::ops::RootfsMode::Overlay
        } else {
            kiln_engine::ops::RootfsMode::Copy
        },
    )
}

fn engine_mode(root: &Path, mode: kiln_engine::ops::RootfsMode) -> Arc<Engine> {
    Engine::open(
        root,
        EngineConfig {
            max_parallelism: 4,
            executor: None,
            rootfs_mode: Some(mode),
            ..Default::default()
        },
    )
    .unwrap()
}

pub fn session(locals: &[(&str, &Path)]) -> (Arc<Session>, SharedBuf) {
    let (p, buf) = Progress::capture(ProgressMode::Plain);
    let mut s = Session::new(p);
    for (n, d) in locals {
        s.locals.insert((*n).to_owned(), d.to_path_buf());
    }
    (Arc::new(s), buf)
}

pub fn session_with(
    f: impl FnOnce(&mut Session),
    locals: &[(&str, &Path)],
) -> (Arc<Session>, SharedBuf) {
    let (p, buf) = Progress::capture(ProgressMode::Plain);
    let mut s = Session::new(p);
    for (n, d) in locals {
        s.locals.insert((*n).to_owned(), d.to_path_buf());
    }
    f(&mut s);
    (Arc::new(s), buf)
}

pub fn count(text: &str, what: &str) -> usize {
    text.lines().filter(|l| l.contains(what)).count()
}

/// The error and all its causes, `: `-joined.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
