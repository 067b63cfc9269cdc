//! BEP 9 `ut_metadata` messages: the payload of an extended message (after
//! its extended id) is a bencoded dictionary, followed for `data` messages
//! by one 16 KiB piece of the info dictionary.
//!
//! Parsing uses the strict [`crate::bencode`] decoder on at most
//! [`MAX_METADATA_MESSAGE_LEN`] bytes; encoders append complete extended
//! messages (length prefix included) to the caller's buffer. Which pieces
//! to answer, and how many, is [`super::peer`]'s business.

use thiserror::Error;

use super::codec::MSG_ID_EXTENDED;
use crate::bencode::{decode_prefix, DecodeError};

/// Bytes per metadata piece (BEP 9).
pub const METADATA_PIECE_LEN: usize = 16 * 1024;
/// Largest `ut_metadata` payload accepted (a 16 KiB piece plus its
/// dictionary); libtorrent uses the same limit.
pub const MAX_METADATA_MESSAGE_LEN: usize = 17 * 1024;

pub const MSG_TYPE_REQUEST: i64 = 0;
pub const MSG_TYPE_DATA: i64 = 1;
pub const MSG_TYPE_REJECT: i64 = 2;

/// One `ut_metadata` message, borrowing piece data from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMessage<'a> {
    Request {
        piece: u32,
    },
    Data {
        piece: u32,
        total_size: Option<u64>,
        data: &'a [u8],
    },
    Reject {
        piece: u32,
    },
    /// A `msg_type` BEP 9 does not define: to be ignored.
    Other {
        msg_type: i64,
    },
}

