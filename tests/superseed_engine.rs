//! Super-seeding (BEP 16) through the real io_uring engine, with raw-socket
//! peers on loopback: what a peer is told right after its handshake, which
//! requests are served, when the next offer comes (another peer's `have`,
//! or the forward timeout), and leechers that download everything by
//! following the offers.
//!
//! One shard, so every peer meets the same selector (selectors are per
//! shard by design).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ringseed::engine::{Engine, ShardConfig, ShardStats, TorrentSettings};
use ringseed::metainfo::MetaVersion;
use ringseed::swarm::superseed::SuperSeedConfig;
use ringseed::wire::codec::{BlockRequest, Message};
use support::engine::{data, info_hash, make_torrent, served, start_engine, total, Fixture};
use support::leecher::{piece_blocks, Got, RawPeer};

const PIECE: u32 = 32 * 1024;
const PIECES: usize = 16;
/// "Promptly": offers and unchokes must arrive well within this.
const PROMPT: Duration = Duration::from_secs(1);

struct Setup {
    _dir: tempfile::TempDir,
    fix: Fixture,
    engine: Engine,
}

impl Setup {
    /// A 16-piece torrent, super-seeded by a one-shard engine whose
    /// selector releases a completed offer after `forward_timeout`.
    fn new(forward_timeout: Duration) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ss.bin");
        std::fs::write(&path, data(16, PIECE as usize * PIECES - 1000)).unwrap();
        let fix = make_torrent(&path, MetaVersion::V1, Some(u64::from(PIECE)));
        let t = served(&fix, &path).with_settings(TorrentSettings {
            super_seed: true,
            ..TorrentSettings::default()
        });
        let shard = ShardConfig {
            super_seed: SuperSeedConfig {
                offers_per_peer: 1,
                forward_timeout,
                suggest: true,
                cross_shard_poll: None,
            },
            ..ShardConfig::default()
        };
        let engine = start_engine(vec![t], 1, shard);
        Setup {
            _dir: dir,
            fix,
            engine,
        }
    }

    fn hash(&self) -> [u8; 20] {
        info_hash(&self.fix.torrent)
    }

    /// A peer that sends `interested` with its handshake.
    fn peer(&self, fast: bool) -> RawPeer {
        RawPeer::connect(
            self.engine.local_addr(),
            self.hash(),
            fast,
            &[Message::Interested],
        )
        .expect("handshake")
    }

    fn blocks(&self, piece: u32) -> Vec<BlockRequest> {
        piece_blocks(piece, PIECE, self.fix.torrent.piece_space_len)
    }

    /// Requests every block of `piece` and checks the bytes; returns the
    /// offers (`have`s) that arrived meanwhile.
    fn download_piece(&self, p: &mut RawPeer, piece: u32) -> Vec<u32> {
        let blocks = self.blocks(piece);
        let reqs: Vec<Message> = blocks.iter().map(|b| Message::Request(*b)).collect();
        p.send(&reqs).unwrap();
        let mut offers = Vec::new();
        for _ in &blocks {
            let got = p
                .recv_until(PROMPT * 5, |m| matches!(m, Got::Piece(_) | Got::Reject(_)))
                .unwrap();
            offers.extend(haves(&got));
            let Some(Got::Piece(b)) = got.last() else {
                panic!("piece {piece}: {got:?}");
            };
            let off = u64::from(b.piece) * u64::from(PIECE) + u64::from(b.begin);
            assert_eq!(
                p.last_block,
                self.fix.piece_space[off as usize..off as usize + b.len as usize],
                "block {b:?}"
            );
        }
        offers
    }

    fn stat(&self, f: impl Fn(&ShardStats) -> u64) -> u64 {
        total(self.engine.stats(), f)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.engine.shutdown();
    }
}

fn haves(msgs: &[Got]) -> Vec<u32> {
    msgs.iter()
        .filter_map(|m| match m {
            Got::Have(p) => Some(*p),
            _ => None,
        })
        .collect()
}

