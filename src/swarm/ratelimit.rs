//! The egress cap (`--upload-rate-limit RATE`): sans-IO token buckets with an
//! injected clock.
//!
//! # What it does
//!
//! - [`Rate`]: a parsed rate ("100MB/s", "1Gbit", "50MiB/s", "0" / "off" =
//!   unlimited), in bytes per second.
//! - [`TokenBucket`]: `rate` bytes per second, holding at most `burst`.
//!   Exact integer arithmetic (nanosecond resolution, no drift): over any
//!   interval `T` it grants at most `burst + rate * T` bytes, and a caller
//!   that always wants more gets at least `rate * T - burst`.
//! - [`EgressLimiter`]: one per shard, on a [`TokenPool`] that every shard
//!   of the box draws from (one cap for the box, see `swarm::token_pool`),
//!   shared fairly among the shard's connections. A connection asks for up
//!   to one send batch when it flushes; while tokens are short, it books at
//!   most [`EgressLimiter::quantum`] bytes in the pool and waits in the
//!   shard's FIFO queue until its booking is due. Bookings are served in
//!   the order they were made box-wide and each connection holds at most
//!   one, so every backlogged connection gets the same share, whatever
//!   shard it is on.
//!
//! # Call order (per shard)
//!
//! 1. [`pool_for`] once for the box (or torrent), then
//!    [`EgressLimiter::shared`] on it in every shard.
//! 2. When a connection could send blocks (unchoked, requests queued, no
//!    send in flight): [`EgressLimiter::request`] with the bytes of its next
//!    batch (piece headers + payload). Send blocks whose total fits the
//!    grant; a grant is always at least one whole block message when the
//!    batch holds one. `0`: the connection waits, do not ask again.
//! 3. [`EgressLimiter::give_back`] the part of a grant that was not sent
//!    (requests cancelled meanwhile).
//! 4. At (or after) [`EgressLimiter::next_ready`]: [`EgressLimiter::poll_ready`]
//!    lists the waiting connections served now, with their grants.
//! 5. [`EgressLimiter::remove`] when a connection closes or is choked.
//!
//! # What it does not do
//!
//! - Control messages (handshakes, haves, rejects) are not charged: they are
//!   a rounding error next to piece data, and must never wait behind it.
//! - Per-torrent caps are not built in: the engine gives a capped torrent a
//!   second limiter of its own and asks it first (`engine::core::egress`).

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use super::token_pool::TokenPool;

/// The largest block message: 13-byte piece header + 16 KiB.
pub const MAX_BLOCK_MESSAGE: u64 = 13 + 16 * 1024;
/// Default bytes one connection may get per turn: one full send batch of 16
/// block messages.
pub const DEFAULT_QUANTUM: u64 = 16 * MAX_BLOCK_MESSAGE;
/// Default bucket depth as time at the full rate: 50 ms. Small enough that a
/// burst is 0.5% of a 10 s window; a quarter of it (the quantum, see
/// [`EgressLimiter::for_shard`]) covers a full batch at rates above ~21 MB/s
/// per shard, below that batches are smaller.
pub const DEFAULT_BURST_TIME: Duration = Duration::from_millis(50);

const NANOS: i128 = 1_000_000_000;

/// A byte rate; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct Rate {
    bytes_per_sec: u64,
}

impl Rate {
    pub const UNLIMITED: Rate = Rate { bytes_per_sec: 0 };

    pub fn from_bytes_per_sec(bytes_per_sec: u64) -> Rate {
        Rate { bytes_per_sec }
    }

    /// Bytes per second; `None` when unlimited.
    pub fn bytes_per_sec(self) -> Option<u64> {
        (self.bytes_per_sec > 0).then_some(self.bytes_per_sec)
    }

    pub fn is_unlimited(self) -> bool {
        self.bytes_per_sec == 0
    }
}

/// A rate string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate {input:?}: {why}; write e.g. \"100MB/s\", \"50MiB/s\", \"1Gbit\", \"800Mbps\" \
     or \"off\" (B = bytes, b/bit = bits, k/M/G/T = 1000^n, Ki/Mi/Gi/Ti = 1024^n)"
)]
pub struct RateParseError {
    pub input: String,
    pub why: &'static str,
}

impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(input: &str) -> Result<Rate, RateParseError> {
        let err = |why| RateParseError {
            input: input.to_string(),
            why,
        };
        let s = input.trim();
        if matches!(
            s.to_ascii_lowercase().as_str(),
            "off" | "unlimited" | "none" | "0"
        ) {
            return Ok(Rate::UNLIMITED);
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(err("no number"));
        }
        let value: f64 = num.parse().map_err(|_| err("bad number"))?;
        let mut unit = unit.trim();
        for suffix in ["/s", "/sec", "ps"] {
            if let Some(u) = unit.strip_suffix(suffix) {
                unit = u;
                break;
            }
        }
        let (scale, rest) = match unit.get(..2).map(|p| p.to_ascii_lowercase()) {
            Some(p) if p == "ki" => (1024f64, &unit[2..]),
            Some(p) if p == "mi" => (1024f64.powi(2), &unit[2..]),
            Some(p) if p == "gi" => (1024f64.powi(3), &unit[2..]),
            Some(p) if p == "ti" => (1024f64.powi(4), &unit[2..]),
            _ => match unit.chars().next() {
                Some('k' | 'K') => (1e3, &unit[1..]),
                Some('m' | 'M') => (1e6, &unit[1..]),
                Some('g' | 'G') => (1e9, &unit[1..]),
                Some('t' | 'T') => (1e12, &unit[1..]),
                _ => (1.0, unit),
            },
        };
        let per_byte = match rest {
            "" | "B" | "byte" | "bytes" => 1.0,
            "b" | "bit" | "bits" => 1.0 / 8.0,
            _ => return Err(err("unknown unit")),
        };
        let bytes = (value * scale * per_byte).round();
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(err("too large"));
        }
        if bytes < 1.0 {
            return if value == 0.0 {
                Ok(Rate::UNLIMITED)
            } else {
                Err(err("below 1 byte per second"))
            };
        }
        Ok(Rate {
            bytes_per_sec: bytes as u64,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bytes_per_sec {
            0 => f.write_str("off"),
            b if b % (1 << 20) == 0 => write!(f, "{}MiB/s", b >> 20),
            b if b % 1_000_000 == 0 => write!(f, "{}MB/s", b / 1_000_000),
            b => write!(f, "{b}B/s"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Rate {
    /// A string as on the command line, or an integer in bytes per second.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(Rate::from_bytes_per_sec(b)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl serde::Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A token bucket: `rate` bytes per second, at most `burst` saved up. It
/// starts full. Unlimited (`rate` 0) grants everything.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Tokens in byte-nanoseconds (bytes x 1e9), exact.
    level: i128,
    last: Instant,
}

impl TokenBucket {
    pub fn new(now: Instant, rate_bytes_per_sec: u64, burst: u64) -> Self {
        let burst = burst.max(1);
        Self {
            rate: rate_bytes_per_sec,
            burst,
            level: i128::from(burst) * NANOS,
            last: now,
        }
    }

    pub fn unlimited(now: Instant) -> Self {
        Self::new(now, 0, 1)
    }

    pub fn is_unlimited(&self) -> bool {
        self.rate == 0
    }

    pub fn rate_bytes_per_sec(&self) -> u64 {
        self.rate
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn level_at(&self, now: Instant) -> i128 {
        let dt = now.saturating_duration_since(self.last).as_nanos() as i128;
        let cap = i128::from(self.burst) * NANOS;
        (self.level + i128::from(self.rate) * dt).min(cap.max(self.level))
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            self.level = self.level_at(now);
            self.last = now;
        }
    }

    /// Whole bytes available at `now` (0 while in debt).
    pub fn available(&self, now: Instant) -> u64 {
        if self.is_unlimited() {
            return u64::MAX;
        }
        (self.level_at(now).max(0) / NANOS) as u64
    }

    /// Takes up to `want` bytes; returns how many were granted.
    pub fn take(&mut self, now: Instant, want: u64) -> u64 {
        if self.is_unlimited() {
            return want;
        }
        self.refill(now);
        let granted = want.min((self.level.max(0) / NANOS) as u64);
        self.level -= i128::from(granted) * NANOS;
        granted
    }

    /// Takes `n` bytes whatever the level (it may go into debt, repaid by
    /// later refills): for bytes already sent.
    pub fn charge(&mut self, now: Instant, n: u64) {
        if !self.is_unlimited() {
            self.refill(now);
            self.level -= i128::from(n) * NANOS;
        }
    }

    /// Returns `n` unused bytes of a grant (never above `burst`).
    pub fn give_back(&mut self, n: u64) {
        if !self.is_unlimited() {
            let cap = i128::from(self.burst) * NANOS;
            self.level = (self.level + i128::from(n) * NANOS).min(cap);
        }
    }

    /// The earliest instant at which `take(_, want)` grants `min(want,
    /// burst)` bytes in full (`now` if it already would).
    pub fn next_ready(&self, now: Instant, want: u64) -> Instant {
        if self.is_unlimited() {
            return now;
        }
        let need = i128::from(want.min(self.burst)) * NANOS;
        let level = self.level_at(now);
        if level >= need {
            return now;
        }
        let rate = i128::from(self.rate);
        let nanos = (need - level + rate - 1) / rate;
        now.max(self.last) + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// A shard's view of an egress cap: its connections `K` (the engine's
/// connection handle) queued fairly on a [`TokenPool`] that every shard of
/// the box draws from. See the module docs for the call order.
#[derive(Debug)]
pub struct EgressLimiter<K> {
    /// `None`: unlimited.
    pool: Option<Arc<TokenPool>>,
    quantum: u64,
    /// Connections waiting for tokens: who, the bytes booked in the pool
    /// for it, and when they are its. Bookings are made in this order, so
    /// `ready_at` never decreases along the queue.
    waiting: VecDeque<Waiter<K>>,
    granted_total: u64,
}

#[derive(Debug, Clone, Copy)]
struct Waiter<K> {
    conn: K,
    booked: u64,
    ready_at: Instant,
}

/// The pool for a box-wide (or torrent-wide) `rate`: a burst of
/// [`DEFAULT_BURST_TIME`] at that rate, at least two block messages.
/// `None` when unlimited.
pub fn pool_for(now: Instant, rate: Rate) -> Option<Arc<TokenPool>> {
    let r = rate.bytes_per_sec()?;
    let burst = (u128::from(r) * DEFAULT_BURST_TIME.as_nanos() / 1_000_000_000) as u64;
    Some(Arc::new(TokenPool::new(
        now,
        r,
        burst.max(2 * MAX_BLOCK_MESSAGE),
    )))
}

impl<K: Copy + Eq> EgressLimiter<K> {
    /// A limiter drawing from `pool` (`None`: unlimited). `quantum`: most
    /// bytes per turn (raised to one block message, capped at the pool's
    /// burst).
    pub fn new(pool: Option<Arc<TokenPool>>, quantum: u64) -> Self {
        let burst = pool.as_ref().map_or(u64::MAX, |p| p.burst());
        Self {
            pool,
            quantum: quantum.clamp(MAX_BLOCK_MESSAGE, burst.max(MAX_BLOCK_MESSAGE)),
            waiting: VecDeque::new(),
            granted_total: 0,
        }
    }

    /// A shard's limiter on the shared `pool`, with a quantum of
    /// [`DEFAULT_QUANTUM`] or a quarter of the pool's burst if less (at
    /// least one block message).
    ///
    /// Why a quarter: a waiter is served once its booking is due; with
    /// quantum = burst a connection that comes back late (scheduling, a long
    /// loop turn) finds a full pool and the time it was late is lost. With
    /// a quarter, it may be 3/4 of the burst time (~37 ms) late without
    /// losing anything.
    pub fn shared(pool: Option<Arc<TokenPool>>) -> Self {
        let quantum = pool.as_ref().map_or(DEFAULT_QUANTUM, |p| {
            (p.burst() / 4).clamp(MAX_BLOCK_MESSAGE, DEFAULT_QUANTUM)
        });
        Self::new(pool, quantum)
    }

    pub fn is_unlimited(&self) -> bool {
        self.pool.is_none()
    }

    pub fn quantum(&self) -> u64 {
        self.quantum
    }

    pub fn pool(&self) -> Option<&Arc<TokenPool>> {
        self.pool.as_ref()
    }

    /// Bytes granted so far (for metrics and tests).
    pub fn granted_total(&self) -> u64 {
        self.granted_total
    }

    /// Connections waiting for tokens.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// `conn` wants to send `want` bytes (its next batch). Returns the bytes
    /// it may send now: `min(want, quantum)`, or 0, in which case that much
    /// is booked in the pool and the connection will be listed by
    /// [`EgressLimiter::poll_ready`] when the booking is due (asking again
    /// while queued changes nothing). Nobody jumps the queue, on any shard.
    pub fn request(&mut self, now: Instant, conn: K, want: u64) -> u64 {
        if want == 0 {
            return 0;
        }
        let Some(pool) = &self.pool else {
            self.granted_total += want;
            return want;
        };
        if self.waiting.iter().any(|w| w.conn == conn) {
            return 0;
        }
        let ask = want.min(self.quantum);
        if self.waiting.is_empty() && pool.try_take(now, ask) {
            self.granted_total += ask;
            return ask;
        }
        let ready_at = pool.reserve(now, ask);
        self.waiting.push_back(Waiter {
            conn,
            booked: ask,
            ready_at,
        });
        0
    }

    /// Serves waiting connections whose bookings are due; appends
    /// `(conn, granted bytes)` to `out`.
    pub fn poll_ready(&mut self, now: Instant, out: &mut Vec<(K, u64)>) {
        while let Some(w) = self.waiting.front() {
            if w.ready_at > now {
                break;
            }
            self.granted_total += w.booked;
            out.push((w.conn, w.booked));
            self.waiting.pop_front();
        }
    }

    /// When the first waiting connection can be served; `None` if nobody
    /// waits.
    pub fn next_ready(&self, _now: Instant) -> Option<Instant> {
        Some(self.waiting.front()?.ready_at)
    }

    /// `n` bytes of a grant were not sent after all.
    pub fn give_back(&mut self, n: u64) {
        if let Some(p) = &self.pool {
            p.give_back(n);
        }
        self.granted_total = self.granted_total.saturating_sub(n);
    }

    /// `conn` closed or has nothing to send any more: leave the queue (its
    /// booking goes back to the pool).
    pub fn remove(&mut self, conn: K) {
        if let Some(i) = self.waiting.iter().position(|w| w.conn == conn) {
            let w = self.waiting.remove(i).expect("index in range");
            if let Some(p) = &self.pool {
                p.give_back(w.booked);
            }
        }
    }
}
