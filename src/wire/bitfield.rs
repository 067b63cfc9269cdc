//! A piece bitfield in wire order: piece 0 is the most significant bit of
//! byte 0. Spare bits at the end are always zero.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    ones: u32,
}

/// Why a peer's bitfield was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BitfieldError {
    #[error("bitfield is {got} bytes, expected {expected} for {pieces} pieces")]
    WrongLength {
        got: usize,
        expected: usize,
        pieces: u32,
    },
    #[error("bitfield has spare bits set past piece {pieces}")]
    SpareBitsSet { pieces: u32 },
}

/// Bytes needed for `n` bits.
pub fn bitfield_len(n: u32) -> usize {
    (n as usize).div_ceil(8)
}

impl Bitfield {
    /// `n` pieces, none set.
    pub fn new(n: u32) -> Self {
        Bitfield {
            bytes: vec![0; bitfield_len(n)],
            len: n,
            ones: 0,
        }
    }

    /// `n` pieces, all set.
    pub fn full(n: u32) -> Self {
        let mut b = Bitfield {
            bytes: vec![0xff; bitfield_len(n)],
            len: n,
            ones: n,
        };
        b.clear_spare();
        b
    }

    fn clear_spare(&mut self) {
        let rem = self.len % 8;
        if rem != 0 {
            if let Some(last) = self.bytes.last_mut() {
                *last &= 0xffu8 << (8 - rem);
            }
        }
    }

    /// Parses a peer's bitfield payload for a torrent of `n` pieces.
    pub fn from_wire(bytes: &[u8], n: u32) -> Result<Self, BitfieldError> {
        let expected = bitfield_len(n);
        if bytes.len() != expected {
            return Err(BitfieldError::WrongLength {
                got: bytes.len(),
                expected,
                pieces: n,
            });
        }
        let mut b = Bitfield {
            bytes: bytes.to_vec(),
            len: n,
            ones: 0,
        };
        let before: u32 = b.bytes.iter().map(|x| x.count_ones()).sum();
        b.clear_spare();
        let after: u32 = b.bytes.iter().map(|x| x.count_ones()).sum();
        if before != after {
            return Err(BitfieldError::SpareBitsSet { pieces: n });
        }
        b.ones = after;
        Ok(b)
    }

    /// Number of pieces (bits) this bitfield covers.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether piece `i` is set; `false` when out of range.
    pub fn get(&self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        self.bytes
            .get((i / 8) as usize)
            .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
    }

    /// Sets piece `i`; returns `false` (and changes nothing) when out of range.
    pub fn set(&mut self, i: u32) -> bool {
        self.assign(i, true)
    }

    /// Clears piece `i`; returns `false` when out of range.
    pub fn unset(&mut self, i: u32) -> bool {
        self.assign(i, false)
    }

    fn assign(&mut self, i: u32, value: bool) -> bool {
        if i >= self.len {
            return false;
        }
        let mask = 0x80u8 >> (i % 8);
        let Some(b) = self.bytes.get_mut((i / 8) as usize) else {
            return false;
        };
        let was = *b & mask != 0;
        if value && !was {
            *b |= mask;
            self.ones += 1;
        } else if !value && was {
            *b &= !mask;
            self.ones -= 1;
        }
        true
    }

    /// Number of pieces set.
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// Every piece set (an empty bitfield is not full).
    pub fn is_full(&self) -> bool {
        self.len > 0 && self.ones == self.len
    }

    /// The wire bytes (spare bits zero).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msb_first_and_counts() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0));
        assert!(b.set(9));
        assert!(!b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert!(b.set(0));
        assert_eq!(b.count(), 2);
        assert!(b.unset(0));
        assert_eq!(b.count(), 1);
        assert!(!b.get(0) && b.get(9) && !b.get(100));
    }

    #[test]
    fn full_and_from_wire() {
        let f = Bitfield::full(10);
        assert_eq!(f.as_bytes(), &[0xff, 0xc0]);
        assert!(f.is_full());
        assert_eq!(Bitfield::from_wire(&[0xff, 0xc0], 10), Ok(f));
        assert_eq!(
            Bitfield::from_wire(&[0xff, 0xe0], 10),
            Err(BitfieldError::SpareBitsSet { pieces: 10 })
        );
        assert!(matches!(
            Bitfield::from_wire(&[0xff], 10),
            Err(BitfieldError::WrongLength {
                got: 1,
                expected: 2,
                ..
            })
        ));
        assert!(!Bitfield::new(0).is_full());
        assert!(Bitfield::from_wire(&[], 0).is_ok());
    }
}
