//! Peer wire message codec (BEP 3, BEP 6, BEP 10 framing, BEP 52 hash messages).
//!
//! [`decode`] parses one length-prefixed message from the front of a buffer
//! and borrows its payload from that buffer; an unfinished message is the
//! normal outcome [`Decoded::Incomplete`], not an error. A length prefix above
//! the caller's limit, or a fixed-size message whose length is wrong, is an
//! error as soon as the 4-byte prefix (or the prefix and id) is seen, before
//! anything is buffered. Encoders append to the caller's `Vec<u8>`.
//!
//! This module does not know about connection state: whether a message is
//! allowed now (e.g. a bitfield of the right length) is [`super::peer`]'s job.

use thiserror::Error;

pub const MSG_ID_CHOKE: u8 = 0;
pub const MSG_ID_UNCHOKE: u8 = 1;
pub const MSG_ID_INTERESTED: u8 = 2;
pub const MSG_ID_NOT_INTERESTED: u8 = 3;
pub const MSG_ID_HAVE: u8 = 4;
pub const MSG_ID_BITFIELD: u8 = 5;
pub const MSG_ID_REQUEST: u8 = 6;
pub const MSG_ID_PIECE: u8 = 7;
pub const MSG_ID_CANCEL: u8 = 8;
pub const MSG_ID_PORT: u8 = 9;
pub const MSG_ID_SUGGEST: u8 = 13;
pub const MSG_ID_HAVE_ALL: u8 = 14;
pub const MSG_ID_HAVE_NONE: u8 = 15;
pub const MSG_ID_REJECT: u8 = 16;
pub const MSG_ID_ALLOWED_FAST: u8 = 17;
pub const MSG_ID_EXTENDED: u8 = 20;
pub const MSG_ID_HASH_REQUEST: u8 = 21;
pub const MSG_ID_HASHES: u8 = 22;
pub const MSG_ID_HASH_REJECT: u8 = 23;

/// The largest block a peer may request (BEP 3 convention, enforced by every
/// modern client).
pub const MAX_BLOCK_LEN: u32 = 16 * 1024;
/// Length of the BEP 3 handshake.
pub const HANDSHAKE_LEN: usize = 68;
/// The protocol string of the BEP 3 handshake.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
/// Size of a piece message header: length prefix, id, index, begin.
pub const PIECE_HEADER_LEN: usize = 13;
/// BEP 52 hash request / hash reject payload size: pieces root + 4 x u32.
pub const HASH_REQUEST_PAYLOAD_LEN: usize = 48;

/// A block request as carried by request, cancel and reject messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRequest {
    pub piece: u32,
    pub begin: u32,
    pub len: u32,
}

/// BEP 52 hash request, also the header of hashes and hash reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashRequest {
    pub pieces_root: [u8; 32],
    pub base_layer: u32,
    pub index: u32,
    pub length: u32,
    pub proof_layers: u32,
}

/// One peer wire message, borrowing variable-size payloads from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(&'a [u8]),
    Request(BlockRequest),
    Piece {
        index: u32,
        begin: u32,
        data: &'a [u8],
    },
    Cancel(BlockRequest),
    Port(u16),
    Suggest(u32),
    HaveAll,
    HaveNone,
    Reject(BlockRequest),
    AllowedFast(u32),
    Extended {
        id: u8,
        payload: &'a [u8],
    },
    HashRequest(HashRequest),
    /// `hashes` is a whole number of 32-byte SHA-256 hashes.
    Hashes {
        request: HashRequest,
        hashes: &'a [u8],
    },
    HashReject(HashRequest),
    /// A message id this codec does not know; peers may send these.
    Unknown {
        id: u8,
        payload: &'a [u8],
    },
}

/// Outcome of [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A full message; `consumed` bytes of the input belong to it.
    Message { msg: Message<'a>, consumed: usize },
    /// At least `needed` more bytes are required before anything can be decoded.
    Incomplete { needed: usize },
}

