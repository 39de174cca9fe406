//! `https?://` sources against a tiny in-test HTTP server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use kiln_llb::pb;

use crate::defs::*;
use crate::{count, engine, session};

#[derive(Default)]
struct State {
    body: String,
    etag: String,
    full: usize,
    not_modified: usize,
}

fn serve() -> (u16, Arc<Mutex<State>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let st = Arc::new(Mutex::new(State {
        body: "v1 body".into(),
        etag: "\"v1\"".into(),
        ..Default::default()
    }));
    let st2 = st.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut inm = None;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("if-none-match:") {
                    inm = Some(v.trim().to_owned());
                }
            }
            let mut s = st2.lock().unwrap();
            let resp = if inm.as_deref() == Some(s.etag.to_ascii_lowercase().as_str()) {
                s.not_modified += 1;
                format!(
                    "HTTP/1.1 304 Not Modified\r\nETag: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    s.etag
                )
            } else {
                s.full += 1;
                format!(
                    "HTTP/1.1 200 OK\r\nETag: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    s.etag,
                    s.body.len(),
                    s.body
                )
            };
            let _ = c.write_all(resp.as_bytes());
        }
    });
    (port, st)
}

fn http_def(url: &str, attrs: &[(&str, &str)]) -> (Vec<u8>, String) {
    let mut def = Def::default();
    let src = def.add(pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: url.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        })),
        ..Default::default()
    });
    (def.finish(&src), src)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_source_downloads_once_and_follows_changes() {
    let (port, st) = serve();
    let url = format!("http://127.0.0.1:{port}/dir/file.txt");
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let (bytes, _) = http_def(&url, &[("http.perm", "0644")]);
    let (s, _) = session(&[]);
    let r = e.solve(&bytes, s).await.unwrap();
    assert_eq!(e.read_file(&r, "/file.txt", 0, None).unwrap(), b"v1 body");
    assert_eq!(e.stat(&r, "/file.txt").unwrap().mode & 0o777, 0o644);
    let (s, buf) = session(&[]);
    e.solve(&bytes, s).await.unwrap();
    assert_eq!(count(&buf.text(), "CACHED"), 1, "{}", buf.text());
    {
        let s = st.lock().unwrap();
        assert_eq!((s.full, s.not_modified), (1, 1));
    }
    {
        let mut s = st.lock().unwrap();
        s.body = "v2 body!".into();
        s.etag = "\"v2\"".into();
    }
    let (s, _) = session(&[]);
    let r = e.solve(&bytes, s).await.unwrap();
    assert_eq!(e.read_file(&r, "/file.txt", 0, None).unwrap(), b"v2 body!");

    // A checksum names the content: a wrong one fails, a right one is a
    // key without any request.
    let (bad, _) = http_def(
        &url,
        &[
            (
                "http.checksum",
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ),
            ("http.filename", "x"),
        ],
    );
    let (s, _) = session(&[]);
    assert!(e.solve(&bad, s).await.is_err());
    let good_digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"v2 body!"))
    );
    let (good, _) = http_def(
        &url,
        &[("http.checksum", &good_digest), ("http.filename", "x")],
    );
    let (s, _) = session(&[]);
    let r = e.solve(&good, s).await.unwrap();
    assert_eq!(e.read_file(&r, "/x", 0, None).unwrap(), b"v2 body!");
    let requests = || {
        let s = st.lock().unwrap();
        s.full + s.not_modified
    };
    let before = requests();
    let (s, buf) = session(&[]);
    e.solve(&good, s).await.unwrap();
    assert_eq!(count(&buf.text(), "CACHED"), 1);
    assert_eq!(requests(), before, "no request for a known checksum");
}
