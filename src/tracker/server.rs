//! The embedded tracker: HTTP (`GET /announce`, `GET /scrape`) and UDP
//! (BEP 15) on the same port number, in front of [`Swarms`].
//!
//! Threads: `tracker-http` is the control plane's hyper server
//! ([`crate::control::HttpServer`]; at most
//! [`TrackerConfig::max_http_connections`] connections at once, more are
//! closed at once); `tracker-udp` answers datagrams and expires peers. The peer table sits behind one mutex held only for table updates,
//! never across I/O. Load is tiny: a client announces every ~30 minutes.
//!
//! The seed itself is listed first in every peer list of a torrent we serve,
//! at [`SeedPeer::ip`] if set, else at the local address the client reached
//! (the TCP connection's local address; for UDP, the address the kernel
//! routes to the client from), so a stock client finds us on its first
//! announce. Unknown torrents are refused unless
//! [`SwarmConfig::allow_unknown`]: `serve DIR` only hands out torrents it
//! serves, so the default keeps the box from becoming an open tracker
//! without hurting any client that got a torrent from us.
//!
//! Deliberately not supported: the `ip=` / `ipv6=` parameters and the UDP
//! ip field (trusting them lets anyone add any address to a swarm), HTTP
//! keep-alive, full scrapes (a scrape without `info_hash` returns nothing).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};

use super::proto::http::{self, ServerResponse};
use super::proto::udp::{self, ConnectionIds, UdpRequest};
use super::proto::{Event, InfoHash, ScrapeStats};
use super::swarms::{Announce, Family, SwarmConfig, Swarms};
use crate::control::{HttpRequest, HttpResponse, HttpServer, HttpServerConfig, Service};

/// Embedded tracker settings.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Address for both HTTP (TCP) and UDP. Port 0 picks a port free for
    /// both. Default `0.0.0.0:6969`.
    pub listen: SocketAddr,
    pub swarm: SwarmConfig,
    /// The seed to list in every swarm we serve. Default none.
    pub seed: Option<SeedPeer>,
    /// How long a UDP connection id is accepted. Default 120 s (BEP 15).
    pub connection_id_lifetime: Duration,
    /// Concurrent HTTP connections. Default 64.
    pub max_http_connections: usize,
    /// Time an HTTP client has to send its request. Default 5 s.
    pub http_timeout: Duration,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 6969)),
            swarm: SwarmConfig::default(),
            seed: None,
            connection_id_lifetime: udp::SERVER_CONNECTION_ID_LIFETIME,
            max_http_connections: 64,
            http_timeout: Duration::from_secs(5),
        }
    }
}

/// Where peers reach the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedPeer {
    /// `--announce-ip`; `None`: the local address the client reached.
    pub ip: Option<IpAddr>,
    /// `--announce-port`, else the peer listen port.
    pub port: u16,
}

/// Requests served, for metrics.
#[derive(Debug, Default)]
pub struct TrackerCounters {
    pub http_announces: AtomicU64,
    pub udp_announces: AtomicU64,
    pub scrapes: AtomicU64,
    /// Announces refused (unknown torrent, full).
    pub refused: AtomicU64,
    /// Malformed requests, expired UDP connection ids, HTTP over capacity.
    pub bad_requests: AtomicU64,
    pub udp_connects: AtomicU64,
    /// Announces with `event=started` / `stopped` (either protocol).
    pub started: AtomicU64,
    pub stopped: AtomicU64,
}

impl TrackerCounters {
    fn event(&self, event: Event) {
        match event {
            Event::Started => self.started.fetch_add(1, Ordering::Relaxed),
            Event::Stopped => self.stopped.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// Why the tracker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error(
        "cannot listen for HTTP tracker requests on {addr}: is the port in use? (--tracker-listen)"
    )]
    BindTcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot listen for UDP tracker requests on {addr}: is the port in use? (--tracker-listen)"
    )]
    BindUdp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start tracker thread")]
    Spawn(#[source] std::io::Error),
}

struct Shared {
    swarms: Mutex<Swarms>,
    stop: AtomicBool,
    counters: Arc<TrackerCounters>,
    cfg: TrackerConfig,
}

