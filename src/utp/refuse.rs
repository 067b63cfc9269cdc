//! Refusing uTP politely: answer a `SYN` we will not serve with an
//! `ST_RESET`, so the client falls back to TCP at once instead of waiting
//! for its connect timeout (libtorrent: 3 s, then 1 s before TCP).
//!
//! The reset follows BEP 29's connection-id rules as libtorrent checks
//! them (`utp_stream.cpp`, `incoming_packet`): the connecting side sends its
//! SYN with `connection_id = recv_id` and looks answers up by that id, so
//! the reset carries the SYN's `connection_id` unchanged; it accepts a
//! reset only if `ack_nr` is not past the SYN's `seq_nr`, so `ack_nr` is
//! exactly the SYN's `seq_nr`.
//!
//! It never amplifies: only a well-formed `SYN` (at least 20 bytes) is
//! answered, with one 20-byte datagram, and answers are rate limited per
//! source address (a token bucket in a fixed table of buckets indexed by a
//! keyed hash of the IP: bounded memory, no per-source allocation; sources
//! that collide share a bucket, which can only make us answer less) and per
//! shard in total. Nothing else is ever answered (not `RESET`, so two
//! refusers cannot ping-pong).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::packet::{self, Header, PacketError, PacketType, HEADER_LEN};

/// Rate limits of [`Refuser`].
#[derive(Clone, Copy, Debug)]
pub struct RefuseConfig {
    /// Resets one source IP may receive in a burst. Default 8 (a client
    /// opening connections for a few torrents at once, and its SYN re-sends).
    pub per_source_burst: u32,
    /// Resets per second a source IP earns back. Default 4.
    pub per_source_rate: u32,
    /// Resets per second this shard sends at most, in total. Default 2,000
    /// (40 kB/s of 20-byte datagrams).
    pub total_rate: u32,
    /// Buckets in the per-source table (rounded up to a power of two).
    /// Default 4096 (16 bytes each: 64 KiB per shard).
    pub buckets: usize,
}

impl Default for RefuseConfig {
    fn default() -> Self {
        Self {
            per_source_burst: 8,
            per_source_rate: 4,
            total_rate: 2000,
            buckets: 4096,
        }
    }
}

/// Why a datagram got no answer (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a uTP packet at all (see [`PacketError`]).
    Malformed(PacketError),
    /// A uTP packet other than `SYN` for a connection we do not have.
    NotSyn,
    /// The source (or the shard) is over its reset budget.
    RateLimited,
}

impl DropReason {
    pub const ALL: [&'static str; 3] = ["malformed", "not_syn", "rate_limited"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::NotSyn => "not_syn",
            Self::RateLimited => "rate_limited",
        }
    }

    /// Index into [`DropReason::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::Malformed(_) => 0,
            Self::NotSyn => 1,
            Self::RateLimited => 2,
        }
    }
}

/// One token bucket: tokens scaled by 1,000 so refills are exact integers.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    milli_tokens: u64,
    at: Option<Instant>,
}

