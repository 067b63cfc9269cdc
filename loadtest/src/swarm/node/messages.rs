//! The message side of a [`Node`]: what each received event means
//! (handshakes, haves, requests, blocks, rejects), piece completion, and
//! choosing what to request from whom.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringseed::wire::codec::{BlockRequest, Handshake, Message, MAX_BLOCK_LEN};
use ringseed::wire::ext::{encode_ext_handshake, parse_ext_handshake, OurExtHandshake};
use ringseed::wire::Bitfield;

use super::{Node, NodeResult, Peer, MAX_SUGGESTED};
use crate::swarm::choker::ChokeChange;
use crate::swarm::picker::{BlockOutcome, PieceOutcome, BLOCK_LEN};
use crate::swarm::wire::WireEvent;
use crate::swarm::PeerKey;

/// Window over which a peer's delivery rate is measured.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// Requests kept at a peer: this long at its measured rate (libtorrent's
/// `request_queue_time` idea), so slow peers do not hold the requests a
/// fast one could serve.
const QUEUE_TIME: Duration = Duration::from_millis(500);
/// Requests at a peer whose rate is not known yet.
const INITIAL_DEPTH: usize = 4;

/// Requests to keep outstanding at `p`.
fn queue_depth(p: &Peer) -> usize {
    let want = if p.rate == 0 {
        INITIAL_DEPTH
    } else {
        (p.rate as f64 * QUEUE_TIME.as_secs_f64() / f64::from(BLOCK_LEN)).ceil() as usize + 1
    };
    want.clamp(2, p.depth.max(2))
}

