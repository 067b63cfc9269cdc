//! The serving engine: one pinned thread per core ("shard"), each owning its
//! io_uring, its listener socket (SO_REUSEPORT), its connections and its
//! counters. Nothing is shared between shards but the read-only
//! [`Catalog`] (versioned: [`LiveCatalog`] publishes a new one when a
//! torrent is added or removed), the per-shard stats (each written by one shard only) and a
//! shutdown flag.
//!
//! Connections stay on the shard whose listener accepted them. The kernel
//! spreads new connections over the SO_REUSEPORT listeners by a hash of the
//! 4-tuple; per-shard connection gauges (`ShardStats::connections`) show any
//! imbalance.
//!
//! What the user sets for the box is one number for the box, at any shard
//! count (never split into per-shard slices): the connection limits
//! ([`limits::ConnLimits`], touched per accept and close), the upload caps
//! (one token pool for the box and one per capped torrent, drawn from per
//! grant, see `swarm::token_pool`) and the super-seed spread (one set of
//! per-piece counters per torrent, touched per offer and per `have`, see
//! `swarm::superseed`).
//!
//! Deliberately not here: torrent creation and verification (done off the
//! shards, see `crate::prepare` and `control`), trackers, metrics export.

pub mod catalog;
pub mod core;
pub mod limits;
pub mod shard;
pub mod stats;
pub mod stream;
pub mod uring;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

pub use catalog::{
    Catalog, CatalogError, DrainReport, LiveCatalog, ServedTorrent, TorrentSettings,
};
pub use shard::ShardConfig;
pub use stats::{CloseKind, ShardStats};

/// Engine-wide settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Address to listen on (port 0: pick a free port; see [`Engine::local_addr`]).
    pub listen: SocketAddr,
    /// Number of shards (threads), at least 1.
    pub shards: usize,
    /// Pin shard `i` to the i-th allowed CPU.
    pub pin: bool,
    /// Connections in total, box-wide.
    pub max_connections: usize,
    /// Connections per source (an IPv4 address, an IPv6 prefix of
    /// `ipv6_prefix_len` bits), box-wide.
    pub max_per_ip: u32,
    /// Connections one shard takes at most (default: `max_connections`,
    /// i.e. only the box-wide limit applies).
    pub max_connections_per_shard: Option<usize>,
    /// Leading bits of an IPv6 address that name one source for
    /// `max_per_ip` (default 64).
    pub ipv6_prefix_len: u8,
    /// The box-wide upload cap (`--upload-rate-limit`; default unlimited).
    pub upload_rate_limit: crate::swarm::ratelimit::Rate,
    /// Template for every shard (index, cpu and limits are filled in).
    pub shard: ShardConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 6881)),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin: true,
            max_connections: 20_000,
            max_per_ip: 1000,
            max_connections_per_shard: None,
            ipv6_prefix_len: 64,
            upload_rate_limit: crate::swarm::ratelimit::Rate::UNLIMITED,
            shard: ShardConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("io_uring support: {0}")]
    Kernel(String),
    #[error("cannot listen on {addr}: {source} (is another seeder using the port? try --listen with another port)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("shard {index} failed to start: {source}")]
    ShardStart {
        index: usize,
        #[source]
        source: io::Error,
    },
    #[error("shard {0} panicked")]
    ShardPanicked(usize),
    #[error("shard {index} stopped with an error: {source}")]
    ShardFailed {
        index: usize,
        #[source]
        source: io::Error,
    },
}

/// The counters and histograms of the shards, created before the engine
/// so the metrics endpoint can serve them from the start (verification).
#[derive(Clone)]
pub struct EngineObservers {
    pub stats: Vec<Arc<ShardStats>>,
    pub histograms: crate::metrics::SharedHistograms,
}

impl EngineObservers {
    pub fn new(shards: usize) -> Self {
        let shards = shards.max(1);
        Self {
            stats: (0..shards)
                .map(|_| Arc::new(ShardStats::default()))
                .collect(),
            histograms: crate::metrics::SharedHistograms::new(shards),
        }
    }
}

/// A running engine. Dropping it without [`Engine::shutdown`] +
/// [`Engine::join`] leaves the shards running.
pub struct Engine {
    threads: Vec<JoinHandle<io::Result<()>>>,
    histograms: crate::metrics::SharedHistograms,
    shutdown: Arc<AtomicBool>,
    local_addr: SocketAddr,
    stats: Vec<Arc<ShardStats>>,
}

/// A shard's UDP socket for uTP, at the TCP listener's address and port
/// (SO_REUSEPORT: the kernel hashes a remote address to one shard's socket).
fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM.cloexec(),
        Some(socket2::Protocol::UDP),
    )?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        let _ = sock.set_only_v6(false);
    }
    sock.bind(&addr.into())?;
    set_udp_buffers(&sock);
    Ok(sock.into())
}

