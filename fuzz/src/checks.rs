//! Invariant checks shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`)
//! and by the regression tests (`tests/fuzz_regressions.rs`, which includes
//! this file with `#[path]`), so a crash input replays through exactly the
//! checks that found it.
//!
//! Depends on `ringseed`, `sha1`, `sha2` and `std` only: the root package's
//! tests can include it without new dev-dependencies. Every function panics
//! (with a message naming the broken invariant) when the code under test
//! misbehaves, and returns normally for any input the code handles correctly,
//! including inputs it rightly rejects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringseed::bencode::{self, DecodeError, OwnedValue, Spanned, Value};
use ringseed::metainfo::{component_problem, Magnet, MetaVersion, Torrent};
use ringseed::wire::codec::{
    self, BlockRequest, Decoded, Handshake, HandshakeDecoded, HashRequest, Message, ReservedFlags,
    WireError, HANDSHAKE_LEN, PROTOCOL,
};
use ringseed::wire::ext::{
    encode_ext_handshake, parse_ext_handshake, ExtError, OurExtHandshake, CLIENT_NAME_MAX,
};
use ringseed::wire::{
    Bitfield, CloseReason, PeerConfig, PeerState, TorrentCatalog, TorrentId, TorrentKey,
    TorrentView,
};
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
    assert!(depth <= bencode::MAX_DEPTH, "nesting beyond MAX_DEPTH accepted");
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
                assert_eq!(v.get(k).map(|x| x.raw), Some(val.raw), "lookup by key fails");
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
            assert_eq!(component_problem(c), None, "unsafe path {:?} accepted", f.path);
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
                !seen.contains(&f.path[..n].to_vec()),
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
        let value = strict_percent_decode(raw).unwrap_or_default().to_ascii_lowercase();
        if let Some(h) = value.strip_prefix("urn:btih:") {
            let hex = h.len() == 40 && h.bytes().all(|c| c.is_ascii_hexdigit());
            let b32 = h.len() == 32 && h.bytes().all(|c| matches!(c, b'a'..=b'z' | b'2'..=b'7'));
            assert!(hex || b32, "malformed btih {h:?} accepted");
        } else if let Some(h) = value.strip_prefix("urn:btmh:") {
            let ok = h.len() == 68
                && h.starts_with("1220")
                && h.bytes().all(|c| c.is_ascii_hexdigit());
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

// ---------------------------------------------------------------------------
// wire codec

/// Everything a run of the decoder produced: the messages (re-encoded) and how
/// it stopped.
#[derive(Debug, PartialEq, Eq)]
struct DecodeRun {
    messages: Vec<Vec<u8>>,
    end: DecodeEnd,
}

#[derive(Debug, PartialEq, Eq)]
enum DecodeEnd {
    /// All input consumed at a message boundary.
    Clean,
    /// Input ends inside a message; `needed` more bytes at least.
    Incomplete { buffered: Vec<u8>, needed: usize },
    Error(WireError),
}

/// The first bytes of a `wire_decode` input choose `max_message_len`.
pub fn wire_max_len(selector: u8) -> u32 {
    match selector % 8 {
        0 => 256 * 1024,
        1 => 0,
        2 => 1,
        3 => 13,
        4 => 16 * 1024 + 9,
        5 => u32::MAX,
        6 => 64,
        _ => u32::from(selector) * 97,
    }
}

/// `data` = [max-len selector][split count n][n split bytes][stream].
/// Decodes the stream whole and in chunks (as a receiver buffering partial
/// messages would): both must yield the same messages and the same ending,
/// every message re-encodes to exactly the bytes it was decoded from, and
/// decoding the re-encoding gives the message back.
pub fn check_wire_stream(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let max = wire_max_len(sel);
    let (&n, rest) = rest.split_first().unwrap_or((&0, &[]));
    let n = usize::from(n % 16).min(rest.len());
    let (splits, stream) = rest.split_at(n);
    let whole = decode_all(stream, max);
    // Chunk boundaries: cumulative sums of the split bytes (0 = empty chunk).
    let mut chunks = Vec::new();
    let mut at = 0usize;
    for &s in splits {
        let end = (at + usize::from(s)).min(stream.len());
        chunks.push(&stream[at..end]);
        at = end;
    }
    chunks.push(&stream[at..]);
    let pieces = decode_chunked(&chunks, max);
    assert_eq!(whole, pieces, "whole-stream and chunked decoding differ");
    // Byte at a time too, for short streams (cheap, catches off-by-ones).
    if stream.len() <= 256 {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(whole, decode_chunked(&bytes, max), "byte-at-a-time differs");
    }
}

fn decode_all(stream: &[u8], max: u32) -> DecodeRun {
    let mut messages = Vec::new();
    let mut buf = stream;
    loop {
        if buf.is_empty() {
            return DecodeRun {
                messages,
                end: DecodeEnd::Clean,
            };
        }
        match codec::decode(buf, max) {
            Ok(Decoded::Message { msg, consumed }) => {
                assert!(consumed >= 4 && consumed <= buf.len());
                check_message(&msg, &buf[..consumed], max);
                messages.push(buf[..consumed].to_vec());
                buf = &buf[consumed..];
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert!(needed >= 1, "Incomplete with needed = 0");
                return DecodeRun {
                    messages,
                    end: DecodeEnd::Incomplete {
                        buffered: buf.to_vec(),
                        needed,
                    },
                };
            }
            Err(e) => {
                return DecodeRun {
                    messages,
                    end: DecodeEnd::Error(e),
                }
            }
        }
    }
}

/// A receiver that keeps a partial message and appends each chunk.
fn decode_chunked(chunks: &[&[u8]], max: u32) -> DecodeRun {
    let mut messages = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut last_needed = 0usize;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            if buf.is_empty() {
                break;
            }
            match codec::decode(&buf, max) {
                Ok(Decoded::Message { msg, consumed }) => {
                    check_message(&msg, &buf[..consumed], max);
                    messages.push(buf[..consumed].to_vec());
                    buf.drain(..consumed);
                }
                Ok(Decoded::Incomplete { needed }) => {
                    assert!(needed >= 1);
                    // A 4 + max bound on what a receiver ever buffers.
                    assert!(
                        (buf.len() + needed) as u64 <= 4 + u64::from(max),
                        "decoder asks to buffer beyond 4 + max_message_len"
                    );
                    last_needed = needed;
                    break;
                }
                Err(e) => {
                    return DecodeRun {
                        messages,
                        end: DecodeEnd::Error(e),
                    }
                }
            }
        }
    }
    let end = if buf.is_empty() {
        DecodeEnd::Clean
    } else {
        DecodeEnd::Incomplete {
            buffered: buf,
            needed: last_needed,
        }
    };
    DecodeRun { messages, end }
}

