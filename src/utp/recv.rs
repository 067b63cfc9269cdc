//! The receive side of a connection: in-order delivery, the reorder buffer,
//! the selective-ACK mask and the advertised window.
//!
//! Memory is bounded by the receive window: in-order bytes the application
//! has not read plus out-of-order payload never exceed it; a packet that
//! would is dropped unacknowledged (the peer re-sends it later) and the
//! reorder buffer holds at most [`RecvBuffer::max_reorder`] packets.

use std::collections::VecDeque;

use super::packet::seq_diff;

/// What became of a received DATA packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// In order (and maybe more behind it): new bytes are readable.
    Delivered,
    /// Out of order, kept for later.
    Buffered,
    /// Already received (a re-send or a duplicate): only re-acknowledge.
    Duplicate,
    /// Too far ahead of what we have (beyond the reorder buffer).
    OutOfWindow,
    /// No room in the receive window (the application is not reading).
    NoRoom,
    /// Past the sequence number of the peer's FIN.
    AfterFin,
}

#[derive(Debug)]
pub struct RecvBuffer {
    /// Last sequence number received in order.
    ack_nr: u16,
    ready: VecDeque<u8>,
    /// Slot `i` holds packet `ack_nr + 1 + i`.
    reorder: VecDeque<Option<Vec<u8>>>,
    reorder_bytes: usize,
    window: usize,
    max_reorder: usize,
    /// Sequence number of the peer's FIN, once seen.
    fin: Option<u16>,
    /// The FIN was reached in order: no more data will come.
    eof: bool,
}

impl RecvBuffer {
    /// `ack_nr`: the last sequence number the peer used before its data
    /// (its SYN's, or our view of it). `window`: bytes buffered at most.
    pub fn new(ack_nr: u16, window: usize, max_reorder: usize) -> Self {
        Self {
            ack_nr,
            ready: VecDeque::new(),
            reorder: VecDeque::new(),
            reorder_bytes: 0,
            window,
            max_reorder: max_reorder.clamp(1, 4096),
            fin: None,
            eof: false,
        }
    }

    pub fn ack_nr(&self) -> u16 {
        self.ack_nr
    }

    /// Set the starting point (the initiator learns it from the acceptor's
    /// STATE reply). Only before any data arrived.
    pub fn set_ack_nr(&mut self, ack_nr: u16) {
        if self.ready.is_empty() && self.reorder.is_empty() {
            self.ack_nr = ack_nr;
        }
    }

    pub fn max_reorder(&self) -> usize {
        self.max_reorder
    }

    /// Bytes of room left, advertised as `wnd_size`.
    pub fn window(&self) -> u32 {
        self.window
            .saturating_sub(self.ready.len() + self.reorder_bytes)
            .min(u32::MAX as usize) as u32
    }

    /// Bytes held (readable plus out of order).
    pub fn buffered(&self) -> usize {
        self.ready.len() + self.reorder_bytes
    }

    pub fn readable(&self) -> usize {
        self.ready.len()
    }

    /// All data up to the peer's FIN has been received (and maybe not read).
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Some packet after `ack_nr` is missing while later ones are here.
    pub fn has_gaps(&self) -> bool {
        !self.reorder.is_empty()
    }

