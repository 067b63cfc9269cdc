//! BEP 10 extension handshake: our side written directly as bencode (the
//! keys are fixed and sorted), and a minimal strict parser for the few keys
//! we read from the peer's side.
//!
//! The parser accepts any bencode dictionary (key order is not enforced, since
//! some clients get it wrong), skips values it does not need (nesting bounded
//! by [`MAX_DEPTH`]) and rejects malformed bencode, trailing bytes and
//! out-of-range values. It never panics and never allocates.
//!
//! ringseed boxes also tell each other their release-ledger height here:
//! a top-level `ringseed_ledger` dictionary `{height, port}` (BEP 10 lets a
//! handshake carry keys of its own; no message id is needed, the ledger is
//! fetched over HTTP from `port` on the peer's address). Stock clients
//! ignore it; a malformed one is ignored too, never a reason to close.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use thiserror::Error;

use super::codec::MSG_ID_EXTENDED;

/// Our extended message id for `ut_metadata` (BEP 9), advertised in `m`
/// when the torrent's metadata can be served.
pub const UT_METADATA_ID: u8 = 1;
/// Nesting limit of the skip parser: deeper input is rejected.
pub const MAX_DEPTH: usize = 16;
/// Bytes of the peer's `v` string kept.
pub const CLIENT_NAME_MAX: usize = 32;

/// What we advertise in our extension handshake.
#[derive(Debug, Clone, Copy)]
pub struct OurExtHandshake<'a> {
    pub client_version: &'a str,
    pub reqq: u32,
    pub listen_port: Option<u16>,
    pub yourip: Option<IpAddr>,
    /// `Some` advertises `ut_metadata` and `metadata_size`.
    pub metadata_size: Option<u32>,
    /// `Some` advertises our release ledger (`ringseed_ledger`).
    pub ledger: Option<LedgerAdvert>,
}

/// A box's release ledger as told in the extension handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerAdvert {
    /// Blocks in its ledger.
    pub height: u64,
    /// The port of its ledger HTTP endpoint, on the same address.
    pub port: u16,
}

/// Where a shard reads our ledger's current height when it greets a peer
/// (the ledger node updates it; one relaxed load per handshake).
#[derive(Debug)]
pub struct LedgerBeacon {
    pub height: Arc<AtomicU64>,
    pub port: u16,
}

