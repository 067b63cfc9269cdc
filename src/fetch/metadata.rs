//! Getting a torrent's info dictionary from peers (BEP 9, `ut_metadata`)
//! for `serve --magnet URI --data PATH`, before the fetch proper starts.
//!
//! Peers are tried one after another (a few seconds each): `--peer`, the
//! magnet's `x.pe` hints, then the peers its `tr=` trackers return. With
//! each: the handshake (extension bit set), our extension handshake naming
//! `ut_metadata`, then every 16 KiB piece of the dictionary requested at
//! once; the assembled bytes must hash to the magnet's info-hash (SHA-1
//! for `btih`, SHA-256 for `btmh`) or the peer is dropped and the next
//! tried. At most [`MAX_METADATA`] bytes are accepted.
//!
//! A v2-only magnet link cannot be fetched yet: its info dictionary has no
//! piece hashes (they are in the piece layers, BEP 52 hash requests), so
//! nothing could be verified. A hybrid's pieces are checked with their v1
//! SHA-1 hashes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use sha1::Digest;

use crate::bencode::DictBuilder;
use crate::metainfo::magnet::Magnet;
use crate::tracker::client::announce_once;
use crate::tracker::proto::{AnnounceRequest, Event};
use crate::wire::codec::{self, Decoded, Handshake, HandshakeDecoded, Message, ReservedFlags};
use crate::wire::ext::parse_ext_handshake;
use crate::wire::metadata::{
    encode_request, num_metadata_pieces, parse_metadata_message, MetadataMessage,
    METADATA_PIECE_LEN,
};

/// Largest info dictionary accepted (libtorrent's default limit is 30 MiB
/// for the whole `.torrent`; a dictionary this size describes ~1.6 M pieces).
pub const MAX_METADATA: usize = 32 << 20;
/// Our `ut_metadata` id, in our extension handshake.
const OUR_UT_METADATA: u8 = 3;
const PER_PEER: Duration = Duration::from_secs(10);

/// Why no metadata came.
#[derive(Debug, thiserror::Error)]
pub enum MetadataFetchError {
    #[error("a v2-only magnet link cannot be fetched yet (its pieces could not be verified without the piece layers): use the .torrent")]
    V2Only,
    #[error("no peer gave the metadata of {name} within {secs} s (tried {tried} peer(s)): pass --peer ADDR of a box that has it, or use the .torrent")]
    NoPeer {
        name: String,
        secs: u64,
        tried: usize,
    },
}

