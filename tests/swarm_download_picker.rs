//! The download engine's piece picker (`ringseed::swarm::download::picker`):
//! rarest first with a random tie-break, partial pieces first, suggestions,
//! allowed-fast, endgame, and who sent each block. Deterministic (seeded).

use ringseed::swarm::download::picker::{
    BlockOutcome, FailedPiece, PieceOutcome, PiecePicker, BLOCK_LEN, NO_PEER,
};
use ringseed::wire::codec::BlockRequest;
use ringseed::wire::Bitfield;

const PL: u32 = 4 * BLOCK_LEN;

fn picker(pieces: u32, seed: u64) -> PiecePicker {
    PiecePicker::new(pieces, PL, u64::from(pieces) * u64::from(PL), seed)
}

fn full(n: u32) -> Bitfield {
    Bitfield::full(n)
}

fn only(n: u32, set: &[u32]) -> Bitfield {
    let mut b = Bitfield::new(n);
    for &p in set {
        b.set(p);
    }
    b
}

fn never(_: &BlockRequest) -> bool {
    false
}

fn pieces_of(reqs: &[BlockRequest]) -> Vec<u32> {
    let mut v: Vec<u32> = reqs.iter().map(|r| r.piece).collect();
    v.dedup();
    v
}

/// Receives every block of `p` and verifies it as good.
fn complete(pk: &mut PiecePicker, p: u32) {
    for b in 0..pk.blocks_in(p) {
        let r = pk.block(p, b);
        assert!(matches!(pk.block_received(&r, 0), BlockOutcome::New { .. }));
    }
    assert!(matches!(
        pk.finish_piece(p, |_| true),
        PieceOutcome::Verified { .. }
    ));
}

#[test]
fn rarest_piece_first() {
    let mut pk = picker(8, 1);
    pk.add_bitfield(&full(8));
    pk.add_bitfield(&full(8));
    pk.add_bitfield(&only(8, &[0, 1, 2, 3, 4, 6, 7]));
    // Piece 5 is held by 2 peers, all others by 3.
    let mut out = vec![];
    pk.pick(&full(8), &[], never, 4, &mut out);
    assert_eq!(pieces_of(&out), vec![5]);
    assert_eq!(out.len(), 4, "whole piece requested");
    assert_eq!(
        out[0],
        BlockRequest {
            piece: 5,
            begin: 0,
            len: BLOCK_LEN
        }
    );
}

#[test]
fn only_pieces_the_peer_has() {
    let mut pk = picker(8, 2);
    pk.add_bitfield(&only(8, &[3]));
    let mut out = vec![];
    assert_eq!(pk.pick(&only(8, &[3]), &[], never, 100, &mut out), 4);
    assert_eq!(pieces_of(&out), vec![3]);
    out.clear();
    assert_eq!(pk.pick(&only(8, &[3]), &[], never, 100, &mut out), 0);
}

#[test]
fn ties_are_broken_randomly_but_reproducibly() {
    let first = |seed| {
        let mut pk = picker(64, seed);
        pk.add_bitfield(&full(64));
        let mut out = vec![];
        pk.pick(&full(64), &[], never, 1, &mut out);
        out[0].piece
    };
    assert_eq!(first(7), first(7), "same seed, same choice");
    let distinct: std::collections::HashSet<u32> = (0..32).map(first).collect();
    assert!(distinct.len() > 16, "leechers fan out: {distinct:?}");
}

#[test]
fn partial_pieces_have_strict_priority() {
    let mut pk = picker(8, 3);
    pk.add_bitfield(&full(8));
    let mut out = vec![];
    pk.pick(&full(8), &[], never, 2, &mut out);
    let p = out[0].piece;
    // A rarer piece appears, but the started one is finished first.
    pk.add_bitfield(&only(8, &[(p + 1) % 8]));
    pk.remove_bitfield(&full(8));
    pk.add_bitfield(&only(8, &[p]));
    let mut out2 = vec![];
    pk.pick(&full(8), &[], never, 2, &mut out2);
    assert_eq!(pieces_of(&out2), vec![p]);
    assert_eq!(out2[0].begin, 2 * BLOCK_LEN);
}

#[test]
fn suggestions_win_over_rarest() {
    let mut pk = picker(8, 4);
    pk.add_bitfield(&full(8));
    pk.add_bitfield(&only(8, &[0, 1, 2, 3, 4, 5, 7]));
    let mut out = vec![];
    pk.pick(&full(8), &[2], never, 5, &mut out);
    assert_eq!(pieces_of(&out), vec![2, 6], "suggested 2, then rarest 6");
}