/// Reads what the seeder sends after the handshake, up to and including
/// the unchoke, and checks it is a super-seed greeting: no bitfield or
/// have_all, have_none for fast peers, then exactly one offered `have`
/// (with its `suggest` for fast peers), all within [`PROMPT`].
fn greeting(p: &mut RawPeer, fast: bool, since: Instant) -> u32 {
    let mut msgs = p
        .recv_until(PROMPT, |m| *m == Got::Unchoke)
        .expect("unchoke after the handshake");
    // A suggest may follow the unchoke in the same batch; nothing else may.
    msgs.extend(p.recv_all(Duration::from_millis(300), PROMPT).unwrap());
    let took = since.elapsed();
    assert!(took < PROMPT + Duration::from_millis(300), "took {took:?}");
    assert!(
        !msgs
            .iter()
            .any(|m| matches!(m, Got::Bitfield(_) | Got::HaveAll)),
        "a super-seed advertises nothing: {msgs:?}"
    );
    assert_eq!(msgs.contains(&Got::HaveNone), fast, "{msgs:?}");
    let offered = haves(&msgs);
    assert_eq!(offered.len(), 1, "exactly one offer: {msgs:?}");
    let suggests: Vec<_> = msgs
        .iter()
        .filter(|m| matches!(m, Got::Suggest(_)))
        .collect();
    if fast {
        assert_eq!(suggests, [&Got::Suggest(offered[0])], "{msgs:?}");
    } else {
        assert!(suggests.is_empty(), "no suggest without BEP 6: {msgs:?}");
    }
    offered[0]
}

#[test]
fn one_offer_suggest_and_unchoke_right_after_the_handshake() {
    let s = Setup::new(Duration::from_secs(30));
    let t0 = Instant::now();
    let mut fast = s.peer(true);
    let a = greeting(&mut fast, true, t0);

    // An unoffered piece is refused (reject_request for a fast peer); the
    // offered one is served.
    let other = (a + 1) % PIECES as u32;
    let bad = s.blocks(other)[0];
    fast.send(&[Message::Request(bad)]).unwrap();
    let got = fast
        .recv_until(PROMPT, |m| matches!(m, Got::Reject(_)))
        .unwrap();
    assert_eq!(got.last(), Some(&Got::Reject(bad)));
    s.download_piece(&mut fast, a);

    // A peer without the fast extension: no have_none, no suggest, its own
    // piece; an unoffered request is dropped, not fatal.
    let t1 = Instant::now();
    let mut plain = s.peer(false);
    let b = greeting(&mut plain, false, t1);
    assert_ne!(a, b, "newcomers get different pieces");
    let unoffered = (0..PIECES as u32).find(|&p| p != a && p != b).unwrap();
    plain
        .send(&[Message::Request(s.blocks(unoffered)[0])])
        .unwrap();
    s.download_piece(&mut plain, b);

    assert_eq!(s.stat(|st| ShardStats::get(&st.superseed_offers)), 2);
    assert_eq!(s.stat(|st| ShardStats::get(&st.superseed_suggests)), 1);
}

#[test]
fn next_offer_once_another_peer_has_the_piece() {
    let s = Setup::new(Duration::from_secs(30));
    let mut p1 = s.peer(true);
    let a = greeting(&mut p1, true, Instant::now());
    let mut p2 = s.peer(true);
    let b = greeting(&mut p2, true, Instant::now());

    // p1 completes `a`: p2 still lacks it, so p1 waits (30 s timeout).
    s.download_piece(&mut p1, a);
    p1.send(&[Message::Have(a)]).unwrap();
    let quiet = p1.recv_all(Duration::from_millis(500), PROMPT).unwrap();
    assert!(haves(&quiet).is_empty(), "no new offer yet: {quiet:?}");

    // p2 announces `a` (it got it from p1): `a` has spread, so p1 is
    // offered its next piece at once.
    let t = Instant::now();
    p2.send(&[Message::Have(a)]).unwrap();
    let got = p1
        .recv_until(PROMPT, |m| matches!(m, Got::Have(_)))
        .expect("next offer after another peer's have");
    let next = haves(&got)[0];
    assert!(next != a && next != b, "{next}");
    assert!(t.elapsed() < PROMPT);
    // p2 still holds its own offer `b`: nothing new for it.
    let quiet = p2.recv_all(Duration::from_millis(300), PROMPT).unwrap();
    assert!(haves(&quiet).is_empty(), "{quiet:?}");
}