fn check_message(msg: &Message<'_>, raw: &[u8], max: u32) {
    assert_eq!(msg.encoded_len(), raw.len(), "encoded_len of {msg:?}");
    let mut out = Vec::new();
    msg.encode(&mut out);
    assert_eq!(out, raw, "re-encoding {msg:?} differs from its input bytes");
    match codec::decode(&out, max) {
        Ok(Decoded::Message { msg: again, consumed }) => {
            assert_eq!(consumed, out.len());
            assert_eq!(&again, msg);
        }
        other => panic!("re-encoded {msg:?} decodes as {other:?}"),
    }
}

/// `Handshake::decode` on arbitrary bytes, and on every prefix of them.
pub fn check_handshake(data: &[u8]) {
    let mut header = [0u8; 20];
    header[0] = 19;
    header[1..].copy_from_slice(PROTOCOL);
    let outcome = Handshake::decode(data);
    let prefix_ok = data.iter().zip(header.iter()).all(|(a, b)| a == b);
    match outcome {
        Ok(HandshakeDecoded::Complete(h)) => {
            assert!(prefix_ok && data.len() >= HANDSHAKE_LEN);
            assert_eq!(&h.encode()[..], &data[..HANDSHAKE_LEN], "handshake re-encoding");
            let flags = h.flags();
            assert_eq!(ReservedFlags::from_bytes(&flags.to_bytes()), flags);
            assert_eq!(h.supports_fast(), data[27] & 0x04 != 0);
            assert_eq!(h.supports_extensions(), data[25] & 0x10 != 0);
            assert_eq!(h.supports_v2(), data[27] & 0x10 != 0);
            assert_eq!(h.supports_dht(), data[27] & 0x01 != 0);
            // Every shorter prefix is incomplete, never an error.
            for k in 0..HANDSHAKE_LEN {
                assert_eq!(
                    Handshake::decode(&data[..k]),
                    Ok(HandshakeDecoded::Incomplete {
                        needed: HANDSHAKE_LEN - k
                    })
                );
            }
        }
        Ok(HandshakeDecoded::Incomplete { needed }) => {
            assert!(prefix_ok && data.len() < HANDSHAKE_LEN);
            assert_eq!(needed, HANDSHAKE_LEN - data.len());
        }
        Err(e) => {
            assert_eq!(e, WireError::BadProtocolString);
            assert!(!prefix_ok, "a valid protocol prefix was rejected");
        }
    }
}

// ---------------------------------------------------------------------------
// BEP 10 extension handshake

/// `parse_ext_handshake` against a model built on the strict bencode decoder,
/// then our own encoder's output (parameters taken from `data`) parsed back.
pub fn check_ext_handshake(data: &[u8]) {
    let parsed = parse_ext_handshake(data);
    match bencode::decode(data) {
        Ok(v) => {
            let height = height(&v);
            match (ext_model(&v), parsed) {
                (Ok(expected), Ok(got)) => assert_eq!(expected, ExtFields::from(&got)),
                (Ok(_), Err(ExtError::TooDeep)) => {
                    assert!(height >= 16, "TooDeep for a document of height {height}")
                }
                (Ok(expected), Err(e)) => {
                    panic!("valid handshake {expected:?} rejected: {e}")
                }
                (Err(()), Ok(got)) => panic!("handshake with a bad value accepted: {got:?}"),
                (Err(()), Err(_)) => {}
            }
        }
        Err(e) => {
            if parsed.is_ok() {
                // The ext parser is lenient about key order only.
                assert!(
                    matches!(
                        e,
                        DecodeError::UnsortedKeys { .. } | DecodeError::DuplicateKey { .. }
                    ),
                    "ext parser accepted input the strict decoder rejects with: {e}"
                );
            }
        }
    }
    check_ext_round_trip(data);
}