#[test]
fn cancelled_blocks_are_requested_again() {
    let mut pk = picker(2, 5);
    pk.add_bitfield(&full(2));
    let mut out = vec![];
    pk.pick(&full(2), &[], never, 8, &mut out);
    assert_eq!(out.len(), 8);
    assert!(pk.in_endgame());
    pk.request_cancelled(&out[3]);
    assert!(!pk.in_endgame());
    let mut again = vec![];
    assert_eq!(pk.pick(&full(2), &[], never, 8, &mut again), 1 + 7);
    assert_eq!(again[0], out[3], "the cancelled block first");
}

#[test]
fn endgame_duplicates_to_other_peers_only_and_capped() {
    let mut pk = picker(2, 6);
    pk.add_bitfield(&full(2));
    let mut a = vec![];
    pk.pick(&full(2), &[], never, 100, &mut a);
    assert_eq!(a.len(), 8);
    assert!(pk.in_endgame());
    // The same peer gets nothing it already asked for.
    let mut same = vec![];
    assert_eq!(pk.pick(&full(2), &[], |r| a.contains(r), 100, &mut same), 0);
    // A second peer gets every block once more.
    let mut b = vec![];
    assert_eq!(pk.pick(&full(2), &[], never, 100, &mut b), 8);
    // A third gets nothing: two requests per block at most.
    let mut c = vec![];
    assert_eq!(pk.pick(&full(2), &[], never, 100, &mut c), 0);
    // The first copy arrives; the second is unwanted.
    assert_eq!(
        pk.block_received(&a[0], 0),
        BlockOutcome::New { piece_done: false }
    );
    assert_eq!(pk.block_received(&b[0], 1), BlockOutcome::Unwanted);
}

#[test]
fn not_endgame_while_unstarted_pieces_remain() {
    let mut pk = picker(4, 7);
    pk.add_bitfield(&only(4, &[0]));
    let mut out = vec![];
    pk.pick(&only(4, &[0]), &[], never, 100, &mut out);
    assert!(!pk.in_endgame(), "pieces 1-3 are not requested from anyone");
    let mut dup = vec![];
    assert_eq!(pk.pick(&only(4, &[0]), &[], never, 100, &mut dup), 0);
}

#[test]
fn failed_piece_is_downloaded_again_and_verified_piece_is_ours() {
    let mut pk = picker(2, 8);
    pk.add_bitfield(&full(2));
    let mut out = vec![];
    pk.pick(&only(2, &[1]), &[], never, 100, &mut out);
    for r in &out {
        pk.block_buf(r, 0, r.len as usize).unwrap().fill(7);
    }
    let mut done = false;
    for r in &out {
        if let BlockOutcome::New { piece_done } = pk.block_received(r, 0) {
            done = piece_done;
        }
    }
    assert!(done);
    assert!(matches!(
        pk.finish_piece(1, |d| d[0] == 8),
        PieceOutcome::Failed(_)
    ));
    assert!(!pk.have(1));
    let mut again = vec![];
    assert_eq!(pk.pick(&only(2, &[1]), &[], never, 100, &mut again), 4);
    assert_eq!(again, out);
    for r in &again {
        pk.block_buf(r, 0, r.len as usize).unwrap().fill(8);
        pk.block_received(r, 0);
    }
    match pk.finish_piece(1, |d| d.iter().all(|&x| x == 8)) {
        PieceOutcome::Verified { data, .. } => assert_eq!(data.len(), PL as usize),
        other => panic!("{other:?}"),
    }
    assert!(pk.have(1));
    assert!(pk.block_buf(&again[0], 0, 1).is_none(), "no longer wanted");
    assert_eq!(pk.block_received(&again[0], 0), BlockOutcome::Unwanted);
}

#[test]
fn short_last_piece_and_misaligned_blocks() {
    let pk = PiecePicker::new(3, PL, u64::from(PL) * 2 + 100, 9);
    assert_eq!(pk.piece_len(2), 100);
    assert_eq!(pk.blocks_in(2), 1);
    assert!(pk.is_block(&BlockRequest {
        piece: 2,
        begin: 0,
        len: 100
    }));
    assert!(!pk.is_block(&BlockRequest {
        piece: 2,
        begin: 0,
        len: 99
    }));
    assert!(!pk.is_block(&BlockRequest {
        piece: 0,
        begin: 1,
        len: BLOCK_LEN
    }));
    assert!(!pk.is_block(&BlockRequest {
        piece: 3,
        begin: 0,
        len: 100
    }));
}

