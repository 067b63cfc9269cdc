//! The engine core's policies (`engine::core::Policies`) on a virtual
//! clock, driven as a shard drives them: connections in a `ConnTable`,
//! their `PeerState`s fed bytes, `handle_*` after each event, and what each
//! peer is then sent read back from its `PeerState`. No ring, no socket, no
//! sleep: one box of one or several shards sharing one catalogue. Also the
//! connections' own timers (`engine::core::timers`): send-progress and
//! handshake timeouts; and what one send carries (`Conn::fill_send`)
//! through a fake sink.

mod support;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringseed::engine::core::pipeline::{Blocks, ReadyBlock, Stop};
use ringseed::engine::core::{
    accept, accept::Admit, timers, Carrier, Conn, ConnTable, Conns, Drain, DrainStep, Policies,
    PolicyConfig, ReadStart, SendSink, FIN_WAIT,
};
use ringseed::engine::limits::ConnLimits;
use ringseed::engine::{Catalog, CloseKind, ShardStats, TorrentSettings};
use ringseed::metainfo::MetaVersion;
use ringseed::metrics::{ShardHistograms, SharedHistograms};
use ringseed::swarm::choker::ChokerConfig;
use ringseed::swarm::superseed::SuperSeedConfig;
use ringseed::wire::codec::{decode, Decoded, Handshake, HandshakeDecoded, Message, HANDSHAKE_LEN};
use ringseed::wire::{BlockRequest, PeerConfig, PeerState, TorrentCatalog};
use support::engine::{data, info_hash, make_torrent, served};
use support::leecher::handshake_bytes;

const PIECE: u32 = 16 * 1024;
const PIECES: usize = 8;
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const SECOND: Duration = Duration::from_secs(1);

/// One shard as the core sees it.
struct Shard {
    policies: Policies,
    table: ConnTable<Conn>,
    dirty: Vec<u32>,
    hist: ShardHistograms,
    stats: Arc<ShardStats>,
}

impl Shard {
    /// Its policies, and the core's view of its connections as the driver
    /// passes it.
    fn split(&mut self) -> (&mut Policies, Conns<'_>) {
        let cx = Conns {
            table: &mut self.table,
            dirty: &mut self.dirty,
            hist: &mut self.hist,
        };
        (&mut self.policies, cx)
    }
}

/// A box: one catalogue (one torrent), `n` shards, a virtual clock.
struct Box {
    _dir: tempfile::TempDir,
    hash: [u8; 20],
    catalog: Arc<Catalog>,
    shards: Vec<Shard>,
    limits: ConnLimits,
    now: Instant,
    /// Timer turns run so far (a test that never settles fails, not hangs).
    steps: u32,
}

/// What peer messages matter here, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    HaveNone,
    Have(u32),
    Suggest(u32),
    Choke,
    Unchoke,
}

impl Box {
    fn new(shards: usize, super_seed: bool, choker: ChokerConfig, ss: SuperSeedConfig) -> Box {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.bin");
        std::fs::write(&path, data(7, PIECE as usize * PIECES)).unwrap();
        let fix = make_torrent(&path, MetaVersion::V1, Some(u64::from(PIECE)));
        let t = served(&fix, &path).with_settings(TorrentSettings {
            super_seed,
            ..TorrentSettings::default()
        });
        let catalog = Arc::new(Catalog::new(vec![t]));
        let now = Instant::now();
        let hists = SharedHistograms::new(shards);
        let shards = (0..shards)
            .map(|i| {
                let stats = Arc::new(ShardStats::default());
                Shard {
                    policies: Policies::new(
                        PolicyConfig {
                            choker: choker.clone(),
                            super_seed: ss.clone(),
                            box_pool: None,
                            shard: i,
                            shards,
                        },
                        now,
                        &catalog,
                        stats.clone(),
                    ),
                    table: ConnTable::default(),
                    dirty: Vec::new(),
                    hist: hists.for_shard(i).unwrap(),
                    stats,
                }
            })
            .collect();
        Box {
            _dir: dir,
            hash: info_hash(&fix.torrent),
            catalog,
            shards,
            limits: ConnLimits::new(1000, 1000, 64),
            now,
            steps: 0,
        }
    }

    /// A peer connects to shard `s` and sends its handshake (and
    /// `interested`, if asked): returns its slot index.
    fn connect(&mut self, s: usize, fast: bool, interested: bool) -> u32 {
        let idx = self.accept(s, None);
        let mut bytes = handshake_bytes(self.hash, fast, false).to_vec();
        if interested {
            Message::Interested.encode(&mut bytes);
        }
        self.recv(s, idx, &bytes);
        idx
    }

