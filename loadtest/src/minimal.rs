//! What the two baseline seeders `compare` measures against share: the
//! io_uring [`crate::ceiling`] and the [`crate::epollseed`] seeder.
//!
//! Both are "protocol-less": they answer any 68-byte handshake with a fixed
//! handshake + have_all + unchoke, then answer each 17-byte request with
//! the block from one mmap; every other message is skipped by its length
//! prefix. No validation beyond bounds, no choking, no state. They serve
//! single-file torrents only (one mmap, piece space == file).
//!
//! [`Batch`] is the send side: up to [`BATCH`] blocks as
//! [13-byte header, mmap slice] iovec pairs, preceded by pending control
//! bytes, advanced in place after a partial send. Its iovecs point into
//! itself, into [`MinimalPeer::ctl`] and into the mmap: the owner keeps both
//! structs at a fixed address (a `Box`) while a send may use them.

use std::collections::VecDeque;
use std::path::Path;

use anyhow::{bail, Context};
use ringseed::wire::codec::{
    piece_header, Handshake, Message, ReservedFlags, HANDSHAKE_LEN, MAX_BLOCK_LEN, PIECE_HEADER_LEN,
};

use crate::torrents::LoadTorrent;

/// The command line of both baseline seeders.
#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    #[arg(long)]
    pub torrent: std::path::PathBuf,
    /// The torrent's single file (or a directory containing it).
    #[arg(long)]
    pub data: std::path::PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
}

/// Blocks per send.
pub const BATCH: usize = 16;
/// Receive buffer per connection: requests are 17 bytes, so this holds ~960.
pub const RBUF: usize = 16 * 1024;

/// A single-file torrent's content, mapped, and the fixed reply to a handshake.
pub struct Content {
    pub map: memmap2::Mmap,
    pub piece_length: u32,
    pub reply: Vec<u8>,
}

impl Content {
    /// Maps `data` (the file, or a directory holding it) for `torrent`.
    pub fn open(torrent: &Path, data: &Path, peer_id: [u8; 20]) -> anyhow::Result<Content> {
        let t = LoadTorrent::load(torrent)?;
        if t.torrent.files.len() != 1 || t.torrent.files[0].length != t.piece_space_len {
            bail!(
                "the baseline seeders serve single-file torrents only; {} has {} files",
                t.name,
                t.torrent.files.len()
            );
        }
        let path = if data.is_dir() {
            data.join(&t.name)
        } else {
            data.to_path_buf()
        };
        let file =
            std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        // SAFETY: read-only map of a file we do not modify; if another
        // process truncates it we may fault, which a benchmark run accepts.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mmap {}", path.display()))?;
        if map.len() as u64 != t.piece_space_len {
            bail!(
                "{} is {} bytes, the torrent says {}",
                path.display(),
                map.len(),
                t.piece_space_len
            );
        }
        let mut reply = Handshake {
            reserved: ReservedFlags {
                fast: true,
                extension: false,
                v2: false,
                dht: false,
            }
            .to_bytes(),
            info_hash: t.handshake_hash,
            peer_id,
        }
        .encode()
        .to_vec();
        Message::HaveAll.encode(&mut reply);
        Message::Unchoke.encode(&mut reply);
        Ok(Content {
            map,
            piece_length: t.piece_length,
            reply,
        })
    }

    /// The bytes of block (piece, begin, len), if it is in bounds.
    fn block(&self, piece: u32, begin: u32, len: u32) -> Option<&[u8]> {
        let off = u64::from(piece) * u64::from(self.piece_length) + u64::from(begin);
        usize::try_from(off)
            .ok()
            .and_then(|o| self.map.get(o..o.checked_add(len as usize)?))
            .filter(|_| len <= MAX_BLOCK_LEN && len > 0)
    }
}

/// The receive side of one connection: bytes in, requests out.
pub struct MinimalPeer {
    pub rbuf: [u8; RBUF],
    pub rlen: usize,
    handshaken: bool,
    requests: VecDeque<(u32, u32, u32)>,
    /// Control bytes to send before the next blocks (the handshake reply).
    ctl: Vec<u8>,
}

impl MinimalPeer {
    pub fn new() -> MinimalPeer {
        MinimalPeer {
            rbuf: [0; RBUF],
            rlen: 0,
            handshaken: false,
            requests: VecDeque::new(),
            ctl: Vec::new(),
        }
    }

