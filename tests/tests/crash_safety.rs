//! SIGKILL `kiln build` at many points — while the context is copied, while
//! layers are written and exported, while cache records are written — and
//! check after each kill that the store holds no blob under a wrong name,
//! and that the next build succeeds with exactly the right result.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_e2e::{kiln, run_ok};
use sha2::{Digest as _, Sha256};

fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("Dockerfile"),
        "FROM scratch AS a\nCOPY many/ /many/\nFROM scratch\nCOPY big.bin /big.bin\nCOPY --from=a /many/ /copied/\n",
    )
    .unwrap();
    for d in 0..20 {
        let sub = p.join(format!("many/d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..100 {
            std::fs::write(sub.join(format!("f{f}.txt")), format!("{d}/{f}\n")).unwrap();
        }
    }
    // Incompressible-ish bytes, so compression takes a moment.
    let mut big = Vec::with_capacity(12 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while big.len() < 12 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(p.join("big.bin"), big).unwrap();
    dir
}

fn build_cmd(root: &Path, ctx: &Path, dest: &Path) -> Command {
    let mut c = kiln(root);
    c.args([
        "build",
        "--progress",
        "plain",
        "--frontend",
        "dockerfile.v0",
    ])
    .arg(format!("--local=context={}", ctx.display()))
    .arg(format!("--local=dockerfile={}", ctx.display()))
    .arg(format!(
        "--output=type=oci,dest={},name=crash:1",
        dest.display()
    ));
    c
}

/// Every blob in the content store hashes to its own name.
fn check_blobs(root: &Path) {
    let blobs = root.join("content/blobs/sha256");
    let Ok(entries) = std::fs::read_dir(&blobs) else {
        return;
    };
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let data = std::fs::read(e.path()).unwrap();
        let actual = hex::encode(Sha256::digest(&data));
        assert_eq!(
            actual,
            name,
            "blob {} is half-written or corrupt",
            e.path().display()
        );
    }
}

#[test]
fn sigkill_at_many_points_never_corrupts_the_store() {
    let ctx = context();
    let out = tempfile::tempdir().unwrap();

    // The reference result, from an undisturbed build in its own root.
    let clean_root = tempfile::tempdir().unwrap();
    let reference = out.path().join("reference.tar");
    run_ok(&mut build_cmd(clean_root.path(), ctx.path(), &reference));
    let want = std::fs::read(&reference).unwrap();

    let root = tempfile::tempdir().unwrap();
    let mut phases = Vec::new();
    for (i, delay_ms) in [5u64, 60, 200, 450, 800, 1300].into_iter().enumerate() {
        let dest = out.path().join(format!("killed{i}.tar"));
        let mut child = build_cmd(root.path(), ctx.path(), &dest)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let o = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&o.stderr);
        let phase = log
            .lines()
            .rfind(|l| l.starts_with('#'))
            .unwrap_or("(before any step)")
            .to_string();
        phases.push(format!("{delay_ms}ms: {phase}"));
        check_blobs(root.path());

        // The next build on the same root succeeds with the right bytes.
        let again = out.path().join(format!("again{i}.tar"));
        run_ok(&mut build_cmd(root.path(), ctx.path(), &again));
        assert!(
            std::fs::read(&again).unwrap() == want,
            "after a kill at {delay_ms}ms the result differs"
        );
        check_blobs(root.path());
        // Start the next round from a cold cache again, so kills land in
        // early phases too.
        if i % 2 == 1 {
            let _ = std::fs::remove_dir_all(root.path());
            std::fs::create_dir_all(root.path()).unwrap();
        }
    }
    eprintln!("kill points reached:\n{}", phases.join("\n"));
}