impl Shared {
    fn swarms(&self) -> MutexGuard<'_, Swarms> {
        // A poisoned table is still consistent enough to serve from.
        self.swarms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running embedded tracker.
pub struct EmbeddedTracker {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// HTTP announces and scrapes, on hyper (see [`HttpTracker`]).
    http: Option<HttpServer>,
    udp_thread: Option<JoinHandle<()>>,
}

/// `::ffff:a.b.c.d` (dual-stack sockets) as plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl EmbeddedTracker {
    pub fn start(cfg: TrackerConfig) -> Result<EmbeddedTracker, TrackerError> {
        let (tcp, udp) = bind_pair(cfg.listen)?;
        let local_addr = tcp.local_addr().map_err(|source| TrackerError::BindTcp {
            addr: cfg.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            swarms: Mutex::new(Swarms::new(cfg.swarm.clone())),
            stop: AtomicBool::new(false),
            counters: Arc::default(),
            cfg,
        });
        let http_cfg = HttpServerConfig {
            thread_name: "tracker-http".into(),
            header_timeout: shared.cfg.http_timeout,
            max_head: http::MAX_HEAD,
            max_body: 0,
            // A client announces every ~30 minutes: nothing to keep open.
            keep_alive: false,
            max_connections: shared.cfg.max_http_connections,
            ..HttpServerConfig::default()
        };
        let service: Arc<dyn Service> = Arc::new(HttpTracker(shared.clone()));
        let http =
            HttpServer::with_listener(tcp, http_cfg, vec![service]).map_err(TrackerError::Spawn)?;
        let s = shared.clone();
        let udp_thread = std::thread::Builder::new()
            .name("tracker-udp".into())
            .spawn(move || udp_loop(&udp, &s))
            .map_err(TrackerError::Spawn)?;
        tracing::info!(%local_addr, "embedded tracker listening (HTTP and UDP)");
        Ok(EmbeddedTracker {
            local_addr,
            shared,
            http: Some(http),
            udp_thread: Some(udp_thread),
        })
    }

    /// The bound address (HTTP and UDP share the port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://IP:PORT/announce` for this tracker; an unspecified listen IP
    /// becomes loopback (good for tests and this box only).
    pub fn announce_url(&self) -> String {
        let ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!(
            "http://{}/announce",
            SocketAddr::new(ip, self.local_addr.port())
        )
    }

    /// Track a torrent we serve: its v1 hash and, separately, its truncated
    /// v2 hash.
    pub fn add_torrent(&self, info_hash: InfoHash) {
        self.shared.swarms().add_known(info_hash);
    }

    /// Track a swarm we serve without naming the seed in its peer lists
    /// (the truncated v2 swarm of a hybrid torrent; see
    /// `Swarms::add_known_unlisted`).
    pub fn add_torrent_unlisted(&self, info_hash: InfoHash) {
        self.shared.swarms().add_known_unlisted(info_hash);
    }

    /// Track every swarm of a torrent we serve: its v1 hash listed, the
    /// truncated v2 hash of a hybrid unlisted, a v2-only one listed.
    pub fn add_served(&self, t: &crate::metainfo::Torrent) {
        match (t.info_hash_v1, t.info_hash_v2) {
            (Some(v1), Some(v2)) => {
                self.add_torrent(v1.0);
                self.add_torrent_unlisted(v2.truncated());
            }
            (Some(v1), None) => self.add_torrent(v1.0),
            (None, Some(v2)) => self.add_torrent(v2.truncated()),
            (None, None) => {}
        }
    }

    /// Stop tracking a torrent we no longer serve.
    pub fn remove_torrent(&self, info_hash: &InfoHash) {
        self.shared.swarms().remove_known(info_hash);
    }

    pub fn scrape(&self, info_hash: &InfoHash) -> Option<ScrapeStats> {
        self.shared.swarms().scrape(info_hash)
    }

    /// Peers recorded for a torrent (the seed itself is not among them).
    pub fn peers(&self, info_hash: &InfoHash) -> Vec<SocketAddr> {
        self.shared.swarms().peers(info_hash)
    }

    pub fn counters(&self) -> Arc<TrackerCounters> {
        self.shared.counters.clone()
    }

