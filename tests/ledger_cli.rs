//! `ringseed ledger init|publish|show|verify|prove` and
//! `ringseed verify --ledger-key --proof` end to end, and a corrupted or
//! half-written ledger directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ringseed");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run ringseed")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "ringseed {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn torrent(dir: &Path, name: &str, fill: u8) -> PathBuf {
    let data = dir.join(name);
    std::fs::write(&data, vec![fill; 40_000]).unwrap();
    let t = dir.join(format!("{name}.torrent"));
    ok(&["create", s(&data), "-o", s(&t), "--no-date"]);
    t
}

#[test]
fn publish_show_verify_prove_and_check_a_proof() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let key = dir.join("pub.key");
    let vkey = ok(&[
        "ledger",
        "init",
        "--key",
        s(&key),
        "--name",
        "example.org/app",
    ]);
    let vkey = vkey.trim();
    assert!(vkey.starts_with("example.org/app+"), "{vkey}");
    // A key file is never overwritten.
    assert!(!run(&["ledger", "init", "--key", s(&key)]).status.success());

    let ledger = dir.join("ledger");
    let t1 = torrent(dir, "app-1.0.bin", 1);
    let t2 = torrent(dir, "app-1.1.bin", 2);
    let t3 = torrent(dir, "app-1.2.bin", 3);
    let out = ok(&[
        "ledger",
        "publish",
        s(&t1),
        "--ledger",
        s(&ledger),
        "--key",
        s(&key),
    ]);
    assert!(
        out.starts_with("block 1: 1 release(s), tree size 1"),
        "{out}"
    );
    let out = ok(&[
        "ledger",
        "publish",
        s(&t2),
        s(&t3),
        "--ledger",
        s(&ledger),
        "--key",
        s(&key),
        "--label",
        "1.1",
    ]);
    assert!(
        out.starts_with("block 2: 2 release(s), tree size 3"),
        "{out}"
    );

    let show = ok(&["ledger", "show", "--ledger", s(&ledger)]);
    assert!(
        show.contains("block 2 ") && show.contains("app-1.2.bin 1.1"),
        "{show}"
    );
    let v = ok(&["ledger", "verify", "--ledger", s(&ledger)]);
    assert!(v.contains("2 blocks, 3 releases"), "{v}");

    // An offline proof for t2, checked by a client before downloading.
    let proof = dir.join("t2.tlog-proof");
    ok(&[
        "ledger",
        "prove",
        s(&t2),
        "--ledger",
        s(&ledger),
        "-o",
        s(&proof),
    ]);
    let text = std::fs::read_to_string(&proof).unwrap();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "), "{text}");
    let out = ok(&["verify", s(&t2), "--ledger-key", vkey, "--proof", s(&proof)]);
    assert!(out.contains("release #1 of 3"), "{out}");
    // With the content too.
    let out = ok(&[
        "verify",
        s(&t2),
        s(&dir.join("app-1.1.bin")),
        "--ledger-key",
        vkey,
        "--proof",
        s(&proof),
    ]);
    assert!(out.contains("all pieces good"), "{out}");

    // The proof does not vouch for another torrent.
    let out = run(&["verify", s(&t1), "--ledger-key", vkey, "--proof", s(&proof)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another release"));
    // A torrent that was never published cannot be proven.
    let t4 = torrent(dir, "evil.bin", 9);
    assert!(!run(&[
        "ledger",
        "prove",
        s(&t4),
        "--ledger",
        s(&ledger),
        "-o",
        s(&dir.join("x"))
    ])
    .status
    .success());
    // Another publisher's key does not verify it.
    let other = ok(&[
        "ledger",
        "init",
        "--key",
        s(&dir.join("o.key")),
        "--name",
        "example.org/app",
    ]);
    let out = run(&[
        "verify",
        s(&t2),
        "--ledger-key",
        other.trim(),
        "--proof",
        s(&proof),
    ]);
    assert!(!out.status.success());
    // A flipped proof byte fails.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let i = 3; // the first proof hash
    let mut c: Vec<char> = lines[i].chars().collect();
    c[0] = if c[0] == 'A' { 'B' } else { 'A' };
    lines[i] = c.into_iter().collect();
    let bad = dir.join("bad.tlog-proof");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    assert!(
        !run(&["verify", s(&t2), "--ledger-key", vkey, "--proof", s(&bad)])
            .status
            .success()
    );
    // A policy that asks for a cosignature nobody made fails.
    let cos = ok(&[
        "ledger",
        "init",
        "--cosigner",
        "--key",
        s(&dir.join("c.key")),
        "--name",
        "box1.example",
    ]);
    let policy = dir.join("policy");
    std::fs::write(&policy, format!("cosigner {}quorum 1\n", cos)).unwrap();
    let out = run(&[
        "verify",
        s(&t2),
        "--ledger-key",
        vkey,
        "--proof",
        s(&proof),
        "--ledger-policy",
        s(&policy),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 of the required 1 cosignatures"));
}

#[test]
fn a_corrupt_block_is_named_at_start_and_a_torn_append_keeps_the_head() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let key = dir.join("pub.key");
    ok(&[
        "ledger",
        "init",
        "--key",
        s(&key),
        "--name",
        "example.org/app",
    ]);
    let ledger = dir.join("ledger");
    for i in 0..3u8 {
        let t = torrent(dir, &format!("r{i}.bin"), i);
        ok(&[
            "ledger",
            "publish",
            s(&t),
            "--ledger",
            s(&ledger),
            "--key",
            s(&key),
        ]);
    }
    // A crash mid-append leaves a temporary file: the head is still block 3.
    std::fs::write(
        ledger.join("blocks/.00000004.block.tmp"),
        b"ringseed-block/v1\nrelease AAA",
    )
    .unwrap();
    let v = ok(&["ledger", "verify", "--ledger", s(&ledger)]);
    assert!(v.contains("3 blocks"), "{v}");
    assert!(!ledger.join("blocks/.00000004.block.tmp").exists());

    // Rewrite a release in block 2: the start-up check names block 2.
    let p = ledger.join("blocks/00000002.block");
    let text = std::fs::read_to_string(&p).unwrap();
    // Change one base64 character near the end of the release line (its
    // publish time): still a well-formed release, no longer the signed one.
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let line = &mut lines[1];
    let i = line.len() - 3;
    let c = if &line[i..i + 1] == "Q" { "R" } else { "Q" };
    line.replace_range(i..i + 1, c);
    let tampered = lines.join("\n");
    assert_ne!(text, tampered);
    std::fs::write(&p, tampered).unwrap();
    let out = run(&["ledger", "verify", "--ledger", s(&ledger)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ledger block 2") && err.contains("00000002.block"),
        "{err}"
    );
}
