//! One uTP connection as a state machine: packets and the clock in,
//! packets and bytes out. No sockets, no clock of its own.
//!
//! Call order (like quinn-proto's `Connection`):
//! 1. make it with [`Connection::connect`] (we send the SYN) or
//!    [`Connection::accept`] (the peer's SYN arrived);
//! 2. feed every datagram for it to [`Connection::handle`], and call
//!    [`Connection::handle_timeout`] when [`Connection::poll_timeout`] is due;
//! 3. after either, drain [`Connection::poll_transmit`] until `None` and
//!    send what it writes;
//! 4. the application side: [`Connection::write`] (copied into the bounded
//!    send buffer) or [`Connection::write_shared`] (a [`Bytes`] taken as it
//!    is, e.g. a block of a file's mmap), [`Connection::read`],
//!    [`Connection::close`] (a FIN once everything written is sent);
//! 5. drop it once [`Connection::is_closed`].
//!
//! Sequence and ack numbers count packets (16 bits, wrapping). The send
//! buffer ([`SendBuf`]) holds each byte until it is acknowledged, and a
//! packet is a `(stream offset, length)` into it, so a re-send re-reads the
//! same bytes (BEP 29: packets are never repackaged).
//! [`Connection::poll_transmit_parts`] gives a datagram as its header plus
//! slices of that buffer (for a `sendmsg` iovec: shared bytes are never
//! copied in user space); [`Connection::poll_transmit`] copies them into
//! one buffer. Memory per connection is
//! bounded by [`Config::send_buffer`] + [`Config::recv_window`] plus one
//! small record per packet in flight.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use super::config::{CloseReason, Config, Counters, Ignored, State};
use super::congestion::{Ledbat, Rtt};
use super::packet::{self, seq_diff, seq_less, Header, Packet, PacketType, HEADER_LEN};
use super::recv::{Received, RecvBuffer};
use super::sendbuf::SendBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Syn,
    Data,
    Fin,
}

/// A packet sent and not yet cumulatively acknowledged.
#[derive(Clone, Copy, Debug)]
struct Sent {
    kind: Kind,
    /// Stream offset and length of its payload in the send buffer.
    off: u64,
    len: u32,
    sent_at: Instant,
    transmissions: u32,
    /// Acknowledged by a selective ACK.
    sacked: bool,
    /// Counted in `in_flight` (not acked, not waiting to be re-sent).
    in_flight: bool,
}

impl Sent {
    fn size(&self) -> u32 {
        self.len + HEADER_LEN as u32
    }
}

/// One uTP connection.
#[derive(Debug)]
pub struct Connection {
    cfg: Config,
    state: State,
    reason: Option<CloseReason>,
    epoch: Instant,
    recv_id: u16,
    send_id: u16,
    /// Sequence number of the next new packet.
    seq_nr: u16,
    /// Last sequence number the peer acknowledged cumulatively.
    acked_nr: u16,
    /// Unacknowledged bytes from stream offset `send_buf.base()` on.
    send_buf: SendBuf,
    /// Stream offset of the first byte not yet sent.
    unsent: u64,
    /// Packets `acked_nr + 1 ..`, in order.
    sent: VecDeque<Sent>,
    /// Sequence numbers waiting to be re-sent, oldest first.
    resend: VecDeque<u16>,
    in_flight: u32,
    peer_wnd: u32,
    close_requested: bool,
    fin_seq: Option<u16>,
    fin_acked: bool,
    dup_acks: u32,
    /// No new loss halving until acks pass this sequence number.
    loss_seq: u16,
    ledbat: Ledbat,
    rtt: Rtt,
    /// Our delay sample of the peer's packets, echoed in every header.
    reply_micro: u32,
    recv: RecvBuffer,
    ack_needed: bool,
    /// Window advertised in our last packet.
    advertised: u32,
    /// The peer sent something besides its SYN (not half-open any more).
    established: bool,
    /// We sent the SYN.
    initiator: bool,
    /// Both FINs are through: answer re-sent FINs until this passes.
    linger_until: Option<Instant>,
    rto_deadline: Option<Instant>,
    last_recv: Instant,
    last_send: Instant,
    counters: Counters,
    /// Reused by [`Connection::poll_transmit`] for its parts.
    scratch: Vec<Bytes>,
}

