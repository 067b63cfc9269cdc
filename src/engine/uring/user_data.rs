//! `user_data` encoding: which operation a CQE belongs to.
//!
//! Layout (64 bits): `kind` (8) | `generation` (24) | `index` (32). `index` is
//! a connection slot (or a listener / read buffer index); `generation` is
//! bumped each time a connection slot is reused, so a late CQE for a closed
//! connection is recognised and never applied to its successor.

/// What kind of operation a completion belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Read = 4,
    Cancel = 5,
    Wake = 6,
    /// The multishot receive of a shard's UDP (uTP) socket.
    Udp = 7,
}

impl OpKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Accept,
            2 => Self::Recv,
            3 => Self::Send,
            4 => Self::Read,
            5 => Self::Cancel,
            6 => Self::Wake,
            7 => Self::Udp,
            _ => return None,
        })
    }
}

/// A decoded `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserData {
    pub kind: OpKind,
    pub generation: u32,
    pub index: u32,
}

const GEN_MASK: u32 = 0x00ff_ffff;

impl UserData {
    pub fn new(kind: OpKind, generation: u32, index: u32) -> Self {
        Self {
            kind,
            generation: generation & GEN_MASK,
            index,
        }
    }

    pub fn encode(self) -> u64 {
        (u64::from(self.kind as u8) << 56)
            | (u64::from(self.generation & GEN_MASK) << 32)
            | u64::from(self.index)
    }

    /// `None` for a value ringseed never produced.
    pub fn decode(v: u64) -> Option<Self> {
        let kind = OpKind::from_u8((v >> 56) as u8)?;
        Some(Self {
            kind,
            generation: ((v >> 32) as u32) & GEN_MASK,
            index: v as u32,
        })
    }
}

/// The next generation for a reused slot (wraps within 24 bits).
pub fn next_generation(g: u32) -> u32 {
    g.wrapping_add(1) & GEN_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for kind in [
            OpKind::Accept,
            OpKind::Recv,
            OpKind::Send,
            OpKind::Read,
            OpKind::Cancel,
            OpKind::Wake,
            OpKind::Udp,
        ] {
            for (g, i) in [(0, 0), (GEN_MASK, u32::MAX), (12345, 678)] {
                let ud = UserData::new(kind, g, i);
                assert_eq!(UserData::decode(ud.encode()), Some(ud));
            }
        }
        assert_eq!(UserData::decode(0), None);
        assert_eq!(next_generation(GEN_MASK), 0);
    }
}
