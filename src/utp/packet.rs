//! The BEP 29 packet format: the 20-byte version 1 header, the linked list
//! of extension headers (selective ACK understood, others skipped), and the
//! payload. Decoding borrows from the datagram; encoding writes into the
//! caller's buffer. Sequence and ack numbers are 16 bits and wrap: compare
//! them with [`seq_less`] / [`seq_diff`], never with `<`.

/// Bytes in the fixed header.
pub const HEADER_LEN: usize = 20;
/// The only protocol version spoken (version 0 is obsolete; BEP 29).
pub const VERSION: u8 = 1;
/// Extension type of the selective ACK (BEP 29).
pub const EXT_SACK: u8 = 1;
/// Extension headers read at most; more is malformed (each costs a loop turn).
pub const MAX_EXTENSIONS: usize = 8;

/// The packet types of BEP 29.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Payload-carrying packet.
    Data = 0,
    /// The last packet of the sender's stream.
    Fin = 1,
    /// An ACK without payload (does not advance `seq_nr`).
    State = 2,
    /// "I have no state for this connection": close at once.
    Reset = 3,
    /// Connection request.
    Syn = 4,
}

impl PacketType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Data,
            1 => Self::Fin,
            2 => Self::State,
            3 => Self::Reset,
            4 => Self::Syn,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Fin => "fin",
            Self::State => "state",
            Self::Reset => "reset",
            Self::Syn => "syn",
        }
    }
}

/// The fixed header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub ty: PacketType,
    pub connection_id: u16,
    /// Sender's clock, microseconds (wrapping 32 bits).
    pub timestamp_us: u32,
    /// Sender's latest one-way delay sample of our packets, microseconds.
    pub timestamp_diff_us: u32,
    /// Bytes the sender can still take in (its receive window).
    pub wnd_size: u32,
    pub seq_nr: u16,
    pub ack_nr: u16,
}

/// A decoded datagram: header, selective ACK (if any), payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    pub sack: Option<SelectiveAck<'a>>,
    pub payload: &'a [u8],
}

/// A selective ACK bitmask: bit `i` (least significant bit of byte 0
/// first) acknowledges packet `ack_nr + 2 + i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectiveAck<'a> {
    pub mask: &'a [u8],
}

impl SelectiveAck<'_> {
    /// Whether the mask acknowledges packet `ack_nr + 2 + i`.
    pub fn bit(&self, i: usize) -> bool {
        self.mask
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// Number of packets the mask covers.
    pub fn len(&self) -> usize {
        self.mask.len() * 8
    }

    pub fn is_empty(&self) -> bool {
        self.mask.is_empty()
    }
}

/// Why a datagram is not a uTP packet (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("datagram shorter than the 20-byte uTP header")]
    TooShort,
    #[error("uTP version {0} (only version 1 is spoken)")]
    BadVersion(u8),
    #[error("unknown uTP packet type {0}")]
    BadType(u8),
    #[error("uTP extension header runs past the end of the datagram")]
    BadExtension,
    #[error("more than {MAX_EXTENSIONS} uTP extension headers")]
    TooManyExtensions,
}

