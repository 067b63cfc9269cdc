//! The download engine's per-peer state (`swarm::download::peer`) and smart
//! ban (`swarm::download::smart_ban`), on a virtual clock: pipelines sized by
//! measured rate, choke / allowed-fast / reject handling, endgame cancels,
//! timeouts, and bans traced to the peer that sent bad blocks.

use std::time::{Duration, Instant};

use ringseed::swarm::download::peer::{PeerDownload, RejectOutcome, INITIAL_DEPTH};
use ringseed::swarm::download::picker::{BlockOutcome, PieceOutcome, PiecePicker, BLOCK_LEN};
use ringseed::swarm::download::smart_ban::{SmartBan, SmartBanConfig};
use ringseed::wire::Bitfield;

const PL: u32 = 4 * BLOCK_LEN;

fn setup(pieces: u32) -> (Instant, PiecePicker, PeerDownload) {
    let t0 = Instant::now();
    let mut pk = PiecePicker::new(pieces, PL, u64::from(pieces) * u64::from(PL), 1);
    let mut p = PeerDownload::new(t0, pieces, 64, false);
    let old = p.replace_haves(Bitfield::full(pieces), &pk);
    pk.remove_bitfield(&old);
    pk.add_bitfield(&p.has);
    p.am_interested = p.wants(false);
    (t0, pk, p)
}

#[test]
fn pipeline_grows_with_the_measured_rate_and_respects_reqq() {
    let (t0, mut pk, mut p) = setup(256);
    p.on_unchoke(t0);
    let mut out = vec![];
    assert_eq!(p.fill(t0, &mut pk, usize::MAX, &mut out), INITIAL_DEPTH);
    // 10 MiB/s for a second, measured in 500 ms windows.
    let mut t = t0;
    for _ in 0..20 {
        t += Duration::from_millis(50);
        let mut got = vec![];
        for r in out.drain(..).take(32) {
            assert!(p.on_block(t, &r));
            got.push(r);
        }
        for r in got {
            let _ = pk.block_received(&r, 0);
        }
        p.fill(t, &mut pk, usize::MAX, &mut out);
        out.clear();
        out.extend_from_slice(p.outstanding());
    }
    // 10 MiB/s * 0.5 s / 16 KiB = 320 blocks, capped by our 64.
    assert!(p.rate() > 5_000_000, "rate {}", p.rate());
    assert_eq!(p.queue_depth(), 64);
    p.set_max_depth(64, 8);
    assert_eq!(p.queue_depth(), 8, "the peer's reqq caps the pipeline");
}

#[test]
fn slow_peer_keeps_a_short_pipeline() {
    let (t0, mut pk, mut p) = setup(16);
    p.on_unchoke(t0);
    let mut out = vec![];
    p.fill(t0, &mut pk, usize::MAX, &mut out);
    // One block per second.
    let mut t = t0;
    for r in out.clone() {
        t += Duration::from_secs(1);
        p.on_block(t, &r);
    }
    assert!(p.rate() < 20_000);
    assert_eq!(p.queue_depth(), 2);
}

#[test]
fn choke_drops_requests_without_fast_and_keeps_them_with_it() {
    let (t0, mut pk, mut p) = setup(8);
    p.on_unchoke(t0);
    let mut out = vec![];
    p.fill(t0, &mut pk, usize::MAX, &mut out);
    assert_eq!(p.on_choke().len(), out.len());
    assert!(p.outstanding().is_empty());
    assert_eq!(p.fill(t0, &mut pk, usize::MAX, &mut vec![]), 0, "choked");

    let mut f = PeerDownload::new(t0, 8, 64, true);
    f.gain(3, false);
    f.am_interested = true;
    f.on_unchoke(t0);
    let mut o = vec![];
    f.fill(t0, &mut pk, usize::MAX, &mut o);
    assert!(f.on_choke().is_empty(), "a fast peer rejects explicitly");
    assert_eq!(f.outstanding().len(), o.len());
}

