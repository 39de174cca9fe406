//! Wall time of short kiln commands, as a user sees them: `kiln --version`
//! and `kiln debug dump-llb` of a 20-op Definition. When `$BUILDKIT_BIN`
//! holds a `buildctl`, the same commands run with it and the ratios are
//! printed. Run with `cargo run --release -p kiln-bench --bin cli_latency`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use kiln_bench::{median, ms, ratio, sample};
use kiln_llb::pb;
use prost::Message as _;

fn twenty_ops() -> Vec<u8> {
    let mut ops = Vec::new();
    let src = pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: "docker-image://docker.io/library/busybox:latest".into(),
            attrs: Default::default(),
        })),
        platform: Some(pb::Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        }),
        constraints: Some(pb::WorkerConstraints::default()),
        ..Default::default()
    }
    .encode_to_vec();
    let mut prev = kiln_llb::Digest::of_bytes(&src).to_string();
    ops.push(src);
    for i in 0..19 {
        let op = pb::Op {
            inputs: vec![pb::Input {
                digest: prev.clone(),
                index: 0,
            }],
            op: Some(pb::op::Op::Exec(pb::ExecOp {
                meta: Some(pb::Meta {
                    args: vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        format!("echo step {i} > /f{i}"),
                    ],
                    env: vec![
                        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                    ],
                    cwd: "/".into(),
                    ..Default::default()
                }),
                mounts: vec![pb::Mount {
                    dest: "/".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            platform: Some(pb::Platform {
                architecture: "amd64".into(),
                os: "linux".into(),
                ..Default::default()
            }),
            constraints: Some(pb::WorkerConstraints::default()),
        }
        .encode_to_vec();
        prev = kiln_llb::Digest::of_bytes(&op).to_string();
        ops.push(op);
    }
    ops.push(
        pb::Op {
            inputs: vec![pb::Input {
                digest: prev,
                index: 0,
            }],
            ..Default::default()
        }
        .encode_to_vec(),
    );
    pb::Definition {
        def: ops,
        ..Default::default()
    }
    .encode_to_vec()
}

fn kiln_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().expect("dir").join("kiln")
}

fn time_cmd(n: usize, mk: impl Fn() -> Command) -> std::time::Duration {
    median(&sample(n, || {
        let st = mk()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn");
        assert!(st.success(), "command failed");
    }))
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let def = dir.path().join("def.pb");
    std::fs::write(&def, twenty_ops())?;
    let kiln = kiln_bin();
    let n = 30;
    let k_version = time_cmd(n, || {
        let mut c = Command::new(&kiln);
        c.arg("--version");
        c
    });
    let k_dump = time_cmd(n, || {
        let mut c = Command::new(&kiln);
        c.args(["debug", "dump-llb"]).arg(&def);
        c
    });
    println!("kiln --version                 median {}", ms(k_version));
    println!("kiln debug dump-llb (20 ops)   median {}", ms(k_dump));
    if let Some(bk) = std::env::var_os("BUILDKIT_BIN") {
        let buildctl = PathBuf::from(bk).join("buildctl");
        let b_version = time_cmd(n, || {
            let mut c = Command::new(&buildctl);
            c.arg("--version");
            c
        });
        let b_dump = time_cmd(n, || {
            let mut c = Command::new(&buildctl);
            c.args(["debug", "dump-llb"]).arg(&def);
            c
        });
        println!(
            "buildctl --version             median {}  kiln/buildctl {}",
            ms(b_version),
            ratio(k_version, b_version)
        );
        println!(
            "buildctl debug dump-llb        median {}  kiln/buildctl {}",
            ms(b_dump),
            ratio(k_dump, b_dump)
        );
    } else {
        println!("(set BUILDKIT_BIN to a directory with buildctl to print kiln/buildctl ratios)");
    }
    Ok(())
}
