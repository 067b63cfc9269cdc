//! The message side of a [`Node`]: what each received event means
//! (handshakes, haves, requests, blocks, rejects), piece completion, and
//! choosing what to request from whom.

use std::net::SocketAddr;
use std::time::Instant;

use ringseed::swarm::download::peer::RejectOutcome;
use ringseed::swarm::download::picker::{BlockOutcome, PieceOutcome, BLOCK_LEN};
use ringseed::swarm::download::tit_for_tat::ChokeChange;
use ringseed::wire::codec::{BlockRequest, Handshake, Message, MAX_BLOCK_LEN};
use ringseed::wire::ext::{encode_ext_handshake, parse_ext_handshake, OurExtHandshake};
use ringseed::wire::Bitfield;

use super::{Node, NodeResult};
use crate::swarm::wire::WireEvent;
use crate::swarm::PeerKey;

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
                if !matches!(reason, "duplicate" | "self_connection" | "banned") {
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
                let (is_target, asked) = (p.is_target, p.dl.outstanding().contains(&req));
                if is_target {
                    self.stats.bytes_from_target += n;
                } else {
                    self.stats.bytes_from_peers += n;
                }
                self.choker.record_download(key, n);
                if !asked {
                    // Unrequested (or cancelled): never let it into a piece.
                    return Ok(());
                }
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
        if self.smart_ban.is_banned(&h.peer_id) {
            return Err("banned");
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
        p.dl.fast = h.supports_fast();
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
                    ledger: None,
                },
            );
            p.wire.queue_raw(&ext);
        }
        if p.dl.fast && complete {
            p.wire.queue(&Message::HaveAll);
        } else if p.dl.fast && have.count() == 0 {
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
                let dropped = p.dl.on_choke();
                self.forget_requests(&dropped);
            }
            Message::Unchoke => {
                if let Some(p) = self.peer_mut(key) {
                    p.dl.on_unchoke(now);
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
                    if p.wire.unqueue_block(&r) && p.dl.fast {
                        p.wire.queue(&Message::Reject(r));
                        self.mark_dirty(key);
                    }
                }
            }
            Message::Reject(r) => self.on_reject(key, r),
            Message::Suggest(i) => {
                let we_have = self.picker.have(i);
                if let Some(p) = self.peer_mut(key) {
                    p.dl.on_suggest(i, we_have);
                }
            }
            Message::AllowedFast(i) => {
                if let Some(p) = self.peer_mut(key) {
                    if p.dl.fast {
                        p.dl.on_allowed_fast(i);
                    }
                }
            }
            Message::Extended { id: 0, payload } => {
                if let Ok(h) = parse_ext_handshake(payload) {
                    let pipeline = self.cfg.pipeline;
                    let Some(p) = self.peer_mut(key) else {
                        return Ok(());
                    };
                    if let Some(q) = h.reqq {
                        p.dl.set_max_depth(pipeline, q);
                    }
                    // Where an accepting peer listens: never dial it too.
                    if let (Some(port), Some(from)) = (h.listen_port, p.addr) {
                        self.forget_candidate(SocketAddr::new(from.ip(), port));
                    }
                }
            }
            // Keep-alives, port, other extensions, v2 hash
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
        let we_have = self.picker.have(piece);
        let Some(p) = self.peer_mut(key) else { return };
        if p.dl.gain(piece, we_have) {
            self.picker.add_have(piece);
            self.update_interest(key);
        }
    }

    fn replace_haves(&mut self, key: PeerKey, b: Bitfield) {
        let Some(p) = self.peers.get_mut(key as usize).and_then(Option::as_mut) else {
            return;
        };
        self.picker.add_bitfield(&b);
        let old = p.dl.replace_haves(b, &self.picker);
        self.picker.remove_bitfield(&old);
        self.update_interest(key);
    }

    fn update_interest(&mut self, key: PeerKey) {
        let complete = self.is_complete();
        let Some(p) = self.peer_mut(key) else { return };
        let want = p.dl.wants(complete);
        if want != p.dl.am_interested && p.handshaken {
            p.dl.am_interested = want;
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
            if p.dl.fast {
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
        let RejectOutcome::Dropped { refused } = p.dl.on_reject(&r, we_have) else {
            return;
        };
        self.forget_requests(&[r]);
        if refused {
            self.picker.remove_have(r.piece);
            self.update_interest(key);
        }
    }

    fn on_block_done(&mut self, now: Instant, key: PeerKey, req: BlockRequest) {
        let Some(p) = self.peer_mut(key) else { return };
        if p.dl.on_block(now, &req) {
            self.outstanding_bytes -= u64::from(req.len);
        } else {
            // Not asked of this peer: its bytes do not go into the piece.
            self.stats.unsolicited_blocks += 1;
            self.stats.wasted_bytes += u64::from(req.len);
            return;
        }
        match self.picker.block_received(&req, key) {
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
            if p.dl.cancel(&req) {
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
            PieceOutcome::Verified { data, .. } => {
                self.stats.pieces_verified += 1;
                let banned = self.smart_ban.piece_passed(piece, &data);
                self.ban(&banned);
                self.store.offer(piece, data);
                for k in 0..self.peers.len() as PeerKey {
                    let Some(p) = self.peer_mut(k) else { continue };
                    if !p.handshaken || p.closing {
                        continue;
                    }
                    p.wire.queue(&Message::Have(piece));
                    p.dl.we_got(piece);
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
            PieceOutcome::Failed(f) => {
                self.stats.hash_failures += 1;
                let peers = &self.peers;
                let banned = self.smart_ban.piece_failed(&f, |k| {
                    peers
                        .get(k as usize)
                        .and_then(Option::as_ref)
                        .map(|p| p.remote_id)
                });
                self.ban(&banned);
            }
            PieceOutcome::NotReady => {}
        }
    }

    /// Closes every connection to the peers just banned.
    fn ban(&mut self, ids: &[[u8; 20]]) {
        for id in ids {
            self.stats.peers_banned += 1;
            for k in 0..self.peers.len() as PeerKey {
                if self.peer(k).is_some_and(|p| p.remote_id == *id) {
                    self.close(k, "banned");
                }
            }
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
                if p.dl.fast {
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

    /// Tops up the request pipelines of peers that unchoked us (or allowed
    /// us pieces fast), starting at a rotating peer so none is always
    /// served last.
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
            if !p.handshaken || p.closing {
                continue;
            }
            picked.clear();
            let max = room_bytes.div_ceil(u64::from(BLOCK_LEN)) as usize;
            if p.dl.fill(now, &mut self.picker, max, &mut picked) == 0 {
                continue;
            }
            if self.picker.in_endgame() {
                self.endgame_seen = true;
            }
            for r in &picked {
                p.wire.queue(&Message::Request(*r));
                self.outstanding_bytes += u64::from(r.len);
            }
            self.stats.requests_sent += picked.len() as u64;
            self.mark_dirty(k as PeerKey);
        }
        picked.clear();
        self.scratch = picked;
    }
}