/// The fields `parse_ext_handshake` reports, comparable with the model.
#[derive(Debug, PartialEq, Eq)]
struct ExtFields {
    ut_metadata: Option<u8>,
    extensions: u32,
    reqq: Option<u32>,
    metadata_size: Option<u32>,
    listen_port: Option<u16>,
    client: String,
}

impl From<&ringseed::wire::ext::PeerExtHandshake> for ExtFields {
    fn from(h: &ringseed::wire::ext::PeerExtHandshake) -> Self {
        ExtFields {
            ut_metadata: h.ut_metadata,
            extensions: h.extensions,
            reqq: h.reqq,
            metadata_size: h.metadata_size,
            listen_port: h.listen_port,
            client: h.client().to_string(),
        }
    }
}

fn height(v: &Value<'_>) -> usize {
    match v {
        Value::List(items) => items.iter().map(|i| 1 + height(i)).max().unwrap_or(0),
        Value::Dict(entries) => entries.iter().map(|(_, i)| 1 + height(i)).max().unwrap_or(0),
        _ => 0,
    }
}

/// What BEP 10 says the handshake means, from a strictly decoded value.
fn ext_model(v: &Value<'_>) -> Result<ExtFields, ()> {
    let entries = v.as_dict().ok_or(())?;
    let mut out = ExtFields {
        ut_metadata: None,
        extensions: 0,
        reqq: None,
        metadata_size: None,
        listen_port: None,
        client: String::new(),
    };
    for (key, value) in entries {
        match (*key, &value.value) {
            (b"m", Value::Dict(m)) => {
                for (name, id) in m {
                    if let Value::Int(id) = id.value {
                        let id = u8::try_from(id).map_err(|_| ())?;
                        out.extensions += 1;
                        if *name == b"ut_metadata" {
                            out.ut_metadata = Some(id);
                        }
                    }
                }
            }
            (b"m", _) => return Err(()),
            (b"reqq", Value::Int(i)) => out.reqq = Some(u32::try_from(*i).map_err(|_| ())?),
            (b"metadata_size", Value::Int(i)) => {
                out.metadata_size = Some(u32::try_from(*i).map_err(|_| ())?)
            }
            (b"p", Value::Int(i)) => out.listen_port = Some(u16::try_from(*i).map_err(|_| ())?),
            (b"v", Value::Bytes(b)) => {
                let b = &b[..b.len().min(CLIENT_NAME_MAX)];
                out.client = match std::str::from_utf8(b) {
                    Ok(s) => s.to_string(),
                    Err(e) => String::from_utf8_lossy(&b[..e.valid_up_to()]).into_owned(),
                };
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Our handshake, with parameters read from `data`, goes through the codec
/// and the peer-side parser and comes back with the same values.
fn check_ext_round_trip(data: &[u8]) {
    let word = |i: usize| {
        let mut w = [0u8; 4];
        for (k, b) in w.iter_mut().enumerate() {
            *b = data.get(i * 4 + k).copied().unwrap_or(0);
        }
        u32::from_le_bytes(w)
    };
    let flags = data.first().copied().unwrap_or(0);
    let client = String::from_utf8_lossy(data.get(16..).unwrap_or_default()).into_owned();
    let yourip = match flags % 3 {
        0 => None,
        1 => Some(std::net::IpAddr::from(word(1).to_be_bytes())),
        _ => Some(std::net::IpAddr::from(
            [word(1), word(2), word(3), word(0)]
                .map(u32::to_be_bytes)
                .concat()
                .try_into()
                .map(|a: [u8; 16]| a)
                .unwrap_or([0; 16]),
        )),
    };
    let ours = OurExtHandshake {
        client_version: &client,
        reqq: word(1),
        listen_port: (flags & 0x10 != 0).then_some(word(2) as u16),
        yourip,
        metadata_size: (flags & 0x20 != 0).then_some(word(3)),
    };
    let mut out = Vec::new();
    encode_ext_handshake(&mut out, &ours);
    let payload = match codec::decode(&out, u32::MAX) {
        Ok(Decoded::Message {
            msg: Message::Extended { id: 0, payload },
            consumed,
        }) if consumed == out.len() => payload,
        other => panic!("our extension handshake decodes as {other:?}"),
    };
    let v = bencode::decode(payload).expect("our extension handshake is canonical bencode");
    assert!(v.as_dict().is_some());
    let got = parse_ext_handshake(payload).expect("our extension handshake parses");
    assert_eq!(got.reqq, Some(ours.reqq));
    assert_eq!(got.listen_port, ours.listen_port);
    assert_eq!(got.metadata_size, ours.metadata_size);
    assert_eq!(got.ut_metadata, ours.metadata_size.map(|_| 1));
    let kept = &client.as_bytes()[..client.len().min(CLIENT_NAME_MAX)];
    let expect = match std::str::from_utf8(kept) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&kept[..e.valid_up_to()]).unwrap_or_default(),
    };
    assert_eq!(got.client(), expect);
}

// ---------------------------------------------------------------------------
// peer state machine

/// The torrent the peer-state harness serves.
pub const V1_HASH: [u8; 20] = [0x11; 20];
/// Its truncated v2 info-hash (when the setup says it has a v2 part).
pub const V2_HASH: [u8; 20] = [0x22; 20];
/// An info-hash nobody serves.
pub const UNKNOWN_HASH: [u8; 20] = [0x33; 20];

/// How the harness is configured: the first [`PeerSetup::LEN`] bytes of a
/// `peer_state` input.
#[derive(Debug, Clone)]
pub struct PeerSetup {
    pub piece_length: u32,
    pub num_pieces: u32,
    /// 1..=piece_length
    pub last_piece_len: u32,
    /// Bit i of byte i % 4 (MSB first) tells whether piece i is verified;
    /// all ones = a full seed.
    pub have_pattern: [u8; 4],
    pub has_v2: bool,
    pub metadata_size: Option<u32>,
    pub reqq: u32,
    pub max_message_len: u32,
    /// `set_choked(now, false)` before the handshake.
    pub start_unchoked: bool,
}

impl PeerSetup {
    pub const LEN: usize = 10;

    pub fn from_bytes(b: &[u8; Self::LEN]) -> Self {
        let piece_length = 16 * 1024 << (b[0] % 4); // 16..128 KiB
        let num_pieces = match b[1] % 4 {
            3 => 1 + u32::from(u16::from_le_bytes([b[2], b[3]])) % 20_000,
            _ => 1 + u32::from(b[2]) % 40,
        };
        let last_piece_len = 1 + (u32::from(b[3]) * 1021 + u32::from(b[2])) % piece_length;
        let last_piece_len = if b[1] & 0x80 != 0 {
            piece_length
        } else {
            last_piece_len
        };
        PeerSetup {
            piece_length,
            num_pieces,
            last_piece_len,
            have_pattern: [b[4], b[5], b[6], b[7]],
            has_v2: b[8] & 1 != 0,
            metadata_size: (b[8] & 2 != 0).then_some(1000 + u32::from(b[5])),
            reqq: 1 + u32::from(b[9] % 16),
            max_message_len: if b[8] & 4 != 0 { 256 * 1024 } else { 4096 },
            start_unchoked: b[8] & 8 != 0,
        }
    }

    fn have(&self) -> Bitfield {
        if self.have_pattern == [0xff; 4] {
            return Bitfield::full(self.num_pieces);
        }
        let mut b = Bitfield::new(self.num_pieces);
        for i in 0..self.num_pieces {
            let byte = self.have_pattern[(i / 8 % 4) as usize];
            if byte & (0x80 >> (i % 8)) != 0 {
                b.set(i);
            }
        }
        b
    }
}

struct OneTorrent {
    setup: PeerSetup,
    have: Bitfield,
}

impl OneTorrent {
    fn view(&self) -> TorrentView<'_> {
        TorrentView {
            id: TorrentId(7),
            num_pieces: self.setup.num_pieces,
            piece_length: self.setup.piece_length,
            last_piece_len: self.setup.last_piece_len,
            have: &self.have,
            has_v2: self.setup.has_v2,
            metadata_size: self.setup.metadata_size,
        }
    }
}

impl TorrentCatalog for OneTorrent {
    fn lookup(&self, key: TorrentKey<'_>) -> Option<TorrentView<'_>> {
        let found = match key {
            TorrentKey::Id(id) => id == TorrentId(7),
            TorrentKey::InfoHash(h) => *h == V1_HASH || (self.setup.has_v2 && *h == V2_HASH),
        };
        found.then(|| self.view())
    }
}

/// One step of a `peer_state` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOp {
    /// Bytes from the peer, handed to `handle_bytes` as one chunk.
    Bytes(Vec<u8>),
    /// The clock advances, then `handle_tick`.
    Tick(Duration),
    /// The choker's decision.
    SetChoked(bool),
    /// `pop_block` up to this many times.
    Pop(u8),
    /// `advance_transmit(n)` (after looking at `poll_transmit`); `n` may
    /// exceed what is pending.
    Drain(usize),
}

impl PeerOp {
    /// A message from the peer.
    pub fn msg(m: Message<'_>) -> PeerOp {
        let mut b = Vec::new();
        m.encode(&mut b);
        PeerOp::Bytes(b)
    }

    /// A handshake from the peer for `info_hash`.
    pub fn handshake(info_hash: [u8; 20], fast: bool, extension: bool) -> PeerOp {
        let h = Handshake {
            reserved: ReservedFlags {
                fast,
                extension,
                v2: false,
                dht: true,
            }
            .to_bytes(),
            info_hash,
            peer_id: *b"-qB4650-fuzzfuzzfuzz",
        };
        PeerOp::Bytes(h.encode().to_vec())
    }
}

/// Reads the ops part of a `peer_state` input (see [`decode_peer_input`]).
struct OpReader<'a> {
    ops: &'a [u8],
    stream: &'a [u8],
    setup: &'a PeerSetup,
    /// The second half of a message cut in two.
    pending: Option<Vec<u8>>,
}

