//! The socket an ssh mount puts in a step: a Unix socket with the owner and
//! mode the mount asks for (`uid`, `gid`, `mode`), joined to the session's
//! agent socket for as long as the step runs, as BuildKit does. A mount
//! with the defaults (root, 0600) gets the session's socket itself: root
//! in the step may use it either way.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

/// A running proxy socket; stopped and removed when dropped.
pub(crate) struct AgentProxy {
    dir: PathBuf,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentProxy {
    /// Whether a mount with these settings needs its own socket.
    pub(crate) fn needed(uid: u32, gid: u32, mode: u32) -> bool {
        uid != 0 || gid != 0 || (mode != 0 && mode & 0o7777 != 0o600)
    }

    /// A socket under `tmp` owned by `uid:gid` with `mode` (0: 0600),
    /// whose connections go to `upstream`.
    pub(crate) fn start(
        tmp: &Path,
        upstream: &Path,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<AgentProxy> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tmp.join(format!("ssh-{}", kiln_store::fsutil::random_hex()?));
        fs_err::create_dir_all(&dir)?;
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("creating the ssh socket {}", path.display()))?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .with_context(|| format!("chown {uid}:{gid} {}", path.display()))?;
        let mode = if mode == 0 { 0o600 } else { mode & 0o7777 };
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let upstream = upstream.to_path_buf();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(conn) = conn {
                        let upstream = upstream.clone();
                        std::thread::spawn(move || join(conn, &upstream));
                    }
                }
            })
        };
        Ok(AgentProxy {
            dir,
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket to mount.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies both ways between a step's connection and the agent until each
/// side has said all it has.
fn join(step: UnixStream, upstream: &Path) {
    let Ok(agent) = UnixStream::connect(upstream) else {
        return;
    };
    let (Ok(step2), Ok(agent2)) = (step.try_clone(), agent.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pump(step, agent2));
    pump(agent, step2);
    let _ = up.join();
}

fn pump(mut from: UnixStream, mut to: UnixStream) {
    let mut buf = [0u8; 16 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
