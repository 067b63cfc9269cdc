//! Box-wide connection limits: `--max-connections` and `--max-per-ip` are
//! one number for the box, whatever shard the kernel hands a connection to.
//!
//! A shard asks [`ConnLimits::admit`] once per accepted connection and
//! returns the [`Admission`] when the connection is gone: one atomic for the
//! total, and one lock of one of [`STRIPES`] small maps for the source
//! address. Nothing here is touched per message or per block.
//!
//! Addresses are counted per *source*: an IPv4 address, or an IPv6 prefix
//! (`/64` by default, `ipv6_prefix_len`): one host or subscriber usually
//! owns a whole /64, so counting single IPv6 addresses would let it open
//! `max_per_ip` connections from each of 2^64 addresses.
//!
//! What it does not do: the per-shard cap (`--max-connections-per-shard`)
//! stays the shard's own count, it needs no sharing.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Lock stripes of the per-source maps.
pub const STRIPES: usize = 64;

/// What a source address counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    V4(u32),
    /// The address with the bits past the prefix cleared.
    V6(u128),
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached box-wide.
    Total,
    /// `max_per_ip` reached for this source.
    PerSource,
}

/// Proof that a connection was admitted; give it back with
/// [`ConnLimits::release`] exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission(SourceKey);

/// The box's connection counts.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: u32,
    max_per_source: u32,
    ipv6_prefix_len: u8,
    total: AtomicU32,
    sources: Vec<Mutex<HashMap<SourceKey, u32>>>,
}

impl ConnLimits {
    /// `ipv6_prefix_len`: how many leading bits of an IPv6 address name one
    /// source (clamped to 0..=128; 128 counts each address).
    pub fn new(max_total: u32, max_per_source: u32, ipv6_prefix_len: u8) -> Self {
        Self {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            ipv6_prefix_len: ipv6_prefix_len.min(128),
            total: AtomicU32::new(0),
            sources: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// The source `ip` counts as (IPv4-mapped IPv6 is IPv4).
    pub fn key(&self, ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(u32::from(v4)),
                None => {
                    let mask = match self.ipv6_prefix_len {
                        0 => 0,
                        n => u128::MAX << (128 - u32::from(n)),
                    };
                    SourceKey::V6(u128::from(v6) & mask)
                }
            },
        }
    }

    fn stripe(&self, key: SourceKey) -> &Mutex<HashMap<SourceKey, u32>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.sources[(h.finish() as usize) % STRIPES]
    }

    /// Count a new connection from `ip`, or say which limit refuses it.
    pub fn admit(&self, ip: IpAddr) -> Result<Admission, Refusal> {
        let max = self.max_total;
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Refusal::Total)?;
        let key = self.key(ip);
        let mut map = self.stripe(key).lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= self.max_per_source {
            if *n == 0 {
                map.remove(&key);
            }
            drop(map);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerSource);
        }
        *n += 1;
        Ok(Admission(key))
    }

    /// A connection admitted earlier is gone.
    pub fn release(&self, admission: Admission) {
        let key = admission.0;
        let mut map = self.stripe(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&key);
            }
        }
        drop(map);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    /// Connections counted now, box-wide.
    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    /// Connections counted now from the source of `ip`.
    pub fn from_source(&self, ip: IpAddr) -> u32 {
        let key = self.key(ip);
        let map = self.stripe(key).lock().unwrap_or_else(|e| e.into_inner());
        map.get(&key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn total_and_per_source_are_box_wide() {
        let l = ConnLimits::new(3, 2, 64);
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let x = l.admit(a).unwrap();
        let _y = l.admit(a).unwrap();
        assert_eq!(l.admit(a), Err(Refusal::PerSource));
        let _z = l.admit(b).unwrap();
        assert_eq!(l.admit(b), Err(Refusal::Total));
        l.release(x);
        assert_eq!(l.total(), 2);
        assert!(l.admit(a).is_ok());
    }

    #[test]
    fn ipv6_counts_per_prefix() {
        let l = ConnLimits::new(100, 2, 64);
        let p = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last));
        l.admit(p(1)).unwrap();
        l.admit(p(2)).unwrap();
        assert_eq!(l.admit(p(3)), Err(Refusal::PerSource));
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(l.admit(other).is_ok());
        let per_address = ConnLimits::new(100, 1, 128);
        per_address.admit(p(1)).unwrap();
        assert!(per_address.admit(p(2)).is_ok());
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let l = ConnLimits::new(100, 1, 64);
        l.admit(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9))).unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 9).to_ipv6_mapped());
        assert_eq!(l.admit(mapped), Err(Refusal::PerSource));
    }
}