impl Connection {
    fn new(now: Instant, cfg: Config, recv_id: u16, send_id: u16, seq_nr: u16) -> Self {
        let max_reorder = (cfg.recv_window as usize / cfg.max_payload.max(1)).clamp(16, 4096);
        Self {
            state: State::Connected,
            reason: None,
            epoch: now,
            recv_id,
            send_id,
            seq_nr,
            acked_nr: seq_nr.wrapping_sub(1),
            send_buf: SendBuf::default(),
            unsent: 0,
            sent: VecDeque::new(),
            resend: VecDeque::new(),
            in_flight: 0,
            peer_wnd: cfg.max_payload as u32 * 4,
            close_requested: false,
            fin_seq: None,
            fin_acked: false,
            dup_acks: 0,
            loss_seq: seq_nr.wrapping_sub(1),
            ledbat: Ledbat::new(cfg.ledbat),
            rtt: Rtt::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto),
            reply_micro: 0,
            recv: RecvBuffer::new(0, cfg.recv_window as usize, max_reorder),
            ack_needed: false,
            advertised: cfg.recv_window,
            established: false,
            initiator: false,
            linger_until: None,
            rto_deadline: None,
            last_recv: now,
            last_send: now,
            counters: Counters::default(),
            scratch: Vec::new(),
            cfg,
        }
    }

    /// Open a connection: the SYN goes out with the next
    /// [`Connection::poll_transmit`]. `recv_id` is the id the peer will
    /// send to (pick it at random, unused on this socket for this peer).
    pub fn connect(now: Instant, cfg: Config, recv_id: u16) -> Self {
        let mut c = Self::new(now, cfg, recv_id, recv_id.wrapping_add(1), 1);
        c.state = State::SynSent;
        c.initiator = true;
        c.sent.push_back(Sent {
            kind: Kind::Syn,
            off: 0,
            len: 0,
            sent_at: now,
            transmissions: 0,
            sacked: false,
            in_flight: false,
        });
        c.resend.push_back(1);
        c.seq_nr = 2;
        c
    }

    /// Accept the connection a SYN asks for; the STATE answering it goes
    /// out with the next [`Connection::poll_transmit`]. `seq_nr` is our
    /// first sequence number (pick it at random).
    pub fn accept(now: Instant, cfg: Config, syn: &Header, seq_nr: u16) -> Self {
        let mut c = Self::new(
            now,
            cfg,
            syn.connection_id.wrapping_add(1),
            syn.connection_id,
            seq_nr,
        );
        c.recv.set_ack_nr(syn.seq_nr);
        c.peer_wnd = syn.wnd_size;
        c.note_timestamp(now, syn.timestamp_us);
        c.ack_needed = true;
        c
    }

    // ---- queries ---------------------------------------------------------

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.reason
    }

    /// The id packets to us carry (the SYN carries `recv_id - 1` for an
    /// accepted connection).
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    pub fn send_id(&self) -> u16 {
        self.send_id
    }

    /// The sequence number our next new packet gets.
    pub fn next_seq(&self) -> u16 {
        self.seq_nr
    }

    /// We sent the SYN.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// The peer has sent more than its SYN (not half-open).
    pub fn is_established(&self) -> bool {
        self.established
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Congestion window, bytes.
    pub fn window(&self) -> u32 {
        self.ledbat.window()
    }

    /// LEDBAT's latest queueing-delay estimate for our packets.
    pub fn queue_delay(&self) -> Duration {
        self.ledbat.queue_delay()
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    /// Bytes written and not yet acknowledged.
    pub fn send_buffered(&self) -> usize {
        self.send_buf.len()
    }

    /// Stream offset after the last byte written (bytes written so far).
    pub fn written(&self) -> u64 {
        self.send_buf.end()
    }

    /// Stream offset up to which the peer acknowledged everything (the
    /// send buffer no longer holds those bytes).
    pub fn acked(&self) -> u64 {
        self.send_buf.base()
    }

    /// Bytes [`Connection::write`] would take now.
    pub fn send_capacity(&self) -> usize {
        if self.close_requested || self.is_closed() {
            return 0;
        }
        self.cfg.send_buffer.saturating_sub(self.send_buf.len())
    }

    /// Received bytes waiting for [`Connection::read`].
    pub fn readable(&self) -> usize {
        self.recv.readable()
    }

    /// The peer finished its stream and everything was read.
    pub fn is_eof(&self) -> bool {
        self.recv.is_eof() && self.recv.readable() == 0
    }

    /// Bytes this connection holds in its buffers now.
    pub fn buffered_bytes(&self) -> usize {
        self.send_buf.len() + self.recv.buffered()
    }

    // ---- application side -------------------------------------------------

    /// Queue bytes to send; returns how many were taken (bounded by
    /// [`Config::send_buffer`]; none after [`Connection::close`]).
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.send_capacity());
        self.send_buf.write_copy(&data[..n]);
        n
    }

    /// Queue `data` without copying it (the send buffer holds it until the
    /// peer acknowledges it, and re-sends read it again); returns how many
    /// bytes were taken, like [`Connection::write`].
    pub fn write_shared(&mut self, data: Bytes) -> usize {
        let n = data.len().min(self.send_capacity());
        if n == data.len() {
            self.send_buf.write_shared(data);
        } else if n > 0 {
            self.send_buf.write_shared(data.slice(..n));
        }
        n
    }

    /// Take received in-order bytes.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = self.recv.read(buf);
        // Tell a peer that saw (almost) no room that there is some again.
        let room = self.recv.window();
        if n > 0 && self.advertised < self.cfg.max_payload as u32 && room > self.advertised {
            self.ack_needed = true;
        }
        n
    }

    /// Finish our stream: a FIN follows the last byte written.
    pub fn close(&mut self) {
        self.close_requested = true;
    }

    /// Forget the connection at once (no FIN; the peer learns by reset or
    /// timeout).
    pub fn abort(&mut self) {
        self.finish(CloseReason::Aborted);
    }

    fn finish(&mut self, reason: CloseReason) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.reason = Some(reason);
            self.rto_deadline = None;
        }
    }

    fn drop_packet(&mut self, d: Ignored) {
        self.counters.dropped[d.index()] += 1;
    }

    fn now_us(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_micros() as u32
    }

    fn note_timestamp(&mut self, now: Instant, their_us: u32) {
        if their_us != 0 {
            // Our clock starts at 0; keep it non-zero so the sample counts.
            let ours = self.now_us(now).wrapping_add(1);
            self.reply_micro = ours.wrapping_sub(their_us);
        }
    }

    // ---- input ------------------------------------------------------------

    /// One datagram for this connection.
    pub fn handle(&mut self, now: Instant, p: &Packet<'_>) {
        let h = &p.header;
        self.counters.packets_in += 1;
        if self.is_closed() {
            self.drop_packet(Ignored::Closed);
            return;
        }
        if h.ty == PacketType::Syn {
            // A re-sent SYN for an accepted connection: answer again.
            if h.connection_id == self.send_id && !self.initiator && !self.established {
                self.ack_needed = true;
            } else {
                self.drop_packet(Ignored::UnexpectedSyn);
            }
            return;
        }
        if h.connection_id != self.recv_id {
            self.drop_packet(Ignored::WrongConnId);
            return;
        }
        // The last sequence number we sent; an ack beyond it is forged or
        // broken, and so is the whole packet.
        let last_sent = self.seq_nr.wrapping_sub(1);
        if seq_less(last_sent, h.ack_nr) {
            self.drop_packet(Ignored::AckUnsent);
            return;
        }
        if h.ty == PacketType::Reset {
            self.finish(CloseReason::Reset);
            return;
        }
        self.established = true;
        self.last_recv = now;
        self.note_timestamp(now, h.timestamp_us);
        self.peer_wnd = h.wnd_size;
        if self.state == State::SynSent && h.ack_nr == 1 {
            // The answer to our SYN: the acceptor's first DATA carries the
            // seq_nr of its STATE (or is this very packet).
            self.recv.set_ack_nr(h.seq_nr.wrapping_sub(1));
            self.state = State::Connected;
        }
        if self.state == State::SynSent {
            // Anything else before the STATE means nothing yet.
            return;
        }
        self.on_acks(now, h, p.sack.map(|s| s.mask));
        match h.ty {
            PacketType::Data if p.payload.is_empty() => self.drop_packet(Ignored::EmptyData),
            PacketType::Data => {
                match self.recv.on_data(h.seq_nr, p.payload) {
                    Received::Delivered | Received::Buffered => {}
                    Received::Duplicate => self.drop_packet(Ignored::Duplicate),
                    Received::OutOfWindow => self.drop_packet(Ignored::OutOfWindow),
                    Received::NoRoom => self.drop_packet(Ignored::NoRoom),
                    Received::AfterFin => self.drop_packet(Ignored::AfterFin),
                }
                self.ack_needed = true;
            }
            PacketType::Fin => {
                if !self.recv.on_fin(h.seq_nr) {
                    self.drop_packet(Ignored::AfterFin);
                }
                self.ack_needed = true;
            }
            _ => {}
        }
        self.check_done(now);
    }

    fn on_acks(&mut self, now: Instant, h: &Header, sack: Option<&[u8]>) {
        let in_flight_before = self.in_flight;
        let mut acked_bytes = 0u32;
        let mut progress = false;
        if seq_less(self.acked_nr, h.ack_nr) {
            while let Some(front) = self.sent.front().copied() {
                let seq = self.acked_nr.wrapping_add(1);
                if seq_less(h.ack_nr, seq) {
                    break;
                }
                self.sent.pop_front();
                self.acked_nr = seq;
                if !front.sacked {
                    acked_bytes += front.size();
                    if front.transmissions == 1 {
                        self.rtt
                            .sample(now.saturating_duration_since(front.sent_at));
                    }
                }
                if front.in_flight {
                    self.in_flight = self.in_flight.saturating_sub(front.size());
                }
                if front.kind == Kind::Fin {
                    self.fin_acked = true;
                }
            }
            // Anything before the acked point no longer needs re-sending.
            let acked = self.acked_nr;
            self.resend.retain(|s| seq_less(acked, *s));
            let keep_from = self.sent.front().map_or(self.unsent, |s| s.off);
            self.send_buf.release_to(keep_from);
            self.dup_acks = 0;
            progress = true;
        } else if h.ack_nr == self.acked_nr && h.ty == PacketType::State && !self.sent.is_empty() {
            self.dup_acks += 1;
        }
        if let Some(mask) = sack {
            let base = h.ack_nr.wrapping_add(2);
            for i in 0..mask.len() * 8 {
                if mask[i / 8] & (1 << (i % 8)) == 0 {
                    continue;
                }
                let seq = base.wrapping_add(i as u16);
                let Some(idx) = self.index_of(seq) else {
                    continue;
                };
                let s = &mut self.sent[idx];
                if s.sacked || s.transmissions == 0 {
                    continue;
                }
                s.sacked = true;
                acked_bytes += s.size();
                if s.transmissions == 1 {
                    let at = s.sent_at;
                    self.rtt.sample(now.saturating_duration_since(at));
                }
                let s = &mut self.sent[idx];
                if s.in_flight {
                    s.in_flight = false;
                    self.in_flight = self.in_flight.saturating_sub(s.size());
                }
                progress = true;
            }
            self.detect_sack_loss(now);
        }
        if self.dup_acks >= 3 {
            self.dup_acks = 0;
            // Once per packet: a re-sent one is left to the timeout.
            if let Some(seq) = self.first_unacked() {
                let first_try = self
                    .index_of(seq)
                    .is_some_and(|i| self.sent[i].transmissions == 1 && self.sent[i].in_flight);
                if first_try {
                    self.lose(seq);
                    self.counters.fast_retransmits += 1;
                }
            }
        }
        if acked_bytes > 0 {
            self.ledbat
                .on_ack(now, acked_bytes, h.timestamp_diff_us, in_flight_before);
        }
        if progress {
            self.rtt.reset_backoff();
            self.rto_deadline = self.has_outstanding().then(|| now + self.rtt.rto());
        }
    }

    /// A packet with 3 or more selectively acknowledged packets after it
    /// is lost (BEP 29 "packet loss").
    fn detect_sack_loss(&mut self, _now: Instant) {
        let mut lost = Vec::new();
        for i in 0..self.sent.len() {
            let s = self.sent[i];
            if s.sacked || !s.in_flight {
                continue;
            }
            // Packets acknowledged past it that were sent after it (a
            // re-sent packet is not lost again by the same old acks).
            let later = self
                .sent
                .iter()
                .skip(i + 1)
                .filter(|l| l.sacked && l.sent_at >= s.sent_at)
                .take(3)
                .count();
            if later >= 3 {
                lost.push(self.acked_nr.wrapping_add(1).wrapping_add(i as u16));
            }
        }
        for seq in lost.into_iter().rev() {
            self.lose(seq);
            self.counters.fast_retransmits += 1;
        }
    }

    /// Mark `seq` lost: queue it for re-sending, shrink the window once
    /// per round of losses.
    fn lose(&mut self, seq: u16) {
        let Some(idx) = self.index_of(seq) else {
            return;
        };
        let s = &mut self.sent[idx];
        if s.in_flight {
            s.in_flight = false;
            self.in_flight = self.in_flight.saturating_sub(s.size());
        }
        if !self.resend.contains(&seq) {
            self.resend.push_back(seq);
        }
        if seq_less(self.loss_seq, seq) {
            self.ledbat.on_loss();
            self.loss_seq = self.seq_nr.wrapping_sub(1);
        }
    }

    fn index_of(&self, seq: u16) -> Option<usize> {
        let d = seq_diff(seq, self.acked_nr.wrapping_add(1));
        (d >= 0 && (d as usize) < self.sent.len()).then_some(d as usize)
    }

    fn first_unacked(&self) -> Option<u16> {
        self.sent
            .iter()
            .position(|s| !s.sacked)
            .map(|i| self.acked_nr.wrapping_add(1).wrapping_add(i as u16))
    }

    fn has_outstanding(&self) -> bool {
        self.sent.iter().any(|s| !s.sacked)
    }

    fn check_done(&mut self, now: Instant) {
        if self.fin_acked && self.recv.is_eof() && self.linger_until.is_none() {
            // Stay a little to acknowledge the peer's FIN again should our
            // ACK of it be lost.
            self.linger_until = Some(now + self.rtt.rto() * 2);
            self.rto_deadline = None;
        }
    }

    // ---- timers -----------------------------------------------------------

    /// When [`Connection::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let idle = self.last_recv + self.cfg.idle_timeout;
        let keepalive =
            (self.state == State::Connected).then(|| self.last_send + self.cfg.keepalive);
        [Some(idle), keepalive, self.rto_deadline, self.linger_until]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if self.linger_until.is_some_and(|t| now >= t) {
            self.finish(CloseReason::Done);
            return;
        }
        if now >= self.last_recv + self.cfg.idle_timeout {
            self.finish(CloseReason::Timeout);
            return;
        }
        if now >= self.last_send + self.cfg.keepalive && self.state == State::Connected {
            self.ack_needed = true;
        }
        let Some(deadline) = self.rto_deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        if !self.has_outstanding() {
            self.rto_deadline = None;
            return;
        }
        self.counters.timeouts += 1;
        self.rtt.on_timeout();
        if self.rtt.timeouts() > self.cfg.max_timeouts {
            let reason = if self.state == State::SynSent {
                CloseReason::ConnectTimeout
            } else if self.peer_wnd < HEADER_LEN as u32 {
                CloseReason::ZeroWindow
            } else {
                CloseReason::Timeout
            };
            self.finish(reason);
            return;
        }
        self.ledbat.on_timeout(self.packet_size());
        // Everything outstanding goes again, oldest first, as the (now one
        // packet) window allows.
        self.resend.clear();
        self.in_flight = 0;
        let first = self.acked_nr.wrapping_add(1);
        for (i, s) in self.sent.iter_mut().enumerate() {
            s.in_flight = false;
            if !s.sacked {
                self.resend.push_back(first.wrapping_add(i as u16));
            }
        }
        self.loss_seq = self.seq_nr.wrapping_sub(1);
        self.rto_deadline = Some(now + self.rtt.rto());
    }

    fn packet_size(&self) -> u32 {
        (self.cfg.max_payload + HEADER_LEN) as u32
    }

    // ---- output -----------------------------------------------------------

    /// Whether a packet of `size` bytes may go now: within the congestion
    /// and the peer's windows, or the only one in flight (a probe, so a
    /// zero window cannot stall us forever).
    fn may_send(&self, size: u32) -> bool {
        if self.in_flight == 0 {
            return true;
        }
        let window = self.ledbat.window().min(self.peer_wnd);
        self.in_flight + size <= window
    }

    /// The next datagram to send, written into `out` (at least
    /// [`Config::max_packet`] bytes); `None` when there is nothing to send.
    /// Copies the payload; see [`Connection::poll_transmit_parts`].
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        if out.len() < self.cfg.max_packet() {
            return None;
        }
        let mut parts = std::mem::take(&mut self.scratch);
        parts.clear();
        let header = self.poll_transmit_parts(now, out, &mut parts);
        let mut n = header.unwrap_or(0);
        for p in parts.drain(..) {
            out[n..n + p.len()].copy_from_slice(&p);
            n += p.len();
        }
        self.scratch = parts;
        header.map(|_| n)
    }

    /// The next datagram to send without copying its payload: its header is
    /// written into `header` (at least [`Config::max_header`] bytes) and its
    /// length returned; its payload is the slices appended to `parts` (at
    /// most [`Config::max_payload`] bytes in all), in order. `None` when
    /// there is nothing to send (`parts` untouched).
    pub fn poll_transmit_parts(
        &mut self,
        now: Instant,
        header: &mut [u8],
        parts: &mut Vec<Bytes>,
    ) -> Option<usize> {
        let out = header;
        if self.is_closed() || out.len() < self.cfg.max_header() {
            return None;
        }
        // 1. Re-sends (the SYN's first sending included).
        while let Some(&seq) = self.resend.front() {
            let Some(idx) = self.index_of(seq) else {
                self.resend.pop_front();
                continue;
            };
            let s = self.sent[idx];
            if s.sacked {
                self.resend.pop_front();
                continue;
            }
            if !self.may_send(s.size()) {
                break;
            }
            self.resend.pop_front();
            let n = self.write_packet(now, seq, s.kind, s.off, s.len, out, parts);
            let s = &mut self.sent[idx];
            if s.transmissions > 0 {
                self.counters.retransmits += 1;
            }
            s.transmissions += 1;
            s.sent_at = now;
            s.in_flight = true;
            self.in_flight += s.size();
            self.arm_rto(now);
            return Some(n);
        }
        if self.state == State::Connected && self.sent.len() < self.cfg.max_in_flight_packets {
            // 2. New data.
            let pending = (self.send_buf.end() - self.unsent) as usize;
            if pending > 0 && self.resend.is_empty() {
                let len = pending.min(self.cfg.max_payload) as u32;
                if self.may_send(len + HEADER_LEN as u32) {
                    return Some(self.send_new(now, Kind::Data, len, out, parts));
                }
            }
            // 3. Our FIN, after the last byte.
            if pending == 0
                && self.resend.is_empty()
                && self.close_requested
                && self.fin_seq.is_none()
                && self.may_send(HEADER_LEN as u32)
            {
                return Some(self.send_new(now, Kind::Fin, 0, out, parts));
            }
        }
        // 4. A bare ACK (also the acceptor's answer to the SYN, and the
        // keep-alive).
        if self.ack_needed && self.state == State::Connected {
            let seq = self.seq_nr;
            return Some(self.write_header(now, PacketType::State, seq, out));
        }
        None
    }

    fn send_new(
        &mut self,
        now: Instant,
        kind: Kind,
        len: u32,
        out: &mut [u8],
        parts: &mut Vec<Bytes>,
    ) -> usize {
        let seq = self.seq_nr;
        self.seq_nr = self.seq_nr.wrapping_add(1);
        let off = self.unsent;
        self.unsent += u64::from(len);
        if kind == Kind::Fin {
            self.fin_seq = Some(seq);
        }
        let s = Sent {
            kind,
            off,
            len,
            sent_at: now,
            transmissions: 1,
            sacked: false,
            in_flight: true,
        };
        self.in_flight += s.size();
        self.sent.push_back(s);
        self.arm_rto(now);
        self.write_packet(now, seq, kind, off, len, out, parts)
    }

    fn arm_rto(&mut self, now: Instant) {
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + self.rtt.rto());
        }
    }

    /// Writes the header of packet `seq` into `out` and appends its
    /// payload (stream bytes `off .. off + len`) to `parts`; returns the
    /// header's length.
    #[allow(clippy::too_many_arguments)]
    fn write_packet(
        &mut self,
        now: Instant,
        seq: u16,
        kind: Kind,
        off: u64,
        len: u32,
        out: &mut [u8],
        parts: &mut Vec<Bytes>,
    ) -> usize {
        let ty = match kind {
            Kind::Syn => PacketType::Syn,
            Kind::Data => PacketType::Data,
            Kind::Fin => PacketType::Fin,
        };
        let n = self.write_header(now, ty, seq, out);
        let before = parts.len();
        let got = self.send_buf.gather(off, len as usize, parts);
        if got != len as usize {
            // Unreachable by the invariants (a packet's bytes stay until it
            // is acked); never panic on them: send the header alone.
            debug_assert!(false, "packet bytes outside the send buffer");
            parts.truncate(before);
        }
        n
    }

    fn write_header(&mut self, now: Instant, ty: PacketType, seq: u16, out: &mut [u8]) -> usize {
        let syn = ty == PacketType::Syn;
        let wnd = self.recv.window();
        let h = Header {
            ty,
            // A SYN names the id we receive on; everything else the peer's.
            connection_id: if syn { self.recv_id } else { self.send_id },
            timestamp_us: self.now_us(now).wrapping_add(1),
            timestamp_diff_us: self.reply_micro,
            wnd_size: wnd,
            seq_nr: seq,
            ack_nr: if syn { 0 } else { self.recv.ack_nr() },
        };
        let mut mask = [0u8; 32];
        let sack = if syn || !self.recv.has_gaps() {
            None
        } else {
            Some(self.recv.sack(&mut mask))
        };
        let n = packet::encode(&h, sack, out).unwrap_or(0);
        self.advertised = wnd;
        self.ack_needed = false;
        self.last_send = now;
        self.counters.packets_out += 1;
        n
    }
}