/// The info dictionary of `m`, verified against its info-hash.
pub fn fetch_info(
    m: &Magnet,
    peers: &[String],
    peer_id: [u8; 20],
    port: u16,
    timeout: Duration,
) -> Result<Vec<u8>, MetadataFetchError> {
    let Some(v1) = m.info_hash_v1 else {
        return Err(MetadataFetchError::V2Only);
    };
    let key = v1.0;
    let deadline = Instant::now() + timeout;
    let mut tried = Vec::new();
    let name = m.display_name.clone().unwrap_or_else(|| v1.to_string());
    let try_all = |addrs: Vec<SocketAddr>, tried: &mut Vec<SocketAddr>| {
        for a in addrs {
            if tried.contains(&a) || Instant::now() >= deadline {
                continue;
            }
            tried.push(a);
            match from_peer(a, &key, &peer_id, deadline) {
                Ok(info) => return Some(info),
                Err(e) => tracing::debug!(peer = %a, error = %e, "no metadata from this peer"),
            }
        }
        None
    };
    let resolve = |list: &[String]| -> Vec<SocketAddr> {
        list.iter()
            .filter_map(|p| p.to_socket_addrs().ok())
            .flatten()
            .collect()
    };
    while Instant::now() < deadline {
        if let Some(info) = try_all(resolve(peers), &mut tried) {
            return Ok(info);
        }
        if let Some(info) = try_all(resolve(&m.peers), &mut tried) {
            return Ok(info);
        }
        for url in &m.trackers {
            let req = AnnounceRequest {
                info_hash: key,
                peer_id,
                port,
                uploaded: 0,
                downloaded: 0,
                left: 1,
                event: Event::None,
                numwant: Some(50),
                key: 0,
                ip: None,
            };
            if let Ok(r) = announce_once(url, &req, Duration::from_secs(5)) {
                if let Some(info) = try_all(r.peers, &mut tried) {
                    return Ok(info);
                }
            }
        }
        // Nobody had it yet (the origin may still be starting): again.
        tried.clear();
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(MetadataFetchError::NoPeer {
        name,
        secs: timeout.as_secs(),
        tried: tried.len(),
    })
}

fn from_peer(
    addr: SocketAddr,
    info_hash: &[u8; 20],
    peer_id: &[u8; 20],
    deadline: Instant,
) -> Result<Vec<u8>, String> {
    let until = deadline.min(Instant::now() + PER_PEER);
    let left = || {
        until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = TcpStream::connect_timeout(&addr, left()).map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let h = Handshake {
        reserved: ReservedFlags {
            extension: true,
            fast: true,
            ..ReservedFlags::default()
        }
        .to_bytes(),
        info_hash: *info_hash,
        peer_id: *peer_id,
    };
    let mut out = h.encode().to_vec();
    let mut m = DictBuilder::new();
    m.int("ut_metadata", i64::from(OUR_UT_METADATA));
    let mut ext = DictBuilder::new();
    ext.raw("m", m.finish());
    ext.bytes("v", concat!("ringseed/", env!("CARGO_PKG_VERSION")));
    Message::Extended {
        id: 0,
        payload: &ext.finish(),
    }
    .encode(&mut out);
    s.write_all(&out).map_err(|e| e.to_string())?;

    let mut buf: Vec<u8> = Vec::new();
    let mut got_handshake = false;
    let mut info: Vec<u8> = Vec::new();
    let mut have: Vec<bool> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        s.set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        loop {
            if !got_handshake {
                match Handshake::decode(&buf[pos..]).map_err(|e| e.to_string())? {
                    HandshakeDecoded::Complete(h) => {
                        if &h.info_hash != info_hash {
                            return Err("wrong info-hash".into());
                        }
                        if !h.supports_extensions() {
                            return Err("no extension protocol".into());
                        }
                        got_handshake = true;
                        pos += codec::HANDSHAKE_LEN;
                        continue;
                    }
                    HandshakeDecoded::Incomplete { .. } => break,
                }
            }
            let (msg, used) =
                match codec::decode(&buf[pos..], 1 << 20).map_err(|e| e.to_string())? {
                    Decoded::Message { msg, consumed } => (msg, consumed),
                    Decoded::Incomplete { .. } => break,
                };
            pos += used;
            let Message::Extended { id, payload } = msg else {
                continue;
            };
            if id == 0 {
                let e = parse_ext_handshake(payload).map_err(|e| e.to_string())?;
                let theirs = e.ut_metadata.filter(|&i| i != 0).ok_or("no ut_metadata")?;
                let size = e.metadata_size.ok_or("no metadata_size")? as usize;
                if size == 0 || size > MAX_METADATA {
                    return Err(format!("metadata_size {size} out of range"));
                }
                info = vec![0; size];
                let pieces = num_metadata_pieces(size);
                have = vec![false; pieces as usize];
                let mut req = Vec::new();
                for p in 0..pieces {
                    encode_request(&mut req, theirs, p);
                }
                s.write_all(&req).map_err(|e| e.to_string())?;
            } else if id == OUR_UT_METADATA {
                match parse_metadata_message(payload).map_err(|e| e.to_string())? {
                    MetadataMessage::Data { piece, data, .. } => {
                        let at = piece as usize * METADATA_PIECE_LEN;
                        let expect = info.len().saturating_sub(at).min(METADATA_PIECE_LEN);
                        if piece as usize >= have.len() || data.len() != expect {
                            return Err("metadata piece of the wrong size".into());
                        }
                        info[at..at + expect].copy_from_slice(data);
                        have[piece as usize] = true;
                        if have.iter().all(|&h| h) {
                            let digest: [u8; 20] = sha1::Sha1::digest(&info).into();
                            if &digest != info_hash {
                                return Err("metadata does not match the info-hash".into());
                            }
                            return Ok(info);
                        }
                    }
                    MetadataMessage::Reject { .. } => return Err("metadata rejected".into()),
                    _ => {}
                }
            }
        }
        buf.drain(..pos);
        if buf.len() > 2 << 20 {
            return Err("message too long".into());
        }
    }
}
