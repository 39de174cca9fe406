//! End-to-end solves of hand-built LLB against a temp state root.

mod defs;
mod escapes;
mod exec;
mod export;
mod files;
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
    Engine::open(
        root,
        EngineConfig {
            max_parallelism: 4,
            executor: None,
            rootfs_mode: Some(kiln_engine::ops::RootfsMode::Copy),
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