#[test]
fn downloads_everything_from_one_peer_in_the_end() {
    let mut pk = picker(16, 10);
    pk.add_bitfield(&full(16));
    let mut seen = std::collections::HashSet::new();
    while !pk.is_complete() {
        let mut out = vec![];
        pk.pick(&full(16), &[], never, 3, &mut out);
        assert!(!out.is_empty());
        for r in out {
            assert!(seen.insert(r), "no block asked twice outside endgame");
            if let BlockOutcome::New { piece_done: true } = pk.block_received(&r, 0) {
                complete_check(&mut pk, r.piece);
            }
        }
    }
    assert_eq!(seen.len(), 64);
    assert_eq!(pk.pieces_in_progress(), 0);
}

fn complete_check(pk: &mut PiecePicker, p: u32) {
    assert!(matches!(
        pk.finish_piece(p, |_| true),
        PieceOutcome::Verified { .. }
    ));
}

#[test]
fn availability_follows_bitfields() {
    let mut pk = picker(10, 11);
    let b = only(10, &[0, 9]);
    pk.add_bitfield(&b);
    pk.add_have(9);
    assert_eq!(pk.availability(0), 1);
    assert_eq!(pk.availability(9), 2);
    pk.remove_bitfield(&b);
    assert_eq!(pk.availability(9), 1);
    assert_eq!(pk.availability(0), 0);
}

#[test]
fn complete_after_every_piece() {
    let mut pk = picker(3, 12);
    let mut out = vec![];
    pk.pick(&full(3), &[], never, 100, &mut out);
    for p in 0..3 {
        assert!(!pk.is_complete());
        complete(&mut pk, p);
    }
    assert!(pk.is_complete() && !pk.in_endgame());
    assert_eq!(pk.have_count(), 3);
}

#[test]
fn allowed_fast_pieces_only_while_choked() {
    let mut pk = picker(8, 13);
    pk.add_bitfield(&full(8));
    let mut out = vec![];
    // The peer has everything but allowed us only piece 6 (and 9, which
    // does not exist): only blocks of 6.
    assert_eq!(
        pk.pick_allowed_fast(&full(8), &[6, 9], never, 100, &mut out),
        4
    );
    assert_eq!(pieces_of(&out), vec![6]);
    // Allowed, but the peer does not have it: nothing.
    let mut none = vec![];
    assert_eq!(
        pk.pick_allowed_fast(&only(8, &[1]), &[2], never, 100, &mut none),
        0
    );
}

#[test]
fn a_failed_piece_names_who_sent_each_block_and_keeps_the_bad_bytes() {
    let mut pk = picker(2, 14);
    pk.add_bitfield(&full(2));
    let mut out = vec![];
    pk.pick(&only(2, &[0]), &[], never, 100, &mut out);
    for (i, r) in out.iter().enumerate() {
        pk.block_buf(r, 0, r.len as usize).unwrap().fill(i as u8);
        pk.block_received(r, 10 + i as u32 % 2);
    }
    match pk.finish_piece(0, |_| false) {
        PieceOutcome::Failed(FailedPiece {
            piece,
            data,
            senders,
        }) => {
            assert_eq!(piece, 0);
            assert_eq!(senders, vec![10, 11, 10, 11]);
            assert_eq!(data[BLOCK_LEN as usize], 1);
        }
        other => panic!("{other:?}"),
    }
    // Reset: every block is missing and nobody sent anything yet.
    let mut again = vec![];
    assert_eq!(pk.pick(&only(2, &[0]), &[], never, 100, &mut again), 4);
    for r in &again {
        pk.block_received(r, 12);
    }
    match pk.finish_piece(0, |_| true) {
        PieceOutcome::Verified { senders, .. } => assert_eq!(senders, vec![12; 4]),
        other => panic!("{other:?}"),
    }
    assert_ne!(NO_PEER, 12);
}

#[test]
fn unset_have_makes_a_piece_wanted_again() {
    let mut pk = picker(2, 15);
    pk.add_bitfield(&full(2));
    let mut out = vec![];
    pk.pick(&full(2), &[], never, 100, &mut out);
    complete(&mut pk, 0);
    complete(&mut pk, 1);
    assert!(pk.is_complete());
    pk.unset_have(1);
    assert!(!pk.is_complete() && !pk.have(1));
    let mut again = vec![];
    assert_eq!(pk.pick(&full(2), &[], never, 100, &mut again), 4);
    assert_eq!(pieces_of(&again), vec![1]);
}
