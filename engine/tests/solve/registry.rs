//! Push to and pull from a loopback `docker-registry`.
//!
//! Needs Debian's docker-registry; without it the test says so loudly and
//! passes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use kiln_llb::pb;

use crate::defs::*;
use crate::{count, engine, session};

struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry() -> Option<Registry> {
    let bin = Path::new("/usr/bin/docker-registry");
    if !bin.exists() {
        eprintln!(
            "SKIPPING registry test: /usr/bin/docker-registry is missing (apt-get install docker-registry)"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let cfg = dir.path().join("config.yml");
    fs_err::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .ok()?;
    let child = Command::new(bin)
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(Registry {
                child,
                port,
                _dir: dir,
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("SKIPPING registry test: docker-registry did not start");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_build_on_the_pulled_image() {
    let Some(reg) = start_registry() else { return };
    let name = format!("127.0.0.1:{}/kiln/test:v1", reg.port);
    let root = tempfile::tempdir().unwrap();
    let e = engine(root.path());
    let mut def = Def::default();
    let a = def.add(file(
        &[],
        vec![
            pb::FileAction {
                output: -1,
                ..act(-1, -1, mkdir("/app"))
            },
            act(0, -1, mkfile("/app/x", b"pushed")),
        ],
    ));
    let (s, _) = session(&[]);
    let r = e.solve(&def.finish(&a), s.clone()).await.unwrap();
    let attrs = BTreeMap::from([
        ("name".to_owned(), name.clone()),
        ("push".to_owned(), "true".to_owned()),
    ]);
    let res = e.export(Some(&r), None, "image", &attrs, s).await.unwrap();
    let pushed = res.metadata["containerimage.digest"].clone();

    // A fresh root builds on top of the pushed image.
    let root2 = tempfile::tempdir().unwrap();
    let e2 = engine(root2.path());
    let mut def = Def::default();
    let img = def.add(pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: format!("docker-image://{name}"),
            attrs: Default::default(),
        })),
        platform: Some(pb::Platform {
            os: "linux".into(),
            architecture: kiln_store::exporter::host_arch().into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    def.name(&img, "[1/2] FROM test");
    let top = def.add(file(&[&img], vec![act(0, -1, mkfile("/app/y", b"local"))]));
    let bytes = def.finish(&top);
    let (s, _) = session(&[]);
    let r2 = e2.solve(&bytes, s).await.unwrap();
    assert_eq!(e2.read_file(&r2, "/app/x", 0, None).unwrap(), b"pushed");
    assert_eq!(e2.read_file(&r2, "/app/y", 0, None).unwrap(), b"local");
    let (s, buf) = session(&[]);
    e2.solve(&bytes, s).await.unwrap();
    assert_eq!(count(&buf.text(), "CACHED"), 2, "{}", buf.text());
    // Pinned by digest with resolvemode=local works offline once pulled.
    drop(reg);
    let mut def = Def::default();
    let img = def.add(pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: format!("docker-image://{name}"),
            attrs: BTreeMap::from([("image.resolvemode".to_owned(), "local".to_owned())]),
        })),
        platform: Some(pb::Platform {
            os: "linux".into(),
            architecture: kiln_store::exporter::host_arch().into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let (s, _) = session(&[]);
    let r3 = e2.solve(&def.finish(&img), s).await.unwrap();
    assert_eq!(e2.read_file(&r3, "/app/x", 0, None).unwrap(), b"pushed");
    let _ = pushed;
}