impl PacketError {
    pub const ALL: [&'static str; 5] = [
        "too_short",
        "bad_version",
        "bad_type",
        "bad_extension",
        "too_many_extensions",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadVersion(_) => "bad_version",
            Self::BadType(_) => "bad_type",
            Self::BadExtension => "bad_extension",
            Self::TooManyExtensions => "too_many_extensions",
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Peek at the header alone (type, version and length checked; extensions
/// not walked).
pub fn decode_header(buf: &[u8]) -> Result<(Header, u8), PacketError> {
    if buf.len() < HEADER_LEN {
        return Err(PacketError::TooShort);
    }
    let version = buf[0] & 0x0f;
    if version != VERSION {
        return Err(PacketError::BadVersion(version));
    }
    let ty = PacketType::from_u8(buf[0] >> 4).ok_or(PacketError::BadType(buf[0] >> 4))?;
    Ok((
        Header {
            ty,
            connection_id: be16(buf, 2),
            timestamp_us: be32(buf, 4),
            timestamp_diff_us: be32(buf, 8),
            wnd_size: be32(buf, 12),
            seq_nr: be16(buf, 16),
            ack_nr: be16(buf, 18),
        },
        buf[1],
    ))
}

/// Decode one datagram. Unknown extensions are skipped; a second selective
/// ACK is ignored (the first wins).
pub fn decode(buf: &[u8]) -> Result<Packet<'_>, PacketError> {
    let (header, mut ext) = decode_header(buf)?;
    let mut at = HEADER_LEN;
    let mut sack = None;
    let mut seen = 0;
    while ext != 0 {
        seen += 1;
        if seen > MAX_EXTENSIONS {
            return Err(PacketError::TooManyExtensions);
        }
        if buf.len() < at + 2 {
            return Err(PacketError::BadExtension);
        }
        let next = buf[at];
        let len = usize::from(buf[at + 1]);
        at += 2;
        if buf.len() < at + len {
            return Err(PacketError::BadExtension);
        }
        if ext == EXT_SACK && sack.is_none() {
            sack = Some(SelectiveAck {
                mask: &buf[at..at + len],
            });
        }
        at += len;
        ext = next;
    }
    Ok(Packet {
        header,
        sack,
        payload: &buf[at..],
    })
}

/// Write `header` (with a selective ACK extension when `sack` is given and
/// not empty) into `out`; returns the bytes written, or `None` when `out` is
/// too small. The payload, if any, goes right after.
pub fn encode(header: &Header, sack: Option<&[u8]>, out: &mut [u8]) -> Option<usize> {
    let sack = sack.filter(|m| !m.is_empty() && m.len() <= 255);
    let len = HEADER_LEN + sack.map_or(0, |m| 2 + m.len());
    if out.len() < len {
        return None;
    }
    out[0] = (header.ty as u8) << 4 | VERSION;
    out[1] = if sack.is_some() { EXT_SACK } else { 0 };
    out[2..4].copy_from_slice(&header.connection_id.to_be_bytes());
    out[4..8].copy_from_slice(&header.timestamp_us.to_be_bytes());
    out[8..12].copy_from_slice(&header.timestamp_diff_us.to_be_bytes());
    out[12..16].copy_from_slice(&header.wnd_size.to_be_bytes());
    out[16..18].copy_from_slice(&header.seq_nr.to_be_bytes());
    out[18..20].copy_from_slice(&header.ack_nr.to_be_bytes());
    if let Some(m) = sack {
        out[20] = 0;
        out[21] = m.len() as u8;
        out[22..22 + m.len()].copy_from_slice(m);
    }
    Some(len)
}

/// `a - b` on the 16-bit sequence circle, as a signed distance.
pub fn seq_diff(a: u16, b: u16) -> i16 {
    a.wrapping_sub(b) as i16
}

/// Whether `a` comes before `b` on the 16-bit sequence circle.
pub fn seq_less(a: u16, b: u16) -> bool {
    seq_diff(a, b) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: PacketType) -> Header {
        Header {
            ty,
            connection_id: 0xbeef,
            timestamp_us: 0x0102_0304,
            timestamp_diff_us: 0x0a0b_0c0d,
            wnd_size: 1 << 20,
            seq_nr: 65535,
            ack_nr: 7,
        }
    }

    #[test]
    fn round_trips_every_type_with_and_without_sack() {
        for ty in [
            PacketType::Data,
            PacketType::Fin,
            PacketType::State,
            PacketType::Reset,
            PacketType::Syn,
        ] {
            for sack in [None, Some(&[0b1010_0001u8, 0, 0, 0x80][..])] {
                let mut buf = [0u8; 64];
                let n = encode(&header(ty), sack, &mut buf).unwrap();
                buf[n..n + 3].copy_from_slice(b"abc");
                let p = decode(&buf[..n + 3]).unwrap();
                assert_eq!(p.header, header(ty));
                assert_eq!(p.payload, b"abc");
                assert_eq!(p.sack.map(|s| s.mask), sack);
            }
        }
    }

    #[test]
    fn sack_bits_are_lsb_first() {
        let s = SelectiveAck {
            mask: &[0b0000_0101, 0b1000_0000],
        };
        let set: Vec<usize> = (0..s.len()).filter(|&i| s.bit(i)).collect();
        assert_eq!(set, vec![0, 2, 15]);
        assert!(!s.bit(1000));
    }

    #[test]
    fn rejects_bad_input_by_reason() {
        assert_eq!(decode(&[0x41; 19]), Err(PacketError::TooShort));
        let mut b = [0u8; 20];
        b[0] = 0x40; // SYN, version 0
        assert_eq!(decode(&b), Err(PacketError::BadVersion(0)));
        b[0] = 0x51;
        assert_eq!(decode(&b), Err(PacketError::BadType(5)));
        b[0] = 0x41;
        b[1] = 1; // a SACK with no room for its header
        assert_eq!(decode(&b), Err(PacketError::BadExtension));
        let mut long = vec![0x41, 9];
        long.extend_from_slice(&[0; 18]);
        for _ in 0..20 {
            long.extend_from_slice(&[9, 0]);
        }
        assert_eq!(decode(&long), Err(PacketError::TooManyExtensions));
    }

    #[test]
    fn skips_unknown_extensions() {
        let mut b = vec![0x01, 3];
        b.extend_from_slice(&[0; 18]);
        b.extend_from_slice(&[EXT_SACK, 2, 0xaa, 0xbb, 0, 4, 1, 0, 0, 0]);
        b.extend_from_slice(b"xy");
        let p = decode(&b).unwrap();
        assert_eq!(p.sack.unwrap().mask, &[1, 0, 0, 0]);
        assert_eq!(p.payload, b"xy");
    }

    #[test]
    fn sequence_numbers_wrap() {
        assert!(seq_less(65535, 0));
        assert!(seq_less(65000, 100));
        assert!(!seq_less(100, 65000));
        assert_eq!(seq_diff(2, 65534), 4);
    }
}