#[test]
fn allowed_fast_pieces_are_requested_while_choked() {
    let t0 = Instant::now();
    let mut pk = PiecePicker::new(8, PL, 8 * u64::from(PL), 2);
    let mut p = PeerDownload::new(t0, 8, 64, true);
    for i in 0..8 {
        p.gain(i, false);
        pk.add_have(i);
    }
    p.am_interested = true;
    assert_eq!(p.room(t0), 0, "choked, nothing allowed");
    p.on_allowed_fast(5);
    p.on_allowed_fast(99);
    assert_eq!(p.allowed_fast(), &[5]);
    let mut out = vec![];
    assert_eq!(p.fill(t0, &mut pk, usize::MAX, &mut out), 4);
    assert!(out.iter().all(|r| r.piece == 5));
    // A reject of an allowed-fast piece while choked is not a refusal.
    assert_eq!(
        p.on_reject(&out[0], false),
        RejectOutcome::Dropped { refused: false }
    );
    assert!(p.has.get(5));
}

#[test]
fn unchoked_reject_means_refused() {
    let (t0, mut pk, mut p) = setup(8);
    p.on_unchoke(t0);
    let mut out = vec![];
    p.fill(t0, &mut pk, usize::MAX, &mut out);
    let before = p.interesting;
    assert_eq!(
        p.on_reject(&out[0], false),
        RejectOutcome::Dropped { refused: true }
    );
    assert!(!p.has.get(out[0].piece));
    assert_eq!(p.interesting, before - 1);
    assert_eq!(p.on_reject(&out[0], false), RejectOutcome::NotOurs);
}

#[test]
fn suggestions_are_followed_and_forgotten_once_we_have_them() {
    let (t0, mut pk, mut p) = setup(64);
    p.on_unchoke(t0);
    p.on_suggest(40, false);
    p.on_suggest(41, true);
    assert_eq!(p.suggested(), &[40]);
    let mut out = vec![];
    p.fill(t0, &mut pk, 4, &mut out);
    assert!(out.iter().all(|r| r.piece == 40), "{out:?}");
    p.we_got(40);
    assert!(p.suggested().is_empty());
}

#[test]
fn endgame_duplicates_are_cancelled_at_the_other_peer() {
    let (t0, mut pk, mut a) = setup(1);
    let mut b = a.clone();
    pk.add_bitfield(&b.has);
    a.on_unchoke(t0);
    b.on_unchoke(t0);
    let mut ra = vec![];
    a.fill(t0, &mut pk, usize::MAX, &mut ra);
    assert!(pk.in_endgame());
    let mut rb = vec![];
    b.fill(t0, &mut pk, usize::MAX, &mut rb);
    assert_eq!(ra.len(), 4);
    assert_eq!(rb.len(), 4, "endgame: the same blocks from the second peer");
    assert!(a.on_block(t0, &ra[0]));
    assert_eq!(
        pk.block_received(&ra[0], 0),
        BlockOutcome::New { piece_done: false }
    );
    assert!(b.cancel(&ra[0]), "the duplicate at b is cancelled");
    assert!(!b.cancel(&ra[0]));
    assert_eq!(b.outstanding().len(), 3);
}

#[test]
fn a_silent_peer_times_out_and_is_snubbed() {
    let (t0, mut pk, mut p) = setup(8);
    p.on_unchoke(t0);
    let mut out = vec![];
    p.fill(t0, &mut pk, usize::MAX, &mut out);
    let timeout = Duration::from_secs(20);
    assert!(p.take_timed_out(t0 + timeout, timeout).is_empty());
    let gone = p.take_timed_out(t0 + timeout + Duration::from_millis(1), timeout);
    assert_eq!(gone.len(), out.len());
    assert!(p.is_snubbed(t0 + timeout * 2));
    assert_eq!(p.room(t0 + timeout * 2), 0);
    assert!(p.room(t0 + timeout * 3) > 0);
}