    /// A connection accepted on shard `s` (uTP, or TCP on `fd`), nothing
    /// received yet: returns its slot index.
    fn accept(&mut self, s: usize, fd: Option<OwnedFd>) -> u32 {
        let remote: SocketAddr = format!("127.0.0.{}:6881", self.shards[s].table.len() + 2)
            .parse()
            .unwrap();
        let admission = self.limits.admit(remote.ip()).unwrap();
        let now = self.now;
        let peer = PeerState::new(now, &PeerConfig::default(), remote);
        let sh = &mut self.shards[s];
        let id = sh.table.insert_with(|id| {
            let carrier = match fd {
                Some(fd) => Carrier::Tcp(fd),
                None => Carrier::Utp(id.index()),
            };
            Conn::new(carrier, id, remote, admission, peer, now)
        });
        id.index()
    }

    /// The shard's once-a-second pass over its connections' timers, with
    /// `unsent` standing in for the socket queue's ioctl.
    fn tick(&mut self, s: usize, unsent: impl Fn(&OwnedFd) -> u32) -> Vec<(u32, CloseKind)> {
        let sh = &mut self.shards[s];
        let stats = sh.stats.clone();
        let (_, mut cx) = sh.split();
        let mut out = Vec::new();
        timers::tick(self.now, SEND_TIMEOUT, &mut cx, &stats, unsent, &mut out);
        for &(idx, kind) in &out {
            sh.table.at_mut(idx).unwrap().closing = Some(kind);
        }
        out
    }

    /// Bytes from peer `idx` of shard `s`, then the policies, as the shard
    /// does after a receive.
    fn recv(&mut self, s: usize, idx: u32, bytes: &[u8]) {
        let now = self.now;
        let cat: &Catalog = &self.catalog;
        let sh = &mut self.shards[s];
        let c = sh.table.at_mut(idx).unwrap();
        c.peer
            .handle_bytes(now, bytes, cat as &dyn TorrentCatalog)
            .unwrap();
        let (policies, mut cx) = sh.split();
        policies.handle_input(now, cat, &mut cx, idx);
    }

    fn send(&mut self, s: usize, idx: u32, msg: Message<'_>) {
        let mut b = Vec::new();
        msg.encode(&mut b);
        self.recv(s, idx, &b);
    }

    fn close(&mut self, s: usize, idx: u32) {
        let sh = &mut self.shards[s];
        sh.table.at_mut(idx).unwrap().closing = Some(CloseKind::PeerClosed);
        let (policies, mut cx) = sh.split();
        policies.handle_close(self.now, &mut cx, idx);
    }

    /// Advance the clock to the earliest policy timeout of any shard (at
    /// least 1 ms, at most to `limit`) and run every shard's due timers.
    fn run_timers_until(&mut self, limit: Instant) {
        let next = self
            .shards
            .iter()
            .map(|s| s.policies.poll_timeout(self.now))
            .min()
            .unwrap();
        self.steps += 1;
        assert!(self.steps < 100_000, "the timers never settle");
        self.now = next
            .max(self.now + Duration::from_millis(1))
            .min(limit.max(self.now));
        for sh in &mut self.shards {
            let (policies, mut cx) = sh.split();
            policies.handle_timers(self.now, &mut cx);
        }
    }

    /// What peer `idx` of shard `s` has been sent since the last call (the
    /// shard's flush, reduced to the messages these tests look at).
    fn drain(&mut self, s: usize, idx: u32) -> Vec<Got> {
        let sh = &mut self.shards[s];
        if let Some(pos) = sh.dirty.iter().position(|&d| d == idx) {
            sh.dirty.swap_remove(pos);
        }
        let c = sh.table.at_mut(idx).unwrap();
        c.dirty = false;
        let bytes = c.peer.poll_transmit().to_vec();
        c.peer.advance_transmit(bytes.len());
        let mut buf = &bytes[..];
        if let Ok(HandshakeDecoded::Complete(_)) = Handshake::decode(buf) {
            buf = &buf[HANDSHAKE_LEN..];
        }
        let mut out = Vec::new();
        while let Ok(Decoded::Message { msg, consumed }) = decode(buf, 1 << 20) {
            match msg {
                Message::HaveNone => out.push(Got::HaveNone),
                Message::Have(p) => out.push(Got::Have(p)),
                Message::Suggest(p) => out.push(Got::Suggest(p)),
                Message::Choke => out.push(Got::Choke),
                Message::Unchoke => out.push(Got::Unchoke),
                _ => {}
            }
            buf = &buf[consumed..];
        }
        out
    }

