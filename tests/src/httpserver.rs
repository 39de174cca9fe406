//! A loopback HTTP/1.1 server for the remote-source tests: fixed routes,
//! ETag / Last-Modified revalidation, a required `Authorization` value,
//! redirects, transient 503s and endless bodies. Every request is logged
//! with the status it got and the body bytes sent, so tests can count
//! downloads. One thread per connection, `Connection: close` always.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What the server answers on one path.
#[derive(Clone, Debug, Default)]
pub struct Route {
    /// The body of a 200.
    pub body: Vec<u8>,
    /// An ETag sent with it and honoured in `If-None-Match` (304).
    pub etag: Option<String>,
    /// A Last-Modified date sent with it and honoured (by equality) in
    /// `If-Modified-Since` (304).
    pub last_modified: Option<String>,
    /// A value the `Authorization` header must have (401 otherwise).
    pub auth: Option<String>,
    /// Answer `302 Found` with this `Location` instead.
    pub redirect: Option<String>,
    /// Answer `503` this many times before answering normally.
    pub fail_first: usize,
    /// Send zeros until the client hangs up (at most 256 MiB) instead of
    /// `body`.
    pub endless: bool,
    /// With `endless`, the `Content-Length` to announce (none if unset: the
    /// body ends when the connection closes).
    pub claim_len: Option<u64>,
}

impl Route {
    /// A plain 200 with this body.
    pub fn body(body: impl Into<Vec<u8>>) -> Route {
        Route {
            body: body.into(),
            ..Default::default()
        }
    }
}

/// One request the server saw.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `HEAD`…
    pub method: String,
    /// The request target.
    pub path: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The status answered.
    pub status: u16,
    /// Body bytes written (a 304 or 401 writes none).
    pub body_bytes: u64,
}

#[derive(Default)]
struct State {
    routes: BTreeMap<String, Route>,
    log: Vec<Request>,
}

/// A running server; it stops taking connections when dropped.
pub struct HttpServer {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl HttpServer {
    /// Listens on a free loopback port.
    pub fn start() -> HttpServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = l.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if sp.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(c, &st));
            }
        });
        HttpServer { port, state, stop }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sets (or replaces) the route for `path`.
    pub fn route(&self, path: &str, r: Route) {
        self.state.lock().unwrap().routes.insert(path.to_owned(), r);
    }

    /// Serves every file under `dir` at `prefix/<relative path>`, each
    /// route requiring `auth` if given (a bare git repository after
    /// `git update-server-info` is then a "dumb HTTP" remote).
    pub fn serve_dir(&self, prefix: &str, dir: &Path, auth: Option<&str>) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                self.route(
                    &format!("{prefix}/{rel}"),
                    Route {
                        auth: auth.map(str::to_owned),
                        ..Route::body(std::fs::read(&p).unwrap())
                    },
                );
            }
        }
    }

    /// Every request whose path (query included) starts with `prefix`.
    pub fn requests_under(&self, prefix: &str) -> Vec<Request> {
        self.state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Every request for `path` so far, in order.
    pub fn requests(&self, path: &str) -> Vec<Request> {
        self.state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// `(200s with a body, 304s)` answered on `path`.
    pub fn downloads(&self, path: &str) -> (usize, usize) {
        let r = self.requests(path);
        (
            r.iter()
                .filter(|r| r.status == 200 && r.body_bytes > 0)
                .count(),
            r.iter().filter(|r| r.status == 304).count(),
        )
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut c: TcpStream, state: &Mutex<State>) {
    let Ok(read) = c.try_clone() else { return };
    let mut r = BufReader::new(read);
    let mut first = String::new();
    if r.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    // Routes match the path without its query.
    let route = {
        let key = path.split('?').next().unwrap_or_default();
        let mut st = state.lock().unwrap();
        st.routes.get_mut(key).map(|rt| {
            let r = rt.clone();
            rt.fail_first = rt.fail_first.saturating_sub(1);
            r
        })
    };
    let mut extra = String::new();
    let (status, reason, body): (u16, &str, Vec<u8>) = match &route {
        None => (404, "Not Found", b"not found\n".to_vec()),
        Some(rt) if rt.fail_first > 0 => (503, "Service Unavailable", Vec::new()),
        Some(rt) if rt.auth.is_some() && headers.get("authorization") != rt.auth.as_ref() => {
            (401, "Unauthorized", Vec::new())
        }
        Some(rt) if rt.redirect.is_some() => {
            extra = format!("Location: {}\r\n", rt.redirect.as_deref().unwrap_or("/"));
            (302, "Found", Vec::new())
        }
        Some(rt) => {
            if let Some(e) = &rt.etag {
                extra.push_str(&format!("ETag: {e}\r\n"));
            }
            if let Some(lm) = &rt.last_modified {
                extra.push_str(&format!("Last-Modified: {lm}\r\n"));
            }
            let etag_hit = rt.etag.is_some() && headers.get("if-none-match") == rt.etag.as_ref();
            let date_hit = rt.etag.is_none()
                && rt.last_modified.is_some()
                && headers.get("if-modified-since") == rt.last_modified.as_ref();
            if etag_hit || date_hit {
                (304, "Not Modified", Vec::new())
            } else {
                (200, "OK", rt.body.clone())
            }
        }
    };
    let mut sent = 0u64;
    if let Some(rt) = route.as_ref().filter(|r| status == 200 && r.endless) {
        let len = rt
            .claim_len
            .map(|n| format!("Content-Length: {n}\r\n"))
            .unwrap_or_default();
        let head = format!("HTTP/1.1 200 OK\r\n{len}Connection: close\r\n\r\n");
        sent = endless(&mut c, head);
    } else {
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        if c.write_all(head.as_bytes()).is_ok() && (method != "HEAD") && c.write_all(&body).is_ok()
        {
            sent = body.len() as u64;
        }
    }
    let _ = c.flush();
    state.lock().unwrap().log.push(Request {
        method,
        path,
        headers,
        status,
        body_bytes: sent,
    });
}

/// Writes `head` then zeros until the peer hangs up or 256 MiB went out.
fn endless(c: &mut TcpStream, head: String) -> u64 {
    if c.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < 256 << 20 {
        if c.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len() as u64;
    }
    sent
}
