//! The send buffer of one uTP connection: every byte written and not yet
//! acknowledged, as a queue of [`Bytes`] chunks, so that a packet's payload
//! is a list of slices into them (and a re-send re-reads the same bytes).
//!
//! Two ways in:
//! - [`SendBuf::write_copy`] copies (protocol messages, piece headers, RC4
//!   output): the bytes gather in one growing tail buffer, cut into a chunk
//!   when a packet needs them or a shared chunk follows;
//! - [`SendBuf::write_shared`] takes a [`Bytes`] as it is (a block of a
//!   torrent's mmap): no copy, the chunk holds its owner until acked.
//!
//! Memory per connection is bounded by the caller's limit on
//! [`SendBuf::len`] (bytes, shared or not) plus one small record per chunk.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Tail buffer growth step: copied bytes are cut from buffers this large.
const TAIL_CAPACITY: usize = 16 * 1024;

#[derive(Debug)]
struct Chunk {
    /// Stream offset of `bytes[0]`.
    start: u64,
    bytes: Bytes,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct SendBuf {
    chunks: VecDeque<Chunk>,
    /// Copied bytes after the last chunk, not cut into a chunk yet.
    tail: BytesMut,
    /// Stream offset of the first byte still held.
    base: u64,
    /// Stream offset after the last byte written.
    end: u64,
}

impl SendBuf {
    /// Bytes held (written, not yet released).
    pub fn len(&self) -> usize {
        (self.end - self.base) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.base
    }

    /// Stream offset after the last byte written.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Stream offset of the first byte still held.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Append a copy of `data`.
    pub fn write_copy(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.tail.capacity() - self.tail.len() < data.len() {
            self.tail.reserve(data.len().max(TAIL_CAPACITY));
        }
        self.tail.extend_from_slice(data);
        self.end += data.len() as u64;
    }

    /// Append `data` without copying it.
    pub fn write_shared(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.cut_tail();
        let start = self.end;
        self.end += data.len() as u64;
        self.chunks.push_back(Chunk { start, bytes: data });
    }

    /// The copied tail becomes a chunk (its buffer is shared from now on).
    fn cut_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let start = self.end - self.tail.len() as u64;
        let bytes = self.tail.split().freeze();
        self.chunks.push_back(Chunk { start, bytes });
    }

    /// Forget everything before stream offset `to` (acknowledged).
    pub fn release_to(&mut self, to: u64) {
        let to = to.clamp(self.base, self.end);
        self.base = to;
        while self.chunks.front().is_some_and(|c| c.end() <= to) {
            self.chunks.pop_front();
        }
        if self.chunks.is_empty() && !self.tail.is_empty() {
            // Released into the tail: drop its released head.
            let tail_start = self.end - self.tail.len() as u64;
            if to > tail_start {
                let _ = self.tail.split_to((to - tail_start) as usize);
            }
        }
    }

    /// Appends to `out` the slices of stream bytes `off .. off + len`
    /// (clamped to what is held); returns how many bytes they cover.
    pub fn gather(&mut self, off: u64, len: usize, out: &mut Vec<Bytes>) -> usize {
        let off = off.max(self.base);
        let stop = (off + len as u64).min(self.end);
        if stop <= off {
            return 0;
        }
        if stop > self.end - self.tail.len() as u64 {
            self.cut_tail();
        }
        let first = self.chunks.partition_point(|c| c.end() <= off);
        let mut at = off;
        for c in self.chunks.iter().skip(first) {
            if at >= stop {
                break;
            }
            let from = (at - c.start) as usize;
            let to = ((stop.min(c.end())) - c.start) as usize;
            out.push(c.bytes.slice(from..to));
            at = c.start + to as u64;
        }
        (at - off) as usize
    }

    /// Chunks held (shared blocks and cut copies), for tests and limits.
    pub fn chunks(&self) -> usize {
        self.chunks.len() + usize::from(!self.tail.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(b: &mut SendBuf, off: u64, len: usize) -> Vec<u8> {
        let mut parts = Vec::new();
        let n = b.gather(off, len, &mut parts);
        let flat: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(flat.len(), n);
        flat
    }

    #[test]
    fn copies_and_shared_chunks_read_back_in_order() {
        let mut b = SendBuf::default();
        let mut all = Vec::new();
        for i in 0..50u8 {
            let head = [i; 13];
            b.write_copy(&head);
            all.extend_from_slice(&head);
            let block: Vec<u8> = (0..1000u32).map(|k| (k as u8) ^ i).collect();
            all.extend_from_slice(&block);
            b.write_shared(Bytes::from(block));
        }
        b.write_copy(b"end");
        all.extend_from_slice(b"end");
        assert_eq!(b.len(), all.len());
        for (off, len) in [(0, 1400), (1400, 1400), (5, 13), (13, 2000), (49_000, 5000)] {
            let want = &all[off.min(all.len())..(off + len).min(all.len())];
            assert_eq!(collect(&mut b, off as u64, len), want, "{off}+{len}");
        }
        b.release_to(30_000);
        assert_eq!(b.base(), 30_000);
        assert_eq!(collect(&mut b, 0, 10), &all[30_000..30_010]);
        assert_eq!(collect(&mut b, 30_500, 3000), &all[30_500..33_500]);
        b.release_to(all.len() as u64);
        assert!(b.is_empty());
        assert_eq!(b.chunks(), 0);
        assert_eq!(collect(&mut b, 0, 100), Vec::<u8>::new());
    }

    #[test]
    fn release_inside_the_uncut_tail_drops_its_head() {
        let mut b = SendBuf::default();
        b.write_copy(&[1; 100]);
        b.release_to(60);
        b.write_copy(&[2; 10]);
        assert_eq!(b.len(), 50);
        let mut want = vec![1; 40];
        want.extend_from_slice(&[2; 10]);
        assert_eq!(collect(&mut b, 60, 100), want);
    }
}
