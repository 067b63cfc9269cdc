//! Blocking I/O for one tracker exchange: HTTP GET over `TcpStream`, UDP
//! request/response with retransmits. Protocol bytes come from
//! [`super::proto`]; this file only moves them, under a deadline and an
//! abort flag checked at least every [`SLICE`].

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::proto::http::{self, HttpError, MAX_BODY, MAX_HEAD};
use super::proto::udp::{self, ConnectionCache, UdpError, UdpResponse};
use super::proto::{AnnounceRequest, AnnounceResponse, InfoHash, ScrapeStats, TrackerUrl};

/// Longest a blocking call runs before the abort flag is checked again.
const SLICE: Duration = Duration::from_millis(100);
/// First UDP retransmit; doubles up to the deadline (BEP 15 uses 15 s, which
/// is too slow for one announcer thread serving many torrents).
const UDP_FIRST_RETRY: Duration = Duration::from_millis(500);

/// Why one announce or scrape to one tracker failed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("cannot resolve tracker host {host:?}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tracker host {host:?} resolves to no address")]
    NoAddress { host: String },
    #[error("cannot connect to tracker {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error talking to tracker {addr}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("tracker {addr} did not answer in time")]
    Timeout { addr: SocketAddr },
    #[error("tracker request aborted: shutting down")]
    Aborted,
    #[error("tracker {addr} does not support scrape (announce path does not end in `announce`)")]
    NoScrape { addr: SocketAddr },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Udp(#[from] UdpError),
}

impl AnnounceError {
    /// The tracker's own refusal text, if this is one.
    pub fn tracker_failure(&self) -> Option<&str> {
        match self {
            AnnounceError::Http(HttpError::Failure(r))
            | AnnounceError::Udp(UdpError::Failure(r)) => Some(r),
            _ => None,
        }
    }
}

/// When to give up, and a flag that means "give up now".
#[derive(Clone, Copy)]
pub(crate) struct Deadline<'a> {
    pub at: Instant,
    pub abort: Option<&'a AtomicBool>,
}

impl Deadline<'_> {
    /// Time left for the next blocking call, at most [`SLICE`]; `None` when
    /// it is over. `Err(Aborted)` when aborting.
    fn slice(&self) -> Result<Option<Duration>, AnnounceError> {
        if self.abort.is_some_and(|a| a.load(Ordering::Relaxed)) {
            return Err(AnnounceError::Aborted);
        }
        let left = self.at.saturating_duration_since(Instant::now());
        Ok((!left.is_zero()).then(|| left.min(SLICE)))
    }
}

pub(crate) fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, AnnounceError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| AnnounceError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(AnnounceError::NoAddress {
            host: host.to_owned(),
        });
    }
    Ok(addrs)
}

/// One HTTP GET; returns the body (status 200 checked, size bounded).
pub(crate) fn http_get(
    host: &str,
    port: u16,
    target: &str,
    dl: Deadline<'_>,
) -> Result<Vec<u8>, AnnounceError> {
    let addrs = resolve(host, port)?;
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        let Some(_) = dl.slice()? else { break };
        let timeout = dl
            .at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some((s, addr));
                break;
            }
            Err(source) => last = Some(AnnounceError::Connect { addr, source }),
        }
    }
    let Some((mut stream, addr)) = stream else {
        return Err(last.unwrap_or(AnnounceError::Aborted));
    };
    let io = |source| AnnounceError::Io { addr, source };
    stream
        .set_write_timeout(Some(SLICE.max(Duration::from_millis(500))))
        .map_err(io)?;
    stream
        .write_all(&http::request_head(host, port, target))
        .map_err(io)?;
    let limit = MAX_HEAD + MAX_BODY;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let Some(slice) = dl.slice()? else {
            return Err(AnnounceError::Timeout { addr });
        };
        stream.set_read_timeout(Some(slice)).map_err(io)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if buf.len() + n > limit {
                    return Err(HttpError::BodyTooLarge { len: buf.len() + n }.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(http::split_response(&buf)?.to_vec())
}

/// A UDP socket connected to the first address of the tracker.
fn udp_socket(host: &str, port: u16) -> Result<(UdpSocket, SocketAddr), AnnounceError> {
    let addr = resolve(host, port)?[0];
    let bind: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).map_err(|source| AnnounceError::Io { addr, source })?;
    sock.connect(addr)
        .map_err(|source| AnnounceError::Connect { addr, source })?;
    Ok((sock, addr))
}

/// Send `request`, retransmitting, until a datagram with our transaction id
/// arrives or the deadline passes.
fn udp_exchange(
    sock: &UdpSocket,
    addr: SocketAddr,
    request: &[u8],
    tid: u32,
    action: u32,
    max_peers: usize,
    dl: Deadline<'_>,
) -> Result<UdpResponse, AnnounceError> {
    let io = |source| AnnounceError::Io { addr, source };
    let mut retry = UDP_FIRST_RETRY;
    let mut next_send = Instant::now();
    let mut buf = vec![0u8; udp::MAX_DATAGRAM + 1];
    loop {
        let now = Instant::now();
        if now >= next_send {
            match sock.send(request) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    return Err(AnnounceError::Connect { addr, source: e })
                }
                Err(e) => return Err(io(e)),
            }
            next_send = now + retry;
            retry *= 2;
        }
        let Some(slice) = dl.slice()? else {
            return Err(AnnounceError::Timeout { addr });
        };
        let wait = slice
            .min(next_send.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).map_err(io)?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                match udp::decode_response(&buf[..n], tid, action, addr.is_ipv6(), max_peers) {
                    Err(UdpError::TransactionMismatch { .. }) => continue,
                    other => return Ok(other?),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                return Err(AnnounceError::Connect { addr, source: e })
            }
            Err(e) => return Err(io(e)),
        }
    }
}

