//! The `ringseed` binary's offline commands end to end: create, inspect,
//! verify (including exit codes and what they print), and bad input.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ringseed");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run ringseed")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn content(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("content");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.bin"), vec![7u8; 100_000]).unwrap();
    std::fs::write(
        root.join("sub/b.bin"),
        (0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    root
}

#[test]
fn create_inspect_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let root = content(dir.path());
    let torrent = dir.path().join("c.torrent");
    let out = run(&[
        "create",
        s(&root),
        "-o",
        s(&torrent),
        "--piece-length",
        "32K",
        "--tracker",
        "http://t.example/announce",
        "--no-date",
    ]);
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&["inspect", s(&torrent), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON");
    let text = v.to_string();
    assert!(text.contains("content"), "name in {text}");
    assert!(text.contains("magnet:?xt=urn:btih:"), "magnet in {text}");
    assert!(
        text.contains("http://t.example/announce"),
        "tracker in {text}"
    );

    let out = run(&["verify", s(&torrent), s(&root)]);
    assert!(
        out.status.success(),
        "verify of good data: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Flip one byte in the second file: exit 1, and the file is named.
    let b = root.join("sub/b.bin");
    let mut bytes = std::fs::read(&b).unwrap();
    bytes[150_000] ^= 0xff;
    std::fs::write(&b, bytes).unwrap();
    let out = run(&["verify", s(&torrent), s(&root), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify must exit 1 on a bad piece"
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("sub/b.bin"),
        "the damaged file is named: {report}"
    );

    // A missing file is reported and fails too.
    std::fs::remove_file(root.join("a.bin")).unwrap();
    let out = run(&["verify", s(&torrent), s(&root)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a.bin"));
}

#[test]
fn bad_input_gets_a_one_line_error_and_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.torrent");
    std::fs::write(&bad, b"d4:infod4:name3:abce").unwrap();
    let out = run(&["inspect", s(&bad)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.torrent"), "names the file: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // create from a path that does not exist leaves no output file behind.
    let out_file = dir.path().join("out.torrent");
    let out = run(&["create", s(&dir.path().join("nope")), "-o", s(&out_file)]);
    assert!(!out.status.success());
    assert!(!out_file.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only bad.torrent remains: {leftovers:?}"
    );
}