    fn is_dirty(&self, s: usize, idx: u32) -> bool {
        self.shards[s].dirty.contains(&idx)
    }

    fn unchoked_gauge(&self, s: usize) -> i64 {
        self.shards[s]
            .stats
            .unchoked
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn offered(got: &[Got]) -> Vec<u32> {
    got.iter()
        .filter_map(|g| match g {
            Got::Have(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn choker(slots: u32) -> ChokerConfig {
    ChokerConfig {
        upload_slots: slots,
        optimistic_slots: 1,
        ..ChokerConfig::default()
    }
}

fn ss_config(forward: Duration) -> SuperSeedConfig {
    SuperSeedConfig {
        offers_per_peer: 1,
        forward_timeout: forward,
        suggest: true,
        cross_shard_poll: None,
    }
}

#[test]
fn the_choker_fills_its_slots_and_hands_a_closed_peers_slot_on_at_once() {
    let mut b = Box::new(1, false, choker(2), ss_config(Duration::from_secs(5)));
    let peers: Vec<u32> = (0..5).map(|_| b.connect(0, true, true)).collect();
    let got: Vec<Vec<Got>> = peers.iter().map(|&p| b.drain(0, p)).collect();
    let unchoked: Vec<u32> = peers
        .iter()
        .zip(&got)
        .filter(|(_, g)| g.contains(&Got::Unchoke))
        .map(|(&p, _)| p)
        .collect();
    // Two regular slots and one optimistic, filled as peers got interested.
    assert_eq!(unchoked.len(), 3, "{got:?}");
    assert_eq!(b.shards[0].policies.choker().unchoked(), 3);
    assert_eq!(b.unchoked_gauge(0), 3);
    for &p in &peers {
        let c = b.shards[0].table.at(p).unwrap();
        assert_eq!(!c.peer.is_choked(), unchoked.contains(&p), "peer {p}");
    }

    // An unchoked peer leaves: a waiting one is unchoked in the same call.
    b.close(0, unchoked[0]);
    let waiting: Vec<u32> = peers
        .iter()
        .copied()
        .filter(|p| !unchoked.contains(p))
        .collect();
    let now_unchoked: Vec<u32> = waiting
        .iter()
        .copied()
        .filter(|&p| b.is_dirty(0, p) && b.drain(0, p) == [Got::Unchoke])
        .collect();
    assert_eq!(
        now_unchoked.len(),
        1,
        "one waiting peer takes the freed slot"
    );
    // The choker is full again; the gauge counts the closing peer until
    // the shard frees its slot (`try_release`): 3 + 1 here.
    assert_eq!(b.shards[0].policies.choker().unchoked(), 3);
    assert_eq!(b.unchoked_gauge(0), 4);

    // A peer that loses interest is choked at once, and its slot refilled.
    let keep = unchoked[1];
    b.send(0, keep, Message::NotInterested);
    assert_eq!(b.drain(0, keep), [Got::Choke]);
    let last = waiting
        .iter()
        .copied()
        .find(|p| !now_unchoked.contains(p))
        .unwrap();
    assert_eq!(b.drain(0, last), [Got::Unchoke]);
}

#[test]
fn the_optimistic_slot_moves_on_at_the_choker_timeout() {
    let cfg = ChokerConfig {
        optimistic_interval: Duration::from_secs(30),
        rechoke_interval: Duration::from_secs(10),
        ..choker(1)
    };
    let mut b = Box::new(1, false, cfg, ss_config(Duration::from_secs(5)));
    let peers: Vec<u32> = (0..4).map(|_| b.connect(0, true, true)).collect();
    for &p in &peers {
        b.drain(0, p);
    }
    let t0 = b.now;
    // The core names its next timer: the rechoke, 10 s on.
    assert_eq!(
        b.shards[0].policies.poll_timeout(b.now),
        t0 + Duration::from_secs(10)
    );
    let mut changes = 0;
    while b.now < t0 + Duration::from_secs(95) {
        b.run_timers_until(t0 + Duration::from_secs(95));
        for &p in &peers {
            changes += b.drain(0, p).len();
        }
        assert!(b.shards[0].policies.choker().unchoked() <= 2);
    }
    // Three optimistic terms ended: each choked one peer and unchoked another.
    assert!(changes >= 6, "{changes} choke/unchoke messages in 95 s");
    assert!(b.shards[0].policies.choker().optimistic_unchokes_total() >= 3);
}

#[test]
fn super_seed_on_two_shards_injects_each_piece_once_and_follows_the_spread_across_shards() {
    let mut b = Box::new(
        2,
        true,
        choker(0),
        SuperSeedConfig {
            cross_shard_poll: Some(Duration::from_millis(100)),
            ..ss_config(Duration::from_secs(60))
        },
    );
    // One peer per shard: each is greeted with have_none and its own piece.
    let a = b.connect(0, true, true);
    let c = b.connect(1, true, true);
    let got_a = b.drain(0, a);
    let got_c = b.drain(1, c);
    assert_eq!(got_a[0], Got::HaveNone, "{got_a:?}");
    assert_eq!(got_c[0], Got::HaveNone, "{got_c:?}");
    let (pa, pc) = (offered(&got_a), offered(&got_c));
    assert_eq!((pa.len(), pc.len()), (1, 1), "{got_a:?} {got_c:?}");
    assert_ne!(pa[0], pc[0], "the box offered one piece on both shards");
    assert!(got_a.contains(&Got::Suggest(pa[0])));

    // Peer a downloads its piece: nothing new while no one else has it.
    b.send(0, a, Message::Have(pa[0]));
    assert!(offered(&b.drain(0, a)).is_empty());
    // Peer c, on the other shard, gets it from a: the spread is seen by
    // shard 0's selector at its next cross-shard poll, within 100 ms.
    b.send(1, c, Message::Have(pa[0]));
    let deadline = b.now + Duration::from_millis(150);
    let mut next = Vec::new();
    while next.is_empty() && b.now < deadline {
        b.run_timers_until(deadline);
        next = offered(&b.drain(0, a));
    }
    assert_eq!(
        next.len(),
        1,
        "a's piece spread on shard 1: a is offered a new one"
    );
    assert!(
        ![pa[0], pc[0]].contains(&next[0]),
        "a new piece, got {next:?}"
    );
    // c still holds its own offer: it has not passed it on.
    assert!(offered(&b.drain(1, c)).is_empty());
}

#[test]
fn a_super_seed_offer_that_does_not_spread_is_replaced_after_the_forward_timeout() {
    let mut b = Box::new(1, true, choker(0), ss_config(Duration::from_secs(5)));
    let a = b.connect(0, false, true);
    // A second peer that lacks a's piece and never gets it from a.
    let other = b.connect(0, false, true);
    let first = offered(&b.drain(0, a));
    assert_eq!(first.len(), 1);
    b.drain(0, other);
    b.send(0, a, Message::Have(first[0]));
    assert!(offered(&b.drain(0, a)).is_empty(), "someone still lacks it");
    let t0 = b.now;
    // It does not spread: the selector moves on at 5 s, and the core says
    // so as its next timeout.
    assert!(b.shards[0].policies.poll_timeout(b.now) <= t0 + Duration::from_secs(5));
    b.run_timers_until(t0 + Duration::from_secs(4));
    let early = b.drain(0, a);
    assert!(
        offered(&early).is_empty(),
        "not before the timeout: {early:?} at {:?}",
        b.now - t0
    );
    while b.now < t0 + Duration::from_secs(6) {
        b.run_timers_until(t0 + Duration::from_secs(6));
        if b.is_dirty(0, a) {
            break;
        }
    }
    let next = offered(&b.drain(0, a));
    assert_eq!(next.len(), 1, "a new offer after the forward timeout");
    assert_ne!(next[0], first[0]);
    assert!(b.now >= t0 + Duration::from_secs(5));
}

#[test]
fn a_drained_peer_is_choked_and_its_slot_goes_to_a_waiting_peer() {
    let cfg = ChokerConfig {
        optimistic_slots: 0,
        ..choker(1)
    };
    let mut b = Box::new(1, false, cfg, ss_config(Duration::from_secs(5)));
    let first = b.connect(0, true, true);
    let second = b.connect(0, true, true);
    assert_eq!(b.drain(0, first), [Got::Unchoke]);
    assert!(b.drain(0, second).is_empty(), "one slot");
    let sh = &mut b.shards[0];
    let (policies, mut cx) = sh.split();
    policies.handle_drain(b.now, &mut cx, first);
    assert_eq!(b.drain(0, first), [Got::Choke]);
    assert_eq!(b.drain(0, second), [Got::Unchoke]);
    assert_eq!(b.unchoked_gauge(0), 1);
    // Its input is still answered (rejects go out), but it holds no slot
    // and is never unchoked again, even when the slot frees.
    b.send(0, first, Message::NotInterested);
    b.send(0, first, Message::Interested);
    assert!(b.is_dirty(0, first));
    assert!(b.drain(0, first).is_empty());
    b.close(0, second);
    assert!(b.drain(0, first).is_empty());
    assert_eq!(b.shards[0].policies.choker().unchoked(), 0);
}

/// A file descriptor the tests never read or write: it only stands for a
/// TCP socket whose queue `unsent` reports.
fn stand_in_fd() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

#[test]
fn a_send_that_makes_no_progress_is_closed_at_the_send_timeout_and_one_that_does_is_not() {
    let mut b = Box::new(1, false, choker(0), ss_config(Duration::from_secs(5)));
    let stuck = b.connect(0, true, true);
    let reading = b.connect(0, true, true);
    let t0 = b.now;
    for idx in [stuck, reading] {
        let c = b.shards[0].table.at_mut(idx).unwrap();
        c.send_slot = Some(idx);
        c.send_watch.send_started(t0);
    }
    let mut closed = None;
    for sec in 1..=40u32 {
        b.now = t0 + SECOND * sec;
        // Both keep sending keep-alives (the idle timeout counts input:
        // it does not see a peer that stopped reading).
        for idx in [stuck, reading] {
            if b.shards[0].table.at(idx).unwrap().closing.is_none() {
                b.recv(0, idx, &[0, 0, 0, 0]);
            }
        }
        b.shards[0]
            .table
            .at_mut(reading)
            .unwrap()
            .send_watch
            .progressed(b.now);
        for (idx, kind) in b.tick(0, |_| 0) {
            assert_eq!((idx, kind), (stuck, CloseKind::SendTimeout), "at {sec} s");
            assert!(closed.is_none());
            closed = Some(sec);
        }
    }
    assert_eq!(closed, Some(30), "closed at the 30 s send timeout");
}

#[test]
fn a_tcp_queue_that_does_not_shrink_is_closed_and_one_that_drains_is_not() {
    let mut b = Box::new(1, false, choker(0), ss_config(Duration::from_secs(5)));
    let (fd_stuck, fd_draining) = (stand_in_fd(), stand_in_fd());
    let (raw_stuck, raw_draining) = (fd_stuck.as_raw_fd(), fd_draining.as_raw_fd());
    let stuck = b.accept(0, Some(fd_stuck));
    let draining = b.accept(0, Some(fd_draining));
    let hs = handshake_bytes(b.hash, true, false);
    b.recv(0, stuck, &hs);
    b.recv(0, draining, &hs);
    let t0 = b.now;
    // Our last send completed at t0 with 1 MB still in each socket queue:
    // one peer reads a little every second, the other nothing.
    for idx in [stuck, draining] {
        b.shards[0]
            .table
            .at_mut(idx)
            .unwrap()
            .send_watch
            .progressed(t0);
    }
    let mut closed = None;
    for sec in 1..=60u32 {
        b.now = t0 + SECOND * sec;
        for idx in [stuck, draining] {
            if b.shards[0].table.at(idx).unwrap().closing.is_none() {
                b.recv(0, idx, &[0, 0, 0, 0]);
            }
        }
        let left = 1_000_000 - 10_000 * sec;
        let unsent = |fd: &OwnedFd| {
            if fd.as_raw_fd() == raw_stuck {
                1_000_000
            } else {
                assert_eq!(fd.as_raw_fd(), raw_draining);
                left
            }
        };
        for (idx, kind) in b.tick(0, unsent) {
            assert_eq!((idx, kind), (stuck, CloseKind::SendTimeout), "at {sec} s");
            closed = Some(sec);
        }
    }
    // Watched from half the timeout on, closed a whole timeout later.
    assert_eq!(closed, Some(45), "closed at 1.5x the send timeout");
}

#[test]
fn a_peer_that_never_completes_its_handshake_is_closed_by_its_timeout() {
    let mut b = Box::new(1, false, choker(0), ss_config(Duration::from_secs(5)));
    let silent = b.accept(0, None);
    let t0 = b.now;
    let mut closed = None;
    for sec in 1..=120u32 {
        b.now = t0 + SECOND * sec;
        if let Some(&(idx, kind)) = b.tick(0, |_| 0).first() {
            assert_eq!((idx, kind), (silent, CloseKind::Timeout));
            closed = Some(sec);
            break;
        }
    }
    let limit = PeerConfig::default().handshake_timeout.as_secs() as u32;
    assert_eq!(closed, Some(limit), "closed at the handshake timeout");
}

#[test]
fn a_draining_connection_is_served_its_grace_then_choked_then_finned_then_closed() {
    let mut b = Box::new(1, false, choker(0), ss_config(Duration::from_secs(5)));
    let p = b.connect(0, true, true);
    assert_eq!(b.drain(0, p), [Got::Unchoke]);
    let t0 = b.now;
    let c = b.shards[0].table.at_mut(p).unwrap();
    assert_eq!(c.drain_step(t0), None, "not draining");
    c.drain = Some(Drain::Grace {
        until: t0 + Duration::from_secs(2),
    });
    assert_eq!(
        c.drain_step(t0 + SECOND),
        Some(DrainStep::Wait),
        "in its grace"
    );
    let at = t0 + Duration::from_secs(2);
    assert_eq!(c.drain_step(at), Some(DrainStep::Choke));
    b.now = at;
    let sh = &mut b.shards[0];
    let (policies, mut cx) = sh.split();
    policies.handle_drain(at, &mut cx, p);
    // The choke is queued and a send is in flight: not yet.
    let c = b.shards[0].table.at_mut(p).unwrap();
    c.send_slot = Some(0);
    assert_eq!(c.drain_step(at), Some(DrainStep::Wait));
    c.send_slot = None;
    assert_eq!(
        c.drain_step(at),
        Some(DrainStep::Wait),
        "the choke is still queued"
    );
    assert_eq!(b.drain(0, p), [Got::Choke]);
    let c = b.shards[0].table.at_mut(p).unwrap();
    let Some(DrainStep::SendFin { deadline }) = c.drain_step(at) else {
        panic!("nothing left to send: FIN next, got {:?}", c.drain_step(at));
    };
    assert_eq!(deadline, at + FIN_WAIT);
    c.drain = Some(Drain::FinSent { deadline });
    assert_eq!(c.drain_step(deadline - SECOND), Some(DrainStep::Wait));
    assert_eq!(c.drain_step(deadline), Some(DrainStep::Close));
}

#[test]
fn connections_are_admitted_within_the_shards_and_the_boxs_limits() {
    // The box: 4 connections in all, 2 per source (IPv6 per /64); each
    // shard: 2.
    let limits = ConnLimits::new(4, 2, 64);
    let peer = PeerConfig::default();
    let admit = Admit {
        per_shard: 2,
        limits: &limits,
        peer: &peer,
    };
    let stats = ShardStats::default();
    let now = Instant::now();
    let mut shards: [ConnTable<Conn>; 3] = Default::default();
    let try_admit = |table: &mut ConnTable<Conn>, remote: &str| {
        let remote: SocketAddr = remote.parse().unwrap();
        accept::admit(now, table, &admit, &stats, Carrier::Utp(0), remote).is_ok()
    };
    // A connection closes: its place goes back, box-wide.
    let close_first = |table: &mut ConnTable<Conn>| {
        let id = table.iter().next().map(|(id, _)| id).unwrap();
        let c = table.remove(id.index()).unwrap();
        limits.release(c.admission);
    };
    assert!(try_admit(&mut shards[0], "10.0.0.1:1000"));
    assert!(try_admit(&mut shards[0], "10.0.0.2:1000"));
    assert!(
        !try_admit(&mut shards[0], "10.0.0.3:1000"),
        "the shard's own limit"
    );
    assert!(
        try_admit(&mut shards[1], "10.0.0.1:2000"),
        "10.0.0.1's second"
    );
    assert!(
        !try_admit(&mut shards[2], "10.0.0.1:3000"),
        "a third from 10.0.0.1, on any shard"
    );
    assert!(try_admit(&mut shards[2], "[2001:db8:1:2::5]:1000"));
    assert!(
        !try_admit(&mut shards[2], "10.0.0.9:1000"),
        "the box's total"
    );
    assert_eq!(limits.total(), 4);
    let limit_closes = ShardStats::get(stats.closed(CloseKind::Limit));
    assert_eq!(limit_closes, 3, "every refusal counted");

    close_first(&mut shards[0]);
    assert_eq!(limits.total(), 3);
    // One /64 is one source: a second address in 2001:db8:1:2::/64 is its
    // second connection, and a third is refused.
    assert!(try_admit(&mut shards[2], "[2001:db8:1:2::6]:1000"));
    close_first(&mut shards[1]);
    assert!(
        !try_admit(&mut shards[1], "[2001:db8:1:2::7]:1000"),
        "a /64 counts as one source"
    );
    assert!(
        try_admit(&mut shards[1], "[2001:db8:1:3::7]:1000"),
        "another /64 is another source"
    );
    assert_eq!(limits.total(), 4);
}

/// The torrent as the send path sees it, with residency set by the test.
struct FakeBlocks {
    cold: Vec<u32>,
    withdrawn: Vec<u32>,
}

impl Blocks for FakeBlocks {
    fn is_live(&self, piece: u32) -> bool {
        !self.withdrawn.contains(&piece)
    }
    fn piece_resident(&self, piece: u32) -> bool {
        !self.cold.contains(&piece)
    }
    fn block_resident(&self, req: &BlockRequest) -> bool {
        self.piece_resident(req.piece)
    }
    fn segments(&self, _: &BlockRequest) -> usize {
        1
    }
}

/// A send being built, as the driver's sink: what went in, in order.
#[derive(Default)]
struct FakeSink {
    control: Vec<u8>,
    /// (piece, from a pool buffer)
    sent: Vec<(u32, Option<u32>)>,
    iovecs: usize,
    max_iovecs: usize,
    free_bufs: Vec<u32>,
    reading: Vec<(BlockRequest, u32)>,
    freed: Vec<u32>,
}

impl SendSink for FakeSink {
    fn set_control(&mut self, bytes: &[u8]) {
        self.control = bytes.to_vec();
        self.iovecs = 1;
    }
    fn has_room(&self, iovecs: usize) -> bool {
        self.iovecs + 1 + iovecs <= self.max_iovecs
    }
    fn push_mmap(&mut self, req: BlockRequest, _: Instant) {
        self.sent.push((req.piece, None));
        self.iovecs += 2;
    }
    fn push_ready(&mut self, rb: ReadyBlock) -> bool {
        self.sent.push((rb.req.piece, Some(rb.buf)));
        self.iovecs += 2;
        true
    }
    unsafe fn free_ready(&mut self, rb: ReadyBlock) {
        self.freed.push(rb.buf);
    }
    fn start_read(&mut self, req: BlockRequest, _: Instant) -> std::io::Result<ReadStart> {
        Ok(match self.free_bufs.pop() {
            Some(buf) => {
                self.reading.push((req, buf));
                ReadStart::Submitted
            }
            None => ReadStart::NoBuffer,
        })
    }
}

fn block(piece: u32) -> BlockRequest {
    BlockRequest {
        piece,
        begin: 0,
        len: PIECE,
    }
}

#[test]
fn a_send_carries_control_bytes_then_blocks_and_resident_ones_do_not_wait_behind_a_read() {
    let mut b = Box::new(1, false, choker(4), ss_config(Duration::from_secs(5)));
    let p = b.connect(0, true, true);
    for piece in 0..6 {
        b.send(0, p, Message::Request(block(piece)));
    }
    let c = b.shards[0].table.at_mut(p).unwrap();
    // Pieces 1 and 2 are not in the page cache.
    let blocks = FakeBlocks {
        cold: vec![1, 2],
        withdrawn: vec![],
    };
    let sink = |free_bufs: Vec<u32>| FakeSink {
        max_iovecs: 64,
        free_bufs,
        ..FakeSink::default()
    };
    let mut s1 = sink(vec![7]);
    let f = c.fill_send(Some(&blocks), 8, &mut s1).unwrap();
    // Our handshake, bitfield and unchoke lead the send.
    assert!(s1.control.starts_with(b"\x13BitTorrent protocol"));
    assert_eq!(&s1.control[28..48], &b.hash[..]);
    let mut rest = &s1.control[HANDSHAKE_LEN..];
    let mut msgs = Vec::new();
    while let Ok(Decoded::Message { msg, consumed }) = decode(rest, 1 << 20) {
        msgs.push(format!("{msg:?}"));
        rest = &rest[consumed..];
    }
    assert!(msgs.iter().any(|m| m == "Unchoke"), "{msgs:?}");
    // Piece 0 from the mmap, piece 1 read into buffer 7; a connection
    // reads one block at a time, so the second cold block (2) waits, and
    // the send is done.
    assert_eq!(s1.sent, vec![(0, None)]);
    assert_eq!(s1.reading, vec![(block(1), 7)]);
    assert_eq!((f.blocks, f.reads, f.stop), (1, 1, Some(Stop::ColdBusy)));
    assert_eq!(f.pre_len, 0);
    assert!(!f.wait_for_buffer && !f.withdrawn && !f.broken);

    // The read completes: the next send carries it first. Piece 2 then
    // finds no free buffer: it parks, and the connection waits for one.
    c.pipe.read_completed(Some(ReadyBlock {
        req: block(1),
        buf: 7,
        at: b.now,
    }));
    let mut s2 = sink(vec![]);
    let f = c.fill_send(Some(&blocks), 8, &mut s2).unwrap();
    assert!(s2.control.is_empty());
    assert_eq!(s2.sent, vec![(1, Some(7))]);
    assert!(f.wait_for_buffer && f.stop.is_none(), "{f:?}");
    assert!(c.pipe.woken_for_buffer(), "a parked block to retry");

    // Woken with a buffer free: piece 2 is read, and the resident blocks
    // behind it go meanwhile.
    let mut s3 = sink(vec![3]);
    let f = c.fill_send(Some(&blocks), 8, &mut s3).unwrap();
    assert_eq!(s3.reading, vec![(block(2), 3)]);
    assert_eq!(s3.sent, vec![(3, None), (4, None), (5, None)]);
    assert_eq!((f.blocks, f.reads, f.stop), (3, 1, Some(Stop::Idle)));
}

#[test]
fn a_send_stops_when_full_and_a_withdrawn_ready_block_is_rejected_and_its_buffer_freed() {
    let mut b = Box::new(1, false, choker(4), ss_config(Duration::from_secs(5)));
    let p = b.connect(0, true, true);
    b.drain(0, p);
    for piece in 0..6 {
        b.send(0, p, Message::Request(block(piece)));
    }
    let c = b.shards[0].table.at_mut(p).unwrap();
    let blocks = |cold: Vec<u32>, withdrawn: Vec<u32>| FakeBlocks { cold, withdrawn };
    // Room for the control iovec and two blocks.
    let mut s1 = FakeSink {
        max_iovecs: 8,
        ..FakeSink::default()
    };
    let f = c
        .fill_send(Some(&blocks(vec![], vec![])), 8, &mut s1)
        .unwrap();
    assert_eq!(s1.sent, vec![(0, None), (1, None)]);
    assert_eq!(f.stop, Some(Stop::Full));
    // Piece 2 is cold: read into buffer 5 while 3 and 4 go.
    let mut s2 = FakeSink {
        max_iovecs: 8,
        free_bufs: vec![5],
        ..FakeSink::default()
    };
    c.fill_send(Some(&blocks(vec![2], vec![])), 8, &mut s2)
        .unwrap();
    assert_eq!(s2.reading, vec![(block(2), 5)]);
    assert_eq!(s2.sent, vec![(3, None), (4, None)]);
    // The read completes, and then pieces 2 and 5 are withdrawn (their
    // data changed on disk): nothing is sent, buffer 5 goes back.
    c.pipe.read_completed(Some(ReadyBlock {
        req: block(2),
        buf: 5,
        at: b.now,
    }));
    let changed = blocks(vec![], vec![2, 5]);
    let mut s3 = FakeSink {
        max_iovecs: 64,
        ..FakeSink::default()
    };
    let f = c.fill_send(Some(&changed), 8, &mut s3).unwrap();
    assert_eq!(s3.freed, vec![5], "the withdrawn block's buffer goes back");
    assert!(s3.sent.is_empty());
    assert!(f.withdrawn && f.freed_bufs == 1, "{f:?}");
    // Both rejects go in the next send.
    let mut s4 = FakeSink {
        max_iovecs: 64,
        ..FakeSink::default()
    };
    c.fill_send(Some(&changed), 8, &mut s4).unwrap();
    let mut rest = &s4.control[..];
    let mut rejects = Vec::new();
    while let Ok(Decoded::Message { msg, consumed }) = decode(rest, 1 << 20) {
        if let Message::Reject(r) = msg {
            rejects.push(r.piece);
        }
        rest = &rest[consumed..];
    }
    assert_eq!(rejects, vec![2, 5]);
}

#[test]
fn before_the_handshake_names_a_torrent_a_send_carries_control_bytes_only() {
    let mut b = Box::new(1, false, choker(4), ss_config(Duration::from_secs(5)));
    let p = b.accept(0, None);
    let c = b.shards[0].table.at_mut(p).unwrap();
    c.pre_tx = b"mse reply".to_vec();
    let mut sink = FakeSink {
        max_iovecs: 64,
        ..FakeSink::default()
    };
    let f = c.fill_send(None::<&FakeBlocks>, 8, &mut sink).unwrap();
    assert_eq!(sink.control, b"mse reply");
    assert_eq!((f.pre_len, f.blocks), (9, 0));
    assert!(c.pre_tx.is_empty());
}