impl OpReader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.ops.split_first()?;
        self.ops = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.byte()?,
            self.byte()?,
            self.byte()?,
            self.byte()?,
        ]))
    }
    fn take_stream(&mut self, n: usize) -> Vec<u8> {
        let (head, rest) = self.stream.split_at(n.min(self.stream.len()));
        self.stream = rest;
        head.to_vec()
    }

    /// A block request biased towards the torrent's shape.
    fn request(&mut self) -> Option<BlockRequest> {
        let mode = self.byte()?;
        let n = self.setup.num_pieces;
        let piece = match mode & 3 {
            0 | 1 => u32::from(self.byte()?) % (n + 2),
            2 => n.saturating_sub(1),
            _ => self.u32()?,
        };
        let begin = match (mode >> 2) & 3 {
            0 | 1 => u32::from(self.byte()?) * 16 * 1024,
            2 => self.setup.last_piece_len.saturating_sub(16 * 1024),
            _ => self.u32()?,
        };
        let len = match (mode >> 4) & 3 {
            0 | 1 => 16 * 1024,
            2 => u32::from(self.u16()?),
            _ => self.u32()?,
        };
        Some(BlockRequest { piece, begin, len })
    }

    /// A well-formed message the peer might send.
    fn message(&mut self) -> Option<Vec<u8>> {
        let kind = self.byte()?;
        let mut out = Vec::new();
        let n = self.setup.num_pieces;
        let bitfield;
        let payload;
        let msg = match kind % 16 {
            0 => Message::Request(self.request()?),
            1 => Message::Cancel(self.request()?),
            2 => Message::Interested,
            3 => Message::NotInterested,
            4 => Message::Have(u32::from(self.u16()?) % (n + 1)),
            5 => {
                let mut b = Bitfield::new(n);
                let seed = self.byte()?;
                for i in 0..n {
                    if (i as u8).wrapping_mul(seed) & 0x80 != 0 {
                        b.set(i);
                    }
                }
                bitfield = b;
                Message::Bitfield(bitfield.as_bytes())
            }
            6 => Message::HaveAll,
            7 => Message::HaveNone,
            8 => {
                encode_ext_handshake(
                    &mut out,
                    &OurExtHandshake {
                        client_version: "libtorrent/2.1.1",
                        reqq: self.u32()?,
                        listen_port: Some(self.u16()?),
                        yourip: None,
                        metadata_size: Some(1234),
                    },
                );
                return Some(out);
            }
            9 => Message::KeepAlive,
            10 => Message::HashRequest(HashRequest {
                pieces_root: [self.byte()?; 32],
                base_layer: u32::from(self.byte()?),
                index: u32::from(self.u16()?),
                length: u32::from(self.u16()?),
                proof_layers: u32::from(self.byte()?),
            }),
            11 => Message::Reject(self.request()?),
            12 => Message::Suggest(u32::from(self.u16()?)),
            13 => {
                let id = self.byte()?;
                let len = usize::from(self.byte()?);
                payload = self.take_stream(len);
                Message::Extended {
                    id,
                    payload: &payload,
                }
            }
            14 => Message::Port(self.u16()?),
            _ => Message::Piece {
                index: u32::from(self.byte()?),
                begin: 0,
                data: &[0xab; 32],
            },
        };
        msg.encode(&mut out);
        Some(out)
    }

    fn next_op(&mut self) -> Option<PeerOp> {
        let tag = self.byte()?;
        Some(match tag % 10 {
            0 | 1 => {
                let n = usize::from(self.byte()?);
                PeerOp::Bytes(self.take_stream(n))
            }
            2 => PeerOp::Bytes(self.message()?),
            3 => {
                let flags = self.byte()?;
                let hash = match flags % 4 {
                    0 | 1 => V1_HASH,
                    2 => V2_HASH,
                    _ => UNKNOWN_HASH,
                };
                PeerOp::handshake(hash, flags & 4 != 0, flags & 8 != 0)
            }
            4 => PeerOp::Tick(Duration::from_millis(u64::from(self.u16()?) * 10)),
            5 => PeerOp::SetChoked(true),
            6 => PeerOp::SetChoked(false),
            7 => PeerOp::Pop(self.byte()?),
            8 => PeerOp::Drain(usize::from(self.u16()?)),
            _ => {
                // A message cut in two chunks.
                let m = self.message()?;
                let cut = usize::from(self.byte()?) % (m.len() + 1);
                self.pending = Some(m[cut..].to_vec());
                PeerOp::Bytes(m[..cut].to_vec())
            }
        })
    }
}

