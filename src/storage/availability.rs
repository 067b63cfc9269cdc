//! Which verified pieces may be served *right now*: an overlay on the
//! bitfield verified at start-up that the data watcher (see `watch`) clears
//! when a file changes on disk and sets again once a re-verification proved
//! the piece good.
//!
//! The shards read it with one relaxed atomic load per block
//! ([`Availability::is_live`]); only the watcher writes it. The bits carry
//! no memory the reader depends on (the data is in the file, not in memory
//! the watcher wrote), so relaxed ordering is enough.
//!
//! Invariants:
//! - live pieces are a subset of the pieces verified at start (`have`): a
//!   piece that failed the first verification is never made live here;
//! - a file marked `stale` (shorter than it must be, replaced or deleted)
//!   has all its pieces cleared *before* the flag is set, so checking the
//!   piece bit covers the file check on the hot path.
//!
//! What it does not do: decide anything. Policy lives in `watch`.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::wire::{Bitfield, LivePieces};

/// A fixed-size bitfield of atomics: lock-free reads and single-bit updates
/// from any thread.
#[derive(Debug)]
pub struct AtomicBitfield {
    words: Box<[AtomicU64]>,
    len: u32,
    ones: AtomicU32,
}

impl AtomicBitfield {
    /// A copy of `b`.
    pub fn from_bitfield(b: &Bitfield) -> Self {
        let len = b.len();
        let words: Box<[AtomicU64]> = (0..(len as usize).div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        let out = Self {
            words,
            len,
            ones: AtomicU32::new(0),
        };
        for i in 0..len {
            if b.get(i) {
                out.set(i);
            }
        }
        out
    }

    /// Number of bits.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&self, i: u32) -> Option<(&AtomicU64, u64)> {
        if i >= self.len {
            return None;
        }
        let word = self.words.get((i / 64) as usize)?;
        Some((word, 1u64 << (i % 64)))
    }

    /// Whether bit `i` is set (`false` out of range). One relaxed load.
    #[inline]
    pub fn get(&self, i: u32) -> bool {
        self.slot(i)
            .is_some_and(|(w, m)| w.load(Ordering::Relaxed) & m != 0)
    }

    /// Sets bit `i`; returns whether it changed.
    pub fn set(&self, i: u32) -> bool {
        let Some((w, m)) = self.slot(i) else {
            return false;
        };
        let changed = w.fetch_or(m, Ordering::SeqCst) & m == 0;
        if changed {
            self.ones.fetch_add(1, Ordering::SeqCst);
        }
        changed
    }

    /// Clears bit `i`; returns whether it changed.
    pub fn clear(&self, i: u32) -> bool {
        let Some((w, m)) = self.slot(i) else {
            return false;
        };
        let changed = w.fetch_and(!m, Ordering::SeqCst) & m != 0;
        if changed {
            self.ones.fetch_sub(1, Ordering::SeqCst);
        }
        changed
    }

    /// Clears every bit in `range`; returns how many were set.
    pub fn clear_range(&self, range: Range<u32>) -> u32 {
        range.filter(|&i| self.clear(i)).count() as u32
    }

    /// Number of bits set.
    pub fn count(&self) -> u32 {
        self.ones.load(Ordering::Relaxed)
    }

    /// A snapshot as a wire bitfield.
    pub fn snapshot(&self) -> Bitfield {
        let mut b = Bitfield::new(self.len);
        for i in 0..self.len {
            if self.get(i) {
                b.set(i);
            }
        }
        b
    }
}

/// Bumped by every [`Availability::restore`] of any torrent: one load tells
/// a shard whether any peer may have a withheld piece to be told about.
static RESTORED_ANYWHERE: AtomicU64 = AtomicU64::new(0);

/// See [`RESTORED_ANYWHERE`].
pub fn restored_anywhere() -> u64 {
    RESTORED_ANYWHERE.load(Ordering::Acquire)
}

/// Per-file flags the watcher sets.
#[derive(Debug, Default)]
pub struct FileFlags {
    /// The file is shorter than the torrent says, was replaced by another
    /// file or deleted: nothing of it may be served (its pieces are already
    /// withdrawn when this is set).
    pub stale: AtomicBool,
}

/// The live pieces of one torrent and the state of its files.
#[derive(Debug)]
pub struct Availability {
    pieces: AtomicBitfield,
    /// Pieces verified at start (`have`); live pieces are a subset.
    verified: u32,
    files: Box<[FileFlags]>,
    /// Bumped every time pieces become live again, so connections that were
    /// told about fewer pieces can announce the new ones.
    restored: AtomicU64,
}

impl Availability {
    /// Everything verified at start is live; `files`: number of files.
    pub fn new(have: &Bitfield, files: usize) -> Self {
        Self {
            pieces: AtomicBitfield::from_bitfield(have),
            verified: have.count(),
            files: (0..files).map(|_| FileFlags::default()).collect(),
            restored: AtomicU64::new(0),
        }
    }

    /// Whether `piece` may be served now: one relaxed load.
    #[inline]
    pub fn is_live(&self, piece: u32) -> bool {
        self.pieces.get(piece)
    }

    /// The live pieces.
    pub fn pieces(&self) -> &AtomicBitfield {
        &self.pieces
    }

    /// Withdraw pieces `range`; returns how many were live.
    pub fn withdraw(&self, range: Range<u32>) -> u32 {
        self.pieces.clear_range(range)
    }

    /// Make `piece` live again (the caller verified it and it was in the
    /// start-up `have`); returns whether it changed.
    pub fn restore(&self, piece: u32) -> bool {
        let changed = self.pieces.set(piece);
        if changed {
            self.restored.fetch_add(1, Ordering::Release);
            RESTORED_ANYWHERE.fetch_add(1, Ordering::Release);
        }
        changed
    }

    /// How often pieces were restored (see [`Availability::restore`]).
    pub fn restored_generation(&self) -> u64 {
        self.restored.load(Ordering::Acquire)
    }

    /// Flags of file `index`.
    pub fn file(&self, index: usize) -> Option<&FileFlags> {
        self.files.get(index)
    }

    /// Whether file `index` is stale (see [`FileFlags::stale`]).
    pub fn is_file_stale(&self, index: usize) -> bool {
        self.file(index)
            .is_some_and(|f| f.stale.load(Ordering::Relaxed))
    }

    /// Number of pieces verified at start that are currently withdrawn.
    pub fn withdrawn(&self) -> u32 {
        self.verified.saturating_sub(self.pieces.count())
    }
}

impl LivePieces for Availability {
    #[inline]
    fn is_live(&self, piece: u32) -> bool {
        Availability::is_live(self, piece)
    }

    fn withdrawn(&self) -> u32 {
        Availability::withdrawn(self)
    }

    fn restored_generation(&self) -> u64 {
        Availability::restored_generation(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_count() {
        let mut have = Bitfield::new(130);
        for i in [0, 63, 64, 129] {
            have.set(i);
        }
        let a = Availability::new(&have, 1);
        assert_eq!(a.pieces().count(), 4);
        assert!(a.is_live(63) && a.is_live(64) && !a.is_live(1) && !a.is_live(130));
        assert_eq!(a.withdraw(60..70), 2);
        assert_eq!(a.withdrawn(), 2);
        assert!(!a.is_live(64));
        assert!(a.restore(64));
        assert!(!a.restore(64));
        assert_eq!(a.withdrawn(), 1);
        assert_eq!(a.restored_generation(), 1);
        assert_eq!(a.pieces().snapshot().count(), 3);
    }
}