/// A framing or message-shape error: the stream cannot be trusted any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("peer message length {len} exceeds the limit of {max} bytes: the peer is broken or hostile (raise max_message_len only for huge bitfields)")]
    MessageTooLong { len: u32, max: u32 },
    #[error("peer message id {id} has length {len}, expected {expected}: malformed message")]
    WrongLength {
        id: u8,
        len: u32,
        expected: &'static str,
    },
    #[error("hashes message carries {len} bytes of hashes, not a multiple of 32")]
    BadHashesLength { len: usize },
    #[error("handshake does not start with \"\\x13BitTorrent protocol\": not a plaintext BitTorrent peer (encrypted MSE handshake or garbage)")]
    BadProtocolString,
}

#[derive(Clone, Copy)]
enum LenRule {
    Exact(u32),
    AtLeast(u32),
}

/// Payload-plus-id length rule of a known message id; `None` for unknown ids.
fn len_rule(id: u8) -> Option<LenRule> {
    use LenRule::*;
    Some(match id {
        MSG_ID_CHOKE | MSG_ID_UNCHOKE | MSG_ID_INTERESTED | MSG_ID_NOT_INTERESTED => Exact(1),
        MSG_ID_HAVE_ALL | MSG_ID_HAVE_NONE => Exact(1),
        MSG_ID_HAVE | MSG_ID_SUGGEST | MSG_ID_ALLOWED_FAST => Exact(5),
        MSG_ID_REQUEST | MSG_ID_CANCEL | MSG_ID_REJECT => Exact(13),
        MSG_ID_PORT => Exact(3),
        MSG_ID_BITFIELD => AtLeast(1),
        MSG_ID_PIECE => AtLeast(9),
        MSG_ID_EXTENDED => AtLeast(2),
        MSG_ID_HASH_REQUEST | MSG_ID_HASH_REJECT => Exact(1 + HASH_REQUEST_PAYLOAD_LEN as u32),
        MSG_ID_HASHES => AtLeast(1 + HASH_REQUEST_PAYLOAD_LEN as u32),
        _ => return None,
    })
}

fn check_len(id: u8, len: u32) -> Result<(), WireError> {
    match len_rule(id) {
        Some(LenRule::Exact(n)) if len != n => Err(WireError::WrongLength {
            id,
            len,
            expected: exact_label(n),
        }),
        Some(LenRule::AtLeast(n)) if len < n => Err(WireError::WrongLength {
            id,
            len,
            expected: "a longer message",
        }),
        _ => Ok(()),
    }
}

fn exact_label(n: u32) -> &'static str {
    match n {
        1 => "1",
        3 => "3",
        5 => "5",
        13 => "13",
        _ => "49",
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b2, c, d]) => u32::from_be_bytes([a, b2, c, d]),
        _ => 0,
    }
}

fn block_request(p: &[u8]) -> BlockRequest {
    BlockRequest {
        piece: be32(p, 0),
        begin: be32(p, 4),
        len: be32(p, 8),
    }
}

fn hash_request(p: &[u8]) -> HashRequest {
    let mut pieces_root = [0u8; 32];
    if let Some(root) = p.get(..32) {
        pieces_root.copy_from_slice(root);
    }
    HashRequest {
        pieces_root,
        base_layer: be32(p, 32),
        index: be32(p, 36),
        length: be32(p, 40),
        proof_layers: be32(p, 44),
    }
}

