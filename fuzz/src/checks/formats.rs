//! bencode, metainfo and magnet checks.

use ringseed::bencode::{self, DecodeError, OwnedValue, Spanned, Value};
use ringseed::metainfo::{component_problem, Magnet, MetaVersion, Torrent};
use sha1::Sha1;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------
// bencode

/// `decode` / `decode_prefix` on arbitrary bytes: errors point inside the
/// input; accepted input is canonical, so re-encoding reproduces it byte for
/// byte, and every nested value's span is exactly its own encoding.
pub fn check_bencode(data: &[u8]) {
    match bencode::decode(data) {
        Ok(v) => {
            assert_eq!(v.raw, data, "top-level span is not the whole input");
            assert_eq!(v.offset, 0);
            check_spans(&v, data, 0);
            let mut out = Vec::new();
            bencode::encode(&v, &mut out);
            assert_eq!(out, data, "decode -> encode is not the identity");
            let owned = OwnedValue::from(&v.value);
            assert_eq!(owned.to_bytes(), data, "OwnedValue round trip differs");
        }
        Err(e) => check_decode_error(&e, data),
    }
    match bencode::decode_prefix(data) {
        Ok((v, used)) => {
            assert!(used <= data.len() && used > 0);
            assert_eq!(v.raw, &data[..used], "prefix span differs from `used`");
            let exact = bencode::decode(&data[..used]).expect("a decoded prefix decodes alone");
            assert_eq!(exact, v);
            let whole = bencode::decode(data);
            if used == data.len() {
                assert_eq!(whole.as_ref().ok(), Some(&v));
            } else {
                assert_eq!(
                    whole.unwrap_err(),
                    DecodeError::TrailingBytes {
                        offset: used,
                        count: data.len() - used
                    }
                );
            }
        }
        Err(e) => {
            check_decode_error(&e, data);
            assert_eq!(
                bencode::decode(data).unwrap_err(),
                e,
                "decode and decode_prefix disagree on a bad prefix"
            );
        }
    }
}

fn check_decode_error(e: &DecodeError, data: &[u8]) {
    assert!(
        e.offset() <= data.len(),
        "error offset {} past the input ({} bytes): {e}",
        e.offset(),
        data.len()
    );
    assert!(e.to_string().starts_with("bencode: "));
}

fn check_spans(v: &Spanned<'_>, input: &[u8], depth: usize) {
    assert!(
        depth <= bencode::MAX_DEPTH,
        "nesting beyond MAX_DEPTH accepted"
    );
    assert_eq!(
        input.get(v.offset..v.offset + v.raw.len()),
        Some(v.raw),
        "span does not sit at its offset"
    );
    let mut out = Vec::new();
    bencode::encode(v, &mut out);
    assert_eq!(out, v.raw, "a nested value's span is not its encoding");
    match &v.value {
        Value::List(items) => items.iter().for_each(|i| check_spans(i, input, depth + 1)),
        Value::Dict(entries) => {
            for w in entries.windows(2) {
                assert!(w[0].0 < w[1].0, "dictionary keys not strictly increasing");
            }
            for (k, val) in entries {
                assert_eq!(
                    v.get(k).map(|x| x.raw),
                    Some(val.raw),
                    "lookup by key fails"
                );
                check_spans(val, input, depth + 1);
            }
        }
        Value::Bytes(_) | Value::Int(_) => {}
    }
}

// ---------------------------------------------------------------------------
// metainfo

/// `Torrent::from_bytes` and `Torrent::from_info_bytes` on arbitrary bytes:
/// whatever they accept satisfies the documented invariants of [`Torrent`].
pub fn check_metainfo(data: &[u8]) {
    if let Ok(t) = Torrent::from_bytes(data) {
        check_torrent(&t);
        assert!(
            data.windows(t.info_bytes.len()).any(|w| w == t.info_bytes),
            "info_bytes are not a span of the input"
        );
        let again = Torrent::from_info_bytes(&t.info_bytes).expect("the info dict alone parses");
        check_torrent(&again);
        assert_eq!(again.info_hash_v1, t.info_hash_v1);
        assert_eq!(again.info_hash_v2, t.info_hash_v2);
        assert_eq!(again.files, t.files);
        assert_eq!(again.name, t.name);
        assert_eq!(again.num_pieces, t.num_pieces);
        assert!(again.v2_piece_layers.is_none(), "piece layers from nowhere");
    }
    if let Ok(t) = Torrent::from_info_bytes(data) {
        check_torrent(&t);
        assert_eq!(t.info_bytes, data);
    }
}

