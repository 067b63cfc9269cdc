//! UDP tracker protocol (BEP 15), both sides.
//!
//! Client call order: [`encode_connect`] -> [`decode_response`] gives a
//! connection id (cache it in [`ConnectionCache`] for
//! [`CLIENT_CONNECTION_ID_LIFETIME`]) -> [`encode_announce`] /
//! [`encode_scrape`] -> [`decode_response`]. A response whose transaction
//! id is not ours is [`UdpError::TransactionMismatch`]: ignore it and keep
//! waiting. Server: [`decode_request`], check the connection id with
//! [`ConnectionIds`], answer with the `encode_*_response` functions.
//!
//! Peers in an announce response are 6 bytes when the exchange ran over
//! IPv4 and 18 bytes over IPv6 (BEP 15's IPv6 form), so the decoder needs
//! to know which family the socket used.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{
    decode_peers_v4, decode_peers_v6, encode_peer, tracker_text, AnnounceRequest, AnnounceResponse,
    Event, InfoHash, ScrapeStats, MAX_PEERS_PER_RESPONSE,
};

/// The magic `protocol_id` of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
pub const ACTION_CONNECT: u32 = 0;
pub const ACTION_ANNOUNCE: u32 = 1;
pub const ACTION_SCRAPE: u32 = 2;
pub const ACTION_ERROR: u32 = 3;
/// A client may reuse a connection id for one minute (BEP 15).
pub const CLIENT_CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(60);
/// A tracker accepts a connection id for two minutes (BEP 15).
pub const SERVER_CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(120);
/// Most info-hashes in one scrape (keeps the response within ~1 KB).
pub const MAX_SCRAPE_HASHES: usize = 74;
/// Length of an announce request.
pub const ANNOUNCE_LEN: usize = 98;
/// Largest datagram we send or accept.
pub const MAX_DATAGRAM: usize = 8192;

/// Why a datagram from a tracker is not the answer we wait for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    #[error("UDP tracker response of {len} bytes is too short for action {action}")]
    Truncated { action: u32, len: usize },
    #[error("UDP tracker response has transaction id {got:#010x}, expected {expected:#010x}")]
    TransactionMismatch { expected: u32, got: u32 },
    #[error("UDP tracker answered action {got}, expected {expected}")]
    WrongAction { expected: u32, got: u32 },
    #[error("UDP tracker announce response peers are {len} bytes, not a multiple of {unit}")]
    BadPeers { len: usize, unit: usize },
    #[error("UDP tracker response of {len} bytes is over {MAX_DATAGRAM}")]
    TooLarge { len: usize },
    /// Action 3: the tracker's error message.
    #[error("tracker failure: {0}")]
    Failure(String),
}

/// What a decoded response carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpResponse {
    Connect { connection_id: u64 },
    Announce(AnnounceResponse),
    Scrape(Vec<ScrapeStats>),
}