    /// Parses the whole messages at the front of `rbuf[..rlen]`; false: close
    /// (a message longer than the buffer).
    pub fn parse(&mut self, reply: &[u8]) -> bool {
        let mut pos = 0;
        if !self.handshaken {
            if self.rlen < HANDSHAKE_LEN {
                return true;
            }
            pos = HANDSHAKE_LEN;
            self.handshaken = true;
            self.ctl.extend_from_slice(reply);
        }
        while self.rlen - pos >= 4 {
            let b = &self.rbuf[pos..self.rlen];
            let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if len + 4 > RBUF {
                return false;
            }
            if b.len() < 4 + len {
                break;
            }
            if len == 13 && b[4] == 6 {
                let r = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                self.requests.push_back((r(5), r(9), r(13)));
            }
            pos += 4 + len;
        }
        self.rbuf.copy_within(pos..self.rlen, 0);
        self.rlen -= pos;
        true
    }
}

impl Default for MinimalPeer {
    fn default() -> Self {
        Self::new()
    }
}

/// The send side of one connection: one batch of iovecs at a time.
pub struct Batch {
    headers: [[u8; PIECE_HEADER_LEN]; BATCH],
    pub iov: [libc::iovec; BATCH * 2 + 1],
    pub start: usize,
    pub len: usize,
    /// Control bytes the current batch carries.
    ctl: usize,
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            headers: [[0; PIECE_HEADER_LEN]; BATCH],
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH * 2 + 1],
            start: 0,
            len: 0,
            ctl: 0,
        }
    }

    /// The iovecs still to send: `iov[start..len]`.
    pub fn pending(&self) -> bool {
        self.start < self.len
    }

    /// When the previous batch is fully sent, builds the next one from the
    /// peer's control bytes and queued requests; false: nothing to send.
    pub fn fill(&mut self, peer: &mut MinimalPeer, content: &Content) -> bool {
        if self.pending() {
            return true;
        }
        let mut n = 0;
        self.ctl = peer.ctl.len();
        if !peer.ctl.is_empty() {
            self.iov[n] = libc::iovec {
                iov_base: peer.ctl.as_mut_ptr().cast(),
                iov_len: peer.ctl.len(),
            };
            n += 1;
        }
        let mut blocks = 0;
        while blocks < BATCH {
            let Some((piece, begin, len)) = peer.requests.pop_front() else {
                break;
            };
            let Some(data) = content.block(piece, begin, len) else {
                continue;
            };
            self.headers[blocks] = piece_header(piece, begin, len);
            self.iov[n] = libc::iovec {
                iov_base: self.headers[blocks].as_mut_ptr().cast(),
                iov_len: PIECE_HEADER_LEN,
            };
            self.iov[n + 1] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            n += 2;
            blocks += 1;
        }
        self.start = 0;
        self.len = n;
        n > 0
    }

    /// `n` bytes of the batch were sent: skips and trims iovecs; when the
    /// batch is done, drops the control bytes it carried.
    pub fn advance(&mut self, peer: &mut MinimalPeer, mut n: usize) {
        while n > 0 && self.start < self.len {
            let v = &mut self.iov[self.start];
            if n >= v.iov_len {
                n -= v.iov_len;
                self.start += 1;
            } else {
                // SAFETY: n < iov_len, so the new base stays inside the buffer.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
                v.iov_len -= n;
                n = 0;
            }
        }
        if self.start == self.len {
            self.start = 0;
            self.len = 0;
            if self.ctl > 0 {
                peer.ctl.drain(..self.ctl.min(peer.ctl.len()));
                self.ctl = 0;
            }
        }
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_split_across_reads_are_parsed_once_whole() {
        let mut p = MinimalPeer::new();
        let mut wire = vec![0u8; HANDSHAKE_LEN];
        Message::Interested.encode(&mut wire);
        for i in 0..3 {
            Message::Request(ringseed::wire::codec::BlockRequest {
                piece: i,
                begin: 16384,
                len: 16384,
            })
            .encode(&mut wire);
        }
        // Feed in 7-byte pieces.
        for chunk in wire.chunks(7) {
            p.rbuf[p.rlen..p.rlen + chunk.len()].copy_from_slice(chunk);
            p.rlen += chunk.len();
            assert!(p.parse(b"R"));
        }
        assert_eq!(p.rlen, 0);
        assert_eq!(
            p.requests.iter().copied().collect::<Vec<_>>(),
            vec![(0, 16384, 16384), (1, 16384, 16384), (2, 16384, 16384)]
        );
        assert_eq!(p.ctl, b"R");
        // A length prefix bigger than the buffer closes.
        p.rbuf[..4].copy_from_slice(&(RBUF as u32).to_be_bytes());
        p.rlen = 4;
        assert!(!p.parse(b"R"));
    }
}