    /// Stop both servers and wait for them (bounded: HTTP requests in
    /// progress get up to a second; the UDP thread polls every 100 ms).
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(http) = self.http.take() {
            http.shutdown();
        }
        if let Some(t) = self.udp_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EmbeddedTracker {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn bind_pair(listen: SocketAddr) -> Result<(TcpListener, UdpSocket), TrackerError> {
    let attempts = if listen.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let tcp = TcpListener::bind(listen).map_err(|source| TrackerError::BindTcp {
            addr: listen,
            source,
        })?;
        let port = tcp
            .local_addr()
            .map_err(|source| TrackerError::BindTcp {
                addr: listen,
                source,
            })?
            .port();
        let udp_addr = SocketAddr::new(listen.ip(), port);
        match UdpSocket::bind(udp_addr) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(source) => {
                last = Some(TrackerError::BindUdp {
                    addr: udp_addr,
                    source,
                })
            }
        }
    }
    Err(last.expect("at least one attempt"))
}

// ---------------------------------------------------------------- HTTP

/// `GET /announce` and `GET /scrape`: the tracker's HTTP half, mounted on
/// the control plane's hyper server (HTTP framing is hyper's; the query
/// decoding, binary info-hashes included, is [`http`]'s).
struct HttpTracker(Arc<Shared>);

impl Service for HttpTracker {
    fn handle(&self, req: &HttpRequest) -> Option<HttpResponse> {
        if req.method != Method::GET {
            self.0.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return Some(HttpResponse::method_not_allowed("GET"));
        }
        let query = req.query.as_deref().unwrap_or("").as_bytes();
        let remote = canonical(req.remote);
        let local = canonical(req.local);
        Some(
            match http_route(req.path.as_bytes(), query, remote, Some(local), &self.0) {
                Some(body) => HttpResponse::bytes(StatusCode::OK, "text/plain", body),
                None => HttpResponse::text(StatusCode::NOT_FOUND, "not found; try /announce\n"),
            },
        )
    }
}

/// The body for a request path, or `None` for 404.
fn http_route(
    path: &[u8],
    query: &[u8],
    remote: SocketAddr,
    local: Option<SocketAddr>,
    shared: &Shared,
) -> Option<Vec<u8>> {
    match path {
        b"/announce" => {
            shared
                .counters
                .http_announces
                .fetch_add(1, Ordering::Relaxed);
            let req = match http::parse_announce_query(query) {
                Ok(r) => r,
                Err(e) => {
                    shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                    return Some(http::encode_failure_body(&e.to_string()));
                }
            };
            shared.counters.event(req.event);
            let seed = seed_addr(shared, local.map(|l| l.ip()), remote.ip());
            let announce = Announce {
                info_hash: req.info_hash,
                peer: SocketAddr::new(remote.ip(), req.port),
                left: req.left,
                event: req.event,
                numwant: req.numwant,
                family: Family::Any,
                seed,
            };
            let now = Instant::now();
            let result = shared.swarms().announce(now, &announce);
            Some(match result {
                Ok(reply) => {
                    let cfg = &shared.cfg.swarm;
                    http::encode_announce_body(
                        &ServerResponse {
                            interval: cfg.interval,
                            min_interval: cfg.min_interval,
                            complete: reply.complete,
                            incomplete: reply.incomplete,
                            peers: reply.peers,
                        },
                        req.compact,
                    )
                }
                Err(refusal) => {
                    shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                    http::encode_failure_body(&refusal.to_string())
                }
            })
        }
        b"/scrape" => {
            shared.counters.scrapes.fetch_add(1, Ordering::Relaxed);
            match http::parse_scrape_query(query, udp::MAX_SCRAPE_HASHES) {
                Ok(hashes) => {
                    let swarms = shared.swarms();
                    let stats: Vec<(InfoHash, ScrapeStats)> = hashes
                        .iter()
                        .filter_map(|h| swarms.scrape(h).map(|s| (*h, s)))
                        .collect();
                    drop(swarms);
                    Some(http::encode_scrape_body(&stats))
                }
                Err(e) => {
                    shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                    Some(http::encode_failure_body(&e.to_string()))
                }
            }
        }
        _ => None,
    }
}

/// The seed's address for a client at `remote` that reached us at `local`.
fn seed_addr(shared: &Shared, local: Option<IpAddr>, remote: IpAddr) -> Option<SocketAddr> {
    let seed = shared.cfg.seed?;
    let ip = match seed.ip {
        Some(ip) => ip,
        None => match local.filter(|ip| !ip.is_unspecified()) {
            Some(ip) => ip,
            None => route_source(remote)?,
        },
    };
    Some(SocketAddr::new(ip.to_canonical(), seed.port))
}

