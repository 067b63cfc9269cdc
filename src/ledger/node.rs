//! The ledger inside `ringseed serve`: HTTP routes on the control server
//! and a gossip thread that drives [`Gossip`] over HTTP.
//!
//! Routes (mounted as a [`Service`]):
//! - `GET /ledger/checkpoint`: the head checkpoint, publisher signature and
//!   every cosignature this box holds (its own included);
//! - `GET /ledger/block/{height}`: one block;
//! - `GET /ledger/equivocation`: the first equivocation proof seen (404: none);
//! - `POST /ledger/block`, `POST /ledger/equivocation`: pushes from the
//!   publisher or a peer (400 with the reason when refused).
//!
//! The gossip thread (`ledger-gossip`, never a shard) pulls a random peer's
//! checkpoint every `pull_interval`, fetches missing blocks and equivocation
//! proofs with a blocking client (`ureq`), and pushes new blocks on. Every
//! accepted block is written to the ledger directory before it is served;
//! every head it accepts it cosigns with `--ledger-cosign-key`.
//!
//! Peers are the `--ledger-peer` URLs plus boxes learnt from the peer
//! protocol: a BitTorrent peer whose extension handshake carries
//! `ringseed_ledger` (its ledger's height and HTTP port, see `wire::ext`)
//! reaches this node through [`LedgerNode::hints`]; if it is ahead, its
//! address becomes a gossip peer (at most [`MAX_LEARNT_PEERS`]) and is
//! pulled from at once. What it serves is checked like any other input
//! (signature, chain, consistency proof), so a lying peer costs one fetch.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::{Method, StatusCode};

use super::gossip::{FloodLimit, Gossip, GossipConfig, Msg};
use super::note::Signer;
use super::state::{Ledger, Outcome, RejectReason};
use super::store::{LedgerDir, StoreError};
use crate::control::{HttpRequest, HttpResponse, Service};

/// A peer's ledger advert: the address of its ledger HTTP endpoint and its
/// height.
pub type LedgerHint = (SocketAddr, u64);

/// Learnt gossip peers kept at most (beyond the configured ones).
pub const MAX_LEARNT_PEERS: usize = 64;
/// Ledger adverts queued from the shards at most.
const HINT_QUEUE: usize = 256;

/// Settings of the ledger in `serve`.
#[derive(Debug)]
pub struct NodeConfig {
    /// Peers' HTTP base URLs (`http://host:port`).
    pub peers: Vec<String>,
    pub cosign_key: Option<Signer>,
    pub pull_interval: Duration,
    pub gossip: GossipConfig,
}

/// Counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Shared with the shards, which advertise it in their handshakes.
    pub height: Arc<AtomicU64>,
    pub size: AtomicU64,
    pub equivocations_total: AtomicU64,
    pub rejects: [AtomicU64; RejectReason::ALL.len()],
}

impl NodeStats {
    /// Prometheus text for the ledger metrics.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP ringseed_ledger_height Blocks in this box's release ledger.\n# TYPE ringseed_ledger_height gauge\nringseed_ledger_height {}", self.height.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP ringseed_ledger_releases Releases in this box's release ledger.\n# TYPE ringseed_ledger_releases gauge\nringseed_ledger_releases {}", self.size.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP ringseed_ledger_equivocations_total Conflicting signed blocks detected or learnt.\n# TYPE ringseed_ledger_equivocations_total counter\nringseed_ledger_equivocations_total {}", self.equivocations_total.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP ringseed_ledger_rejects_total Ledger inputs refused, by reason.\n# TYPE ringseed_ledger_rejects_total counter");
        for (r, c) in RejectReason::ALL.iter().zip(&self.rejects) {
            let _ = writeln!(
                out,
                "ringseed_ledger_rejects_total{{reason=\"{}\"}} {}",
                r.as_str(),
                c.load(Ordering::Relaxed)
            );
        }
    }
}

struct Inner {
    ledger: Ledger,
    gossip: Gossip,
    flood: FloodLimit<IpAddr>,
}