impl LedgerBeacon {
    pub fn advert(&self) -> LedgerAdvert {
        LedgerAdvert {
            height: self.height.load(Ordering::Relaxed),
            port: self.port,
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(s);
}

fn put_int(out: &mut Vec<u8>, i: u64) {
    out.push(b'i');
    out.extend_from_slice(i.to_string().as_bytes());
    out.push(b'e');
}

/// Appends the complete extended message (length prefix, id 20, ext id 0,
/// bencoded dictionary) to `out`.
pub fn encode_ext_handshake(out: &mut Vec<u8>, h: &OurExtHandshake<'_>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, MSG_ID_EXTENDED, 0]);
    out.push(b'd');
    // Keys in byte order: m, metadata_size, p, reqq, v, yourip.
    put_str(out, b"m");
    out.push(b'd');
    if h.metadata_size.is_some() {
        put_str(out, b"ut_metadata");
        put_int(out, u64::from(UT_METADATA_ID));
    }
    out.push(b'e');
    if let Some(size) = h.metadata_size {
        put_str(out, b"metadata_size");
        put_int(out, u64::from(size));
    }
    if let Some(p) = h.listen_port {
        put_str(out, b"p");
        put_int(out, u64::from(p));
    }
    put_str(out, b"reqq");
    put_int(out, u64::from(h.reqq));
    if let Some(l) = h.ledger {
        put_str(out, b"ringseed_ledger");
        out.push(b'd');
        put_str(out, b"height");
        put_int(out, l.height);
        put_str(out, b"port");
        put_int(out, u64::from(l.port));
        out.push(b'e');
    }
    put_str(out, b"v");
    put_str(out, h.client_version.as_bytes());
    match h.yourip {
        Some(IpAddr::V4(ip)) => {
            put_str(out, b"yourip");
            put_str(out, &ip.octets());
        }
        Some(IpAddr::V6(ip)) => {
            put_str(out, b"yourip");
            put_str(out, &ip.octets());
        }
        None => {}
    }
    out.push(b'e');
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// The fields we read from a peer's extension handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerExtHandshake {
    /// The peer's id for `ut_metadata`, if it supports it (0 = disabled).
    pub ut_metadata: Option<u8>,
    /// Number of entries in the peer's `m` dictionary.
    pub extensions: u32,
    pub reqq: Option<u32>,
    pub metadata_size: Option<u32>,
    pub listen_port: Option<u16>,
    /// Another ringseed box's release ledger (`ringseed_ledger`).
    pub ledger: Option<LedgerAdvert>,
    client: [u8; CLIENT_NAME_MAX],
    client_len: u8,
}

impl PeerExtHandshake {
    /// The peer's `v` (client name), truncated to valid UTF-8 of at most
    /// [`CLIENT_NAME_MAX`] bytes.
    pub fn client(&self) -> &str {
        let raw = self
            .client
            .get(..usize::from(self.client_len))
            .unwrap_or_default();
        match std::str::from_utf8(raw) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(raw.get(..e.valid_up_to()).unwrap_or_default())
                .unwrap_or_default(),
        }
    }
}

/// Why a peer's extension handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ExtError {
    #[error("malformed bencode in extension handshake at byte {at}")]
    Malformed { at: usize },
    #[error("extension handshake is not a dictionary")]
    NotADict,
    #[error("extension handshake nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("extension handshake key {key} has an out-of-range or wrongly typed value")]
    BadValue { key: &'static str },
    #[error("extension handshake has trailing bytes after the dictionary")]
    TrailingBytes,
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self) -> ExtError {
        ExtError::Malformed { at: self.pos }
    }
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }
    fn expect(&mut self, b: u8) -> Result<(), ExtError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err())
        }
    }

    /// `i<int>e`, canonical (no leading zeros, no `-0`), fits in i64.
    fn int(&mut self) -> Result<i64, ExtError> {
        self.expect(b'i')?;
        let start = self.pos;
        let end = self
            .buf
            .get(start..)
            .and_then(|r| r.iter().position(|&c| c == b'e'));
        let Some(end) = end.map(|e| start + e) else {
            return Err(self.err());
        };
        let digits = self.buf.get(start..end).ok_or_else(|| self.err())?;
        let (neg, body) = match digits.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, digits),
        };
        let leading_zero = body.len() > 1 && body.first() == Some(&b'0');
        let negative_zero = neg && body == b"0";
        let digits_ok = !body.is_empty() && body.iter().all(u8::is_ascii_digit);
        if !digits_ok || leading_zero || negative_zero {
            return Err(self.err());
        }
        let text = std::str::from_utf8(digits).map_err(|_| self.err())?;
        let v = text.parse::<i64>().map_err(|_| self.err())?;
        self.pos = end + 1;
        Ok(v)
    }

    /// `<len>:<bytes>`
    fn bytes(&mut self) -> Result<&'a [u8], ExtError> {
        let start = self.pos;
        let colon = self
            .buf
            .get(start..)
            .and_then(|r| r.iter().position(|&c| c == b':'));
        let Some(colon) = colon.map(|c| start + c) else {
            return Err(self.err());
        };
        let digits = self.buf.get(start..colon).ok_or_else(|| self.err())?;
        if digits.is_empty()
            || digits.len() > 10
            || !digits.iter().all(u8::is_ascii_digit)
            || (digits.len() > 1 && digits[0] == b'0')
        {
            return Err(self.err());
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| self.err())?;
        let body_start = colon + 1;
        let body = body_start
            .checked_add(len)
            .and_then(|end| self.buf.get(body_start..end))
            .ok_or(ExtError::Malformed { at: body_start })?;
        self.pos = body_start + len;
        Ok(body)
    }

    fn skip(&mut self, depth: usize) -> Result<(), ExtError> {
        if depth > MAX_DEPTH {
            return Err(ExtError::TooDeep);
        }
        match self.peek() {
            Some(b'i') => self.int().map(|_| ()),
            Some(b'0'..=b'9') => self.bytes().map(|_| ()),
            Some(b'l') => {
                self.pos += 1;
                while self.peek() != Some(b'e') {
                    self.skip(depth + 1)?;
                }
                self.pos += 1;
                Ok(())
            }
            Some(b'd') => {
                self.pos += 1;
                while self.peek() != Some(b'e') {
                    self.bytes()?;
                    self.skip(depth + 1)?;
                }
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.err()),
        }
    }
}

fn bounded<T: TryFrom<i64>>(v: i64, key: &'static str) -> Result<T, ExtError> {
    T::try_from(v).map_err(|_| ExtError::BadValue { key })
}