/// Socket buffers of a shard's UDP socket. One socket takes the ACKs and
/// requests of every uTP peer of the shard: with the default ~208 KiB a
/// shard busy for a few milliseconds drops ACKs (then waits out a 500 ms
/// retransmission timeout); 4 MiB holds about 4,000 of them. As root the
/// `*FORCE` options pass `net.core.rmem_max`; otherwise the kernel caps the
/// request there, which is only less headroom.
const UDP_SOCKET_BUFFER: usize = 4 << 20;

fn set_udp_buffers(sock: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let v = UDP_SOCKET_BUFFER as libc::c_int;
        let set = |opt| {
            // SAFETY: a valid socket and a pointer to a c_int of the size given.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 {
            // Not privileged: best effort, capped by rmem_max / wmem_max.
            set(plain);
        }
    }
}

/// One TCP listener per shard and, if `udp`, one UDP socket per shard on
/// the same port.
type Bound = (Vec<socket2::Socket>, Vec<std::net::UdpSocket>, SocketAddr);

fn bind_all(listen: SocketAddr, shards: usize, udp: bool) -> Result<Bound, EngineError> {
    let err = |addr| move |source| EngineError::Listen { addr, source };
    // With port 0 the TCP bind picks the port; that port may be taken for
    // UDP by someone else, so pick again (a few times) rather than fail.
    let attempts = if listen.port() == 0 && udp { 8 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let first = bind_listener(listen).map_err(err(listen))?;
        let local_addr = first
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(listen);
        let mut listeners = vec![first];
        for _ in 1..shards {
            listeners.push(bind_listener(local_addr).map_err(err(local_addr))?);
        }
        if !udp {
            return Ok((listeners, Vec::new(), local_addr));
        }
        match (0..shards)
            .map(|_| bind_udp(local_addr))
            .collect::<io::Result<Vec<_>>>()
        {
            Ok(udps) => return Ok((listeners, udps, local_addr)),
            Err(e) => {
                last = Some(EngineError::Listen {
                    addr: local_addr,
                    source: io::Error::new(
                        e.kind(),
                        format!("uTP (UDP) socket: {e}; free the UDP port or run with --utp off"),
                    ),
                })
            }
        }
    }
    Err(last.expect("at least one attempt"))
}