#[test]
fn next_offer_after_the_forward_timeout() {
    let timeout = Duration::from_millis(800);
    let s = Setup::new(timeout);
    let mut p1 = s.peer(true);
    let a = greeting(&mut p1, true, Instant::now());
    // A second peer that lacks `a` and never gets it.
    let mut p2 = s.peer(true);
    greeting(&mut p2, true, Instant::now());

    s.download_piece(&mut p1, a);
    let t = Instant::now();
    p1.send(&[Message::Have(a)]).unwrap();
    let got = p1
        .recv_until(timeout * 4, |m| matches!(m, Got::Have(_)))
        .expect("an offer after the forward timeout");
    let waited = t.elapsed();
    assert!(haves(&got)[0] != a);
    // Driven by the shard loop's timer, not by a 1 s tick.
    assert!(
        waited >= timeout - Duration::from_millis(50)
            && waited < timeout + Duration::from_millis(400),
        "next offer after {waited:?}, forward timeout {timeout:?}"
    );
}

/// Downloads the whole torrent by following offers: request every block
/// of each offered piece, announce it with `have` when complete.
fn follow_offers(s: &Setup, mut p: RawPeer, first: u32, deadline: Duration) -> BTreeSet<u32> {
    let start = Instant::now();
    let mut done = BTreeSet::new();
    let mut todo = vec![first];
    while done.len() < PIECES {
        assert!(
            start.elapsed() < deadline,
            "stuck with {}/{PIECES} pieces",
            done.len()
        );
        let Some(piece) = todo.pop() else {
            match p.recv(Duration::from_millis(100)).unwrap() {
                Some(Got::Have(x)) if !done.contains(&x) => todo.push(x),
                _ => {}
            }
            continue;
        };
        todo.extend(s.download_piece(&mut p, piece));
        done.insert(piece);
        p.send(&[Message::Have(piece)]).unwrap();
    }
    done
}

#[test]
fn a_lone_leecher_following_the_offers_completes_at_once() {
    // Nobody else lacks a completed piece: each have releases the next offer.
    let s = Setup::new(Duration::from_secs(30));
    let mut p = s.peer(true);
    let first = greeting(&mut p, true, Instant::now());
    let t = Instant::now();
    let done = follow_offers(&s, p, first, Duration::from_secs(20));
    assert_eq!(done.len(), PIECES);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        s.stat(|st| ShardStats::get(&st.superseed_offers)),
        PIECES as u64
    );
}

#[test]
fn two_leechers_that_never_trade_complete_through_the_timeout() {
    // Neither forwards its pieces, so every offer after the first is
    // released by the forward timeout, and once every piece has a copy the
    // starving peer is offered copies: both still complete.
    let timeout = Duration::from_millis(150);
    let s = Setup::new(timeout);
    let mut p1 = s.peer(true);
    let f1 = greeting(&mut p1, true, Instant::now());
    let mut p2 = s.peer(false);
    let f2 = greeting(&mut p2, false, Instant::now());
    std::thread::scope(|scope| {
        let s = &s;
        let h1 = scope.spawn(move || follow_offers(s, p1, f1, Duration::from_secs(40)));
        let h2 = scope.spawn(move || follow_offers(s, p2, f2, Duration::from_secs(40)));
        assert_eq!(h1.join().unwrap().len(), PIECES);
        assert_eq!(h2.join().unwrap().len(), PIECES);
    });
    // Every piece went to each peer exactly once.
    assert_eq!(
        s.stat(|st| ShardStats::get(&st.superseed_offers)),
        2 * PIECES as u64
    );
}

#[test]
fn serve_super_seed_flag_greets_with_one_offer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flag.bin"), data(17, 20 * PIECE as usize)).unwrap();
    let server = support::serve::ServeProc::start(&[
        dir.path().to_str().unwrap(),
        "--super-seed",
        "--shards",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--tracker-listen",
        "off",
    ]);
    assert!(
        server
            .banner
            .iter()
            .any(|l| l == "torrent flag.bin (super-seeding)"),
        "{:#?}",
        server.banner
    );
    let (hash, _, _) = server.torrent("flag.bin");
    let t0 = Instant::now();
    let mut p = RawPeer::connect(
        server.addr.parse().unwrap(),
        hash,
        true,
        &[Message::Interested],
    )
    .expect("handshake");
    greeting(&mut p, true, t0);
    let metrics = server.metrics.clone().unwrap();
    assert_eq!(
        support::serve::metric(&metrics, "ringseed_superseed_offers_total{"),
        1.0
    );
    assert_eq!(
        support::serve::metric(&metrics, "ringseed_superseed_suggests_total{"),
        1.0
    );
}