/// `peer_state` input: `[setup: PeerSetup::LEN][ops_len: u16 LE][ops][stream]`.
/// Ops are tag bytes with arguments (see `OpReader::next_op`); "bytes" ops
/// take their bytes from the stream. Whatever stream is left after the ops
/// is fed as one last chunk. Returns `None` when the input is too short.
pub fn decode_peer_input(data: &[u8]) -> Option<(PeerSetup, Vec<PeerOp>)> {
    let setup_bytes: &[u8; PeerSetup::LEN] = data.get(..PeerSetup::LEN)?.try_into().ok()?;
    let setup = PeerSetup::from_bytes(setup_bytes);
    let rest = &data[PeerSetup::LEN..];
    let ops_len = match rest {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
        _ => 0,
    };
    let rest = rest.get(2..).unwrap_or_default();
    let (ops, stream) = rest.split_at(ops_len.min(rest.len()));
    let mut reader = OpReader {
        ops,
        stream,
        setup: &setup,
        pending: None,
    };
    let mut out = Vec::new();
    loop {
        if let Some(p) = reader.pending.take() {
            out.push(PeerOp::Bytes(p));
        }
        match reader.next_op() {
            Some(op) => out.push(op),
            None => break,
        }
        if out.len() > 4096 {
            break;
        }
    }
    if !reader.stream.is_empty() {
        out.push(PeerOp::Bytes(reader.stream.to_vec()));
    }
    Some((setup, out))
}