fn bind_listener(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(
        domain,
        socket2::Type::STREAM.cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]` serves IPv4 peers too, as operators expect.
        let _ = sock.set_only_v6(false);
    }
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock)
}

impl Engine {
    /// Probe the kernel, bind one SO_REUSEPORT listener per shard, and start
    /// the shards. Returns once every shard is serving.
    pub fn start(cfg: EngineConfig, catalog: Arc<Catalog>) -> Result<Self, EngineError> {
        let observers = EngineObservers::new(cfg.shards);
        Self::start_observed(cfg, catalog, observers)
    }

    /// [`Engine::start`] with counters and histograms made by the caller
    /// (one per shard; `observers` must be made for `cfg.shards` shards).
    pub fn start_observed(
        cfg: EngineConfig,
        catalog: Arc<Catalog>,
        observers: EngineObservers,
    ) -> Result<Self, EngineError> {
        Self::bind(cfg)?.start(catalog, observers)
    }

    /// Probe the kernel and bind the listeners (resolving port 0) without
    /// starting the shards: the caller learns the address first (trackers,
    /// magnet links) and prepares torrents meanwhile. Peers that connect
    /// before [`BoundEngine::start`] wait in the listen backlog.
    pub fn bind(cfg: EngineConfig) -> Result<BoundEngine, EngineError> {
        let support = uring::probe_kernel().map_err(EngineError::Kernel)?;
        if cfg.shard.send_zc && !support.send_zc {
            return Err(EngineError::Kernel(format!(
                "--send-zc needs IORING_OP_SENDMSG_ZC (Linux 6.1+); kernel {} lacks it",
                support.release
            )));
        }
        uring::sys::raise_nofile_limit();
        let shards = cfg.shards.max(1);
        // The first bind resolves port 0; the others join the same port.
        let (listeners, udps, local_addr) = bind_all(cfg.listen, shards, cfg.shard.utp.listens())?;
        Ok(BoundEngine {
            cfg,
            listeners,
            udps,
            local_addr,
        })
    }
}

/// An engine whose listeners are bound but whose shards have not started.
pub struct BoundEngine {
    cfg: EngineConfig,
    listeners: Vec<socket2::Socket>,
    /// One per shard, or none (`--utp off`).
    udps: Vec<std::net::UdpSocket>,
    local_addr: SocketAddr,
}

impl BoundEngine {
    /// The address peers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Start one shard per listener; returns once every shard is serving.
    pub fn start(
        self,
        catalog: Arc<Catalog>,
        observers: EngineObservers,
    ) -> Result<Engine, EngineError> {
        self.start_live(Arc::new(LiveCatalog::from_arc(catalog)), observers)
    }

    /// [`BoundEngine::start`] with a catalogue that can change while serving.
    pub fn start_live(
        self,
        catalog: Arc<LiveCatalog>,
        observers: EngineObservers,
    ) -> Result<Engine, EngineError> {
        let BoundEngine {
            mut cfg,
            listeners,
            udps,
            local_addr,
        } = self;
        let mut udps = udps.into_iter();
        // Advertise the real port (`p` in the extension handshake).
        cfg.shard.peer.listen_port.get_or_insert(local_addr.port());
        let shards = listeners.len();
        let cpus = uring::sys::allowed_cpus();
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(shards);
        let EngineObservers { stats, histograms } = if observers.stats.len() == shards {
            observers
        } else {
            EngineObservers::new(shards)
        };
        let limits = Arc::new(limits::ConnLimits::new(
            u32::try_from(cfg.max_connections).unwrap_or(u32::MAX),
            cfg.max_per_ip,
            cfg.ipv6_prefix_len,
        ));
        let box_pool =
            crate::swarm::ratelimit::pool_for(std::time::Instant::now(), cfg.upload_rate_limit);
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, io::Result<()>)>();
        for (index, listener) in listeners.into_iter().enumerate() {
            let mut scfg = cfg.shard.clone();
            scfg.index = index;
            scfg.shards = shards;
            scfg.cpu = if cfg.pin && !cpus.is_empty() {
                Some(cpus[index % cpus.len()])
            } else {
                None
            };
            scfg.max_connections = cfg
                .max_connections_per_shard
                .unwrap_or(cfg.max_connections)
                .max(1);
            scfg.limits = Arc::clone(&limits);
            scfg.box_pool = box_pool.clone();
            let st = stats[index].clone();
            let hist = histograms.for_shard(index).expect("one per shard");
            let catalog = catalog.clone();
            let shutdown = shutdown.clone();
            let ready_tx = ready_tx.clone();
            let udp = udps.next();
            let handle = std::thread::Builder::new()
                .name(format!("shard-{index:02}"))
                .spawn(move || {
                    shard_main(scfg, listener, udp, catalog, st, hist, shutdown, ready_tx)
                })
                .map_err(|source| EngineError::ShardStart { index, source })?;
            threads.push(handle);
        }
        drop(ready_tx);
        let engine = Engine {
            threads,
            histograms,
            shutdown,
            local_addr,
            stats,
        };
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((index, Err(source))) => {
                    engine.shutdown();
                    let _ = engine.join();
                    return Err(EngineError::ShardStart { index, source });
                }
                Err(_) => {
                    engine.shutdown();
                    let _ = engine.join();
                    return Err(EngineError::ShardPanicked(0));
                }
            }
        }
        Ok(engine)
    }
}

impl Engine {
    /// The address peers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Per-shard counters, indexed by shard.
    pub fn stats(&self) -> &[Arc<ShardStats>] {
        &self.stats
    }

    /// Latency and size histograms, merged at scrape time.
    pub fn histograms(&self) -> &crate::metrics::SharedHistograms {
        &self.histograms
    }

    /// Ask every shard to stop accepting, close its peers and exit.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }

    /// The shutdown flag (e.g. for a signal handler to set).
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Whether any shard thread has exited (it should only after shutdown).
    pub fn any_shard_exited(&self) -> bool {
        self.threads.iter().any(|t| t.is_finished())
    }

    /// Wait for every shard to exit.
    pub fn join(self) -> Result<(), EngineError> {
        let mut first_err = None;
        for (index, t) in self.threads.into_iter().enumerate() {
            let r = match t.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(source)) => Err(EngineError::ShardFailed { index, source }),
                Err(_) => Err(EngineError::ShardPanicked(index)),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[allow(clippy::too_many_arguments)]
fn shard_main(
    cfg: ShardConfig,
    listener: socket2::Socket,
    udp: Option<std::net::UdpSocket>,
    catalog: Arc<LiveCatalog>,
    stats: Arc<ShardStats>,
    hist: crate::metrics::ShardHistograms,
    shutdown: Arc<AtomicBool>,
    ready: mpsc::Sender<(usize, io::Result<()>)>,
) -> io::Result<()> {
    let index = cfg.index;
    if let Some(cpu) = cfg.cpu {
        if let Err(e) = uring::sys::pin_to_cpu(cpu) {
            tracing::warn!(shard = index, cpu, error = %e, "could not pin shard to its CPU; running unpinned");
        }
    }
    let shard = match shard::Shard::new(cfg, listener, udp, catalog, stats, hist, shutdown.clone())
    {
        Ok(s) => {
            let _ = ready.send((index, Ok(())));
            s
        }
        Err(e) => {
            let msg = e.to_string();
            let _ = ready.send((index, Err(e)));
            return Err(io::Error::other(msg));
        }
    };
    drop(ready);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shard.run()));
    match result {
        Ok(r) => {
            if let Err(e) = &r {
                tracing::error!(shard = index, error = %e, "shard failed; stopping the server");
                shutdown.store(true, Ordering::Relaxed);
            }
            r
        }
        Err(_) => {
            // A shard that dies takes the process with it, loudly: a seed box
            // silently serving half its peers is worse than a restart.
            eprintln!("ringseed: shard-{index:02} panicked; exiting");
            std::process::exit(70);
        }
    }
}
