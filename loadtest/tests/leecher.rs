//! The leecher state machine against scripted seeder behaviour, no sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringseed::metainfo::MetaVersion;
use ringseed::wire::codec::{decode, BlockRequest, Decoded, Handshake, HandshakeDecoded, Message};
use ringseed::wire::Bitfield;
use ringseed_loadtest::leecher::{Leecher, LeecherConfig, Pattern};
use ringseed_loadtest::rng::Rng;
use ringseed_loadtest::stats::{DropReason, Stats};
use ringseed_loadtest::testkit::{make_torrent, piece_msg, seeder_handshake};
use ringseed_loadtest::torrents::LoadTorrent;

struct Script {
    t: Arc<LoadTorrent>,
    data: Vec<u8>,
    l: Leecher,
    stats: Stats,
    now: Instant,
    /// Leecher output not yet parsed.
    sent: Vec<u8>,
    saw_handshake: bool,
    _dir: tempfile::TempDir,
}

impl Script {
    fn new(version: MetaVersion, size: u64, cfg: LeecherConfig) -> Script {
        let dir = tempfile::tempdir().unwrap();
        let (_, t, data) = make_torrent(dir.path(), "d.bin", size, 32 * 1024, version).unwrap();
        let mut l = Leecher::new(t.clone(), cfg, &mut Rng::new(7), &[]);
        let now = Instant::now();
        l.on_connected(now);
        Script {
            t,
            data,
            l,
            stats: Stats::default(),
            now,
            sent: Vec::new(),
            saw_handshake: false,
            _dir: dir,
        }
    }

    /// Feeds seeder bytes; the whole input must be consumed.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), DropReason> {
        let n = self.l.handle_data(self.now, bytes, &mut self.stats)?;
        assert_eq!(n, bytes.len(), "leecher left bytes of complete messages");
        Ok(())
    }

    /// Everything the leecher sent since the last call, as messages.
    fn requests(&mut self) -> Vec<BlockRequest> {
        self.sent.extend_from_slice(self.l.pending_output());
        let n = self.l.pending_output().len();
        self.l.consume_output(n);
        let mut pos = 0;
        if !self.saw_handshake {
            match Handshake::decode(&self.sent).unwrap() {
                HandshakeDecoded::Complete(h) => {
                    assert_eq!(h.info_hash, self.t.handshake_hash);
                    assert!(h.supports_fast() && h.supports_extensions());
                    // The v2 upgrade bit only for torrents with a v2 part.
                    assert_eq!(h.supports_v2(), self.t.torrent.info_hash_v2.is_some());
                    pos = 68;
                    self.saw_handshake = true;
                }
                HandshakeDecoded::Incomplete { .. } => return vec![],
            }
        }
        let mut out = vec![];
        while let Ok(Decoded::Message { msg, consumed }) = decode(&self.sent[pos..], 1 << 20) {
            if let Message::Request(r) = msg {
                out.push(r);
            }
            pos += consumed;
        }
        self.sent.drain(..pos);
        out
    }

    fn block(&self, r: &BlockRequest) -> Vec<u8> {
        piece_msg(&self.t, &self.data, r.piece, r.begin, r.len)
    }

    /// Serves every request until the leecher is done (bounded).
    fn serve_all(&mut self) -> Result<(), DropReason> {
        for _ in 0..10_000 {
            if self.l.is_done() {
                return Ok(());
            }
            let reqs = self.requests();
            assert!(
                !reqs.is_empty(),
                "leecher stopped requesting before it was done"
            );
            for r in reqs {
                let b = self.block(&r);
                self.feed(&b)?;
            }
        }
        panic!("download did not finish");
    }

    fn start(&mut self, fast: bool) {
        let mut pre = seeder_handshake(&self.t, fast);
        if fast {
            Message::HaveAll.encode(&mut pre);
        } else {
            Message::Bitfield(Bitfield::full(self.t.num_pieces).as_bytes()).encode(&mut pre);
        }
        Message::Unchoke.encode(&mut pre);
        self.feed(&pre).unwrap();
    }
}

fn cfg(pipeline: usize, verify: bool) -> LeecherConfig {
    LeecherConfig {
        pipeline,
        pattern: Pattern::Random,
        verify,
        stall_timeout: Duration::from_secs(5),
    }
}

