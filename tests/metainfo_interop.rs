//! Interop with real libtorrent 2.1.1 (Python bindings), via
//! `tests/interop/lt_meta.py`:
//! (a) torrents libtorrent makes (v1, v2, hybrid; single and multi-file;
//!     0-byte, 1-byte and piece+1-byte files) parse here with the same
//!     info-hashes;
//! (b) torrents `ringseed create` makes load in libtorrent with the same
//!     info-hashes, and libtorrent, pointed at the data, finds every piece
//!     valid (and finds a flipped byte).
//!
//! Without libtorrent: a loud SKIP, or a failure when `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ringseed::create::{create, write_atomically, CreateOptions};
use ringseed::metainfo::{MetaVersion, Torrent};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_meta.py")
}

fn libtorrent_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import libtorrent"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "libtorrent (Python) is required in CI: python3 -m pip install libtorrent==2.1.1"
            );
        }
        eprintln!("\n*** SKIP: python3 cannot `import libtorrent`; interop test not run. Install: python3 -m pip install libtorrent==2.1.1 ***\n");
    }
    ok
}

fn run_script(args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "lt_meta.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from lt_meta.py: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn hex_v1(t: &Torrent) -> Option<String> {
    t.info_hash_v1.map(|h| h.to_string())
}
fn hex_v2(t: &Torrent) -> Option<String> {
    t.info_hash_v2.map(|h| h.to_string())
}

#[test]
fn libtorrent_made_torrents_parse_with_the_same_info_hashes() {
    if !libtorrent_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let made = run_script(&["make", work.path().to_str().unwrap()]);
    let made = made.as_array().unwrap();
    assert_eq!(made.len(), 12);
    for entry in made {
        let path = entry["torrent"].as_str().unwrap();
        let t = Torrent::from_bytes(&std::fs::read(path).unwrap())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(hex_v1(&t).as_deref(), entry["v1"].as_str(), "{path}");
        assert_eq!(hex_v2(&t).as_deref(), entry["v2"].as_str(), "{path}");
        let want = match entry["kind"].as_str().unwrap() {
            "v1" => MetaVersion::V1,
            "v2" => MetaVersion::V2,
            _ => MetaVersion::Hybrid,
        };
        assert_eq!(t.version, want, "{path}");
    }
}

/// Content with the awkward sizes, under `root/name`.
fn make_content(root: &Path) -> Vec<PathBuf> {
    let p = 16384usize;
    let data = |n: usize, seed: u8| {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
    };
    let multi = root.join("tree");
    std::fs::create_dir_all(multi.join("sub/deeper")).unwrap();
    std::fs::write(multi.join("empty"), b"").unwrap();
    std::fs::write(multi.join("one"), b"1").unwrap();
    std::fs::write(multi.join("sub/over"), data(2 * p + 1, 1)).unwrap();
    std::fs::write(multi.join("sub/deeper/under"), data(p - 1, 2)).unwrap();
    std::fs::write(multi.join("whole"), data(3 * p, 3)).unwrap();
    std::fs::write(root.join("single.bin"), data(p + 1, 4)).unwrap();
    std::fs::write(root.join("tiny.bin"), b"x").unwrap();
    vec![multi, root.join("single.bin"), root.join("tiny.bin")]
}

#[test]
fn ringseed_made_torrents_load_and_verify_in_libtorrent() {
    if !libtorrent_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let content = work.path().join("content");
    let sources = make_content(&content);
    for src in &sources {
        for version in [MetaVersion::V1, MetaVersion::V2, MetaVersion::Hybrid] {
            let opts = CreateOptions {
                version,
                piece_length: Some(16384),
                trackers: vec![vec!["http://127.0.0.1:1/announce".into()]],
                ..CreateOptions::default()
            };
            let made = create(src, &opts, &|_| {}).unwrap();
            let out = work
                .path()
                .join(format!("{}_{version:?}.torrent", made.torrent.name));
            write_atomically(&out, &made.bytes).unwrap();
            let report = run_script(&["check", out.to_str().unwrap(), content.to_str().unwrap()]);
            let what = format!("{} {version:?}: {report}", src.display());
            assert_eq!(
                report["v1"].as_str(),
                hex_v1(&made.torrent).as_deref(),
                "{what}"
            );
            assert_eq!(
                report["v2"].as_str(),
                hex_v2(&made.torrent).as_deref(),
                "{what}"
            );
            assert_eq!(
                report["num_pieces"].as_u64(),
                Some(u64::from(made.torrent.num_pieces)),
                "{what}"
            );
            assert_eq!(
                report["have"].as_u64(),
                Some(u64::from(made.torrent.num_pieces)),
                "{what}"
            );
            assert_eq!(report["seeding"].as_bool(), Some(true), "{what}");
        }
    }
    // The check can fail: flip one byte and libtorrent must find a bad piece.
    let opts = CreateOptions {
        version: MetaVersion::Hybrid,
        piece_length: Some(16384),
        ..CreateOptions::default()
    };
    let made = create(&sources[0], &opts, &|_| {}).unwrap();
    let out = work.path().join("flipped.torrent");
    write_atomically(&out, &made.bytes).unwrap();
    let victim = sources[0].join("sub/over");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let report = run_script(&["check", out.to_str().unwrap(), content.to_str().unwrap()]);
    assert_eq!(
        report["have"].as_u64(),
        Some(u64::from(made.torrent.num_pieces) - 1),
        "{report}"
    );
    assert_eq!(report["seeding"].as_bool(), Some(false), "{report}");
}