/// Runs a decoded `peer_state` input through [`run_peer`].
pub fn check_peer_input(data: &[u8]) {
    if let Some((setup, ops)) = decode_peer_input(data) {
        run_peer(&setup, &ops);
    }
}

/// What the peer sent, decoded independently of `PeerState`.
struct PeerStream {
    fed: Vec<u8>,
    pos: usize,
    max: u32,
    handshake: Option<Handshake>,
    requests: HashMap<BlockRequest, u64>,
    requests_total: u64,
    hash_requests: u64,
}

impl PeerStream {
    /// Decodes the complete messages fed so far (after `handle_bytes`
    /// returned `Ok`, `PeerState` has processed exactly these).
    fn update(&mut self) {
        loop {
            let buf = &self.fed[self.pos..];
            if self.handshake.is_none() {
                match Handshake::decode(buf) {
                    Ok(HandshakeDecoded::Complete(h)) => {
                        self.handshake = Some(h);
                        self.pos += HANDSHAKE_LEN;
                        continue;
                    }
                    _ => return,
                }
            }
            match codec::decode(buf, self.max) {
                Ok(Decoded::Message { msg, consumed }) => {
                    match msg {
                        Message::Request(r) => {
                            *self.requests.entry(r).or_default() += 1;
                            self.requests_total += 1;
                        }
                        Message::HashRequest(_) => self.hash_requests += 1,
                        _ => {}
                    }
                    self.pos += consumed;
                }
                _ => return,
            }
        }
    }
}

/// What we sent, decoded and checked message by message. `Clone` so the
/// undrained tail can be checked from the drained state without committing.
#[derive(Clone, Default)]
struct OutParser {
    handshake_seen: bool,
    /// Bitfield / have_all / have_none seen (or the peer needs none).
    announced_have: bool,
    choked_announced: bool,
    rejects: HashMap<BlockRequest, u64>,
    rejects_total: u64,
    hash_rejects: u64,
}