impl Bucket {
    fn take(&mut self, now: Instant, burst: u32, rate: u32) -> bool {
        let cap = u64::from(burst) * 1000;
        let refill = match self.at {
            None => cap,
            Some(at) => {
                let ms = now.saturating_duration_since(at).as_millis() as u64;
                ms.saturating_mul(u64::from(rate))
            }
        };
        if refill > 0 || self.at.is_none() {
            self.milli_tokens = self.milli_tokens.saturating_add(refill).min(cap);
            self.at = Some(now);
        }
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

/// Answers `SYN`s with resets, rate limited. Sans-IO: the caller passes
/// the clock and sends what [`Refuser::handle`] writes.
pub struct Refuser<S = std::collections::hash_map::RandomState> {
    cfg: RefuseConfig,
    buckets: Box<[Bucket]>,
    total: Bucket,
    hasher: S,
}

impl Refuser {
    /// A refuser keyed by a random hash key (sources cannot aim at one
    /// another's bucket).
    pub fn new(cfg: RefuseConfig) -> Self {
        Self::with_hasher(cfg, Default::default())
    }
}

impl<S: BuildHasher> Refuser<S> {
    pub fn with_hasher(cfg: RefuseConfig, hasher: S) -> Self {
        let n = cfg.buckets.clamp(1, 1 << 20).next_power_of_two();
        Self {
            cfg,
            buckets: vec![Bucket::default(); n].into_boxed_slice(),
            total: Bucket::default(),
            hasher,
        }
    }

    /// Bytes of state this refuser holds, whatever arrives.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets) + std::mem::size_of::<Self>()
    }

    /// Decide on one datagram from `src`. On `Ok(n)`, send `out[..n]` (a
    /// reset) back to the source. `now_us` is our microsecond clock for the
    /// reset's timestamp.
    pub fn handle(
        &mut self,
        now: Instant,
        now_us: u32,
        src: IpAddr,
        datagram: &[u8],
        out: &mut [u8; HEADER_LEN],
    ) -> Result<usize, DropReason> {
        let (syn, _) = packet::decode_header(datagram).map_err(DropReason::Malformed)?;
        if syn.ty != PacketType::Syn {
            return Err(DropReason::NotSyn);
        }
        let slot = (self.hasher.hash_one(src) as usize) & (self.buckets.len() - 1);
        if !self.buckets[slot].take(now, self.cfg.per_source_burst, self.cfg.per_source_rate) {
            return Err(DropReason::RateLimited);
        }
        let total = self.cfg.total_rate.max(1);
        if !self.total.take(now, total, total) {
            return Err(DropReason::RateLimited);
        }
        let reset = reset_for(&syn, now_us);
        Ok(packet::encode(&reset, None, out).unwrap_or(0))
    }

    /// How long until a source that was just refused may be answered again.
    pub fn per_source_interval(&self) -> Duration {
        Duration::from_millis(1000 / u64::from(self.cfg.per_source_rate.max(1)))
    }
}

/// The reset answering `syn`: same connection id (the id the connecting
/// side receives on), `ack_nr` = the SYN's `seq_nr`.
pub fn reset_for(syn: &Header, now_us: u32) -> Header {
    Header {
        ty: PacketType::Reset,
        connection_id: syn.connection_id,
        timestamp_us: now_us,
        timestamp_diff_us: now_us.wrapping_sub(syn.timestamp_us),
        wnd_size: 0,
        seq_nr: syn.seq_nr.wrapping_mul(31421).wrapping_add(6927),
        ack_nr: syn.seq_nr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(conn: u16, seq: u16) -> [u8; HEADER_LEN] {
        let h = Header {
            ty: PacketType::Syn,
            connection_id: conn,
            timestamp_us: 5,
            timestamp_diff_us: 0,
            wnd_size: 1 << 20,
            seq_nr: seq,
            ack_nr: 0,
        };
        let mut b = [0u8; HEADER_LEN];
        packet::encode(&h, None, &mut b).unwrap();
        b
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn answers_a_syn_with_a_matching_reset() {
        let mut r = Refuser::new(RefuseConfig::default());
        let mut out = [0u8; HEADER_LEN];
        let n = r
            .handle(Instant::now(), 1000, A, &syn(0x1234, 1), &mut out)
            .unwrap();
        assert_eq!(n, HEADER_LEN);
        let p = packet::decode(&out[..n]).unwrap();
        assert_eq!(p.header.ty, PacketType::Reset);
        assert_eq!(p.header.connection_id, 0x1234);
        assert_eq!(p.header.ack_nr, 1);
        assert!(p.payload.is_empty());
    }

    #[test]
    fn answers_only_syns_and_never_more_than_it_got() {
        let mut r = Refuser::new(RefuseConfig::default());
        let mut out = [0u8; HEADER_LEN];
        let now = Instant::now();
        for ty in [
            PacketType::Data,
            PacketType::Fin,
            PacketType::State,
            PacketType::Reset,
        ] {
            let mut b = syn(1, 1);
            b[0] = (ty as u8) << 4 | 1;
            assert_eq!(r.handle(now, 0, A, &b, &mut out), Err(DropReason::NotSyn));
        }
        assert!(matches!(
            r.handle(now, 0, A, &[0x41; 10], &mut out),
            Err(DropReason::Malformed(PacketError::TooShort))
        ));
    }

    #[test]
    fn rate_limits_per_source_and_refills() {
        let cfg = RefuseConfig::default();
        let mut r = Refuser::new(cfg);
        let mut out = [0u8; HEADER_LEN];
        let t0 = Instant::now();
        let answered = (0..100)
            .filter(|i| r.handle(t0, 0, A, &syn(*i, 1), &mut out).is_ok())
            .count();
        assert_eq!(answered, cfg.per_source_burst as usize);
        // Another source has its own budget.
        let b = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
        assert!(r.handle(t0, 0, b, &syn(1, 1), &mut out).is_ok());
        // One second later, `per_source_rate` more.
        let t1 = t0 + Duration::from_secs(1);
        let again = (0..100)
            .filter(|i| r.handle(t1, 0, A, &syn(*i, 1), &mut out).is_ok())
            .count();
        assert_eq!(again, cfg.per_source_rate as usize);
    }

    #[test]
    fn total_budget_caps_a_flood_from_many_sources() {
        let cfg = RefuseConfig {
            total_rate: 50,
            ..RefuseConfig::default()
        };
        let mut r = Refuser::new(cfg);
        let mut out = [0u8; HEADER_LEN];
        let t0 = Instant::now();
        let answered = (0..10_000u32)
            .filter(|i| {
                let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                r.handle(t0, 0, ip, &syn(1, 1), &mut out).is_ok()
            })
            .count();
        assert_eq!(answered, 50);
        assert!(r.memory_bytes() < 100 * 1024);
    }
}