/// Decodes one message from the front of `buf`.
///
/// `max_message_len` bounds the length prefix (id + payload); a prefix above
/// it is rejected immediately, so a caller buffering partial messages never
/// holds more than `4 + max_message_len` bytes.
pub fn decode(buf: &[u8], max_message_len: u32) -> Result<Decoded<'_>, WireError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(Decoded::Incomplete {
            needed: 4 - buf.len(),
        });
    };
    let len = be32(prefix, 0);
    if len > max_message_len {
        return Err(WireError::MessageTooLong {
            len,
            max: max_message_len,
        });
    }
    if len == 0 {
        return Ok(Decoded::Message {
            msg: Message::KeepAlive,
            consumed: 4,
        });
    }
    let Some(&id) = buf.get(4) else {
        return Ok(Decoded::Incomplete { needed: 1 });
    };
    check_len(id, len)?;
    let total = 4 + len as usize;
    let Some(payload) = buf.get(5..total) else {
        return Ok(Decoded::Incomplete {
            needed: total - buf.len(),
        });
    };
    let msg = match id {
        MSG_ID_CHOKE => Message::Choke,
        MSG_ID_UNCHOKE => Message::Unchoke,
        MSG_ID_INTERESTED => Message::Interested,
        MSG_ID_NOT_INTERESTED => Message::NotInterested,
        MSG_ID_HAVE => Message::Have(be32(payload, 0)),
        MSG_ID_BITFIELD => Message::Bitfield(payload),
        MSG_ID_REQUEST => Message::Request(block_request(payload)),
        MSG_ID_PIECE => Message::Piece {
            index: be32(payload, 0),
            begin: be32(payload, 4),
            data: payload.get(8..).unwrap_or_default(),
        },
        MSG_ID_CANCEL => Message::Cancel(block_request(payload)),
        MSG_ID_PORT => match payload {
            &[a, b] => Message::Port(u16::from_be_bytes([a, b])),
            _ => {
                return Err(WireError::WrongLength {
                    id,
                    len,
                    expected: "3",
                })
            }
        },
        MSG_ID_SUGGEST => Message::Suggest(be32(payload, 0)),
        MSG_ID_HAVE_ALL => Message::HaveAll,
        MSG_ID_HAVE_NONE => Message::HaveNone,
        MSG_ID_REJECT => Message::Reject(block_request(payload)),
        MSG_ID_ALLOWED_FAST => Message::AllowedFast(be32(payload, 0)),
        MSG_ID_EXTENDED => match payload.split_first() {
            Some((&ext_id, rest)) => Message::Extended {
                id: ext_id,
                payload: rest,
            },
            None => {
                return Err(WireError::WrongLength {
                    id,
                    len,
                    expected: "a longer message",
                })
            }
        },
        MSG_ID_HASH_REQUEST => Message::HashRequest(hash_request(payload)),
        MSG_ID_HASH_REJECT => Message::HashReject(hash_request(payload)),
        MSG_ID_HASHES => {
            let hashes = payload.get(HASH_REQUEST_PAYLOAD_LEN..).unwrap_or_default();
            if hashes.len() % 32 != 0 {
                return Err(WireError::BadHashesLength { len: hashes.len() });
            }
            Message::Hashes {
                request: hash_request(payload),
                hashes,
            }
        }
        _ => Message::Unknown { id, payload },
    };
    Ok(Decoded::Message {
        msg,
        consumed: total,
    })
}

fn put_block_request(out: &mut Vec<u8>, id: u8, r: &BlockRequest) {
    out.extend_from_slice(&13u32.to_be_bytes());
    out.push(id);
    out.extend_from_slice(&r.piece.to_be_bytes());
    out.extend_from_slice(&r.begin.to_be_bytes());
    out.extend_from_slice(&r.len.to_be_bytes());
}

fn put_hash_request(out: &mut Vec<u8>, r: &HashRequest) {
    out.extend_from_slice(&r.pieces_root);
    out.extend_from_slice(&r.base_layer.to_be_bytes());
    out.extend_from_slice(&r.index.to_be_bytes());
    out.extend_from_slice(&r.length.to_be_bytes());
    out.extend_from_slice(&r.proof_layers.to_be_bytes());
}

fn put_header(out: &mut Vec<u8>, id: u8, payload_len: usize) {
    // Payloads we encode are bounded by what the caller holds in memory; a
    // payload over 4 GiB cannot be framed, so saturate (the peer will reject).
    let len = u32::try_from(payload_len + 1).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(id);
}