impl OutParser {
    /// Consumes whole items from the front of `buf`; returns bytes used.
    fn feed(&mut self, buf: &[u8], t: &OneTorrent, peer_hs: &Handshake) -> usize {
        let mut used = 0;
        if !self.handshake_seen {
            match Handshake::decode(buf) {
                Ok(HandshakeDecoded::Complete(h)) => {
                    assert_eq!(h.info_hash, peer_hs.info_hash, "we answered another hash");
                    assert!(h.supports_fast() && h.supports_extensions());
                    assert_eq!(h.supports_v2(), t.setup.has_v2);
                    self.handshake_seen = true;
                    self.choked_announced = true;
                    used = HANDSHAKE_LEN;
                }
                Ok(HandshakeDecoded::Incomplete { .. }) => return 0,
                Err(e) => panic!("our output does not start with a handshake: {e}"),
            }
        }
        let fast = peer_hs.supports_fast();
        loop {
            let rest = &buf[used..];
            let (msg, consumed) = match codec::decode(rest, u32::MAX) {
                Ok(Decoded::Message { msg, consumed }) => (msg, consumed),
                Ok(Decoded::Incomplete { .. }) => return used,
                Err(e) => panic!("we sent a malformed message: {e}"),
            };
            let is_have_msg = matches!(
                msg,
                Message::Bitfield(_) | Message::HaveAll | Message::HaveNone
            );
            if !is_have_msg && !matches!(msg, Message::Extended { id: 0, .. }) {
                // Anything after the handshake and ext handshake means the
                // have announcement is over (a non-fast peer with nothing
                // verified gets none).
                self.announced_have = true;
            }
            match msg {
                Message::Extended { id: 0, payload } => {
                    assert!(!self.announced_have, "ext handshake after other messages");
                    assert!(peer_hs.supports_extensions(), "ext handshake to a non-BEP 10 peer");
                    let ext = parse_ext_handshake(payload).expect("our ext handshake parses");
                    assert_eq!(ext.reqq, Some(t.setup.reqq));
                    assert_eq!(ext.metadata_size, t.setup.metadata_size);
                }
                Message::Bitfield(b) => {
                    assert!(!self.announced_have, "second have announcement");
                    assert_eq!(b, t.have.as_bytes(), "bitfield differs from our haves");
                    assert!(!(fast && t.have.is_full()), "bitfield instead of have_all");
                    assert!(t.have.count() > 0, "empty bitfield sent");
                    self.announced_have = true;
                }
                Message::HaveAll => {
                    assert!(!self.announced_have && fast && t.have.is_full());
                    self.announced_have = true;
                }
                Message::HaveNone => {
                    assert!(!self.announced_have && fast && t.have.count() == 0);
                    self.announced_have = true;
                }
                Message::Choke => {
                    assert!(!self.choked_announced, "choke while already choked");
                    self.choked_announced = true;
                }
                Message::Unchoke => {
                    assert!(self.choked_announced, "unchoke while already unchoked");
                    self.choked_announced = false;
                }
                Message::Reject(r) => {
                    assert!(fast, "reject_request to a peer without the fast extension");
                    *self.rejects.entry(r).or_default() += 1;
                    self.rejects_total += 1;
                }
                Message::HashReject(_) => self.hash_rejects += 1,
                Message::KeepAlive => {}
                other => panic!("unexpected control message {other:?}"),
            }
            used += consumed;
        }
    }
}

struct PeerHarness {
    torrent: OneTorrent,
    peer: PeerState,
    now: Instant,
    created: Instant,
    last_recv: Instant,
    stream: PeerStream,
    drained: Vec<u8>,
    parsed_upto: usize,
    out: OutParser,
    popped: HashMap<BlockRequest, u64>,
    pops_total: u64,
    /// Control bytes the choker (not the peer) made us queue.
    choke_allowance: usize,
    closed: Option<CloseReason>,
}

/// Base of the transmit bound: handshake, extension handshake, one have
/// announcement, one keep-alive.
const TX_BASE: usize = HANDSHAKE_LEN + 512 + 5 + 4;
/// `PeerState`'s documented control backlog limit.
const CONTROL_BACKLOG_LIMIT: usize = 64 * 1024;

impl PeerHarness {
    fn new(setup: &PeerSetup) -> Self {
        let have = setup.have();
        let now = Instant::now();
        let cfg = PeerConfig {
            reqq: setup.reqq,
            max_message_len: setup.max_message_len,
            listen_port: Some(6881),
            ..PeerConfig::default()
        };
        let remote: SocketAddr = "192.0.2.7:51413".parse().expect("literal address");
        let mut peer = PeerState::new(now, &cfg, remote);
        if setup.start_unchoked {
            peer.set_choked(now, false);
        }
        PeerHarness {
            torrent: OneTorrent {
                setup: setup.clone(),
                have,
            },
            peer,
            now,
            created: now,
            last_recv: now,
            stream: PeerStream {
                fed: Vec::new(),
                pos: 0,
                max: setup.max_message_len,
                handshake: None,
                requests: HashMap::new(),
                requests_total: 0,
                hash_requests: 0,
            },
            drained: Vec::new(),
            parsed_upto: 0,
            out: OutParser::default(),
            popped: HashMap::new(),
            pops_total: 0,
            choke_allowance: 0,
            closed: None,
        }
    }