/// The local address the kernel would use to reach `remote` (a UDP
/// `connect` sends nothing).
fn route_source(remote: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match remote {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.connect((remote, 9)).ok()?;
    sock.local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
}

// ---------------------------------------------------------------- UDP

fn udp_loop(sock: &UdpSocket, shared: &Shared) {
    let start = Instant::now();
    let ids = ConnectionIds::new(shared.cfg.connection_id_lifetime);
    let local_ip = sock
        .local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified());
    let mut routes: HashMap<IpAddr, Option<IpAddr>> = HashMap::new();
    let mut buf = vec![0u8; udp::MAX_DATAGRAM];
    let mut last_expire = Instant::now();
    if sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .is_err()
    {
        tracing::error!("tracker UDP socket: cannot set a read timeout; UDP tracker disabled");
        return;
    }
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now.duration_since(last_expire) >= Duration::from_secs(1) {
            shared.swarms().expire(now);
            last_expire = now;
        }
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::debug!("tracker UDP receive: {e}");
                continue;
            }
        };
        let remote = canonical(src);
        let now_ms = start.elapsed().as_millis() as u32;
        let reply = match udp::decode_request(&buf[..n]) {
            Ok(UdpRequest::Connect { transaction_id }) => {
                shared.counters.udp_connects.fetch_add(1, Ordering::Relaxed);
                Some(
                    udp::encode_connect_response(transaction_id, ids.issue(remote.ip(), now_ms))
                        .to_vec(),
                )
            }
            Ok(
                UdpRequest::Announce {
                    connection_id,
                    transaction_id,
                    ..
                }
                | UdpRequest::Scrape {
                    connection_id,
                    transaction_id,
                    ..
                },
            ) if !ids.is_valid(connection_id, remote.ip(), now_ms) => {
                shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                Some(udp::encode_error_response(
                    transaction_id,
                    "connection id expired or invalid; connect again",
                ))
            }
            Ok(UdpRequest::Announce {
                transaction_id,
                info_hash,
                left,
                event,
                numwant,
                port,
                ..
            }) => {
                shared
                    .counters
                    .udp_announces
                    .fetch_add(1, Ordering::Relaxed);
                shared.counters.event(event);
                if routes.len() > 4096 {
                    routes.clear();
                }
                let seed = match local_ip {
                    Some(ip) => seed_addr(shared, Some(ip), remote.ip()),
                    None if shared.cfg.seed.is_some_and(|s| s.ip.is_none()) => {
                        let src_ip = *routes
                            .entry(remote.ip())
                            .or_insert_with(|| route_source(remote.ip()));
                        src_ip.and_then(|ip| seed_addr(shared, Some(ip), remote.ip()))
                    }
                    None => seed_addr(shared, None, remote.ip()),
                };
                let family = if remote.is_ipv4() {
                    Family::V4
                } else {
                    Family::V6
                };
                let announce = Announce {
                    info_hash,
                    peer: SocketAddr::new(remote.ip(), port),
                    left,
                    event,
                    numwant: u32::try_from(numwant).ok(),
                    family,
                    seed,
                };
                let result = shared.swarms().announce(Instant::now(), &announce);
                Some(match result {
                    Ok(r) => udp::encode_announce_response(
                        transaction_id,
                        shared.cfg.swarm.interval,
                        r.incomplete,
                        r.complete,
                        &r.peers,
                    ),
                    Err(refusal) => {
                        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                        udp::encode_error_response(transaction_id, &refusal.to_string())
                    }
                })
            }
            Ok(UdpRequest::Scrape {
                transaction_id,
                hashes,
                ..
            }) => {
                shared.counters.scrapes.fetch_add(1, Ordering::Relaxed);
                let swarms = shared.swarms();
                let stats: Vec<ScrapeStats> = hashes
                    .iter()
                    .map(|h| swarms.scrape(h).unwrap_or_default())
                    .collect();
                drop(swarms);
                Some(udp::encode_scrape_response(transaction_id, &stats))
            }
            Err(e) => {
                shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%remote, "{e}");
                e.transaction_id
                    .map(|tid| udp::encode_error_response(tid, e.reason))
            }
        };
        if let Some(reply) = reply {
            if let Err(e) = sock.send_to(&reply, src) {
                tracing::debug!(%remote, "tracker UDP send: {e}");
            }
        }
    }
}
