//! Metainfo: real-world-shaped fixtures (made by libtorrent 2.1.1, see
//! `fixtures/expected.json`), torrents made by `create`, and every malformed
//! case with the precise error expected.

use std::collections::BTreeMap;
use std::path::Path;

use ringseed::bencode::{decode, DecodeError, OwnedValue};
use ringseed::create::{create, CreateOptions};
use ringseed::metainfo::{Magnet, MetaVersion, MetainfoError, Torrent};

fn fixture(name: &str) -> Torrent {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Torrent::from_bytes(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn libtorrent_fixtures_parse_with_the_same_info_hashes() {
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/expected.json")).unwrap();
    for (name, want) in expected.as_object().unwrap() {
        let t = fixture(name);
        assert_eq!(
            t.info_hash_v1.map(|h| h.to_string()).as_deref(),
            want["v1"].as_str(),
            "{name}"
        );
        assert_eq!(
            t.info_hash_v2.map(|h| h.to_string()).as_deref(),
            want["v2"].as_str(),
            "{name}"
        );
        assert_eq!(
            u64::from(t.num_pieces),
            want["num_pieces"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn hybrid_fixture_details() {
    let t = fixture("lt_hybrid_multi.torrent");
    assert_eq!(t.version, MetaVersion::Hybrid);
    assert_eq!(t.name, "multi");
    assert!(t.multi_file);
    assert_eq!(t.piece_length, 16384);
    let files: Vec<(String, u64, u64)> = t
        .files
        .iter()
        .map(|f| (f.display_path(), f.length, f.offset))
        .collect();
    // Pad files are gone; offsets are in the v1 piece space (pads included).
    assert_eq!(
        files,
        vec![
            ("big.bin".into(), 70000, 0),
            ("empty".into(), 0, 81920),
            ("sub/one".into(), 1, 81920)
        ]
    );
    assert_eq!(t.total_size, 70001);
    assert_eq!(t.piece_space_len, 98304); // libtorrent pads the tail too
    assert_eq!(
        t.trackers,
        vec![
            vec!["http://tracker.example/announce".to_string()],
            vec!["udp://backup.example:6969".into()]
        ]
    );
    assert_eq!(t.comment.as_deref(), Some("hybrid fixture"));
    assert_eq!(t.creation_date, Some(1_700_000_000));
    let layers = t.v2_piece_layers.as_ref().unwrap();
    assert_eq!(layers[0].len(), 5);
    assert!(layers[1].is_empty() && layers[2].is_empty());
    assert!(t.files[0].pieces_root.is_some() && t.files[1].pieces_root.is_none());
    assert_eq!(t.piece_len(5), 16384);
}

#[test]
fn v1_single_fixture_details() {
    let t = fixture("lt_v1_single.torrent");
    assert_eq!(t.version, MetaVersion::V1);
    assert!(!t.multi_file);
    assert_eq!(t.files[0].path, vec!["single.iso".to_string()]);
    assert_eq!(
        t.web_seeds,
        vec!["http://mirror.example/single.iso".to_string()]
    );
    assert_eq!(t.piece_len(3), 50001 - 3 * 16384);
    let m = Magnet::parse(&t.magnet_uri()).unwrap();
    assert_eq!(m.info_hash_v1, t.info_hash_v1);
    assert_eq!(m.display_name.as_deref(), Some("single.iso"));
    assert_eq!(
        m.trackers,
        vec!["http://tracker.example/announce".to_string()]
    );
}

#[test]
fn from_info_bytes_matches_and_has_no_layers() {
    let full = fixture("lt_v2_multi.torrent");
    let t = Torrent::from_info_bytes(&full.info_bytes).unwrap();
    assert_eq!(t.info_hash_v2, full.info_hash_v2);
    assert!(t.v2_piece_layers.is_none());
    assert_eq!(t.files, full.files);
}

// ---- building malformed torrents ----

fn b(s: &str) -> OwnedValue {
    OwnedValue::Bytes(s.as_bytes().to_vec())
}
fn i(n: i64) -> OwnedValue {
    OwnedValue::Int(n)
}
fn dict(entries: Vec<(&str, OwnedValue)>) -> OwnedValue {
    OwnedValue::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}
fn path(parts: &[&str]) -> OwnedValue {
    OwnedValue::List(parts.iter().map(|p| b(p)).collect())
}

/// A v1 multi-file torrent with the right number of (fake) piece hashes.
fn v1_multi(files: &[(&[&str], i64)]) -> OwnedValue {
    let total: i64 = files.iter().map(|f| f.1.max(0)).sum();
    let pieces = (total as u64).div_ceil(16384) as usize;
    let list = files
        .iter()
        .map(|(p, len)| dict(vec![("length", i(*len)), ("path", path(p))]))
        .collect();
    dict(vec![(
        "info",
        dict(vec![
            ("files", OwnedValue::List(list)),
            ("name", b("top")),
            ("piece length", i(16384)),
            ("pieces", OwnedValue::Bytes(vec![7u8; pieces * 20])),
        ]),
    )])
}

fn parse(v: &OwnedValue) -> Result<Torrent, MetainfoError> {
    Torrent::from_bytes(&v.to_bytes())
}

fn info_mut(v: &mut OwnedValue) -> &mut BTreeMap<Vec<u8>, OwnedValue> {
    match v {
        OwnedValue::Dict(d) => match d.get_mut(&b"info"[..]) {
            Some(OwnedValue::Dict(info)) => info,
            _ => panic!("no info"),
        },
        _ => panic!("not a dict"),
    }
}

fn bad_path(parts: &[&str]) -> MetainfoError {
    parse(&v1_multi(&[(parts, 10)])).unwrap_err()
}

#[test]
fn path_traversal_and_bad_components_are_rejected() {
    let reason = |e: MetainfoError| match e {
        MetainfoError::InvalidPath { reason, field, .. } => {
            assert_eq!(field, "info.files[0].path");
            reason
        }
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        reason(bad_path(&["a", "..", "etc"])),
        "`.` or `..` component (path traversal)"
    );
    assert_eq!(
        reason(bad_path(&["."])),
        "`.` or `..` component (path traversal)"
    );
    assert_eq!(
        reason(bad_path(&["/etc/passwd"])),
        "path separator inside a component (absolute path or traversal)"
    );
    assert_eq!(
        reason(bad_path(&["a/b"])),
        "path separator inside a component (absolute path or traversal)"
    );
    assert_eq!(
        reason(bad_path(&["a\\b"])),
        "path separator inside a component (absolute path or traversal)"
    );
    assert_eq!(reason(bad_path(&["a", ""])), "empty path component");
    assert_eq!(reason(bad_path(&["a\0b"])), "NUL byte in a component");
    assert_eq!(reason(bad_path(&[])), "empty path");
    let e = bad_path(&["a", ".."]);
    assert_eq!(
        e.to_string(),
        "torrent: invalid path \"a/..\" in `info.files[0].path`: `.` or `..` component (path traversal)"
    );
}

#[test]
fn bad_names_are_rejected() {
    let mut t = v1_multi(&[(&["a"], 10)]);
    info_mut(&mut t).insert(b"name".to_vec(), b(".."));
    assert!(
        matches!(parse(&t).unwrap_err(), MetainfoError::InvalidPath { field, .. } if field == "info.name")
    );
    info_mut(&mut t).insert(b"name".to_vec(), OwnedValue::Bytes(vec![0xff, 0xfe]));
    assert_eq!(
        parse(&t).unwrap_err(),
        MetainfoError::NotUtf8 {
            field: "info.name".into()
        }
    );
    info_mut(&mut t).remove(&b"name"[..]);
    assert_eq!(
        parse(&t).unwrap_err(),
        MetainfoError::MissingField {
            field: "info.name".into()
        }
    );
}

#[test]
fn duplicates_and_clashes_are_rejected() {
    assert_eq!(
        parse(&v1_multi(&[(&["a", "b"], 1), (&["a", "b"], 2)])).unwrap_err(),
        MetainfoError::DuplicatePath { path: "a/b".into() }
    );
    assert_eq!(
        parse(&v1_multi(&[(&["a"], 1), (&["a", "b"], 2)])).unwrap_err(),
        MetainfoError::FileDirectoryClash { path: "a".into() }
    );
    assert_eq!(
        parse(&v1_multi(&[(&["x", "a", "c"], 1), (&["x", "a"], 2)])).unwrap_err(),
        MetainfoError::FileDirectoryClash { path: "x/a".into() }
    );
}

#[test]
fn v1_structure_errors() {
    let mut t = v1_multi(&[(&["a"], 20000)]);
    info_mut(&mut t).insert(b"pieces".to_vec(), OwnedValue::Bytes(vec![0; 30]));
    assert_eq!(
        parse(&t).unwrap_err(),
        MetainfoError::PiecesNotMultipleOf20 { len: 30 }
    );
    info_mut(&mut t).insert(b"pieces".to_vec(), OwnedValue::Bytes(vec![0; 20]));
    assert_eq!(
        parse(&t).unwrap_err(),
        MetainfoError::PieceCountMismatch {
            expected: 2,
            found: 1,
            size: 20000,
            piece_length: 16384
        }
    );
    info_mut(&mut t).insert(b"length".to_vec(), i(5));
    assert_eq!(parse(&t).unwrap_err(), MetainfoError::LengthAndFiles);
    assert_eq!(
        parse(&v1_multi(&[(&["a"], -1)])).unwrap_err(),
        MetainfoError::InvalidFileLength {
            path: "a".into(),
            length: -1
        }
    );
    assert_eq!(
        parse(&v1_multi(&[(&["a"], 0)])).unwrap_err(),
        MetainfoError::EmptyTorrent
    );
    assert_eq!(parse(&v1_multi(&[])).unwrap_err(), MetainfoError::NoFiles);
    let mut t = v1_multi(&[(&["a"], 10)]);
    info_mut(&mut t).insert(b"piece length".to_vec(), i(0));
    assert_eq!(
        parse(&t).unwrap_err(),
        MetainfoError::InvalidPieceLength {
            length: 0,
            reason: "must be positive"
        }
    );
    info_mut(&mut t).insert(b"piece length".to_vec(), b("16384"));
    assert_eq!(
        parse(&t).unwrap_err(),
        MetainfoError::WrongType {
            field: "info.piece length".into(),
            expected: "integer",
            found: "string"
        }
    );
    // v1 tolerates odd piece lengths, as libtorrent does.
    let mut t = v1_multi(&[(&["a"], 10)]);
    info_mut(&mut t).insert(b"piece length".to_vec(), i(1000));
    assert_eq!(parse(&t).unwrap().piece_length, 1000);
    info_mut(&mut t).remove(&b"pieces"[..]);
    assert_eq!(parse(&t).unwrap_err(), MetainfoError::NoVersion);
    assert_eq!(
        parse(&dict(vec![("announce", b("x"))])).unwrap_err(),
        MetainfoError::MissingField {
            field: "info".into()
        }
    );
}

#[test]
fn bencode_errors_carry_offsets() {
    let e = Torrent::from_bytes(b"d4:infod1:bi1e1:ai1eee").unwrap_err();
    assert_eq!(
        e,
        MetainfoError::Bencode(DecodeError::UnsortedKeys { offset: 14 })
    );
    assert_eq!(
        e.to_string(),
        "bencode: dictionary keys not sorted at offset 14"
    );
    assert!(matches!(
        Torrent::from_bytes(b"d4:info").unwrap_err(),
        MetainfoError::Bencode(DecodeError::UnexpectedEof { offset: 7, .. })
    ));
    assert!(matches!(
        Torrent::from_bytes(b"le").unwrap_err(),
        MetainfoError::WrongType { .. }
    ));
}

/// A torrent made by `create` from a directory with a three-piece file and
/// a small one, decoded for mutation.
fn created(version: MetaVersion) -> (tempfile::TempDir, OwnedValue, Torrent) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("content");
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("d/big"), vec![3u8; 40000]).unwrap();
    std::fs::write(root.join("small"), b"hello").unwrap();
    let opts = CreateOptions {
        version,
        piece_length: Some(16384),
        ..CreateOptions::default()
    };
    let c = create(&root, &opts, &|_| {}).unwrap();
    let v = OwnedValue::from(&decode(&c.bytes).unwrap().value);
    (dir, v, c.torrent)
}

fn top_mut(v: &mut OwnedValue) -> &mut BTreeMap<Vec<u8>, OwnedValue> {
    match v {
        OwnedValue::Dict(d) => d,
        _ => panic!(),
    }
}

fn layers_mut(v: &mut OwnedValue) -> &mut BTreeMap<Vec<u8>, OwnedValue> {
    match top_mut(v).get_mut(&b"piece layers"[..]) {
        Some(OwnedValue::Dict(d)) => d,
        _ => panic!("no piece layers"),
    }
}

fn big_file_mut(v: &mut OwnedValue) -> &mut BTreeMap<Vec<u8>, OwnedValue> {
    let mut node = info_mut(v).get_mut(&b"file tree"[..]).unwrap();
    for key in [&b"d"[..], b"big", b""] {
        node = match node {
            OwnedValue::Dict(d) => d.get_mut(key).unwrap(),
            _ => panic!(),
        };
    }
    match node {
        OwnedValue::Dict(d) => d,
        _ => panic!(),
    }
}

#[test]
fn v2_errors() {
    let (_dir, base, t) = created(MetaVersion::V2);
    assert_eq!(t.version, MetaVersion::V2);
    assert_eq!(parse(&base).unwrap().info_hash_v2, t.info_hash_v2);

    let mut v = base.clone();
    info_mut(&mut v).insert(b"meta version".to_vec(), i(3));
    assert_eq!(
        parse(&v).unwrap_err(),
        MetainfoError::UnsupportedMetaVersion { found: 3 }
    );

    let mut v = base.clone();
    info_mut(&mut v).insert(b"piece length".to_vec(), i(24576));
    assert_eq!(
        parse(&v).unwrap_err(),
        MetainfoError::InvalidPieceLength {
            length: 24576,
            reason: "v2 torrents need a power of two of at least 16384"
        }
    );

    let mut v = base.clone();
    info_mut(&mut v).remove(&b"file tree"[..]);
    assert_eq!(parse(&v).unwrap_err(), MetainfoError::MissingFileTree);

    let mut v = base.clone();
    big_file_mut(&mut v).remove(&b"pieces root"[..]);
    assert_eq!(
        parse(&v).unwrap_err(),
        MetainfoError::MissingPiecesRoot {
            path: "d/big".into(),
            length: 40000
        }
    );

    let mut v = base.clone();
    big_file_mut(&mut v).insert(b"pieces root".to_vec(), OwnedValue::Bytes(vec![1; 31]));
    assert_eq!(
        parse(&v).unwrap_err(),
        MetainfoError::InvalidPiecesRoot {
            path: "d/big".into(),
            len: 31
        }
    );

    let mut v = base.clone();
    layers_mut(&mut v).clear();
    assert_eq!(
        parse(&v).unwrap_err(),
        MetainfoError::MissingPieceLayer {
            path: "d/big".into(),
            length: 40000
        }
    );

    let mut v = base.clone();
    for layer in layers_mut(&mut v).values_mut() {
        if let OwnedValue::Bytes(b) = layer {
            b.truncate(64);
        }
    }
    assert_eq!(
        parse(&v).unwrap_err(),
        MetainfoError::PieceLayerLength {
            path: "d/big".into(),
            expected: 96,
            found: 64
        }
    );

    let mut v = base.clone();
    for layer in layers_mut(&mut v).values_mut() {
        if let OwnedValue::Bytes(b) = layer {
            b[0] ^= 1;
        }
    }
    assert_eq!(
        parse(&v).unwrap_err(),
        MetainfoError::PieceLayerRootMismatch {
            path: "d/big".into()
        }
    );

    let mut v = base.clone();
    layers_mut(&mut v).insert(vec![9u8; 32], OwnedValue::Bytes(vec![0; 32]));
    assert!(
        matches!(parse(&v).unwrap_err(), MetainfoError::UnknownPieceLayer { root } if root == "09".repeat(32))
    );

    // A node that is both a file and a directory.
    let mut v = base.clone();
    if let Some(OwnedValue::Dict(small)) = match info_mut(&mut v).get_mut(&b"file tree"[..]) {
        Some(OwnedValue::Dict(tree)) => tree.get_mut(&b"small"[..]),
        _ => None,
    } {
        small.insert(
            b"child".to_vec(),
            dict(vec![("", dict(vec![("length", i(0))]))]),
        );
    }
    assert_eq!(
        parse(&v).unwrap_err(),
        MetainfoError::FileDirectoryClash {
            path: "small".into()
        }
    );
}

#[test]
fn hybrid_mismatches_are_rejected() {
    let (_dir, base, t) = created(MetaVersion::Hybrid);
    assert_eq!(t.version, MetaVersion::Hybrid);
    let files_mut = |v: &mut OwnedValue| -> Vec<OwnedValue> {
        match info_mut(v).get(&b"files"[..]) {
            Some(OwnedValue::List(l)) => l.clone(),
            _ => panic!(),
        }
    };
    // Remove the pad file: the second file no longer starts on a piece boundary.
    let mut v = base.clone();
    let mut list = files_mut(&mut v);
    assert_eq!(list.len(), 3, "file, pad, file");
    list.remove(1);
    info_mut(&mut v).insert(b"files".to_vec(), OwnedValue::List(list));
    info_mut(&mut v).insert(b"pieces".to_vec(), OwnedValue::Bytes(vec![1; 60]));
    assert!(
        matches!(parse(&v).unwrap_err(), MetainfoError::HybridMismatch { detail } if detail.contains("pad files missing"))
    );
    // Drop a file from the v1 list.
    let mut v = base.clone();
    let mut list = files_mut(&mut v);
    list.truncate(1);
    info_mut(&mut v).insert(b"files".to_vec(), OwnedValue::List(list));
    info_mut(&mut v).insert(b"pieces".to_vec(), OwnedValue::Bytes(vec![1; 60]));
    assert_eq!(
        parse(&v).unwrap_err(),
        MetainfoError::HybridMismatch {
            detail: "1 files in `files` but 2 in `file tree`".into()
        }
    );
}

#[test]
fn create_is_deterministic_and_round_trips() {
    for version in [MetaVersion::V1, MetaVersion::V2, MetaVersion::Hybrid] {
        let (_d1, a, ta) = created(version);
        let (_d2, b, _) = created(version);
        assert_eq!(a.to_bytes(), b.to_bytes(), "{version:?}");
        assert_eq!(ta.total_size, 40005);
        let paths: Vec<String> = ta.files.iter().map(|f| f.display_path()).collect();
        assert_eq!(paths, vec!["d/big", "small"]);
        assert_eq!(
            ta.created_by.as_deref(),
            Some(concat!("ringseed/", env!("CARGO_PKG_VERSION")))
        );
    }
}