pub fn encode_connect(transaction_id: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    b[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    b
}

/// An announce; an IPv6 `req.ip` cannot be expressed and is sent as 0.
pub fn encode_announce(
    connection_id: u64,
    transaction_id: u32,
    req: &AnnounceRequest,
) -> [u8; ANNOUNCE_LEN] {
    let mut b = [0u8; ANNOUNCE_LEN];
    b[0..8].copy_from_slice(&connection_id.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    b[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    b[16..36].copy_from_slice(&req.info_hash);
    b[36..56].copy_from_slice(&req.peer_id);
    b[56..64].copy_from_slice(&req.downloaded.to_be_bytes());
    b[64..72].copy_from_slice(&req.left.to_be_bytes());
    b[72..80].copy_from_slice(&req.uploaded.to_be_bytes());
    b[80..84].copy_from_slice(&req.event.as_udp().to_be_bytes());
    let ip = match req.ip {
        Some(IpAddr::V4(ip)) => ip.octets(),
        _ => [0; 4],
    };
    b[84..88].copy_from_slice(&ip);
    b[88..92].copy_from_slice(&req.key.to_be_bytes());
    let numwant: i32 = req
        .numwant
        .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
    b[92..96].copy_from_slice(&numwant.to_be_bytes());
    b[96..98].copy_from_slice(&req.port.to_be_bytes());
    b
}

/// A scrape of at most [`MAX_SCRAPE_HASHES`] hashes (extra ones are left out).
pub fn encode_scrape(connection_id: u64, transaction_id: u32, hashes: &[InfoHash]) -> Vec<u8> {
    let hashes = &hashes[..hashes.len().min(MAX_SCRAPE_HASHES)];
    let mut b = Vec::with_capacity(16 + 20 * hashes.len());
    b.extend_from_slice(&connection_id.to_be_bytes());
    b.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    b.extend_from_slice(&transaction_id.to_be_bytes());
    for h in hashes {
        b.extend_from_slice(h);
    }
    b
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Decode a tracker's datagram in answer to a request with `transaction_id`
/// and `expected` action. `ipv6` says which family the exchange used;
/// at most `max_peers` peers are kept.
pub fn decode_response(
    datagram: &[u8],
    transaction_id: u32,
    expected: u32,
    ipv6: bool,
    max_peers: usize,
) -> Result<UdpResponse, UdpError> {
    let len = datagram.len();
    if len > MAX_DATAGRAM {
        return Err(UdpError::TooLarge { len });
    }
    if len < 8 {
        return Err(UdpError::Truncated {
            action: expected,
            len,
        });
    }
    let action = be32(datagram, 0);
    let tid = be32(datagram, 4);
    if tid != transaction_id {
        return Err(UdpError::TransactionMismatch {
            expected: transaction_id,
            got: tid,
        });
    }
    if action == ACTION_ERROR {
        return Err(UdpError::Failure(tracker_text(&datagram[8..])));
    }
    if action != expected {
        return Err(UdpError::WrongAction {
            expected,
            got: action,
        });
    }
    let truncated = UdpError::Truncated { action, len };
    match action {
        ACTION_CONNECT => {
            if len < 16 {
                return Err(truncated);
            }
            Ok(UdpResponse::Connect {
                connection_id: be64(datagram, 8),
            })
        }
        ACTION_ANNOUNCE => {
            if len < 20 {
                return Err(truncated);
            }
            let max_peers = max_peers.min(MAX_PEERS_PER_RESPONSE);
            let mut resp = AnnounceResponse {
                interval: Duration::from_secs(be32(datagram, 8).into()),
                incomplete: Some(be32(datagram, 12)),
                complete: Some(be32(datagram, 16)),
                ..AnnounceResponse::default()
            };
            let peers = &datagram[20..];
            let (unit, result) = if ipv6 {
                (18, decode_peers_v6(peers, max_peers, &mut resp.peers))
            } else {
                (6, decode_peers_v4(peers, max_peers, &mut resp.peers))
            };
            result.map_err(|len| UdpError::BadPeers { len, unit })?;
            Ok(UdpResponse::Announce(resp))
        }
        ACTION_SCRAPE => {
            let body = &datagram[8..];
            if body.len() % 12 != 0 {
                return Err(truncated);
            }
            Ok(UdpResponse::Scrape(
                body.chunks_exact(12)
                    .map(|c| ScrapeStats {
                        complete: be32(c, 0),
                        downloaded: be32(c, 4),
                        incomplete: be32(c, 8),
                    })
                    .collect(),
            ))
        }
        _ => Err(UdpError::WrongAction {
            expected,
            got: action,
        }),
    }
}

/// Connection ids a client got, by tracker address, each good for
/// [`CLIENT_CONNECTION_ID_LIFETIME`] (a bounded map: trackers are few).
#[derive(Debug, Default)]
pub struct ConnectionCache {
    entries: Vec<(SocketAddr, u64, Instant)>,
}

impl ConnectionCache {
    const MAX: usize = 256;

    pub fn get(&self, tracker: SocketAddr, now: Instant) -> Option<u64> {
        self.entries
            .iter()
            .find(|(a, _, at)| {
                *a == tracker && now.saturating_duration_since(*at) < CLIENT_CONNECTION_ID_LIFETIME
            })
            .map(|(_, id, _)| *id)
    }

    pub fn insert(&mut self, tracker: SocketAddr, id: u64, now: Instant) {
        self.entries.retain(|(a, _, at)| {
            *a != tracker && now.saturating_duration_since(*at) < CLIENT_CONNECTION_ID_LIFETIME
        });
        if self.entries.len() >= Self::MAX {
            self.entries.remove(0);
        }
        self.entries.push((tracker, id, now));
    }

    /// Forget a tracker's id (it answered with an error).
    pub fn remove(&mut self, tracker: SocketAddr) {
        self.entries.retain(|(a, _, _)| *a != tracker);
    }
}

// ---------------------------------------------------------------- server

/// A request the embedded tracker received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpRequest {
    Connect {
        transaction_id: u32,
    },
    Announce {
        connection_id: u64,
        transaction_id: u32,
        info_hash: InfoHash,
        left: u64,
        event: Event,
        /// -1 (or any negative) = tracker's default.
        numwant: i32,
        port: u16,
    },
    Scrape {
        connection_id: u64,
        transaction_id: u32,
        hashes: Vec<InfoHash>,
    },
}

/// Why a datagram is not a request; `transaction_id` is set when the
/// request was readable enough to answer with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad UDP tracker request: {reason}")]
pub struct UdpRequestError {
    pub reason: &'static str,
    pub transaction_id: Option<u32>,
}

pub fn decode_request(d: &[u8]) -> Result<UdpRequest, UdpRequestError> {
    let err = |reason, transaction_id| UdpRequestError {
        reason,
        transaction_id,
    };
    if d.len() < 16 {
        return Err(err("shorter than 16 bytes", None));
    }
    let connection_id = be64(d, 0);
    let action = be32(d, 8);
    let tid = be32(d, 12);
    match action {
        ACTION_CONNECT if connection_id == PROTOCOL_ID => Ok(UdpRequest::Connect {
            transaction_id: tid,
        }),
        ACTION_CONNECT => Err(err("connect without the protocol id", None)),
        ACTION_ANNOUNCE => {
            if d.len() < ANNOUNCE_LEN {
                return Err(err("announce shorter than 98 bytes", Some(tid)));
            }
            let mut info_hash = [0u8; 20];
            info_hash.copy_from_slice(&d[16..36]);
            let event = Event::from_udp(be32(d, 80)).ok_or(err("unknown event", Some(tid)))?;
            Ok(UdpRequest::Announce {
                connection_id,
                transaction_id: tid,
                info_hash,
                left: be64(d, 64),
                event,
                numwant: be32(d, 92) as i32,
                port: u16::from_be_bytes([d[96], d[97]]),
            })
        }
        ACTION_SCRAPE => {
            let body = &d[16..];
            if body.is_empty() || body.len() % 20 != 0 {
                return Err(err("scrape hashes not a multiple of 20 bytes", Some(tid)));
            }
            if body.len() / 20 > MAX_SCRAPE_HASHES {
                return Err(err("scrape of more than 74 hashes", Some(tid)));
            }
            Ok(UdpRequest::Scrape {
                connection_id,
                transaction_id: tid,
                hashes: body
                    .chunks_exact(20)
                    .map(|c| {
                        let mut h = [0u8; 20];
                        h.copy_from_slice(c);
                        h
                    })
                    .collect(),
            })
        }
        _ => Err(err("unknown action", Some(tid))),
    }
}

pub fn encode_connect_response(transaction_id: u32, connection_id: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    b[4..8].copy_from_slice(&transaction_id.to_be_bytes());
    b[8..16].copy_from_slice(&connection_id.to_be_bytes());
    b
}

/// Peers must all be of the request's family (6 or 18 bytes each).
pub fn encode_announce_response(
    transaction_id: u32,
    interval: Duration,
    leechers: u32,
    seeders: u32,
    peers: &[SocketAddr],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + 18 * peers.len());
    b.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    b.extend_from_slice(&transaction_id.to_be_bytes());
    b.extend_from_slice(
        &u32::try_from(interval.as_secs())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    b.extend_from_slice(&leechers.to_be_bytes());
    b.extend_from_slice(&seeders.to_be_bytes());
    for p in peers {
        encode_peer(*p, &mut b);
    }
    b
}

pub fn encode_scrape_response(transaction_id: u32, stats: &[ScrapeStats]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 12 * stats.len());
    b.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    b.extend_from_slice(&transaction_id.to_be_bytes());
    for s in stats {
        b.extend_from_slice(&s.complete.to_be_bytes());
        b.extend_from_slice(&s.downloaded.to_be_bytes());
        b.extend_from_slice(&s.incomplete.to_be_bytes());
    }
    b
}

pub fn encode_error_response(transaction_id: u32, message: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + message.len());
    b.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    b.extend_from_slice(&transaction_id.to_be_bytes());
    b.extend_from_slice(message.as_bytes());
    b
}

/// Stateless connection ids: the high 32 bits are the issue time (ms on the
/// tracker's clock, wrapping), the low 32 a keyed hash of (client IP, issue
/// time) under a per-process random key, so ids cannot be forged for
/// another address (BEP 15's anti-spoofing purpose) and need no table.
#[derive(Debug, Clone)]
pub struct ConnectionIds {
    key: std::collections::hash_map::RandomState,
    lifetime_ms: u32,
}

impl ConnectionIds {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            key: std::collections::hash_map::RandomState::new(),
            lifetime_ms: u32::try_from(lifetime.as_millis())
                .unwrap_or(u32::MAX / 2)
                .min(u32::MAX / 2),
        }
    }

    fn mac(&self, ip: IpAddr, issued_ms: u32) -> u32 {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.key.hash_one((ip, issued_ms)) as u32
    }

    /// `now_ms`: milliseconds on the tracker's monotonic clock (wrapping).
    pub fn issue(&self, ip: IpAddr, now_ms: u32) -> u64 {
        (u64::from(now_ms) << 32) | u64::from(self.mac(ip, now_ms))
    }

    pub fn is_valid(&self, id: u64, ip: IpAddr, now_ms: u32) -> bool {
        let issued = (id >> 32) as u32;
        let age = now_ms.wrapping_sub(issued);
        age <= self.lifetime_ms && self.mac(ip, issued) == id as u32
    }
}

#[cfg(test)]
#[path = "udp_tests.rs"]
mod tests;
