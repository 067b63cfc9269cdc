//! Interop with libtorrent 2.1.1: for v1, v2 and hybrid torrents that
//! libtorrent makes, ringseed's verify and libtorrent's recheck agree on
//! which pieces are bad after bytes are flipped.
//!
//! Until the metainfo parser is merged, the Python side dumps the layout and
//! hashes as JSON and the Torrent is built from that.

use std::path::{Path, PathBuf};
use std::process::Command;

use ringseed::metainfo::{FileEntry, MetaVersion, Torrent};
use serde_json::Value;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_verify.py")
}

fn libtorrent_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import libtorrent"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "libtorrent (python3 -m pip install libtorrent==2.1.1) is required when CI=true"
            );
        }
        eprintln!("\n*** SKIP verify_interop: python3 cannot `import libtorrent` (install libtorrent==2.1.1) ***\n");
    }
    ok
}

fn py(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "lt_verify.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn unhex<const N: usize>(v: &Value) -> [u8; N] {
    let s = v.as_str().expect("hex string");
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

fn torrent_from_json(doc: &Value) -> Torrent {
    let version = match doc["version"].as_str() {
        Some("v1") => MetaVersion::V1,
        Some("v2") => MetaVersion::V2,
        _ => MetaVersion::Hybrid,
    };
    let files: Vec<FileEntry> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| FileEntry {
            path: f["path"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect(),
            length: f["length"].as_u64().unwrap(),
            offset: f["offset"].as_u64().unwrap(),
            pieces_root: (!f["pieces_root"].is_null()).then(|| unhex::<32>(&f["pieces_root"])),
            executable: false,
            hidden: false,
        })
        .collect();
    let v1_pieces = doc["v1_pieces"]
        .as_array()
        .map(|a| a.iter().map(unhex::<20>).collect());
    let v2_piece_layers = doc["v2_piece_layers"].as_array().map(|a| {
        a.iter()
            .map(|l| l.as_array().unwrap().iter().map(unhex::<32>).collect())
            .collect()
    });
    Torrent {
        info_bytes: Vec::new(),
        info_hash_v1: None,
        info_hash_v2: None,
        version,
        name: doc["name"].as_str().unwrap().to_string(),
        piece_length: doc["piece_length"].as_u64().unwrap(),
        num_pieces: doc["num_pieces"].as_u64().unwrap() as u32,
        piece_space_len: doc["piece_space_len"].as_u64().unwrap(),
        total_size: files.iter().map(|f| f.length).sum(),
        multi_file: doc["multi_file"].as_bool().unwrap(),
        files,
        v1_pieces,
        v2_piece_layers,
        trackers: Vec::new(),
        web_seeds: Vec::new(),
        comment: None,
        created_by: None,
        creation_date: None,
        private: false,
    }
}

fn fill(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect();
    std::fs::write(path, data).unwrap();
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0xff;
    std::fs::write(path, b).unwrap();
}

fn ringseed_bad(t: &Torrent, data: &Path) -> Vec<u32> {
    let r = ringseed::storage::verify(t, data, 2, &|_| {}).expect("verify runs");
    r.bad_pieces.iter().map(|p| p.index).collect()
}

fn libtorrent_bad(torrent: &Path, save: &Path) -> Vec<u32> {
    serde_json::from_str(&py(&[
        "check",
        torrent.to_str().unwrap(),
        save.to_str().unwrap(),
    ]))
    .expect("JSON list of pieces")
}

const PIECE: usize = 32 * 1024;

#[test]
fn verify_agrees_with_libtorrent_after_flips() {
    if !libtorrent_available() {
        return;
    }
    for kind in ["v1", "v2", "hybrid"] {
        for multi in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let save = dir.path().join("save");
            let content = if multi {
                let top = save.join("content");
                std::fs::create_dir_all(top.join("sub")).unwrap();
                fill(&top.join("a.bin"), PIECE + 1, 1);
                fill(&top.join("empty"), 0, 2);
                fill(&top.join("one"), 1, 3);
                fill(&top.join("sub/b.bin"), 3 * PIECE + 100, 4);
                fill(&top.join("sub/c.bin"), 5000, 5);
                top
            } else {
                std::fs::create_dir_all(&save).unwrap();
                let f = save.join("single.bin");
                fill(&f, 4 * PIECE + 7, 6);
                f
            };
            let tfile = dir.path().join("t.torrent");
            let jfile = dir.path().join("t.json");
            py(&[
                "make",
                kind,
                &PIECE.to_string(),
                content.to_str().unwrap(),
                tfile.to_str().unwrap(),
                jfile.to_str().unwrap(),
            ]);
            let doc: Value = serde_json::from_slice(&std::fs::read(&jfile).unwrap()).unwrap();
            let t = torrent_from_json(&doc);
            let what = format!("{kind} multi={multi}");
            // The save path (a directory containing the torrent's name) works.
            assert_eq!(ringseed_bad(&t, &save), Vec::<u32>::new(), "{what}");
            assert_eq!(libtorrent_bad(&tfile, &save), Vec::<u32>::new(), "{what}");
            let flips: Vec<(PathBuf, usize)> = if multi {
                vec![
                    (content.join("a.bin"), PIECE),
                    (content.join("one"), 0),
                    (content.join("sub/b.bin"), PIECE + 17),
                    (content.join("sub/c.bin"), 4999),
                ]
            } else {
                vec![(content.clone(), 0), (content.clone(), 4 * PIECE + 6)]
            };
            for (p, at) in &flips {
                flip(p, *at);
            }
            let ours = ringseed_bad(&t, &save);
            let theirs = libtorrent_bad(&tfile, &save);
            assert!(!ours.is_empty(), "{what}: flips went unnoticed");
            assert_eq!(ours, theirs, "{what}: ringseed vs libtorrent bad pieces");
            // The content path itself works too.
            assert_eq!(ringseed_bad(&t, &content), ours, "{what}");
        }
    }
}