fn check_torrent(t: &Torrent) {
    let sha1: [u8; 20] = Sha1::digest(&t.info_bytes).into();
    let sha256: [u8; 32] = Sha256::digest(&t.info_bytes).into();
    match t.version {
        MetaVersion::V1 => assert!(t.info_hash_v1.is_some() && t.info_hash_v2.is_none()),
        MetaVersion::V2 => assert!(t.info_hash_v1.is_none() && t.info_hash_v2.is_some()),
        MetaVersion::Hybrid => assert!(t.info_hash_v1.is_some() && t.info_hash_v2.is_some()),
    }
    if let Some(h) = t.info_hash_v1 {
        assert_eq!(h.0, sha1, "v1 info-hash is not SHA-1 of info_bytes");
    }
    if let Some(h) = t.info_hash_v2 {
        assert_eq!(h.0, sha256, "v2 info-hash is not SHA-256 of info_bytes");
    }
    assert!(component_problem(&t.name).is_none() || t.version == MetaVersion::V2);
    assert!(t.piece_length > 0);
    assert!(t.total_size > 0, "empty torrent accepted");
    assert_eq!(
        u64::from(t.num_pieces),
        t.piece_space_len.div_ceil(t.piece_length),
        "num_pieces does not match the piece space"
    );
    if t.num_pieces > 0 {
        let last = t.piece_len(t.num_pieces - 1);
        assert!(last >= 1 && last <= t.piece_length, "bad last piece length");
    }
    assert_eq!(t.piece_len(t.num_pieces), 0);
    if let Some(p) = &t.v1_pieces {
        assert_eq!(p.len() as u64, u64::from(t.num_pieces));
    }
    let mut sum = 0u64;
    let mut prev_end = 0u64;
    let mut seen = std::collections::HashSet::new();
    for f in &t.files {
        assert!(!f.path.is_empty(), "file with an empty path");
        for c in &f.path {
            assert_eq!(
                component_problem(c),
                None,
                "unsafe path {:?} accepted",
                f.path
            );
        }
        assert!(seen.insert(f.path.clone()), "duplicate path {:?}", f.path);
        assert!(f.offset >= prev_end || f.length == 0, "files overlap");
        let end = f.offset.checked_add(f.length).expect("file end overflows");
        assert!(end <= t.piece_space_len, "file beyond the piece space");
        if f.length > 0 {
            prev_end = end;
        }
        sum += f.length;
    }
    // No path may be both a file and a directory.
    for f in &t.files {
        for n in 1..f.path.len() {
            assert!(
                !seen.contains(&f.path[..n]),
                "{:?} is a file and a directory",
                &f.path[..n]
            );
        }
    }
    assert_eq!(sum, t.total_size);
    if let Some(layers) = &t.v2_piece_layers {
        assert_eq!(layers.len(), t.files.len());
        for (f, layer) in t.files.iter().zip(layers) {
            let expected = if f.length > t.piece_length {
                f.length.div_ceil(t.piece_length)
            } else {
                0
            };
            assert_eq!(layer.len() as u64, expected, "piece layer length");
        }
    }
    // The magnet link names the same torrent.
    let m = Magnet::parse(&t.magnet_uri()).expect("our own magnet link parses");
    assert_eq!(m.info_hash_v1, t.info_hash_v1);
    assert_eq!(m.info_hash_v2, t.info_hash_v2);
    assert_eq!(m.display_name.as_deref(), Some(t.name.as_str()));
}

// ---------------------------------------------------------------------------
// magnet

/// `Magnet::parse` on arbitrary text: what it accepts round-trips through
/// `to_uri`, and every `xt` it accepted is a well-formed hash (checked by an
/// independent strict reading of the URI).
pub fn check_magnet(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(m) = Magnet::parse(&text) else {
        return;
    };
    assert!(m.info_hash_v1.is_some() || m.info_hash_v2.is_some());
    let uri = m.to_uri();
    let back = Magnet::parse(&uri).expect("to_uri output parses");
    assert_eq!(back, m, "magnet round trip differs: {uri}");
    let query = text
        .strip_prefix("magnet:?")
        .or_else(|| text.strip_prefix("MAGNET:?"))
        .expect("accepted without the magnet prefix");
    for pair in query.split('&') {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        assert!(
            strict_percent_decode(raw).is_some(),
            "parameter {key:?} has invalid percent-encoding {raw:?} but was accepted"
        );
        if key != "xt" {
            continue;
        }
        let value = strict_percent_decode(raw)
            .unwrap_or_default()
            .to_ascii_lowercase();
        if let Some(h) = value.strip_prefix("urn:btih:") {
            let hex = h.len() == 40 && h.bytes().all(|c| c.is_ascii_hexdigit());
            let b32 = h.len() == 32 && h.bytes().all(|c| matches!(c, b'a'..=b'z' | b'2'..=b'7'));
            assert!(hex || b32, "malformed btih {h:?} accepted");
        } else if let Some(h) = value.strip_prefix("urn:btmh:") {
            let ok =
                h.len() == 68 && h.starts_with("1220") && h.bytes().all(|c| c.is_ascii_hexdigit());
            assert!(ok, "malformed btmh {h:?} accepted");
        }
    }
}

/// RFC 3986 percent-decoding (`+` as space, as in forms): `%` must be
/// followed by exactly two hex digits.
fn strict_percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = (*b.get(i + 1)? as char).to_digit(16)?;
                let lo = (*b.get(i + 2)? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