impl Message<'_> {
    /// Number of bytes [`Message::encode`] appends, length prefix included.
    pub fn encoded_len(&self) -> usize {
        4 + match self {
            Message::KeepAlive => 0,
            Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone => 1,
            Message::Have(_) | Message::Suggest(_) | Message::AllowedFast(_) => 5,
            Message::Bitfield(b) => 1 + b.len(),
            Message::Request(_) | Message::Cancel(_) | Message::Reject(_) => 13,
            Message::Piece { data, .. } => 9 + data.len(),
            Message::Port(_) => 3,
            Message::Extended { payload, .. } => 2 + payload.len(),
            Message::HashRequest(_) | Message::HashReject(_) => 1 + HASH_REQUEST_PAYLOAD_LEN,
            Message::Hashes { hashes, .. } => 1 + HASH_REQUEST_PAYLOAD_LEN + hashes.len(),
            Message::Unknown { payload, .. } => 1 + payload.len(),
        }
    }

    /// Appends the wire form of this message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        match self {
            Message::KeepAlive => out.extend_from_slice(&[0, 0, 0, 0]),
            Message::Choke => put_header(out, MSG_ID_CHOKE, 0),
            Message::Unchoke => put_header(out, MSG_ID_UNCHOKE, 0),
            Message::Interested => put_header(out, MSG_ID_INTERESTED, 0),
            Message::NotInterested => put_header(out, MSG_ID_NOT_INTERESTED, 0),
            Message::HaveAll => put_header(out, MSG_ID_HAVE_ALL, 0),
            Message::HaveNone => put_header(out, MSG_ID_HAVE_NONE, 0),
            Message::Have(i) | Message::Suggest(i) | Message::AllowedFast(i) => {
                let id = match self {
                    Message::Have(_) => MSG_ID_HAVE,
                    Message::Suggest(_) => MSG_ID_SUGGEST,
                    _ => MSG_ID_ALLOWED_FAST,
                };
                put_header(out, id, 4);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Message::Bitfield(b) => {
                put_header(out, MSG_ID_BITFIELD, b.len());
                out.extend_from_slice(b);
            }
            Message::Request(r) => put_block_request(out, MSG_ID_REQUEST, r),
            Message::Cancel(r) => put_block_request(out, MSG_ID_CANCEL, r),
            Message::Reject(r) => put_block_request(out, MSG_ID_REJECT, r),
            Message::Piece { index, begin, data } => {
                put_header(out, MSG_ID_PIECE, 8 + data.len());
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&begin.to_be_bytes());
                out.extend_from_slice(data);
            }
            Message::Port(p) => {
                put_header(out, MSG_ID_PORT, 2);
                out.extend_from_slice(&p.to_be_bytes());
            }
            Message::Extended { id, payload } => {
                put_header(out, MSG_ID_EXTENDED, 1 + payload.len());
                out.push(*id);
                out.extend_from_slice(payload);
            }
            Message::HashRequest(r) => {
                put_header(out, MSG_ID_HASH_REQUEST, HASH_REQUEST_PAYLOAD_LEN);
                put_hash_request(out, r);
            }
            Message::HashReject(r) => {
                put_header(out, MSG_ID_HASH_REJECT, HASH_REQUEST_PAYLOAD_LEN);
                put_hash_request(out, r);
            }
            Message::Hashes { request, hashes } => {
                put_header(out, MSG_ID_HASHES, HASH_REQUEST_PAYLOAD_LEN + hashes.len());
                put_hash_request(out, request);
                out.extend_from_slice(hashes);
            }
            Message::Unknown { id, payload } => {
                put_header(out, *id, payload.len());
                out.extend_from_slice(payload);
            }
        }
    }
}

/// Size of a `hashes` message header: length prefix, id, and the echoed request.
pub const HASHES_HEADER_LEN: usize = 5 + HASH_REQUEST_PAYLOAD_LEN;

/// The header of a `hashes` message answering `r` and carrying
/// `hash_bytes` bytes of hashes (which the caller appends).
pub fn hashes_header(r: &HashRequest, hash_bytes: usize) -> [u8; HASHES_HEADER_LEN] {
    let mut out = Vec::with_capacity(HASHES_HEADER_LEN);
    put_header(
        &mut out,
        MSG_ID_HASHES,
        HASH_REQUEST_PAYLOAD_LEN + hash_bytes,
    );
    put_hash_request(&mut out, r);
    let mut h = [0u8; HASHES_HEADER_LEN];
    h.copy_from_slice(&out);
    h
}