/// The shared part: routes and gossip thread both use it.
pub struct LedgerNode {
    inner: Mutex<Inner>,
    store: LedgerDir,
    cosign: Option<Signer>,
    /// Gossip peers' base URLs: configured first, then learnt.
    peers: Mutex<Vec<String>>,
    configured_peers: usize,
    /// Ledger adverts from the shards' peers.
    hints_tx: SyncSender<LedgerHint>,
    hints_rx: Mutex<Receiver<LedgerHint>>,
    pub stats: Arc<NodeStats>,
    started: std::time::Instant,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl LedgerNode {
    pub fn new(
        store: LedgerDir,
        ledger: Ledger,
        cfg: &NodeConfig,
        seed: u64,
    ) -> Result<Arc<Self>, StoreError> {
        let gossip = Gossip::new(cfg.gossip, cfg.peers.len(), seed);
        let (hints_tx, hints_rx) = sync_channel(HINT_QUEUE);
        let node = Arc::new(Self {
            inner: Mutex::new(Inner {
                ledger,
                gossip,
                flood: FloodLimit::default(),
            }),
            store,
            cosign: cfg
                .cosign_key
                .as_ref()
                .and_then(|s| Signer::from_skey(&s.to_skey()).ok()),
            peers: Mutex::new(cfg.peers.clone()),
            configured_peers: cfg.peers.len(),
            hints_tx,
            hints_rx: Mutex::new(hints_rx),
            stats: Arc::new(NodeStats::default()),
            started: std::time::Instant::now(),
        });
        {
            let mut g = node.lock();
            if let Some(k) = &node.cosign {
                g.ledger.cosign_head(k, now_secs());
                node.store.save_checkpoint(&g.ledger)?;
            }
            node.update_stats(&g.ledger);
        }
        Ok(node)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_stats(&self, l: &Ledger) {
        self.stats.height.store(l.height(), Ordering::Relaxed);
        self.stats.size.store(l.size(), Ordering::Relaxed);
        for ((_, c), s) in l.rejects().zip(&self.stats.rejects) {
            s.store(c, Ordering::Relaxed);
        }
    }

    /// Height and whether the ledger is frozen (for the BEP 10 handshake and logs).
    pub fn height(&self) -> u64 {
        self.stats.height.load(Ordering::Relaxed)
    }

    /// Where the shards send the ledger adverts of their peers (a bounded
    /// queue: `try_send`, a full queue drops the advert).
    pub fn hints(&self) -> SyncSender<LedgerHint> {
        self.hints_tx.clone()
    }

    /// Learn from queued adverts: a box ahead of us becomes a gossip peer
    /// and is asked for its checkpoint now.
    fn take_hints(&self) {
        let rx = self.hints_rx.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok((at, height)) = rx.try_recv() {
            if height <= self.height() {
                continue;
            }
            let url = format!("http://{at}");
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let idx = match peers.iter().position(|p| *p == url) {
                Some(i) => i,
                None if peers.len() - self.configured_peers < MAX_LEARNT_PEERS => {
                    tracing::info!(
                        "ledger: learnt peer {url} (height {height}) from the peer protocol"
                    );
                    peers.push(url);
                    peers.len() - 1
                }
                None => continue,
            };
            let n = peers.len();
            drop(peers);
            let mut g = self.lock();
            g.gossip.set_peers(n);
            g.gossip.pull(idx);
        }
    }

    /// Is a torrent with these info-hashes in the ledger?
    pub fn contains(&self, v2: Option<[u8; 32]>, v1: Option<[u8; 20]>) -> bool {
        let g = self.lock();
        g.ledger
            .releases()
            .iter()
            .any(|r| match (r.info_hash_v2, v2) {
                (Some(a), Some(b)) => a == b,
                _ => matches!((r.info_hash_v1, v1), (Some(a), Some(b)) if a == b),
            })
    }

    /// Feed one message and persist what it changed.
    fn feed(&self, peer: usize, msg: Msg) -> Result<Option<Outcome>, super::Reject> {
        let mut g = self.lock();
        let Inner { ledger, gossip, .. } = &mut *g;
        let r = gossip.handle(now_secs(), peer, msg, ledger);
        if let Ok(Some(o)) = &r {
            self.after(ledger, o);
        }
        if let Err(e) = &r {
            tracing::debug!("ledger: refused input from peer {peer}: {e}");
        }
        self.update_stats(&g.ledger);
        r
    }

    fn after(&self, ledger: &mut Ledger, o: &Outcome) {
        match o {
            Outcome::Appended { height } => {
                if let Some(b) = ledger.block(*height) {
                    if let Err(e) = self.store.append(b) {
                        tracing::error!("ledger: cannot persist block {height}: {e}");
                    }
                }
                if let Some(k) = &self.cosign {
                    ledger.cosign_head(k, now_secs());
                }
                if let Err(e) = self.store.save_checkpoint(ledger) {
                    tracing::error!("ledger: cannot persist the checkpoint: {e}");
                }
                tracing::info!(
                    "ledger: block {height} accepted (tree size {})",
                    ledger.size()
                );
            }
            Outcome::Equivocation(e) => {
                self.stats
                    .equivocations_total
                    .fetch_add(1, Ordering::Relaxed);
                if let Err(err) = self.store.save_equivocation(ledger, e) {
                    tracing::error!("ledger: cannot persist an equivocation proof: {err}");
                }
                tracing::error!(
                    "ledger: EQUIVOCATION: the publisher signed two different blocks at height {}; no further block is accepted (proof at /ledger/equivocation)",
                    e.height
                );
            }
            Outcome::Known { new_cosignatures } if *new_cosignatures > 0 => {
                let _ = self.store.save_checkpoint(ledger);
            }
            _ => {}
        }
    }

    /// Start the gossip thread.
    pub fn start_gossip(self: &Arc<Self>, interval: Duration) -> std::io::Result<GossipThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let node = self.clone();
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ledger-gossip".into())
            .spawn(move || node.gossip_loop(interval, &s))?;
        Ok(GossipThread {
            stop,
            thread: Some(thread),
        })
    }

    fn gossip_loop(&self, interval: Duration, stop: &AtomicBool) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        // Announce what we hold at start (published while we were down).
        {
            let mut g = self.lock();
            let Inner { ledger, gossip, .. } = &mut *g;
            let h = ledger.height();
            gossip.announce_block(ledger, h);
        }
        let mut next_pull = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.take_hints();
            if std::time::Instant::now() >= next_pull {
                self.lock().gossip.tick(self.started.elapsed().as_secs());
                next_pull = std::time::Instant::now() + interval;
            }
            // Drain what gossip wants sent, outside the lock.
            loop {
                let Some((peer, msg)) = self.lock().gossip.poll() else {
                    break;
                };
                let base = {
                    let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                    match peers.get(peer) {
                        Some(b) => b.clone(),
                        None => continue,
                    }
                };
                self.send(&agent, peer, &base, msg);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&self, agent: &ureq::Agent, peer: usize, base: &str, msg: Msg) {
        let get = |path: &str| -> Option<Vec<u8>> {
            let mut resp = agent.get(format!("{base}{path}")).call().ok()?;
            if resp.status() != 200 {
                return None;
            }
            resp.body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_vec()
                .ok()
        };
        match msg {
            Msg::GetCheckpoint => {
                if let Some(b) = get("/ledger/checkpoint") {
                    let _ = self.feed(peer, Msg::Checkpoint(b));
                }
                if let Some(b) = get("/ledger/equivocation") {
                    let _ = self.feed(peer, Msg::Equivocation(b));
                }
            }
            Msg::GetBlocks { from, to } => {
                for h in from..=to {
                    match get(&format!("/ledger/block/{h}")) {
                        Some(b) => {
                            if self.feed(peer, Msg::Block(b)).is_err() {
                                break;
                            }
                        }
                        None => break,
                    }
                }
            }
            Msg::Block(b) => {
                let _ = agent.post(format!("{base}/ledger/block")).send(&b[..]);
            }
            Msg::Equivocation(b) => {
                let _ = agent
                    .post(format!("{base}/ledger/equivocation"))
                    .send(&b[..]);
            }
            Msg::Checkpoint(_) => {}
        }
    }

    fn answer(&self, req: &HttpRequest, kind: &str) -> HttpResponse {
        let now = now_secs();
        {
            let mut g = self.lock();
            if !g.flood.allow(&req.remote.ip(), now, 256, 10) {
                let r = g
                    .ledger
                    .count(super::Reject::new(RejectReason::Flood, "too many pushes"));
                self.update_stats(&g.ledger);
                return HttpResponse::error(StatusCode::TOO_MANY_REQUESTS, &r.detail);
            }
        }
        let body = req.body.to_vec();
        let msg = if kind == "block" {
            Msg::Block(body)
        } else {
            Msg::Equivocation(body)
        };
        // Pushes come from anyone: not a gossip peer index (no replies sent).
        match self.feed(usize::MAX, msg) {
            Ok(o) => HttpResponse::text(StatusCode::OK, format!("{o:?}\n")),
            Err(r) => HttpResponse::error(
                StatusCode::BAD_REQUEST,
                &format!("{}: {}", r.reason.as_str(), r.detail),
            ),
        }
    }
}

const NOTE_TYPE: &str = "text/plain; charset=utf-8";

impl Service for LedgerNode {
    fn handle(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let path = req.path.strip_prefix("/ledger/")?;
        let get = req.method == Method::GET;
        let post = req.method == Method::POST;
        Some(match path {
            "checkpoint" if get => match self.lock().ledger.checkpoint_note() {
                Some(n) => HttpResponse::bytes(StatusCode::OK, NOTE_TYPE, n.encode()),
                None => HttpResponse::error(StatusCode::NOT_FOUND, "the ledger is empty"),
            },
            "equivocation" if get => match self.lock().ledger.equivocations().first() {
                Some(e) => HttpResponse::bytes(StatusCode::OK, NOTE_TYPE, e.encode()),
                None => HttpResponse::error(StatusCode::NOT_FOUND, "no equivocation seen"),
            },
            "block" if post => self.answer(req, "block"),
            "equivocation" if post => self.answer(req, "equivocation"),
            p if get && p.starts_with("block/") => {
                let h: Option<u64> = p["block/".len()..].parse().ok();
                match h.and_then(|h| self.lock().ledger.block(h).map(|b| b.encode())) {
                    Some(b) => HttpResponse::bytes(StatusCode::OK, NOTE_TYPE, b),
                    None => HttpResponse::error(StatusCode::NOT_FOUND, "no such block"),
                }
            }
            "checkpoint" | "equivocation" => {
                HttpResponse::method_not_allowed(if path == "checkpoint" {
                    "GET"
                } else {
                    "GET, POST"
                })
            }
            "block" => HttpResponse::method_not_allowed("POST"),
            _ => HttpResponse::error(StatusCode::NOT_FOUND, "no such ledger route"),
        })
    }
}

/// The running gossip thread; stops on drop.
pub struct GossipThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for GossipThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