#[test]
fn downloads_and_verifies_everything_byte_by_byte_splits() {
    let mut s = Script::new(MetaVersion::Hybrid, 300_000, cfg(8, true));
    s.start(true);
    // Feed blocks one byte at a time, presenting unconsumed bytes again.
    for _ in 0..1000 {
        if s.l.is_done() {
            break;
        }
        for r in s.requests() {
            let b = s.block(&r);
            let mut pending: Vec<u8> = Vec::new();
            for &byte in &b {
                pending.push(byte);
                let n = s.l.handle_data(s.now, &pending, &mut s.stats).unwrap();
                pending.drain(..n);
            }
            assert!(pending.is_empty());
        }
    }
    assert!(s.l.is_done());
    assert_eq!(s.stats.bytes_verified, 300_000);
    assert_eq!(s.stats.payload_bytes, 300_000);
    assert_eq!(s.stats.hash_failures, 0);
}

#[test]
fn choke_mid_pipeline_without_fast_requeues_outstanding() {
    let mut s = Script::new(MetaVersion::V1, 256 * 1024, cfg(6, true));
    s.start(false);
    let reqs = s.requests();
    assert_eq!(reqs.len(), 6, "pipeline is kept full");
    let b = s.block(&reqs[0]);
    s.feed(&b).unwrap();
    let refill = s.requests();
    assert_eq!(refill.len(), 1, "one answered block, one new request");
    let mut choke = Vec::new();
    Message::Choke.encode(&mut choke);
    s.feed(&choke).unwrap();
    assert_eq!(
        s.l.outstanding(),
        0,
        "BEP 3: a choke drops every pending request"
    );
    assert!(s.requests().is_empty(), "no requests while choked");
    let mut unchoke = Vec::new();
    Message::Unchoke.encode(&mut unchoke);
    s.feed(&unchoke).unwrap();
    let again = s.requests();
    assert!(again.contains(&reqs[1]), "dropped requests are asked again");
    for r in again {
        let b = s.block(&r);
        s.feed(&b).unwrap();
    }
    s.serve_all().unwrap();
    assert_eq!(s.stats.chokes, 1);
    assert_eq!(s.stats.bytes_verified, 256 * 1024);
}

#[test]
fn choke_with_fast_keeps_requests_until_rejected() {
    let mut s = Script::new(MetaVersion::V1, 128 * 1024, cfg(4, true));
    s.start(true);
    let reqs = s.requests();
    let mut m = Vec::new();
    Message::Choke.encode(&mut m);
    s.feed(&m).unwrap();
    assert_eq!(
        s.l.outstanding(),
        4,
        "BEP 6: pending requests stay until rejected"
    );
    let mut m = Vec::new();
    for r in &reqs {
        Message::Reject(*r).encode(&mut m);
    }
    Message::Unchoke.encode(&mut m);
    s.feed(&m).unwrap();
    let again = s.requests();
    assert_eq!(again, reqs, "rejected blocks are requested again in order");
    for r in again {
        let b = s.block(&r);
        s.feed(&b).unwrap();
    }
    s.serve_all().unwrap();
    assert_eq!(s.stats.rejects, 4);
}

#[test]
fn reject_of_one_block_is_retried() {
    let mut s = Script::new(MetaVersion::V1, 64 * 1024, cfg(2, false));
    s.start(true);
    let reqs = s.requests();
    let mut m = Vec::new();
    Message::Reject(reqs[1]).encode(&mut m);
    s.feed(&m).unwrap();
    let again = s.requests();
    assert_eq!(again, vec![reqs[1]]);
    for r in [reqs[0], reqs[1]] {
        let b = s.block(&r);
        s.feed(&b).unwrap();
    }
    s.serve_all().unwrap();
    assert_eq!(s.stats.rejects, 1);
}

#[test]
fn corrupted_block_is_detected_with_verify_only() {
    for verify in [true, false] {
        let mut s = Script::new(MetaVersion::V1, 64 * 1024, cfg(4, verify));
        s.start(true);
        let reqs = s.requests();
        let mut result = Ok(());
        for (i, r) in reqs.iter().enumerate() {
            let mut b = s.block(r);
            if i == 0 {
                let last = b.len() - 1;
                b[last] ^= 0x55;
            }
            result = result.and(s.feed(&b));
        }
        if verify {
            assert_eq!(result, Err(DropReason::HashMismatch));
            assert_eq!(s.stats.hash_failures, 1);
        } else {
            result.unwrap();
            s.serve_all().unwrap();
            assert_eq!(s.stats.hash_failures, 0);
        }
    }
}

