//! `kiln du` lists the cache records of earlier builds; `kiln prune` removes
//! them by age, by size or all at once, and reports what it freed; builds
//! still work afterwards.

use kiln_e2e::{kiln, run_ok};

fn build(root: &std::path::Path, ctx: &std::path::Path, dest: &std::path::Path) {
    run_ok(
        kiln(root)
            .args(["build", "--frontend", "dockerfile.v0"])
            .arg(format!("--local=context={}", ctx.display()))
            .arg(format!("--local=dockerfile={}", ctx.display()))
            .arg(format!("--output=type=local,dest={}", dest.display())),
    );
}

fn total(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Total:").map(|t| t.trim().to_string()))
        .expect("a Total line")
}

#[test]
fn du_lists_and_prune_frees() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY big.bin /\nCOPY small.txt /\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("big.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::write(ctx.path().join("small.txt"), b"small\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    build(root.path(), ctx.path(), &out.path().join("1"));

    let du = run_ok(kiln(root.path()).arg("du"));
    let text = String::from_utf8_lossy(&du.stdout);
    assert!(
        text.lines().filter(|l| l.starts_with("sha256:")).count() >= 2,
        "{text}"
    );
    assert_ne!(total(&du), "0B", "{text}");
    let verbose = run_ok(kiln(root.path()).args(["du", "--verbose"]));
    let v = String::from_utf8_lossy(&verbose.stdout);
    assert!(
        v.contains("Description:") && v.contains("COPY big.bin"),
        "{v}"
    );

    // Everything was used seconds ago: a one-hour age limit keeps it all.
    let p = run_ok(kiln(root.path()).args(["prune", "--keep-duration", "1h"]));
    assert_eq!(total(&p), "0B");

    // A tiny size bound removes records until usage fits.
    let p = run_ok(kiln(root.path()).args(["prune", "--keep-storage", "100kB"]));
    assert_ne!(total(&p), "0B", "{}", String::from_utf8_lossy(&p.stdout));

    let p = run_ok(kiln(root.path()).args(["prune", "--all"]));
    let _ = total(&p);
    let du = run_ok(kiln(root.path()).arg("du"));
    assert_eq!(total(&du), "0B", "{}", String::from_utf8_lossy(&du.stdout));

    // The store still builds, and the result is right.
    build(root.path(), ctx.path(), &out.path().join("2"));
    assert_eq!(
        std::fs::read(out.path().join("2/small.txt")).unwrap(),
        b"small\n"
    );
}
