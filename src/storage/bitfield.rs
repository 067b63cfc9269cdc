//! A compact set of piece indices, laid out as the BEP 3 `bitfield` message
//! (piece 0 is the high bit of byte 0) so the server can send it as is.

/// Which pieces are verified. Spare bits in the last byte are always zero.
#[derive(Clone, PartialEq, Eq)]
pub struct PieceBitfield {
    bytes: Vec<u8>,
    len: u32,
}

impl PieceBitfield {
    /// All `len` pieces unset.
    pub fn new(len: u32) -> Self {
        Self {
            bytes: vec![0; (len as usize).div_ceil(8)],
            len,
        }
    }

    /// Rebuild from wire/resume bytes; `None` if the byte count is wrong or a
    /// spare bit is set.
    pub fn from_bytes(bytes: Vec<u8>, len: u32) -> Option<Self> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let spare = (bytes.len() * 8) as u64 - u64::from(len);
        if spare > 0 {
            let last = *bytes.last()?;
            if last & ((1u8 << spare) - 1) != 0 {
                return None;
            }
        }
        Some(Self { bytes, len })
    }

    /// Number of pieces this bitfield covers.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether piece `index` is set; `false` for indices out of range.
    pub fn get(&self, index: u32) -> bool {
        if index >= self.len {
            return false;
        }
        self.bytes
            .get((index / 8) as usize)
            .is_some_and(|b| b & (0x80 >> (index % 8)) != 0)
    }

    /// Set or clear piece `index`; indices out of range are ignored.
    pub fn set(&mut self, index: u32, value: bool) {
        if index >= self.len {
            return;
        }
        if let Some(b) = self.bytes.get_mut((index / 8) as usize) {
            let mask = 0x80 >> (index % 8);
            if value {
                *b |= mask;
            } else {
                *b &= !mask;
            }
        }
    }

    /// Number of set pieces.
    pub fn count_ones(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }

    /// True when every piece is set (an empty bitfield counts as complete).
    pub fn is_complete(&self) -> bool {
        self.count_ones() == self.len
    }

    /// The wire representation.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Indices of the unset pieces, in order.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| !self.get(i))
    }
}

impl std::fmt::Debug for PieceBitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PieceBitfield({}/{} set)", self.count_ones(), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msb_first_and_spare_bits() {
        let mut b = PieceBitfield::new(10);
        b.set(0, true);
        b.set(9, true);
        b.set(10, true); // out of range: ignored
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert!(b.get(9) && !b.get(8) && !b.get(10));
        assert_eq!(b.count_ones(), 2);
        assert_eq!(b.missing().count(), 8);
        assert!(PieceBitfield::from_bytes(vec![0x80, 0x40], 10).is_some());
        assert!(PieceBitfield::from_bytes(vec![0x80, 0x41], 10).is_none());
        assert!(PieceBitfield::from_bytes(vec![0x80], 10).is_none());
    }
}