#[test]
fn v2_only_pieces_verify_against_piece_layers() {
    // 3.5 pieces: a piece layer, and a short last piece.
    let mut s = Script::new(MetaVersion::V2, 3 * 32 * 1024 + 5000, cfg(4, true));
    assert!(s.t.v2_only);
    s.start(true);
    s.serve_all().unwrap();
    assert_eq!(s.stats.pieces_verified, 4);

    let mut s = Script::new(MetaVersion::V2, 3 * 32 * 1024 + 5000, cfg(4, true));
    s.start(true);
    let reqs = s.requests();
    let mut res = Ok(());
    for r in &reqs {
        let mut b = s.block(r);
        b[20] ^= 1;
        res = res.and(s.feed(&b));
    }
    assert_eq!(res, Err(DropReason::HashMismatch));
}

#[test]
fn unrequested_block_and_wrong_info_hash_are_protocol_errors() {
    let mut s = Script::new(MetaVersion::V1, 64 * 1024, cfg(1, false));
    s.start(true);
    let _ = s.requests();
    let b = s.block(&BlockRequest {
        piece: 1,
        begin: 16384,
        len: 16384,
    });
    assert_eq!(s.feed(&b), Err(DropReason::ProtocolError));
    assert_eq!(s.stats.protocol_errors.get("unrequested_block"), Some(&1));

    let mut s = Script::new(MetaVersion::V1, 64 * 1024, cfg(1, false));
    let mut hs = seeder_handshake(&s.t, true);
    hs[30] ^= 1;
    assert_eq!(s.feed(&hs), Err(DropReason::ProtocolError));
    assert_eq!(s.stats.protocol_errors.get("wrong_info_hash"), Some(&1));
}

#[test]
fn waits_for_pieces_the_seeder_lacks_and_times_out_when_silent() {
    let mut s = Script::new(MetaVersion::V1, 64 * 1024, cfg(8, false));
    let mut pre = seeder_handshake(&s.t, true);
    Message::HaveNone.encode(&mut pre);
    Message::Have(1).encode(&mut pre);
    Message::Unchoke.encode(&mut pre);
    s.feed(&pre).unwrap();
    let reqs = s.requests();
    assert!(
        !reqs.is_empty() && reqs.iter().all(|r| r.piece == 1),
        "only piece 1 is available: {reqs:?}"
    );
    for r in reqs {
        let b = s.block(&r);
        s.feed(&b).unwrap();
    }
    assert!(s.requests().is_empty());
    let mut m = Vec::new();
    Message::Have(0).encode(&mut m);
    s.feed(&m).unwrap();
    s.serve_all().unwrap();
    assert!(s.l.check_timeout(s.now + Duration::from_secs(1)).is_none());
    assert_eq!(
        s.l.check_timeout(s.now + Duration::from_secs(6)),
        Some(DropReason::Stalled)
    );
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng::new(99);
    for round in 0..300 {
        let mut s = Script::new(MetaVersion::V1, 64 * 1024, cfg(4, round % 2 == 0));
        if round % 3 != 0 {
            s.start(true);
        }
        let mut junk = vec![0u8; (rng.below(200) + 5) as usize];
        for b in junk.iter_mut() {
            *b = rng.next_u64() as u8;
        }
        if round % 4 == 0 {
            junk[..4].copy_from_slice(&((rng.below(40)) as u32).to_be_bytes());
            junk[4] = rng.below(24) as u8;
        }
        let _ = s.l.handle_data(s.now, &junk, &mut s.stats);
    }
}

#[test]
fn discarded_payload_completes_blocks_like_read_payload() {
    let mut s = Script::new(MetaVersion::V1, 200_000, cfg(4, false));
    s.start(true);
    for _ in 0..1000 {
        if s.l.is_done() {
            break;
        }
        for r in s.requests() {
            let b = s.block(&r);
            // Header plus 5 payload bytes read; the rest thrown away in
            // pieces, as `recv(MSG_TRUNC)` returns it.
            s.feed(&b[..18]).unwrap();
            let mut left = s.l.discardable();
            assert_eq!(left, r.len as usize - 5, "the rest of the block");
            while left > 0 {
                let n = left.min(3000);
                s.l.discarded(s.now, n, &mut s.stats).unwrap();
                left -= n;
                assert_eq!(s.l.discardable(), left);
            }
        }
    }
    assert!(s.l.is_done());
    assert_eq!(s.stats.payload_bytes, 200_000);
    // 32 KiB pieces: 6 whole ones of 2 blocks, and a 3,392-byte last one.
    assert_eq!(s.stats.blocks, 13);
    // Between blocks there is nothing to discard, and with verify never.
    assert_eq!(s.l.discardable(), 0);
    let mut v = Script::new(MetaVersion::V1, 100_000, cfg(2, true));
    v.start(true);
    let r = v.requests()[0];
    let b = v.block(&r);
    v.feed(&b[..13]).unwrap();
    assert_eq!(v.l.discardable(), 0, "verify needs the bytes");
}
