//! Decoding is fed untrusted bytes: random and mutated inputs must give
//! errors, never panics, and whatever decodes must dump and re-encode.

use kiln_llb::builder::{self, MarshalOptions, Mount};
use kiln_llb::dump::{dump_dot, dump_json_lines};
use kiln_llb::{Definition, pb};
use prost::Message;

/// xorshift64*, so the test is deterministic without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn sample() -> pb::Definition {
    let base = builder::image("alpine").unwrap().state();
    let ctx = builder::local("context").state();
    let built = base
        .run_shell("make")
        .mount(Mount::bind("/src", &ctx).readonly())
        .mount(Mount::bind("/out", &builder::scratch()))
        .build()
        .unwrap();
    let out = built.mount("/out").unwrap();
    let files = out.file(
        builder::mkdir("/a", 0o755, Default::default())
            .copy(&ctx, "x", "/a/x", Default::default())
            .symlink("/a/x", "/b", Default::default()),
    );
    let merged = builder::merge(&[built.root(), files.clone()]);
    builder::diff(&files, &merged)
        .marshal(&MarshalOptions::default())
        .unwrap()
}

fn exercise(bytes: &[u8]) {
    if let Ok(def) = Definition::decode(bytes) {
        let _ = dump_json_lines(&def);
        let _ = dump_dot(&def);
        let again = Definition::decode(&def.encode()).expect("re-encoded definition decodes");
        assert_eq!(again.entries().len(), def.entries().len());
    }
}

#[test]
fn sample_round_trips() {
    let bytes = sample().encode_to_vec();
    let def = Definition::decode(&bytes).unwrap();
    assert_eq!(def.encode(), bytes);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = rng.below(256);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        exercise(&bytes);
    }
}

#[test]
fn mutated_definitions_never_panic() {
    let valid = sample();
    let bytes = valid.encode_to_vec();
    let mut rng = Rng(42);
    for _ in 0..5_000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
        if rng.below(4) == 0 {
            b.truncate(rng.below(b.len()));
        }
        exercise(&b);
    }
    // Mutate inside individual op bytes, keeping the envelope valid.
    for _ in 0..5_000 {
        let mut def = valid.clone();
        let k = rng.below(def.def.len());
        let op = &mut def.def[k];
        if !op.is_empty() {
            let i = rng.below(op.len());
            op[i] = rng.next() as u8;
        }
        exercise(&def.encode_to_vec());
    }
}
