//! A tiny hand-written registry for what docker-registry cannot do here:
//! Bearer token auth through a token endpoint, and hostile answers.
//! HTTP/1.1, one request per connection, served from a thread.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A canned response.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the fake saw: (method, path, authorization header).
pub type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

pub struct FakeRegistry {
    pub host: String,
    pub seen: Seen,
}

/// Serve `routes` (path → reply). Paths under `/v2/` other than `/v2/`
/// itself need `Authorization: Bearer <token>`; `/token` issues it.
pub fn start(token: &'static str, routes: HashMap<String, Reply>) -> FakeRegistry {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let seen: Seen = Arc::default();
    let realm = format!("http://{host}/token");
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let routes = routes.clone();
            let seen = seen2.clone();
            let realm = realm.clone();
            std::thread::spawn(move || {
                let _ = serve(conn, token, &realm, &routes, &seen);
            });
        }
    });
    FakeRegistry { host, seen }
}

fn serve(
    conn: TcpStream,
    token: &str,
    realm: &str,
    routes: &HashMap<String, Reply>,
    seen: &Seen,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    let mut auth = None;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "authorization" => auth = Some(v.trim().to_string()),
                "content-length" => len = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    seen.lock()
        .unwrap()
        .push((method.clone(), path.clone(), auth.clone()));

    let challenge = format!(r#"Bearer realm="{realm}",service="fake""#);
    let reply = if path == "/token" {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: format!(r#"{{"token":"{token}","expires_in":300}}"#).into_bytes(),
        }
    } else if auth.as_deref() != Some(&format!("Bearer {token}")) {
        Reply {
            status: 401,
            headers: vec![
                ("WWW-Authenticate".into(), challenge),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                .to_vec(),
        }
    } else if path == "/v2/" {
        Reply {
            status: 200,
            headers: vec![],
            body: b"{}".to_vec(),
        }
    } else if let Some(r) = routes.get(&path) {
        r.clone()
    } else {
        Reply {
            status: 404,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: br#"{"errors":[{"code":"NOT_FOUND","message":"no such thing"}]}"#.to_vec(),
        }
    };
    if path.contains("/stall/") {
        // A registry that accepts the request and then says nothing.
        std::thread::sleep(std::time::Duration::from_secs(10));
    }
    let mut out = conn;
    write!(out, "HTTP/1.1 {} X\r\n", reply.status)?;
    for (k, v) in &reply.headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    let body: &[u8] = if method == "HEAD" { &[] } else { &reply.body };
    write!(
        out,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    )?;
    out.write_all(body)?;
    out.flush()
}