/// A UDP connection id for `addr`: cached, or from a fresh connect.
fn udp_connection_id(
    sock: &UdpSocket,
    addr: SocketAddr,
    cache: &mut ConnectionCache,
    next_tid: &mut dyn FnMut() -> u32,
    dl: Deadline<'_>,
) -> Result<u64, AnnounceError> {
    if let Some(id) = cache.get(addr, Instant::now()) {
        return Ok(id);
    }
    let tid = next_tid();
    match udp_exchange(
        sock,
        addr,
        &udp::encode_connect(tid),
        tid,
        udp::ACTION_CONNECT,
        0,
        dl,
    )? {
        UdpResponse::Connect { connection_id } => {
            cache.insert(addr, connection_id, Instant::now());
            Ok(connection_id)
        }
        _ => Err(UdpError::WrongAction {
            expected: udp::ACTION_CONNECT,
            got: u32::MAX,
        }
        .into()),
    }
}

/// Small non-cryptographic generator for keys and transaction ids.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Self {
        let seed = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            Instant::now(),
        );
        Rng(seed | 1)
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

/// What the announcer keeps between exchanges.
pub(crate) struct Session {
    pub udp_ids: ConnectionCache,
    pub rng: Rng,
}

/// One announce to one tracker.
pub(crate) fn announce(
    url: &TrackerUrl,
    req: &AnnounceRequest,
    tracker_id: Option<&[u8]>,
    max_peers: usize,
    session: &mut Session,
    dl: Deadline<'_>,
) -> Result<AnnounceResponse, AnnounceError> {
    match url {
        TrackerUrl::Http {
            host,
            port,
            path_and_query,
        } => {
            let target = http::announce_target(path_and_query, req, tracker_id);
            let body = http_get(host, *port, &target, dl)?;
            Ok(http::parse_announce_body(&body, max_peers)?)
        }
        TrackerUrl::Udp { host, port } => {
            let (sock, addr) = udp_socket(host, *port)?;
            // An error answer to a cached id may mean the id expired on the
            // tracker's side: retry once with a fresh connect.
            for _ in 0..2 {
                let cached = session.udp_ids.get(addr, Instant::now()).is_some();
                let id = udp_connection_id(
                    &sock,
                    addr,
                    &mut session.udp_ids,
                    &mut || session.rng.next_u32(),
                    dl,
                )?;
                let tid = session.rng.next_u32();
                let packet = udp::encode_announce(id, tid, req);
                match udp_exchange(
                    &sock,
                    addr,
                    &packet,
                    tid,
                    udp::ACTION_ANNOUNCE,
                    max_peers,
                    dl,
                ) {
                    Ok(UdpResponse::Announce(r)) => return Ok(r),
                    Ok(_) => {
                        // decode_response only returns the expected action's variant.
                        return Err(UdpError::WrongAction {
                            expected: udp::ACTION_ANNOUNCE,
                            got: u32::MAX,
                        }
                        .into());
                    }
                    Err(AnnounceError::Udp(UdpError::Failure(_))) if cached => {
                        session.udp_ids.remove(addr);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(AnnounceError::Timeout { addr })
        }
    }
}

/// Scrape some hashes at one tracker (BEP 48 for HTTP, BEP 15 for UDP).
pub(crate) fn scrape(
    url: &TrackerUrl,
    hashes: &[InfoHash],
    session: &mut Session,
    dl: Deadline<'_>,
) -> Result<Vec<(InfoHash, ScrapeStats)>, AnnounceError> {
    match url {
        TrackerUrl::Http {
            host,
            port,
            path_and_query,
        } => {
            let target = http::scrape_target(path_and_query, hashes).ok_or_else(|| {
                AnnounceError::NoScrape {
                    addr: SocketAddr::from(([0, 0, 0, 0], *port)),
                }
            })?;
            let body = http_get(host, *port, &target, dl)?;
            Ok(http::parse_scrape_body(&body, hashes)?)
        }
        TrackerUrl::Udp { host, port } => {
            let hashes = &hashes[..hashes.len().min(udp::MAX_SCRAPE_HASHES)];
            let (sock, addr) = udp_socket(host, *port)?;
            let id = udp_connection_id(
                &sock,
                addr,
                &mut session.udp_ids,
                &mut || session.rng.next_u32(),
                dl,
            )?;
            let tid = session.rng.next_u32();
            match udp_exchange(
                &sock,
                addr,
                &udp::encode_scrape(id, tid, hashes),
                tid,
                udp::ACTION_SCRAPE,
                0,
                dl,
            )? {
                UdpResponse::Scrape(stats) if stats.len() == hashes.len() => {
                    Ok(hashes.iter().copied().zip(stats).collect())
                }
                _ => Err(UdpError::Truncated {
                    action: udp::ACTION_SCRAPE,
                    len: 0,
                }
                .into()),
            }
        }
    }
}