/// Why a `ut_metadata` message is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetadataError {
    #[error("ut_metadata message of {0} bytes is larger than {MAX_METADATA_MESSAGE_LEN}")]
    TooLong(usize),
    #[error("ut_metadata message is not bencode")]
    Bencode(#[source] DecodeError),
    #[error("ut_metadata message is not a dictionary")]
    NotADict,
    #[error("ut_metadata message has no valid `{0}`")]
    BadKey(&'static str),
    #[error("ut_metadata {0} message carries trailing bytes")]
    TrailingBytes(&'static str),
}

/// Parses the payload of a `ut_metadata` extended message (after the
/// extended id byte).
pub fn parse_metadata_message(payload: &[u8]) -> Result<MetadataMessage<'_>, MetadataError> {
    if payload.len() > MAX_METADATA_MESSAGE_LEN {
        return Err(MetadataError::TooLong(payload.len()));
    }
    let (dict, used) = decode_prefix(payload).map_err(MetadataError::Bencode)?;
    if dict.as_dict().is_none() {
        return Err(MetadataError::NotADict);
    }
    let int = |key: &'static str| dict.get(key.as_bytes()).and_then(|v| v.as_int());
    let msg_type = int("msg_type").ok_or(MetadataError::BadKey("msg_type"))?;
    let piece = || {
        int("piece")
            .and_then(|p| u32::try_from(p).ok())
            .ok_or(MetadataError::BadKey("piece"))
    };
    let rest = payload.get(used..).unwrap_or_default();
    let no_trailing = |what| {
        if rest.is_empty() {
            Ok(())
        } else {
            Err(MetadataError::TrailingBytes(what))
        }
    };
    Ok(match msg_type {
        MSG_TYPE_REQUEST => {
            no_trailing("request")?;
            MetadataMessage::Request { piece: piece()? }
        }
        MSG_TYPE_DATA => MetadataMessage::Data {
            piece: piece()?,
            total_size: int("total_size").and_then(|s| u64::try_from(s).ok()),
            data: rest,
        },
        MSG_TYPE_REJECT => {
            no_trailing("reject")?;
            MetadataMessage::Reject { piece: piece()? }
        }
        other => MetadataMessage::Other { msg_type: other },
    })
}

/// Number of 16 KiB pieces of an info dictionary of `size` bytes.
pub fn num_metadata_pieces(size: usize) -> u32 {
    u32::try_from(size.div_ceil(METADATA_PIECE_LEN)).unwrap_or(u32::MAX)
}

/// Piece `piece` of the info dictionary: 16 KiB, the last one shorter.
/// `None` when out of range.
pub fn metadata_piece(info: &[u8], piece: u32) -> Option<&[u8]> {
    let start = (piece as usize).checked_mul(METADATA_PIECE_LEN)?;
    if start >= info.len() {
        return None;
    }
    let end = (start + METADATA_PIECE_LEN).min(info.len());
    info.get(start..end)
}

fn put_int(out: &mut Vec<u8>, key: &[u8], v: u64) {
    out.extend_from_slice(key.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(key);
    out.push(b'i');
    out.extend_from_slice(v.to_string().as_bytes());
    out.push(b'e');
}

/// Appends an extended message to `ext_id` whose payload is a dictionary of
/// the (sorted) integer `fields` followed by `data`.
fn put_message(out: &mut Vec<u8>, ext_id: u8, fields: &[(&[u8], u64)], data: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, MSG_ID_EXTENDED, ext_id, b'd']);
    for (k, v) in fields {
        put_int(out, k, *v);
    }
    out.push(b'e');
    out.extend_from_slice(data);
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a `data` message for `piece` of `info` to the peer's extended id
/// `ext_id`. Returns the bytes appended, 0 (nothing) if `piece` is out of
/// range.
pub fn encode_data(out: &mut Vec<u8>, ext_id: u8, piece: u32, info: &[u8]) -> usize {
    let Some(data) = metadata_piece(info, piece) else {
        return 0;
    };
    let before = out.len();
    put_message(
        out,
        ext_id,
        &[
            (b"msg_type", MSG_TYPE_DATA as u64),
            (b"piece", u64::from(piece)),
            (b"total_size", info.len() as u64),
        ],
        data,
    );
    out.len() - before
}

/// Appends a `reject` message for `piece` to the peer's extended id `ext_id`.
pub fn encode_reject(out: &mut Vec<u8>, ext_id: u8, piece: u32) {
    put_message(
        out,
        ext_id,
        &[
            (b"msg_type", MSG_TYPE_REJECT as u64),
            (b"piece", u64::from(piece)),
        ],
        &[],
    );
}

/// Appends a `request` message for `piece` (what a leecher sends; for tests
/// and load generators).
pub fn encode_request(out: &mut Vec<u8>, ext_id: u8, piece: u32) {
    put_message(
        out,
        ext_id,
        &[
            (b"msg_type", MSG_TYPE_REQUEST as u64),
            (b"piece", u64::from(piece)),
        ],
        &[],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(msg: &[u8]) -> &[u8] {
        assert_eq!(msg[4], MSG_ID_EXTENDED);
        let len = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
        assert_eq!(len + 4, msg.len());
        &msg[6..]
    }

    #[test]
    fn request_and_reject_bytes_round_trip() {
        let mut out = Vec::new();
        encode_request(&mut out, 3, 7);
        assert_eq!(out[5], 3);
        assert_eq!(payload(&out), b"d8:msg_typei0e5:piecei7ee");
        assert_eq!(
            parse_metadata_message(payload(&out)),
            Ok(MetadataMessage::Request { piece: 7 })
        );
        out.clear();
        encode_reject(&mut out, 2, 1);
        assert_eq!(payload(&out), b"d8:msg_typei2e5:piecei1ee");
        assert_eq!(
            parse_metadata_message(payload(&out)),
            Ok(MetadataMessage::Reject { piece: 1 })
        );
    }

    #[test]
    fn data_carries_the_slice_and_total_size() {
        let info: Vec<u8> = (0..(2 * METADATA_PIECE_LEN + 5)).map(|i| i as u8).collect();
        let mut out = Vec::new();
        let n = encode_data(&mut out, 9, 2, &info);
        assert_eq!(n, out.len());
        let expect_dict = format!("d8:msg_typei1e5:piecei2e10:total_sizei{}ee", info.len());
        assert!(payload(&out).starts_with(expect_dict.as_bytes()));
        assert_eq!(
            parse_metadata_message(payload(&out)),
            Ok(MetadataMessage::Data {
                piece: 2,
                total_size: Some(info.len() as u64),
                data: &info[2 * METADATA_PIECE_LEN..],
            })
        );
        assert_eq!(encode_data(&mut out, 9, 3, &info), 0);
    }

    #[test]
    fn slicing_edges() {
        let exact = vec![1u8; 2 * METADATA_PIECE_LEN];
        assert_eq!(num_metadata_pieces(exact.len()), 2);
        assert_eq!(
            metadata_piece(&exact, 1).map(<[u8]>::len),
            Some(METADATA_PIECE_LEN)
        );
        assert_eq!(metadata_piece(&exact, 2), None);
        let short = vec![2u8; 2 * METADATA_PIECE_LEN + 1];
        assert_eq!(num_metadata_pieces(short.len()), 3);
        assert_eq!(metadata_piece(&short, 2), Some(&[2u8][..]));
        let tiny = b"d4:name1:xe";
        assert_eq!(num_metadata_pieces(tiny.len()), 1);
        assert_eq!(metadata_piece(tiny, 0), Some(&tiny[..]));
        assert_eq!(metadata_piece(tiny, 1), None);
        assert_eq!(metadata_piece(tiny, u32::MAX), None);
        assert_eq!(num_metadata_pieces(0), 0);
        assert_eq!(metadata_piece(b"", 0), None);
    }

    #[test]
    fn malformed_and_unknown() {
        for bad in [
            &b""[..],
            b"le",
            b"i1e",
            b"d5:piecei0ee",
            b"d8:msg_typei0ee",
            b"d8:msg_typei0e5:piecei-1ee",
            b"d8:msg_typei0e5:piecei4294967296ee",
            b"d8:msg_typei0e5:piece1:xe",
            b"d5:piecei0e8:msg_typei0ee",
            b"d8:msg_typei0e5:piecei0eetrailing",
            b"d8:msg_typei2e5:piecei0eex",
        ] {
            assert!(
                parse_metadata_message(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_metadata_message(b"d8:msg_typei7e5:piecei0ee"),
            Ok(MetadataMessage::Other { msg_type: 7 })
        );
        let huge = vec![b'x'; MAX_METADATA_MESSAGE_LEN + 1];
        assert_eq!(
            parse_metadata_message(&huge),
            Err(MetadataError::TooLong(huge.len()))
        );
    }
}
