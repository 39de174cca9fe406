//! A frontend written the way a third party would: against the published
//! SDK only. kiln's tests use it to check loading by path, the gateway
//! calls, and the sandbox. The `mode` option picks a behaviour:
//!
//! - (none): solve `local://context`, read `--opt file=` (default
//!   `hello.txt`) from it, and return LLB that writes its content to
//!   `/greeting.txt` on scratch;
//! - `loop`, `membomb`, `panic`, `trap`, `biglog`, `bigprint`, `bigresult`,
//!   `openfile`, `solves`: hostile behaviours, each of which kiln must stop
//!   with a clear error.

use kiln_frontend::llb::pb;
use kiln_frontend::{BuildResult, Frontend, FrontendError, Gateway, Location};
use prost::Message as _;

struct TestGuest;

fn digest_of(bytes: &[u8]) -> String {
    kiln_frontend::llb::Digest::of_bytes(bytes).to_string()
}

fn definition(ops: Vec<Vec<u8>>) -> Vec<u8> {
    let last = ops.last().expect("at least one op");
    let terminal = pb::Op {
        inputs: vec![pb::Input {
            digest: digest_of(last),
            index: 0,
        }],
        ..Default::default()
    };
    let mut def = pb::Definition {
        def: ops,
        ..Default::default()
    };
    def.def.push(terminal.encode_to_vec());
    def.encode_to_vec()
}

fn local_context() -> Vec<u8> {
    let op = pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: "local://context".into(),
            attrs: Default::default(),
        })),
        constraints: Some(pb::WorkerConstraints::default()),
        ..Default::default()
    };
    definition(vec![op.encode_to_vec()])
}

fn mkfile(path: &str, data: Vec<u8>) -> Vec<u8> {
    let op = pb::Op {
        op: Some(pb::op::Op::File(pb::FileOp {
            actions: vec![pb::FileAction {
                input: -1,
                secondary_input: -1,
                output: 0,
                action: Some(pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                    path: path.into(),
                    mode: 0o644,
                    data,
                    owner: None,
                    timestamp: -1,
                })),
            }],
        })),
        constraints: Some(pb::WorkerConstraints::default()),
        ..Default::default()
    };
    definition(vec![op.encode_to_vec()])
}

impl Frontend for TestGuest {
    fn build(gw: &dyn Gateway) -> Result<BuildResult, FrontendError> {
        let opts = kiln_frontend::options_map(gw);
        match opts.get("mode").map(String::as_str).unwrap_or("") {
            "" => {}
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "membomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("the test guest panics on purpose"),
            "trap" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
            }
            "biglog" => {
                let chunk = "x".repeat(1 << 20);
                for _ in 0..100 {
                    gw.log(&chunk);
                }
            }
            "bigprint" => {
                let chunk = "y".repeat(1 << 20);
                for _ in 0..100 {
                    println!("{chunk}");
                }
            }
            "bigresult" => {
                return Ok(BuildResult::default().with_metadata("junk", vec![7u8; 100 << 20]));
            }
            "openfile" => {
                return match std::fs::read("/etc/passwd") {
                    Ok(data) => Err(FrontendError::new(format!(
                        "SANDBOX BREACH: read {} bytes of /etc/passwd",
                        data.len()
                    ))),
                    Err(e) => Err(FrontendError::new(format!("cannot open /etc/passwd: {e}"))),
                };
            }
            "solves" => loop {
                gw.solve(&local_context(), false)?;
            },
            "error" => {
                return Err(FrontendError::at(
                    "the test guest reports an error here",
                    Location::line("Testfile", 3),
                ));
            }
            other => return Err(FrontendError::new(format!("unknown mode {other:?}"))),
        }
        let file = opts
            .get("file")
            .cloned()
            .unwrap_or_else(|| "hello.txt".into());
        let ctx = gw.solve(&local_context(), true)?;
        let mut content = gw.read_file(&ctx, &file, 0, None)?;
        gw.log(&format!(
            "testguest read {} bytes from {file}",
            content.len()
        ));
        content.extend_from_slice(b"-- via testguest\n");
        let out = gw.solve(&mkfile("/greeting.txt", content), false)?;
        Ok(BuildResult::single(out)
            .with_image_config(br#"{"config":{"Cmd":["/greeting"]}}"#.to_vec()))
    }
}

kiln_frontend::export_frontend!(TestGuest);