/// Parses the payload of a peer's extended message id 0 (after the ext id byte).
pub fn parse_ext_handshake(payload: &[u8]) -> Result<PeerExtHandshake, ExtError> {
    let mut p = Parser {
        buf: payload,
        pos: 0,
    };
    if p.peek() != Some(b'd') {
        return Err(ExtError::NotADict);
    }
    p.pos = 1;
    let mut out = PeerExtHandshake::default();
    while p.peek() != Some(b'e') {
        let key = p.bytes()?;
        match key {
            b"m" => {
                if p.peek() != Some(b'd') {
                    return Err(ExtError::BadValue { key: "m" });
                }
                p.pos += 1;
                while p.peek() != Some(b'e') {
                    let name = p.bytes()?;
                    if p.peek() != Some(b'i') {
                        // Some clients put non-integers here; skip them.
                        p.skip(1)?;
                        continue;
                    }
                    let id: u8 = bounded(p.int()?, "m")?;
                    out.extensions = out.extensions.saturating_add(1);
                    if name == b"ut_metadata" {
                        out.ut_metadata = Some(id);
                    }
                }
                p.pos += 1;
            }
            b"reqq" if p.peek() == Some(b'i') => out.reqq = Some(bounded(p.int()?, "reqq")?),
            b"metadata_size" if p.peek() == Some(b'i') => {
                out.metadata_size = Some(bounded(p.int()?, "metadata_size")?)
            }
            b"p" if p.peek() == Some(b'i') => out.listen_port = Some(bounded(p.int()?, "p")?),
            b"ringseed_ledger" if p.peek() == Some(b'd') => {
                p.pos += 1;
                let (mut height, mut port) = (None, None);
                while p.peek() != Some(b'e') {
                    let k = p.bytes()?;
                    match k {
                        b"height" if p.peek() == Some(b'i') => {
                            height = u64::try_from(p.int()?).ok()
                        }
                        b"port" if p.peek() == Some(b'i') => {
                            port = u16::try_from(p.int()?).ok().filter(|&p| p != 0)
                        }
                        _ => p.skip(1)?,
                    }
                }
                p.pos += 1;
                if let (Some(height), Some(port)) = (height, port) {
                    out.ledger = Some(LedgerAdvert { height, port });
                }
            }
            b"v" if p.peek().is_some_and(|c| c.is_ascii_digit()) => {
                let v = p.bytes()?;
                let n = v.len().min(CLIENT_NAME_MAX);
                out.client[..n].copy_from_slice(&v[..n]);
                out.client_len = n as u8;
            }
            _ => p.skip(1)?,
        }
    }
    p.pos += 1;
    if p.pos != payload.len() {
        return Err(ExtError::TrailingBytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn our_handshake_bytes() {
        let mut out = Vec::new();
        encode_ext_handshake(
            &mut out,
            &OurExtHandshake {
                client_version: "ringseed 0.1.0",
                reqq: 500,
                listen_port: Some(6881),
                yourip: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))),
                metadata_size: Some(1234),
                ledger: None,
            },
        );
        let body = b"d1:md11:ut_metadatai1ee13:metadata_sizei1234e1:pi6881e4:reqqi500e1:v14:ringseed 0.1.06:yourip4:\x7f\x00\x00\x01e";
        assert_eq!(&out[4..6], &[20, 0]);
        assert_eq!(&out[6..], &body[..]);
        assert_eq!(
            u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize,
            body.len() + 2
        );
        let parsed = parse_ext_handshake(body).unwrap();
        assert_eq!(parsed.ut_metadata, Some(1));
        assert_eq!(parsed.reqq, Some(500));
        assert_eq!(parsed.metadata_size, Some(1234));
        assert_eq!(parsed.listen_port, Some(6881));
        assert_eq!(parsed.client(), "ringseed 0.1.0");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b""[..],
            b"le",
            b"d",
            b"d1:mi1ee",
            b"d4:reqqi-1ee",
            b"d4:reqqi01ee",
            b"d4:reqqi-0ee",
            b"d1:md1:xi300eee",
            b"d1:v999:abce",
            b"d1:pi70000ee",
            b"de trailing",
            b"d1:xllllllllllllllllllllllleeeeeeeeeeeeeeeeeeeeeeeeee",
        ] {
            assert!(
                parse_ext_handshake(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_ext_handshake(b"d1:xli1e3:abcd1:ai2eeee").is_ok());
    }

    #[test]
    fn ledger_advert_round_trips_and_a_bad_one_is_ignored() {
        let mut out = Vec::new();
        let advert = LedgerAdvert {
            height: 1 << 40,
            port: 9102,
        };
        encode_ext_handshake(
            &mut out,
            &OurExtHandshake {
                client_version: "ringseed",
                reqq: 500,
                listen_port: None,
                yourip: None,
                metadata_size: None,
                ledger: Some(advert),
            },
        );
        let parsed = parse_ext_handshake(&out[6..]).unwrap();
        assert_eq!(parsed.ledger, Some(advert));
        assert_eq!(parsed.reqq, Some(500));
        for bad in [
            &b"d15:ringseed_ledgerd6:heighti-1e4:porti1eee"[..],
            b"d15:ringseed_ledgerd6:heighti5e4:porti0eee",
            b"d15:ringseed_ledgerd6:heighti5e4:porti70000eee",
            b"d15:ringseed_ledgerd6:heighti5eee",
            b"d15:ringseed_ledgeri5ee",
            b"d15:ringseed_ledgerd4:porti80e6:height3:abcee",
        ] {
            let p = parse_ext_handshake(bad).unwrap_or_else(|e| panic!("{bad:?}: {e}"));
            assert_eq!(p.ledger, None, "{bad:?}");
        }
    }
}