    /// Take up to `buf.len()` in-order bytes.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.ready.len());
        for (dst, src) in buf.iter_mut().zip(self.ready.drain(..n)) {
            *dst = src;
        }
        n
    }

    /// A DATA packet.
    pub fn on_data(&mut self, seq: u16, payload: &[u8]) -> Received {
        if let Some(fin) = self.fin {
            if seq_diff(seq, fin) >= 0 {
                return Received::AfterFin;
            }
        }
        let d = seq_diff(seq, self.ack_nr);
        if d <= 0 {
            return Received::Duplicate;
        }
        let i = (d - 1) as usize;
        if i >= self.max_reorder {
            return Received::OutOfWindow;
        }
        if self.reorder.get(i).is_some_and(Option::is_some) {
            return Received::Duplicate;
        }
        if payload.len() > self.window() as usize {
            return Received::NoRoom;
        }
        if i > 0 {
            if self.reorder.len() <= i {
                self.reorder.resize(i + 1, None);
            }
            self.reorder[i] = Some(payload.to_vec());
            self.reorder_bytes += payload.len();
            return Received::Buffered;
        }
        self.ready.extend(payload);
        self.ack_nr = seq;
        if !self.reorder.is_empty() {
            self.reorder.pop_front();
        }
        while let Some(Some(_)) = self.reorder.front() {
            let p = self.reorder.pop_front().flatten().unwrap_or_default();
            self.reorder_bytes -= p.len();
            self.ready.extend(&p);
            self.ack_nr = self.ack_nr.wrapping_add(1);
        }
        self.check_fin();
        Received::Delivered
    }

    /// A FIN with sequence number `seq`. Returns false if it contradicts an
    /// earlier FIN (ignored).
    pub fn on_fin(&mut self, seq: u16) -> bool {
        match self.fin {
            Some(f) if f != seq => false,
            _ => {
                if seq_diff(seq, self.ack_nr) <= 0 && !self.eof {
                    // A FIN for something we already acked past: bogus.
                    return false;
                }
                self.fin = Some(seq);
                // Nothing may be buffered at or past the FIN.
                let keep = seq_diff(seq, self.ack_nr).max(1) as usize - 1;
                while self.reorder.len() > keep {
                    if let Some(Some(p)) = self.reorder.pop_back() {
                        self.reorder_bytes -= p.len();
                    }
                }
                self.check_fin();
                true
            }
        }
    }

    fn check_fin(&mut self) {
        if let Some(f) = self.fin {
            if !self.eof && self.ack_nr.wrapping_add(1) == f {
                self.ack_nr = f;
                self.eof = true;
            }
        }
    }

    /// The selective-ACK mask (bit `i` = packet `ack_nr + 2 + i`), in
    /// multiples of 4 bytes, into `out`; empty when nothing is out of order.
    pub fn sack<'a>(&self, out: &'a mut [u8; 32]) -> &'a [u8] {
        // reorder[0] is ack_nr + 1 (missing by definition); bits start at 1.
        let bits = self.reorder.len().saturating_sub(1).min(out.len() * 8);
        if bits == 0 {
            return &out[..0];
        }
        out.fill(0);
        for i in 0..bits {
            if self.reorder[i + 1].is_some() {
                out[i / 8] |= 1 << (i % 8);
            }
        }
        let len = bits.div_ceil(32) * 4;
        &out[..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_in_order_across_the_wrap() {
        let mut r = RecvBuffer::new(65534, 1 << 20, 64);
        assert_eq!(r.on_data(1, b"c"), Received::Buffered);
        assert_eq!(r.on_data(65535, b"a"), Received::Delivered);
        assert_eq!(r.readable(), 1);
        assert_eq!(r.on_data(0, b"b"), Received::Delivered);
        assert_eq!(r.ack_nr(), 1);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf), 3);
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(r.on_data(0, b"b"), Received::Duplicate);
    }

    #[test]
    fn sack_marks_what_arrived_past_the_gap() {
        let mut r = RecvBuffer::new(10, 1 << 20, 64);
        // 11 missing; 12, 14 and 45 here.
        for s in [12, 14, 45] {
            assert_eq!(r.on_data(s, b"x"), Received::Buffered);
        }
        let mut out = [0u8; 32];
        let m = r.sack(&mut out).to_vec();
        assert_eq!(m.len(), 8);
        // bit 0 = 12, bit 2 = 14, bit 33 = 45
        assert_eq!(m[0], 0b101);
        assert_eq!(m[4], 0b10);
    }

    #[test]
    fn window_bounds_memory_and_reorder_depth() {
        let mut r = RecvBuffer::new(0, 3000, 8);
        assert_eq!(r.on_data(9, &[0; 10]), Received::OutOfWindow);
        assert_eq!(r.on_data(1, &[0; 1400]), Received::Delivered);
        assert_eq!(r.on_data(2, &[0; 1400]), Received::Delivered);
        assert_eq!(r.on_data(3, &[0; 1400]), Received::NoRoom);
        assert_eq!(r.window(), 200);
        let mut buf = [0u8; 4096];
        r.read(&mut buf);
        assert_eq!(r.on_data(3, &[0; 1400]), Received::Delivered);
    }

    #[test]
    fn fin_ends_the_stream_once_everything_before_it_is_in() {
        let mut r = RecvBuffer::new(0, 1 << 20, 64);
        assert!(r.on_fin(3));
        assert!(!r.is_eof());
        assert_eq!(r.on_data(2, b"b"), Received::Buffered);
        assert_eq!(r.on_data(4, b"z"), Received::AfterFin);
        assert_eq!(r.on_data(1, b"a"), Received::Delivered);
        assert!(r.is_eof());
        assert_eq!(r.ack_nr(), 3);
        assert!(!r.on_fin(7), "a second, different FIN is ignored");
    }
}
