//! What a client lends its build on the daemon, asked for over the
//! session's stream while the build runs, as BuildKit's session
//! attachables are:
//!
//! - secrets: a step that mounts one makes the daemon send `NeedSecret`;
//!   the client answers with the value, which stays in the session's
//!   memory (never on the daemon's disk) and is not asked for twice;
//! - ssh agents: each `--ssh` id the client names gets a Unix socket in
//!   the session's directory; a step that connects to it opens a
//!   connection the client joins to its own agent, byte for byte.
//!
//! [`Attachments::dispatch`] routes the client's answers; when the
//! client's stream ends, [`Attachments::close`] fails what is still
//! waiting.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use kiln_engine::solver::BoxFuture;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::proto::{self, client_message::Msg as CMsg, server_message::Msg as SMsg};
use super::session::Tx;

/// What the client sent for one forwarded connection.
enum SshIn {
    Data(Vec<u8>),
    Eof,
    Error(String),
}

/// The requests of one session that wait for the client.
pub(crate) struct Attachments {
    session: u64,
    tx: Tx,
    next: AtomicU64,
    secrets: Mutex<Option<HashMap<u64, oneshot::Sender<proto::SecretValue>>>>,
    ssh: Mutex<Option<HashMap<u64, mpsc::UnboundedSender<SshIn>>>>,
    listeners: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn msg(m: SMsg) -> Result<proto::ServerMessage, tonic::Status> {
    Ok(proto::ServerMessage { msg: Some(m) })
}

impl Attachments {
    pub(crate) fn new(session: u64, tx: Tx) -> Arc<Attachments> {
        Arc::new(Attachments {
            session,
            tx,
            next: AtomicU64::new(1),
            secrets: Mutex::new(Some(HashMap::new())),
            ssh: Mutex::new(Some(HashMap::new())),
            listeners: Mutex::new(Vec::new()),
        })
    }

    /// Routes a client message that answers one of ours; anything else is
    /// a protocol error.
    pub(crate) fn dispatch(&self, m: CMsg) -> anyhow::Result<()> {
        match m {
            CMsg::Secret(v) => {
                let waiting = lock(&self.secrets)
                    .as_mut()
                    .and_then(|w| w.remove(&v.request));
                match waiting {
                    Some(w) => {
                        let _ = w.send(v);
                        Ok(())
                    }
                    None => bail!("the client answered secret request {} twice", v.request),
                }
            }
            CMsg::Ssh(d) => {
                let item = if !d.error.is_empty() {
                    SshIn::Error(d.error)
                } else if d.eof {
                    SshIn::Eof
                } else {
                    SshIn::Data(d.data)
                };
                // A connection the step already closed drops the rest.
                if let Some(c) = lock(&self.ssh).as_ref().and_then(|m| m.get(&d.conn)) {
                    let _ = c.send(item);
                }
                Ok(())
            }
            _ => bail!("the client sent a message that does not belong after its locals"),
        }
    }

    /// The client's stream ended: fail every pending secret request, end
    /// every forwarded connection and stop listening.
    pub(crate) fn close(&self) {
        lock(&self.secrets).take();
        lock(&self.ssh).take();
        for l in lock(&self.listeners).drain(..) {
            l.abort();
        }
    }

    /// Asks the client for secret `id`.
    async fn secret(&self, id: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let request = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.secrets)
            .as_mut()
            .context("the client went away")?
            .insert(request, tx);
        tracing::info!(
            session = self.session,
            secret = id,
            "asking the client for a secret"
        );
        self.tx
            .send(msg(SMsg::NeedSecret(proto::NeedSecret {
                request,
                id: id.to_string(),
            })))
            .await
            .ok()
            .context("the client went away")?;
        let v = rx
            .await
            .ok()
            .with_context(|| format!("the client went away before sending secret {id:?}"))?;
        Ok(v.found.then_some(v.value))
    }

    /// Listens for agent connections of `--ssh` id `id` on a socket at
    /// `path` (only the daemon's user may connect to it).
    pub(crate) fn listen_ssh(self: &Arc<Self>, id: &str, path: &Path) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let listener = UnixListener::bind(path)
            .with_context(|| format!("creating the ssh socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        let this = Arc::clone(self);
        let id = id.to_string();
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(session = this.session, ssh = %id, error = %e, "ssh socket accept failed");
                        return;
                    }
                };
                tokio::spawn(Arc::clone(&this).forward(id.clone(), stream));
            }
        });
        lock(&self.listeners).push(task);
        Ok(path.to_path_buf())
    }

    /// One connection from a step to agent `id`, joined to the client's
    /// agent.
    async fn forward(self: Arc<Self>, id: String, stream: UnixStream) {
        let conn = self.next.fetch_add(1, Ordering::Relaxed);
        let (in_tx, mut in_rx) = mpsc::unbounded_channel();
        match lock(&self.ssh).as_mut() {
            Some(m) => m.insert(conn, in_tx),
            None => return,
        };
        tracing::debug!(session = self.session, ssh = %id, conn, "ssh agent connection");
        let send = |d: proto::SshData| self.tx.send(msg(SMsg::Ssh(d)));
        let opened = send(proto::SshData {
            conn,
            id: id.clone(),
            open: true,
            ..Default::default()
        })
        .await;
        let (r, mut w) = stream.into_split();
        if opened.is_ok() {
            // Step → client.
            let up = tokio::spawn(send_ssh_bytes(r, conn, self.tx.clone(), |d| {
                msg(SMsg::Ssh(d))
            }));
            // Client → step. Only the agent's own end of stream lets the
            // step finish reading; an error or a client gone closes both
            // ways.
            let mut clean = false;
            while let Some(m) = in_rx.recv().await {
                match m {
                    SshIn::Data(d) => {
                        if w.write_all(&d).await.is_err() {
                            break;
                        }
                    }
                    SshIn::Eof => {
                        clean = true;
                        break;
                    }
                    SshIn::Error(e) => {
                        tracing::warn!(session = self.session, ssh = %id, error = %e, "the client could not reach its ssh agent");
                        break;
                    }
                }
            }
            let _ = w.shutdown().await;
            if clean {
                let _ = up.await;
            } else {
                up.abort();
            }
        }
        if let Some(m) = lock(&self.ssh).as_mut() {
            m.remove(&conn);
        }
    }
}

/// Sends what `r` (one side of a forwarded ssh-agent connection) reads
/// as `SshData` of connection `conn` on `tx`, ending with `eof`. Both ends
/// use it: the daemon for a step's bytes, the client for its agent's.
pub(crate) async fn send_ssh_bytes<T>(
    mut r: tokio::net::unix::OwnedReadHalf,
    conn: u64,
    tx: mpsc::Sender<T>,
    wrap: impl Fn(proto::SshData) -> T,
) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = r.read(&mut buf).await.unwrap_or(0);
        let d = proto::SshData {
            conn,
            data: buf[..n].to_vec(),
            eof: n == 0,
            ..Default::default()
        };
        if tx.send(wrap(d)).await.is_err() || n == 0 {
            return;
        }
    }
}

/// The session's secrets, asked of the client.
pub(crate) struct ClientSecrets(pub(crate) Arc<Attachments>);

impl kiln_engine::SecretSource for ClientSecrets {
    fn fetch<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Vec<u8>>>> {
        Box::pin(self.0.secret(id))
    }
}
