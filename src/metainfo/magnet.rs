//! Magnet URIs (BEP 9, BEP 52): build and parse.
//!
//! Understood parameters: `xt=urn:btih:` (40 hex digits or 32 base32
//! characters), `xt=urn:btmh:1220` + 64 hex digits (SHA-256 multihash),
//! `dn` (display name), `tr` (tracker, repeatable) and `x.pe` (peer address,
//! repeatable). Others are ignored, as clients do.

use std::fmt::Write as _;

use super::{InfoHashV1, InfoHashV2, Torrent};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash_v1: Option<InfoHashV1>,
    pub info_hash_v2: Option<InfoHashV2>,
    /// `dn`
    pub display_name: Option<String>,
    /// `tr`, in order.
    pub trackers: Vec<String>,
    /// `x.pe`: `host:port` peers to try.
    pub peers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("magnet: URI does not start with `magnet:?`")]
    NotMagnet,
    #[error("magnet: no `xt=urn:btih:` or `xt=urn:btmh:` parameter; the link names no torrent")]
    NoInfoHash,
    #[error("magnet: `xt={value}` is not a valid {kind}")]
    BadInfoHash { value: String, kind: &'static str },
    #[error("magnet: bad percent-encoding in parameter `{param}`")]
    BadEncoding { param: String },
    #[error("magnet: two different {kind} info-hashes")]
    ConflictingInfoHash { kind: &'static str },
}

const V2_MULTIHASH_PREFIX: &str = "1220";

impl Magnet {
    /// A magnet link for `torrent` with its trackers (all tiers, flattened)
    /// and name.
    pub fn for_torrent(torrent: &Torrent) -> Magnet {
        Magnet {
            info_hash_v1: torrent.info_hash_v1,
            info_hash_v2: torrent.info_hash_v2,
            display_name: Some(torrent.name.clone()),
            trackers: torrent.trackers.iter().flatten().cloned().collect(),
            peers: Vec::new(),
        }
    }

    /// The URI, parameters in a fixed order: `xt` (v1 then v2), `dn`, `tr`, `x.pe`.
    pub fn to_uri(&self) -> String {
        let mut params: Vec<String> = Vec::new();
        if let Some(h) = &self.info_hash_v1 {
            params.push(format!("xt=urn:btih:{h}"));
        }
        if let Some(h) = &self.info_hash_v2 {
            params.push(format!("xt=urn:btmh:{V2_MULTIHASH_PREFIX}{h}"));
        }
        if let Some(dn) = &self.display_name {
            params.push(format!("dn={}", percent_encode(dn)));
        }
        for tr in &self.trackers {
            params.push(format!("tr={}", percent_encode(tr)));
        }
        for pe in &self.peers {
            params.push(format!("x.pe={}", percent_encode(pe)));
        }
        format!("magnet:?{}", params.join("&"))
    }

    pub fn parse(uri: &str) -> Result<Magnet, MagnetError> {
        let query = uri
            .strip_prefix("magnet:?")
            .or_else(|| uri.strip_prefix("MAGNET:?"))
            .ok_or(MagnetError::NotMagnet)?;
        let mut magnet = Magnet::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(raw).ok_or_else(|| MagnetError::BadEncoding {
                param: key.to_string(),
            })?;
            match key {
                "xt" => {
                    let lower = value.to_ascii_lowercase();
                    if let Some(h) = lower.strip_prefix("urn:btih:") {
                        let hash = parse_btih(h).ok_or_else(|| MagnetError::BadInfoHash {
                            value: value.clone(),
                            kind: "v1 info-hash (40 hex or 32 base32 characters)",
                        })?;
                        if magnet.info_hash_v1.is_some_and(|old| old != hash) {
                            return Err(MagnetError::ConflictingInfoHash { kind: "v1" });
                        }
                        magnet.info_hash_v1 = Some(hash);
                    } else if let Some(h) = lower.strip_prefix("urn:btmh:") {
                        let hash = h
                            .strip_prefix(V2_MULTIHASH_PREFIX)
                            .and_then(parse_hex::<32>)
                            .map(InfoHashV2)
                            .ok_or_else(|| MagnetError::BadInfoHash {
                                value: value.clone(),
                                kind: "v2 info-hash (1220 followed by 64 hex characters)",
                            })?;
                        if magnet.info_hash_v2.is_some_and(|old| old != hash) {
                            return Err(MagnetError::ConflictingInfoHash { kind: "v2" });
                        }
                        magnet.info_hash_v2 = Some(hash);
                    }
                }
                "dn" => magnet.display_name = Some(value),
                "tr" => magnet.trackers.push(value),
                "x.pe" => magnet.peers.push(value),
                _ => {}
            }
        }
        if magnet.info_hash_v1.is_none() && magnet.info_hash_v2.is_none() {
            return Err(MagnetError::NoInfoHash);
        }
        Ok(magnet)
    }
}

impl Torrent {
    /// `magnet:?xt=...` for this torrent.
    pub fn magnet_uri(&self) -> String {
        Magnet::for_torrent(self).to_uri()
    }
}

fn parse_btih(s: &str) -> Option<InfoHashV1> {
    match s.len() {
        40 => parse_hex::<20>(s).map(InfoHashV1),
        32 => base32_decode(s).map(InfoHashV1),
        _ => None,
    }
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    // `from_str_radix` alone would accept a sign ("+f" parses as 15).
    if s.len() != N * 2 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// RFC 4648 base32 (no padding), 32 characters -> 20 bytes.
fn base32_decode(s: &str) -> Option<[u8; 20]> {
    let mut out = [0u8; 20];
    let mut buffer: u64 = 0;
    let mut bits = 0u32;
    let mut n = 0usize;
    for c in s.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (buffer >> bits) as u8;
            n += 1;
        }
    }
    (n == 20).then_some(out)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                // Exactly two hex digits: `from_str_radix` alone would take "+2".
                let hex = s.get(i + 1..i + 3)?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_base32() {
        let m = Magnet {
            info_hash_v1: Some(InfoHashV1([0xab; 20])),
            info_hash_v2: Some(InfoHashV2([0xcd; 32])),
            display_name: Some("a b&c".into()),
            trackers: vec!["http://t.example/announce?x=1&y=2".into()],
            peers: vec!["127.0.0.1:6881".into()],
        };
        let uri = m.to_uri();
        assert!(uri.starts_with("magnet:?xt=urn:btih:abababab"));
        assert!(uri.contains("&xt=urn:btmh:1220cdcd"));
        assert!(uri.contains("dn=a%20b%26c"));
        assert_eq!(Magnet::parse(&uri).unwrap(), m);
        // base32 of 20 bytes of 0xab
        let b32 = "VOV2XK5LVOV2XK5LVOV2XK5LVOV2XK5L";
        let p = Magnet::parse(&format!("magnet:?xt=urn:btih:{b32}")).unwrap();
        assert_eq!(p.info_hash_v1, Some(InfoHashV1([0xab; 20])));
    }

    #[test]
    fn errors() {
        assert_eq!(Magnet::parse("http://x"), Err(MagnetError::NotMagnet));
        assert_eq!(Magnet::parse("magnet:?dn=x"), Err(MagnetError::NoInfoHash));
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:btih:123"),
            Err(MagnetError::BadInfoHash { .. })
        ));
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:btmh:1120aa"),
            Err(MagnetError::BadInfoHash { .. })
        ));
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:btih:%zz"),
            Err(MagnetError::BadEncoding { .. })
        ));
        assert!(matches!(
            Magnet::parse("magnet:?tr=%e2%82"),
            Err(MagnetError::BadEncoding { .. })
        ));
    }
}
