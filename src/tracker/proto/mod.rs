//! Sans-IO tracker protocols: HTTP (BEP 3, 23, 7, 48) and UDP (BEP 15).
//!
//! Both sides of both protocols live here, as pure functions over byte
//! slices: the announcer encodes requests and decodes responses, the
//! embedded tracker decodes requests and encodes responses. Nothing here
//! opens a socket or reads a clock; times (`now`) are passed in.
//!
//! Every decoder treats its input as hostile: lengths are checked before
//! slicing, peer lists are capped by the caller's `max_peers`, strings the
//! tracker sends are cut to [`MAX_MESSAGE_LEN`] bytes, and nothing panics.
//!
//! Deliberately not here: DNS, TLS (`https://` trackers are reported as
//! unsupported), HTTP redirects, BEP 41 UDP URL data.

#![forbid(unsafe_code)]

pub mod http;
pub mod udp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

/// A 20-byte swarm id: a v1 info-hash or a truncated v2 info-hash.
pub type InfoHash = [u8; 20];

/// Longest tracker-supplied string we keep (failure reason, warning).
pub const MAX_MESSAGE_LEN: usize = 512;

/// Hard upper bound on peers taken from one response, whatever `numwant`.
pub const MAX_PEERS_PER_RESPONSE: usize = 1000;

/// The `event` of an announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A regular re-announce (no `event` parameter; UDP 0).
    None,
    /// Download finished (UDP 1). A seed never sends it.
    Completed,
    /// First announce to this tracker (UDP 2).
    Started,
    /// Leaving the swarm (UDP 3).
    Stopped,
}

impl Event {
    /// The HTTP `event=` value, if any.
    pub fn as_http(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Completed => Some("completed"),
            Event::Started => Some("started"),
            Event::Stopped => Some("stopped"),
        }
    }

    pub fn from_http(value: &[u8]) -> Option<Event> {
        match value {
            b"" | b"empty" | b"paused" => Some(Event::None),
            b"completed" => Some(Event::Completed),
            b"started" => Some(Event::Started),
            b"stopped" => Some(Event::Stopped),
            _ => None,
        }
    }

    pub fn as_udp(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }

    pub fn from_udp(value: u32) -> Option<Event> {
        match value {
            0 => Some(Event::None),
            1 => Some(Event::Completed),
            2 => Some(Event::Started),
            3 => Some(Event::Stopped),
            _ => None,
        }
    }
}

/// What an announce says about us, independent of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    /// The port peers should connect to.
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes still missing: 0 for a seed.
    pub left: u64,
    pub event: Event,
    /// Peers wanted; `None` lets the tracker choose (UDP -1).
    pub numwant: Option<u32>,
    /// Random value identifying us across IP changes.
    pub key: u32,
    /// Address to announce instead of the one the tracker sees (NAT,
    /// containers). IPv4 goes into `ip=` (UDP: the ip field), IPv6 into
    /// `ipv6=` (BEP 7; UDP has no field for it).
    pub ip: Option<IpAddr>,
}

/// A successful announce response, either protocol.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    /// Seconds until the next regular announce.
    pub interval: Duration,
    /// Never re-announce sooner than this (HTTP `min interval`).
    pub min_interval: Option<Duration>,
    /// HTTP `tracker id`, to echo as `trackerid=` in later announces.
    pub tracker_id: Option<Vec<u8>>,
    /// Seeders (`complete`).
    pub complete: Option<u32>,
    /// Leechers (`incomplete`).
    pub incomplete: Option<u32>,
    /// A warning to log; the announce still succeeded.
    pub warning: Option<String>,
    pub peers: Vec<SocketAddr>,
}

/// Swarm counts from a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    /// Seeders.
    pub complete: u32,
    /// Times a download completed.
    pub downloaded: u32,
    /// Leechers.
    pub incomplete: u32,
}

/// Decode BEP 23 compact IPv4 peers (6 bytes each), at most `max` of them.
pub fn decode_peers_v4(bytes: &[u8], max: usize, out: &mut Vec<SocketAddr>) -> Result<(), usize> {
    if bytes.len() % 6 != 0 {
        return Err(bytes.len());
    }
    for chunk in bytes.chunks_exact(6).take(max.saturating_sub(out.len())) {
        let ip = Ipv4Addr::new(chunk[0], chunk[1], chunk[2], chunk[3]);
        let port = u16::from_be_bytes([chunk[4], chunk[5]]);
        out.push(SocketAddr::V4(SocketAddrV4::new(ip, port)));
    }
    Ok(())
}

/// Decode BEP 7 compact IPv6 peers (18 bytes each), at most `max` in `out`.
pub fn decode_peers_v6(bytes: &[u8], max: usize, out: &mut Vec<SocketAddr>) -> Result<(), usize> {
    if bytes.len() % 18 != 0 {
        return Err(bytes.len());
    }
    for chunk in bytes.chunks_exact(18).take(max.saturating_sub(out.len())) {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&chunk[..16]);
        let port = u16::from_be_bytes([chunk[16], chunk[17]]);
        out.push(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(octets),
            port,
            0,
            0,
        )));
    }
    Ok(())
}

