//! Piece space <-> file spans.
//!
//! [`PieceLayout`] maps a range of the piece space (piece, begin, len) to a
//! sequence of [`Segment`]s: bytes of a real file, or zero pad bytes (BEP 47
//! pad files and the implicit v2 alignment gaps). Lookup is a binary search
//! on file offsets and iteration allocates nothing, so the server can build
//! iovecs from it on the hot path. [`PieceLayout::check_block`] is the bounds
//! check every peer request goes through.
//!
//! It does not read files; see `files` and `hash` for that.

use crate::metainfo::{FileEntry, Torrent};

/// The BitTorrent block size: the largest request we serve.
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// One contiguous part of a piece-space range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// `len` bytes of file `file_index` (index into `Torrent::files`)
    /// starting at `file_offset`.
    File {
        file_index: usize,
        file_offset: u64,
        len: u64,
    },
    /// `len` zero bytes (pad file or alignment gap).
    Zero { len: u64 },
}

impl Segment {
    pub fn len(&self) -> u64 {
        match *self {
            Segment::File { len, .. } | Segment::Zero { len } => len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a torrent's file list cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("piece length {0} is not a power of two >= 16 KiB")]
    BadPieceLength(u64),
    #[error("file {file} (offset {offset}, {length} bytes) overlaps the previous file or is out of order: the torrent is inconsistent")]
    Overlap {
        file: String,
        offset: u64,
        length: u64,
    },
    #[error("file {file} ends at {end}, beyond the piece space ({piece_space_len} bytes)")]
    BeyondPieceSpace {
        file: String,
        end: u64,
        piece_space_len: u64,
    },
    #[error("piece space of {piece_space_len} bytes needs more than 2^32 pieces of {piece_length} bytes")]
    TooManyPieces {
        piece_space_len: u64,
        piece_length: u64,
    },
}

/// Why a peer's block request is out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("piece {piece} does not exist (torrent has {num_pieces} pieces)")]
    NoSuchPiece { piece: u32, num_pieces: u32 },
    #[error("block of {len} bytes is empty or larger than 16 KiB")]
    BadLength { len: u32 },
    #[error("block {begin}+{len} ends beyond piece {piece} ({piece_len} bytes)")]
    BeyondPiece {
        piece: u32,
        begin: u32,
        len: u32,
        piece_len: u64,
    },
}

#[derive(Clone, Copy, Debug)]
struct Span {
    offset: u64,
    end: u64,
}

/// The piece space of one torrent, ready for range lookups.
#[derive(Clone, Debug)]
pub struct PieceLayout {
    spans: Vec<Span>,
    piece_length: u64,
    piece_space_len: u64,
    num_pieces: u32,
}

impl PieceLayout {
    /// Layout of a validated torrent.
    pub fn new(torrent: &Torrent) -> Result<Self, LayoutError> {
        Self::from_files(
            &torrent.files,
            torrent.piece_length,
            torrent.piece_space_len,
        )
    }

    /// Layout from a file list (offsets in the piece space, ordered by offset).
    pub fn from_files(
        files: &[FileEntry],
        piece_length: u64,
        piece_space_len: u64,
    ) -> Result<Self, LayoutError> {
        if !piece_length.is_power_of_two() || piece_length < u64::from(BLOCK_SIZE) {
            return Err(LayoutError::BadPieceLength(piece_length));
        }
        let num_pieces = u32::try_from(piece_space_len.div_ceil(piece_length)).map_err(|_| {
            LayoutError::TooManyPieces {
                piece_space_len,
                piece_length,
            }
        })?;
        let mut spans = Vec::with_capacity(files.len());
        let mut prev_end = 0u64;
        for f in files {
            let end = f
                .offset
                .checked_add(f.length)
                .ok_or_else(|| LayoutError::Overlap {
                    file: f.display_path(),
                    offset: f.offset,
                    length: f.length,
                })?;
            if f.offset < prev_end {
                return Err(LayoutError::Overlap {
                    file: f.display_path(),
                    offset: f.offset,
                    length: f.length,
                });
            }
            if end > piece_space_len {
                return Err(LayoutError::BeyondPieceSpace {
                    file: f.display_path(),
                    end,
                    piece_space_len,
                });
            }
            prev_end = end;
            spans.push(Span {
                offset: f.offset,
                end,
            });
        }
        Ok(Self {
            spans,
            piece_length,
            piece_space_len,
            num_pieces,
        })
    }

    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    pub fn piece_space_len(&self) -> u64 {
        self.piece_space_len
    }

    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }

    /// Length of piece `index` (the last one may be short; 0 if out of range).
    pub fn piece_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * self.piece_length;
        self.piece_space_len
            .saturating_sub(start)
            .min(self.piece_length)
    }

    /// Bounds check for a peer request: the piece exists, `0 < len <= 16 KiB`
    /// and `begin + len <= piece_len`.
    pub fn check_block(&self, piece: u32, begin: u32, len: u32) -> Result<(), BlockError> {
        if piece >= self.num_pieces {
            return Err(BlockError::NoSuchPiece {
                piece,
                num_pieces: self.num_pieces,
            });
        }
        if len == 0 || len > BLOCK_SIZE {
            return Err(BlockError::BadLength { len });
        }
        let piece_len = self.piece_len(piece);
        if u64::from(begin) + u64::from(len) > piece_len {
            return Err(BlockError::BeyondPiece {
                piece,
                begin,
                len,
                piece_len,
            });
        }
        Ok(())
    }

    /// Segments of `len` bytes at `begin` within piece `piece`. The range is
    /// clamped to the piece space; call [`Self::check_block`] first for
    /// untrusted requests.
    pub fn segments(&self, piece: u32, begin: u64, len: u64) -> Segments<'_> {
        let start = (u64::from(piece) * self.piece_length).saturating_add(begin);
        self.range(start, len)
    }

    /// Segments of the whole piece `piece`.
    pub fn piece_segments(&self, piece: u32) -> Segments<'_> {
        self.segments(piece, 0, self.piece_len(piece))
    }

    /// Segments of an absolute piece-space range, clamped to the piece space.
    pub fn range(&self, start: u64, len: u64) -> Segments<'_> {
        let end = start.saturating_add(len).min(self.piece_space_len);
        let pos = start.min(end);
        // First file that ends after `pos`; zero-length files are skipped.
        let next = self.spans.partition_point(|s| s.end <= pos);
        Segments {
            spans: &self.spans,
            next,
            pos,
            end,
        }
    }

    /// Indices of the real files with at least one byte in piece `piece`.
    pub fn files_in_piece(&self, piece: u32) -> impl Iterator<Item = usize> + '_ {
        self.piece_segments(piece).filter_map(|s| match s {
            Segment::File { file_index, .. } => Some(file_index),
            Segment::Zero { .. } => None,
        })
    }

    /// Pieces covering file `file_index`'s bytes (empty range for empty files
    /// and unknown indices).
    pub fn pieces_of_file(&self, file_index: usize) -> std::ops::Range<u32> {
        match self.spans.get(file_index) {
            Some(s) if s.end > s.offset => {
                // Both fit in u32: end <= piece_space_len and num_pieces fits.
                let first = (s.offset / self.piece_length) as u32;
                let last = (s.end.div_ceil(self.piece_length)) as u32;
                first..last
            }
            _ => 0..0,
        }
    }
}

/// Iterator over the [`Segment`]s of a piece-space range. Allocation-free.
#[derive(Clone, Debug)]
pub struct Segments<'a> {
    spans: &'a [Span],
    next: usize,
    pos: u64,
    end: u64,
}

impl Iterator for Segments<'_> {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        if self.pos >= self.end {
            return None;
        }
        // Skip files that end at or before pos (zero-length ones included).
        while let Some(s) = self.spans.get(self.next) {
            if s.end > self.pos {
                break;
            }
            self.next += 1;
        }
        let seg = match self.spans.get(self.next) {
            Some(s) if s.offset <= self.pos => {
                let len = s.end.min(self.end) - self.pos;
                let seg = Segment::File {
                    file_index: self.next,
                    file_offset: self.pos - s.offset,
                    len,
                };
                self.next += 1;
                seg
            }
            Some(s) => Segment::Zero {
                len: s.offset.min(self.end) - self.pos,
            },
            None => Segment::Zero {
                len: self.end - self.pos,
            },
        };
        self.pos += seg.len();
        Some(seg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, offset: u64, length: u64) -> FileEntry {
        FileEntry {
            path: vec![name.to_string()],
            length,
            offset,
            pieces_root: None,
            executable: false,
            hidden: false,
        }
    }

    #[test]
    fn rejects_overlap_and_bad_piece_length() {
        let files = [entry("a", 0, 10), entry("b", 5, 10)];
        assert!(matches!(
            PieceLayout::from_files(&files, 16384, 15),
            Err(LayoutError::Overlap { .. })
        ));
        assert!(matches!(
            PieceLayout::from_files(&files[..1], 1000, 10),
            Err(LayoutError::BadPieceLength(1000))
        ));
        assert!(matches!(
            PieceLayout::from_files(&files[..1], 16384, 9),
            Err(LayoutError::BeyondPieceSpace { .. })
        ));
    }

    #[test]
    fn range_starting_in_gap() {
        let files = [entry("a", 0, 10), entry("b", 16384, 10)];
        let l = PieceLayout::from_files(&files, 16384, 16394).unwrap();
        let segs: Vec<_> = l.range(12, 16380).collect();
        assert_eq!(
            segs,
            vec![
                Segment::Zero { len: 16372 },
                Segment::File {
                    file_index: 1,
                    file_offset: 0,
                    len: 8
                }
            ]
        );
    }
}