/// Downloads piece 0 with block `b` from `senders[b]`; `liar` sends
/// garbage. Returns the outcome.
fn download(pk: &mut PiecePicker, senders: [u32; 4], liar: Option<u32>) -> PieceOutcome {
    let mut out = vec![];
    pk.pick(&Bitfield::full(1), &[], |_| false, 100, &mut out);
    assert_eq!(out.len(), 4);
    for (b, r) in out.iter().enumerate() {
        let byte = if Some(senders[b]) == liar {
            0xEE
        } else {
            b as u8
        };
        pk.block_buf(r, 0, r.len as usize).unwrap().fill(byte);
        pk.block_received(r, senders[b]);
    }
    pk.finish_piece(0, |d| {
        d.chunks(BLOCK_LEN as usize)
            .enumerate()
            .all(|(b, c)| c.iter().all(|&x| x == b as u8))
    })
}

#[test]
fn the_liar_among_several_senders_is_found_when_the_piece_passes() {
    let mut pk = PiecePicker::new(1, PL, u64::from(PL), 3);
    pk.add_have(0);
    let mut ban: SmartBan<u32> = SmartBan::new(SmartBanConfig { ban_after: 1 });
    let PieceOutcome::Failed(f) = download(&mut pk, [1, 2, 3, 2], Some(3)) else {
        panic!("piece should fail");
    };
    assert!(ban.piece_failed(&f, Some).is_empty(), "not known yet");
    let PieceOutcome::Verified { data, .. } = download(&mut pk, [1, 2, 4, 2], Some(3)) else {
        panic!("piece should pass");
    };
    assert_eq!(ban.piece_passed(0, &data), vec![3]);
    assert!(ban.is_banned(&3));
    assert!(!ban.is_banned(&1) && !ban.is_banned(&2) && !ban.is_banned(&4));
}

#[test]
fn a_sole_sender_is_banned_after_repeated_offences() {
    let mut pk = PiecePicker::new(1, PL, u64::from(PL), 4);
    pk.add_have(0);
    let mut ban: SmartBan<u32> = SmartBan::new(SmartBanConfig::default());
    let PieceOutcome::Failed(f) = download(&mut pk, [7; 4], Some(7)) else {
        panic!()
    };
    assert!(ban.piece_failed(&f, Some).is_empty());
    assert_eq!(ban.offences(&7), 1);
    let PieceOutcome::Failed(f) = download(&mut pk, [7; 4], Some(7)) else {
        panic!()
    };
    assert_eq!(
        ban.piece_failed(&f, Some),
        vec![7],
        "second offence: banned"
    );
    assert!(ban.is_banned(&7));
    assert_eq!(ban.banned_count(), 1);
}

#[test]
fn an_honest_peer_in_a_bad_piece_is_not_charged() {
    let mut pk = PiecePicker::new(1, PL, u64::from(PL), 5);
    pk.add_have(0);
    let mut ban: SmartBan<u32> = SmartBan::new(SmartBanConfig { ban_after: 1 });
    for _ in 0..3 {
        let PieceOutcome::Failed(f) = download(&mut pk, [1, 9, 1, 9], Some(9)) else {
            panic!()
        };
        // 9 sends the same bad bytes each time: nothing new at failure.
        let banned = ban.piece_failed(&f, Some);
        assert!(!banned.contains(&1));
    }
    let PieceOutcome::Verified { data, .. } = download(&mut pk, [1, 1, 1, 1], None) else {
        panic!()
    };
    assert_eq!(ban.piece_passed(0, &data), vec![9]);
    assert_eq!(ban.offences(&1), 0);
}

#[test]
fn a_peer_sending_two_versions_of_a_block_is_caught_at_once() {
    let mut ban: SmartBan<u32> = SmartBan::new(SmartBanConfig { ban_after: 1 });
    let mk = |fill: u8| ringseed::swarm::download::picker::FailedPiece {
        piece: 0,
        data: vec![fill; 2 * BLOCK_LEN as usize],
        senders: vec![1, 2],
    };
    assert!(ban.piece_failed(&mk(1), Some).is_empty());
    let banned = ban.piece_failed(&mk(2), Some);
    assert_eq!(banned.len(), 2, "both changed their block: {banned:?}");
}