    fn apply(&mut self, op: &PeerOp) {
        match op {
            PeerOp::Bytes(b) => {
                let result = self.peer.handle_bytes(self.now, b, &self.torrent);
                if !b.is_empty() {
                    self.last_recv = self.now;
                }
                self.stream.fed.extend_from_slice(b);
                if let Err(reason) = result {
                    self.closed = Some(reason);
                    return;
                }
                self.stream.update();
                assert_eq!(
                    self.peer.is_handshake_complete(),
                    self.stream.handshake.is_some()
                );
            }
            PeerOp::Tick(d) => {
                self.now += *d;
                let since_created = self.now - self.created;
                let idle = self.now - self.last_recv;
                let complete = self.peer.is_handshake_complete();
                let handshake_late = !complete && since_created >= Duration::from_secs(10);
                let idle_late = idle >= Duration::from_secs(120);
                match self.peer.handle_tick(self.now) {
                    Ok(()) => {
                        assert!(!handshake_late, "handshake timeout missed");
                        assert!(!idle_late, "idle timeout missed");
                        self.choke_allowance += 4; // a keep-alive
                    }
                    Err(reason) => {
                        match reason {
                            CloseReason::HandshakeTimeout => assert!(handshake_late),
                            CloseReason::IdleTimeout => assert!(idle_late),
                            other => panic!("handle_tick closed with {other:?}"),
                        }
                        self.closed = Some(reason);
                    }
                }
            }
            PeerOp::SetChoked(choked) => {
                if *choked != self.peer.is_choked() {
                    self.choke_allowance += 5 + 17 * self.peer.queued_requests();
                }
                self.peer.set_choked(self.now, *choked);
                assert_eq!(self.peer.is_choked(), *choked);
            }
            PeerOp::Pop(k) => {
                for _ in 0..*k {
                    let Some(r) = self.peer.pop_block() else {
                        break;
                    };
                    assert!(!self.peer.is_choked(), "block {r:?} popped while choked");
                    if let Err(e) = self.torrent.view().validate_request(&r) {
                        panic!("popped an invalid block {r:?}: {e}");
                    }
                    let popped = self.popped.entry(r).or_default();
                    *popped += 1;
                    self.pops_total += 1;
                    let asked = self.stream.requests.get(&r).copied().unwrap_or(0);
                    assert!(*popped <= asked, "{r:?} popped more often than requested");
                }
            }
            PeerOp::Drain(n) => {
                let pending = self.peer.poll_transmit().to_vec();
                let k = (*n).min(pending.len());
                self.drained.extend_from_slice(&pending[..k]);
                self.peer.advance_transmit(*n);
                assert_eq!(self.peer.poll_transmit(), &pending[k..], "advance_transmit");
                self.commit_drained();
            }
        }
    }

    fn commit_drained(&mut self) {
        let Some(hs) = self.stream.handshake else {
            assert!(self.drained.is_empty(), "we sent bytes before the handshake");
            return;
        };
        let used = self
            .out
            .feed(&self.drained[self.parsed_upto..], &self.torrent, &hs);
        self.parsed_upto += used;
    }

    fn check(&self) {
        let pending = self.peer.poll_transmit();
        let queued = self.peer.queued_requests();
        assert!(queued <= self.torrent.setup.reqq as usize, "queue beyond reqq");
        if self.peer.is_choked() {
            assert_eq!(queued, 0, "requests queued while the peer is choked");
        }
        let bound = TX_BASE
            + ringseed::wire::bitfield::bitfield_len(self.torrent.setup.num_pieces)
            + CONTROL_BACKLOG_LIMIT
            + self.choke_allowance;
        assert!(
            pending.len() <= bound,
            "transmit backlog {} beyond {bound}",
            pending.len()
        );
        let counters = self.peer.counters();
        assert_eq!(counters.protocol_bytes_received, self.stream.fed.len() as u64);
        assert_eq!(counters.protocol_bytes_sent, self.drained.len() as u64);
        let Some(hs) = self.stream.handshake else {
            assert!(pending.is_empty(), "output before the handshake");
            return;
        };
        assert_eq!(counters.requests_received, self.stream.requests_total);
        let mut tail = self.drained[self.parsed_upto..].to_vec();
        tail.extend_from_slice(pending);
        let mut out = self.out.clone();
        let used = out.feed(&tail, &self.torrent, &hs);
        assert_eq!(used, tail.len(), "our control bytes end inside a message");
        assert_eq!(out.choked_announced, self.peer.is_choked(), "choke state");
        assert_eq!(
            out.hash_rejects, self.stream.hash_requests,
            "every hash request gets a hash reject"
        );
        let answered = self.pops_total + out.rejects_total + queued as u64;
        if hs.supports_fast() {
            assert_eq!(
                self.stream.requests_total, answered,
                "BEP 6: each request gets exactly one answer (piece or reject)"
            );
            for (r, n) in &out.rejects {
                let asked = self.stream.requests.get(r).copied().unwrap_or(0);
                assert!(*n <= asked, "{r:?} rejected more often than requested");
            }
        } else {
            assert!(self.stream.requests_total >= answered);
        }
    }

    /// The engine's flush: take all control bytes, pop everything.
    fn finish(&mut self) {
        if self.closed.is_some() {
            return;
        }
        self.apply(&PeerOp::Pop(u8::MAX));
        self.apply(&PeerOp::Drain(usize::MAX));
        self.check();
        assert_eq!(self.peer.queued_requests(), 0);
        assert!(self.peer.poll_transmit().is_empty());
    }
}

/// Drives a `PeerState` through `ops`, checking every invariant after each.
pub fn run_peer(setup: &PeerSetup, ops: &[PeerOp]) -> Option<CloseReason> {
    let mut h = PeerHarness::new(setup);
    for op in ops {
        h.apply(op);
        if h.closed.is_some() {
            return h.closed;
        }
        h.check();
    }
    h.finish();
    h.closed
}