/// Append a peer in compact form: 6 bytes for IPv4, 18 for IPv6.
pub fn encode_peer(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// A tracker-supplied string made safe to log: lossy UTF-8, control
/// characters replaced, at most [`MAX_MESSAGE_LEN`] bytes.
pub fn tracker_text(bytes: &[u8]) -> String {
    let bytes = &bytes[..bytes.len().min(MAX_MESSAGE_LEN)];
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Where a tracker is, parsed from its announce URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrackerUrl {
    /// `http://host[:port]/path[?query]` (default port 80).
    Http {
        host: String,
        port: u16,
        /// Path and query as given, starting with `/`.
        path_and_query: String,
    },
    /// `udp://host:port[/...]`.
    Udp { host: String, port: u16 },
}

/// Why an announce URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("tracker URL {url:?}: scheme {scheme:?} is not supported (use http:// or udp://)")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("tracker URL {url:?} has no scheme (expected http:// or udp://)")]
    NoScheme { url: String },
    #[error("tracker URL {url:?}: {reason}")]
    BadAuthority { url: String, reason: &'static str },
}

impl TrackerUrl {
    pub fn parse(url: &str) -> Result<TrackerUrl, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| UrlError::NoScheme {
            url: url.to_owned(),
        })?;
        let scheme_lower = scheme.to_ascii_lowercase();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let bad = |reason| UrlError::BadAuthority {
            url: url.to_owned(),
            reason,
        };
        if authority.contains('@') {
            return Err(bad("user info in tracker URLs is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(bad("unclosed '[' in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("garbage after IPv6 host")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(bad("bad port"))?,
            ),
            None => None,
        };
        match scheme_lower.as_str() {
            "http" => {
                let path_and_query = if path.starts_with('/') {
                    path.to_owned()
                } else {
                    format!("/{path}")
                };
                Ok(TrackerUrl::Http {
                    host: host.to_owned(),
                    port: port.unwrap_or(80),
                    path_and_query,
                })
            }
            "udp" => Ok(TrackerUrl::Udp {
                host: host.to_owned(),
                port: port.ok_or(bad("udp:// tracker URLs need a port"))?,
            }),
            _ => Err(UrlError::UnsupportedScheme {
                url: url.to_owned(),
                scheme: scheme.to_owned(),
            }),
        }
    }

    pub fn host(&self) -> &str {
        match self {
            TrackerUrl::Http { host, .. } | TrackerUrl::Udp { host, .. } => host,
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            TrackerUrl::Http { port, .. } | TrackerUrl::Udp { port, .. } => *port,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracker_urls() {
        assert_eq!(
            TrackerUrl::parse("http://t.example:6969/announce?passkey=x").unwrap(),
            TrackerUrl::Http {
                host: "t.example".into(),
                port: 6969,
                path_and_query: "/announce?passkey=x".into()
            }
        );
        assert_eq!(
            TrackerUrl::parse("HTTP://t.example").unwrap(),
            TrackerUrl::Http {
                host: "t.example".into(),
                port: 80,
                path_and_query: "/".into()
            }
        );
        assert_eq!(
            TrackerUrl::parse("udp://[::1]:1337/announce").unwrap(),
            TrackerUrl::Udp {
                host: "::1".into(),
                port: 1337
            }
        );
        assert!(matches!(
            TrackerUrl::parse("https://t.example/announce"),
            Err(UrlError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            TrackerUrl::parse("udp://t.example/announce"),
            Err(UrlError::BadAuthority { .. })
        ));
        assert!(TrackerUrl::parse("t.example/announce").is_err());
        assert!(TrackerUrl::parse("http://:80/").is_err());
        assert!(TrackerUrl::parse("http://h:99999/").is_err());
        assert!(TrackerUrl::parse("http://[::1/").is_err());
    }

    #[test]
    fn compact_peers_round_trip_and_reject_odd_lengths() {
        let peers: Vec<SocketAddr> = vec![
            "1.2.3.4:6881".parse().unwrap(),
            "10.0.0.1:1".parse().unwrap(),
        ];
        let mut bytes = Vec::new();
        for p in &peers {
            encode_peer(*p, &mut bytes);
        }
        let mut out = Vec::new();
        decode_peers_v4(&bytes, 10, &mut out).unwrap();
        assert_eq!(out, peers);
        let mut capped = Vec::new();
        decode_peers_v4(&bytes, 1, &mut capped).unwrap();
        assert_eq!(capped, peers[..1]);
        assert_eq!(decode_peers_v4(&bytes[..7], 10, &mut Vec::new()), Err(7));

        let v6: SocketAddr = "[2001:db8::1]:51413".parse().unwrap();
        let mut bytes = Vec::new();
        encode_peer(v6, &mut bytes);
        assert_eq!(bytes.len(), 18);
        let mut out = Vec::new();
        decode_peers_v6(&bytes, 10, &mut out).unwrap();
        assert_eq!(out, vec![v6]);
        assert_eq!(decode_peers_v6(&bytes[..17], 10, &mut Vec::new()), Err(17));
    }

    #[test]
    fn tracker_text_is_bounded_and_printable() {
        let long = vec![b'a'; 10_000];
        assert_eq!(tracker_text(&long).len(), MAX_MESSAGE_LEN);
        assert_eq!(tracker_text(b"bad\x1b[31m\xff"), "bad?[31m\u{fffd}");
    }
}