/// The 13-byte header of a piece message carrying `len` bytes of block data,
/// for the zero-copy send path: the engine sends `[header, file slice]`.
pub fn piece_header(index: u32, begin: u32, len: u32) -> [u8; PIECE_HEADER_LEN] {
    let mut h = [0u8; PIECE_HEADER_LEN];
    h[0..4].copy_from_slice(&len.saturating_add(9).to_be_bytes());
    h[4] = MSG_ID_PIECE;
    h[5..9].copy_from_slice(&index.to_be_bytes());
    h[9..13].copy_from_slice(&begin.to_be_bytes());
    h
}

/// Reserved-byte capabilities of a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReservedFlags {
    /// BEP 6 fast extension: byte 7, 0x04.
    pub fast: bool,
    /// BEP 10 extension protocol: byte 5, 0x10.
    pub extension: bool,
    /// BEP 52 upgrade to v2: byte 7, 0x10.
    pub v2: bool,
    /// BEP 5 DHT: byte 7, 0x01.
    pub dht: bool,
}

impl ReservedFlags {
    pub fn from_bytes(r: &[u8; 8]) -> Self {
        ReservedFlags {
            fast: r[7] & 0x04 != 0,
            extension: r[5] & 0x10 != 0,
            v2: r[7] & 0x10 != 0,
            dht: r[7] & 0x01 != 0,
        }
    }

    pub fn to_bytes(self) -> [u8; 8] {
        let mut r = [0u8; 8];
        if self.fast {
            r[7] |= 0x04;
        }
        if self.extension {
            r[5] |= 0x10;
        }
        if self.v2 {
            r[7] |= 0x10;
        }
        if self.dht {
            r[7] |= 0x01;
        }
        r
    }
}

/// The BEP 3 handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
}

/// Outcome of [`Handshake::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeDecoded {
    /// A full handshake; it always consumes [`HANDSHAKE_LEN`] bytes.
    Complete(Handshake),
    Incomplete {
        needed: usize,
    },
}

impl Handshake {
    pub fn flags(&self) -> ReservedFlags {
        ReservedFlags::from_bytes(&self.reserved)
    }
    pub fn supports_fast(&self) -> bool {
        self.flags().fast
    }
    pub fn supports_extensions(&self) -> bool {
        self.flags().extension
    }
    pub fn supports_v2(&self) -> bool {
        self.flags().v2
    }
    pub fn supports_dht(&self) -> bool {
        self.flags().dht
    }

    /// Decodes a handshake from the front of `buf`. The protocol string is
    /// checked on whatever prefix is present, so garbage (or an MSE
    /// handshake) is rejected without waiting for 68 bytes.
    pub fn decode(buf: &[u8]) -> Result<HandshakeDecoded, WireError> {
        let have = buf.len().min(20);
        let mut expected = [0u8; 20];
        expected[0] = 19;
        expected[1..].copy_from_slice(PROTOCOL);
        if buf.get(..have) != expected.get(..have) {
            return Err(WireError::BadProtocolString);
        }
        let Some(h) = buf.get(..HANDSHAKE_LEN) else {
            return Ok(HandshakeDecoded::Incomplete {
                needed: HANDSHAKE_LEN - buf.len(),
            });
        };
        let mut reserved = [0u8; 8];
        let mut info_hash = [0u8; 20];
        let mut peer_id = [0u8; 20];
        reserved.copy_from_slice(&h[20..28]);
        info_hash.copy_from_slice(&h[28..48]);
        peer_id.copy_from_slice(&h[48..68]);
        Ok(HandshakeDecoded::Complete(Handshake {
            reserved,
            info_hash,
            peer_id,
        }))
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut h = [0u8; HANDSHAKE_LEN];
        h[0] = 19;
        h[1..20].copy_from_slice(PROTOCOL);
        h[20..28].copy_from_slice(&self.reserved);
        h[28..48].copy_from_slice(&self.info_hash);
        h[48..68].copy_from_slice(&self.peer_id);
        h
    }
}
