//! Wire codec, BEP 3 handshake and BEP 10 extension handshake checks.

use ringseed::bencode::{self, DecodeError, Value};
use ringseed::wire::codec::{
    self, Decoded, Handshake, HandshakeDecoded, Message, ReservedFlags, WireError, HANDSHAKE_LEN,
    PROTOCOL,
};
use ringseed::wire::ext::{
    encode_ext_handshake, parse_ext_handshake, ExtError, OurExtHandshake, CLIENT_NAME_MAX,
};

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
    Incomplete {
        buffered: Vec<u8>,
        needed: usize,
    },
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
        Ok(Decoded::Message {
            msg: again,
            consumed,
        }) => {
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
            assert_eq!(
                &h.encode()[..],
                &data[..HANDSHAKE_LEN],
                "handshake re-encoding"
            );
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
        Value::Dict(entries) => entries
            .iter()
            .map(|(_, i)| 1 + height(i))
            .max()
            .unwrap_or(0),
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
        ledger: None,
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