impl Node {
    /// Processes bytes received from `key`; returns how many were used.
    pub fn handle_data(
        &mut self,
        now: Instant,
        key: PeerKey,
        data: &[u8],
    ) -> Result<usize, &'static str> {
        let mut pos = 0;
        loop {
            let Some(p) = self.peers.get_mut(key as usize).and_then(Option::as_mut) else {
                return Ok(data.len());
            };
            if p.closing {
                return Ok(data.len());
            }
            let ev = match p.wire.next_event(data, &mut pos) {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => {
                    self.stats.protocol_errors += 1;
                    return Err(e.as_str());
                }
            };
            if let Err(reason) = self.on_event(now, key, ev) {
                if reason != "duplicate" && reason != "self_connection" {
                    self.stats.protocol_errors += 1;
                }
                return Err(reason);
            }
        }
        self.fill_requests(now);
        Ok(pos)
    }

    fn on_event(&mut self, now: Instant, key: PeerKey, ev: WireEvent<'_>) -> NodeResult {
        match ev {
            WireEvent::Handshake(h) => self.on_handshake(now, key, &h),
            WireEvent::Message(m) => self.on_message(now, key, m),
            WireEvent::BlockData { req, offset, bytes } => {
                let n = bytes.len() as u64;
                self.down.charge(now, n);
                let Some(p) = self.peer(key) else {
                    return Ok(());
                };
                if p.is_target {
                    self.stats.bytes_from_target += n;
                } else {
                    self.stats.bytes_from_peers += n;
                }
                self.choker.record_download(key, n);
                if let Some(dst) = self.picker.block_buf(&req, offset, bytes.len()) {
                    dst.copy_from_slice(bytes);
                }
                Ok(())
            }
            WireEvent::BlockDone(req) => {
                self.on_block_done(now, key, req);
                Ok(())
            }
        }
    }

    fn on_handshake(&mut self, now: Instant, key: PeerKey, h: &Handshake) -> NodeResult {
        if h.info_hash != self.torrent.handshake_hash
            && Some(h.info_hash) != self.torrent.alt_handshake_hash
        {
            return Err("wrong_info_hash");
        }
        if h.peer_id == self.peer_id {
            return Err("self_connection");
        }
        let Some(me) = self.peer(key) else {
            return Ok(());
        };
        let me_outgoing = me.outgoing;
        let me_target = me.is_target;
        let dup = self.peers.iter().enumerate().find_map(|(k, p)| {
            let p = p.as_ref()?;
            (k as PeerKey != key && p.handshaken && !p.closing && p.remote_id == h.peer_id)
                .then_some((k as PeerKey, p.outgoing, p.is_target))
        });
        if let Some((other, other_outgoing, other_target)) = dup {
            // Both ends keep the connection opened by the lower peer id, so
            // they agree on which of two crossing connections survives.
            let initiator = |outgoing: bool| if outgoing { self.peer_id } else { h.peer_id };
            let keep_me = if me_target || other_target {
                me_target
            } else {
                initiator(me_outgoing) < initiator(other_outgoing)
            };
            if !keep_me {
                return Err("duplicate");
            }
            self.close(other, "duplicate");
        }
        let hs = self.our_handshake();
        let complete = self.is_complete();
        let have = self.picker.have_bitfield().clone();
        let listen_port = self.listen.map(|a| a.port());
        let reqq = self.cfg.max_peer_requests as u32;
        let Some(p) = self.peer_mut(key) else {
            return Ok(());
        };
        p.handshaken = true;
        p.remote_id = h.peer_id;
        p.fast = h.supports_fast();
        if !p.outgoing {
            p.wire.queue_raw(&hs);
        }
        if h.supports_extensions() {
            let mut ext = Vec::with_capacity(96);
            encode_ext_handshake(
                &mut ext,
                &OurExtHandshake {
                    client_version: concat!("ringseed-loadtest ", env!("CARGO_PKG_VERSION")),
                    reqq,
                    listen_port,
                    yourip: None,
                    metadata_size: None,
                },
            );
            p.wire.queue_raw(&ext);
        }
        if p.fast && complete {
            p.wire.queue(&Message::HaveAll);
        } else if p.fast && have.count() == 0 {
            p.wire.queue(&Message::HaveNone);
        } else if have.count() > 0 {
            p.wire.queue(&Message::Bitfield(have.as_bytes()));
        }
        if !p.is_target {
            self.stats.peers_connected += 1;
        }
        self.choker.add(now, key);
        self.mark_dirty(key);
        Ok(())
    }

    fn require_handshake(&self, key: PeerKey) -> NodeResult {
        match self.peer(key) {
            Some(p) if p.handshaken => Ok(()),
            _ => Err("message_before_handshake"),
        }
    }

    fn on_message(&mut self, now: Instant, key: PeerKey, msg: Message<'_>) -> NodeResult {
        self.require_handshake(key)?;
        let n = self.torrent.num_pieces;
        match msg {
            Message::Choke => {
                let Some(p) = self.peer_mut(key) else {
                    return Ok(());
                };
                p.peer_choking = true;
                if !p.fast {
                    // BEP 3: a choke discards every pending request.
                    let dropped = std::mem::take(&mut p.outstanding);
                    self.forget_requests(&dropped);
                }
            }
            Message::Unchoke => {
                if let Some(p) = self.peer_mut(key) {
                    p.peer_choking = false;
                    p.last_block = now;
                }
            }
            Message::Interested | Message::NotInterested => {
                let mut changes = std::mem::take(&mut self.changes);
                let interested = matches!(msg, Message::Interested);
                self.choker
                    .set_interested(now, key, interested, &mut changes);
                self.apply_choke_changes(&mut changes);
                self.changes = changes;
            }
            Message::Have(i) => {
                if i >= n {
                    return Err("have_out_of_range");
                }
                self.peer_gains(key, i);
            }
            Message::Bitfield(b) => {
                let b = Bitfield::from_wire(b, n).map_err(|_| "bad_bitfield")?;
                self.replace_haves(key, b);
            }
            Message::HaveAll => self.replace_haves(key, Bitfield::full(n)),
            Message::HaveNone => self.replace_haves(key, Bitfield::new(n)),
            Message::Request(r) => self.on_request(key, r)?,
            Message::Cancel(r) => {
                if let Some(p) = self.peer_mut(key) {
                    if p.wire.unqueue_block(&r) && p.fast {
                        p.wire.queue(&Message::Reject(r));
                        self.mark_dirty(key);
                    }
                }
            }
            Message::Reject(r) => self.on_reject(key, r),
            Message::Suggest(i) => {
                let want = i < n && !self.picker.have(i);
                if let Some(p) = self.peer_mut(key) {
                    if want && !p.suggested.contains(&i) {
                        if p.suggested.len() >= MAX_SUGGESTED {
                            p.suggested.remove(0);
                        }
                        p.suggested.push(i);
                    }
                }
            }
            Message::Extended { id: 0, payload } => {
                if let Ok(h) = parse_ext_handshake(payload) {
                    let pipeline = self.cfg.pipeline;
                    let Some(p) = self.peer_mut(key) else {
                        return Ok(());
                    };
                    if let Some(q) = h.reqq.filter(|&q| q > 0) {
                        p.depth = pipeline.clamp(1, q as usize);
                    }
                    // Where an accepting peer listens: never dial it too.
                    if let (Some(port), Some(from)) = (h.listen_port, p.addr) {
                        self.forget_candidate(SocketAddr::new(from.ip(), port));
                    }
                }
            }
            // Keep-alives, allowed-fast, port, other extensions, v2 hash
            // messages: nothing to do for a v1 leecher.
            _ => {}
        }
        Ok(())
    }

    /// Drops our outstanding requests `rs` (they will not be answered).
    pub(super) fn forget_requests(&mut self, rs: &[BlockRequest]) {
        for r in rs {
            self.picker.request_cancelled(r);
            self.outstanding_bytes -= u64::from(r.len);
        }
    }

    fn peer_gains(&mut self, key: PeerKey, piece: u32) {
        let lacks = !self.picker.have(piece);
        let Some(p) = self.peer_mut(key) else { return };
        if p.has.get(piece) {
            return;
        }
        p.has.set(piece);
        if lacks {
            p.interesting += 1;
        }
        self.picker.add_have(piece);
        self.update_interest(key);
    }

    fn replace_haves(&mut self, key: PeerKey, b: Bitfield) {
        let interesting = if self.is_complete() {
            0
        } else {
            (0..b.len())
                .filter(|&i| b.get(i) && !self.picker.have(i))
                .count() as u32
        };
        let Some(p) = self.peers.get_mut(key as usize).and_then(Option::as_mut) else {
            return;
        };
        self.picker.remove_bitfield(&p.has);
        self.picker.add_bitfield(&b);
        p.has = b;
        p.interesting = interesting;
        self.update_interest(key);
    }

    fn update_interest(&mut self, key: PeerKey) {
        let complete = self.is_complete();
        let Some(p) = self.peer_mut(key) else { return };
        let want = !complete && p.interesting > 0;
        if want != p.am_interested && p.handshaken {
            p.am_interested = want;
            if want {
                self.queue_msg(key, &Message::Interested);
            } else {
                p.wire.queue(&Message::NotInterested);
                self.mark_lazy(key);
            }
        }
    }

    fn on_request(&mut self, key: PeerKey, r: BlockRequest) -> NodeResult {
        let plen = self.picker.piece_len(r.piece);
        if r.len == 0
            || r.len > MAX_BLOCK_LEN
            || r.begin.checked_add(r.len).is_none_or(|e| e > plen)
        {
            return Err("bad_request");
        }
        let ours = self.picker.have(r.piece) && self.store.block(r.piece, r.begin, r.len).is_some();
        let max = self.cfg.max_peer_requests;
        let Some(p) = self.peer_mut(key) else {
            return Ok(());
        };
        if p.am_choking || !ours || p.wire.queued_blocks() >= max {
            if p.fast {
                p.wire.queue(&Message::Reject(r));
                self.mark_dirty(key);
            }
            return Ok(());
        }
        p.wire.queue_block(r);
        self.mark_dirty(key);
        Ok(())
    }

    fn on_reject(&mut self, key: PeerKey, r: BlockRequest) {
        self.stats.rejects_received += 1;
        let we_have = self.picker.have(r.piece);
        let Some(p) = self.peer_mut(key) else { return };
        let Some(i) = p.outstanding.iter().position(|o| *o == r) else {
            return;
        };
        p.outstanding.swap_remove(i);
        // Unchoked and still refused: it will not give us this piece (a
        // super-seed refuses pieces it has not offered us).
        let refused = !p.peer_choking && p.has.get(r.piece);
        if refused {
            p.has.unset(r.piece);
            if !we_have {
                p.interesting = p.interesting.saturating_sub(1);
            }
        }
        self.forget_requests(&[r]);
        if refused {
            self.picker.remove_have(r.piece);
            self.update_interest(key);
        }
    }

    fn on_block_done(&mut self, now: Instant, key: PeerKey, req: BlockRequest) {
        if let Some(p) = self.peer_mut(key) {
            p.last_block = now;
            p.window_bytes += u64::from(req.len);
            let dt = now.saturating_duration_since(p.window_start);
            if dt >= RATE_WINDOW {
                let inst = (p.window_bytes as f64 / dt.as_secs_f64()) as u64;
                p.rate = if p.rate == 0 {
                    inst
                } else {
                    (p.rate + inst) / 2
                };
                p.window_bytes = 0;
                p.window_start = now;
            }
            if let Some(i) = p.outstanding.iter().position(|o| *o == req) {
                p.outstanding.swap_remove(i);
                self.outstanding_bytes -= u64::from(req.len);
            }
        }
        match self.picker.block_received(&req) {
            BlockOutcome::Unwanted => self.stats.wasted_bytes += u64::from(req.len),
            BlockOutcome::New { piece_done } => {
                if self.endgame_seen {
                    self.cancel_elsewhere(key, req);
                }
                if piece_done {
                    self.finish_piece(now, req.piece);
                }
            }
        }
    }

    /// Endgame: `req` arrived from `from`; cancel it everywhere else.
    fn cancel_elsewhere(&mut self, from: PeerKey, req: BlockRequest) {
        for k in 0..self.peers.len() as PeerKey {
            if k == from {
                continue;
            }
            let Some(p) = self.peer_mut(k) else { continue };
            if let Some(i) = p.outstanding.iter().position(|o| *o == req) {
                p.outstanding.swap_remove(i);
                p.wire.queue(&Message::Cancel(req));
                self.outstanding_bytes -= u64::from(req.len);
                self.mark_dirty(k);
            }
        }
    }

    fn finish_piece(&mut self, now: Instant, piece: u32) {
        let torrent = self.torrent.clone();
        match self
            .picker
            .finish_piece(piece, |d| torrent.verify_piece(piece, d))
        {
            PieceOutcome::Verified(data) => {
                self.stats.pieces_verified += 1;
                self.store.offer(piece, data);
                for k in 0..self.peers.len() as PeerKey {
                    let Some(p) = self.peer_mut(k) else { continue };
                    if !p.handshaken || p.closing {
                        continue;
                    }
                    p.wire.queue(&Message::Have(piece));
                    if p.has.get(piece) {
                        p.interesting = p.interesting.saturating_sub(1);
                    }
                    self.mark_lazy(k);
                    self.update_interest(k);
                }
                if self.picker.is_complete() {
                    self.completed_at = Some(now);
                    let mut changes = std::mem::take(&mut self.changes);
                    self.choker.set_seeding(now, true, &mut changes);
                    self.apply_choke_changes(&mut changes);
                    self.changes = changes;
                    for k in 0..self.peers.len() as PeerKey {
                        self.update_interest(k);
                    }
                }
            }
            PieceOutcome::Failed => self.stats.hash_failures += 1,
            PieceOutcome::NotReady => {}
        }
    }

    pub(super) fn apply_choke_changes(&mut self, changes: &mut Vec<ChokeChange>) {
        let mut dropped = std::mem::take(&mut self.scratch);
        for c in changes.drain(..) {
            let (key, choke) = match c {
                ChokeChange::Unchoke(k) => (k, false),
                ChokeChange::Choke(k) => (k, true),
            };
            let Some(p) = self.peer_mut(key) else {
                continue;
            };
            p.am_choking = choke;
            if choke {
                p.wire.queue(&Message::Choke);
                dropped.clear();
                p.wire.drain_queued_blocks(&mut dropped);
                if p.fast {
                    for r in &dropped {
                        p.wire.queue(&Message::Reject(*r));
                    }
                }
            } else {
                p.wire.queue(&Message::Unchoke);
            }
            self.mark_dirty(key);
        }
        dropped.clear();
        self.scratch = dropped;
    }

    /// Tops up the request pipelines of peers that unchoked us, starting
    /// at a rotating peer so none is always served last.
    pub(super) fn fill_requests(&mut self, now: Instant) {
        if self.is_complete() || self.peers.is_empty() {
            return;
        }
        let n = self.peers.len();
        self.rr = (self.rr + 1) % n;
        let mut picked = std::mem::take(&mut self.scratch);
        for j in 0..n {
            if self.outstanding_bytes >= self.max_outstanding_bytes {
                break;
            }
            let k = (self.rr + j) % n;
            let room_bytes = self.max_outstanding_bytes - self.outstanding_bytes;
            let Some(p) = self.peers[k].as_mut() else {
                continue;
            };
            let depth = queue_depth(p);
            if !p.handshaken
                || p.closing
                || p.peer_choking
                || !p.am_interested
                || p.outstanding.len() >= depth
                || p.snubbed_until.is_some_and(|t| now < t)
            {
                continue;
            }
            let room = (depth - p.outstanding.len())
                .min(room_bytes.div_ceil(u64::from(BLOCK_LEN)) as usize);
            picked.clear();
            let outstanding = &p.outstanding;
            self.picker.pick(
                &p.has,
                &p.suggested,
                |r| outstanding.contains(r),
                room,
                &mut picked,
            );
            if picked.is_empty() {
                continue;
            }
            if self.picker.in_endgame() {
                self.endgame_seen = true;
            }
            if p.outstanding.is_empty() {
                p.last_block = now;
            }
            for r in &picked {
                p.wire.queue(&Message::Request(*r));
                p.outstanding.push(*r);
                self.outstanding_bytes += u64::from(r.len);
            }
            self.stats.requests_sent += picked.len() as u64;
            self.mark_dirty(k as PeerKey);
        }
        picked.clear();
        self.scratch = picked;
    }
}
