//! The upload cap of one shard's connections: the shard's [`EgressLimiter`] on the box-wide
//! pool of `--upload-rate-limit` and one per capped torrent on that
//! torrent's pool (one pool per torrent, whatever shard its peers are on),
//! wired to the send path.
//!
//! # How a connection gets to send blocks
//!
//! A capped connection carries a [`ConnEgress`]: one credit account per
//! limiter that applies to it (the shard's, its torrent's), bytes granted
//! and not yet sent. A block is sent only when every account can pay its
//! `13 + len` bytes, and is then paid from each (when committed to a send,
//! or to a disk read whose result a later send carries). When an account
//! cannot pay for a whole block and requests are queued, `flush` asks that
//! limiter for a batch's worth; without a grant the connection sends only
//! its control bytes and is parked in that limiter's FIFO queue (fair: one
//! quantum per turn, see `swarm::ratelimit`).
//!
//! The accounts are independent on purpose: a connection of a torrent
//! capped below its fair share of the shard asks the shard for the same
//! quantum as everyone else, just less often, so the rest of the shard's
//! rate goes to the other connections (chaining the two limiters would make
//! it ask the shard in smaller pieces and lose round-robin turns).
//!
//! Nothing polls a parked connection: the shard loop bounds its io_uring
//! wait by [`Egress::next_ready`] and calls [`Egress::poll`] each turn,
//! which credits (and marks dirty) the connections served. Unused credit
//! goes back to the buckets when a connection has nothing left to send, is
//! choked or closes, so idle connections hold no tokens.
//!
//! What is counted: piece messages (13-byte header + payload). Control
//! messages (handshakes, haves, rejects, metadata) are never throttled.
//!
//! What it does not do: anything when no cap is configured. Then the shard
//! has no `Egress` and connections no `ConnEgress`, and the send path is the
//! uncapped one (one `Option` check per block). Nothing per block touches the
//! shared pools: a shard draws from them once per grant (up to a quantum of
//! 16 block messages), see `swarm::token_pool`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use std::sync::Arc;

use crate::swarm::ratelimit::{EgressLimiter, TokenPool, MAX_BLOCK_MESSAGE};
use crate::wire::TorrentId;

use super::super::catalog::Catalog;
use super::super::stats::ShardStats;
use super::table::ConnTable;

/// One credit account of a connection.
#[derive(Clone, Copy, Debug, Default)]
struct Account {
    /// Bytes granted and not yet spent on blocks.
    credit: u64,
    /// Parked in this limiter's queue.
    waiting: bool,
}

/// A capped connection's credit with the limiters that apply to it.
#[derive(Clone, Copy, Debug)]
pub struct ConnEgress {
    /// The shard's limiter (`None`: the box is not capped).
    shard: Option<Account>,
    /// Its torrent's limiter (`None`: the torrent has no cap of its own).
    torrent: Option<Account>,
    /// When it started waiting (for the wait-time counter).
    since: Instant,
}

impl ConnEgress {
    /// Every account holds at least `cost` bytes.
    #[inline]
    pub fn can_pay(&self, cost: u64) -> bool {
        self.shard.is_none_or(|a| a.credit >= cost) && self.torrent.is_none_or(|a| a.credit >= cost)
    }

    /// Spends `cost` bytes of every account (check [`Self::can_pay`] first).
    #[inline]
    pub fn pay(&mut self, cost: u64) {
        for a in [&mut self.shard, &mut self.torrent].into_iter().flatten() {
            a.credit = a.credit.saturating_sub(cost);
        }
    }

    /// Returns `cost` bytes paid for a block that was not sent after all.
    pub fn refund(&mut self, cost: u64) {
        for a in [&mut self.shard, &mut self.torrent].into_iter().flatten() {
            a.credit += cost;
        }
    }

    /// Holds credit it has not spent.
    pub fn has_credit(&self) -> bool {
        [self.shard, self.torrent]
            .into_iter()
            .flatten()
            .any(|a| a.credit > 0)
    }

    fn waiting(&self) -> bool {
        [self.shard, self.torrent]
            .into_iter()
            .flatten()
            .any(|a| a.waiting)
    }

    /// A connection capped by the box alone holding `credit` bytes (the
    /// block pipeline's tests).
    #[cfg(test)]
    pub fn for_test(credit: u64) -> Self {
        Self {
            shard: Some(Account {
                credit,
                waiting: false,
            }),
            torrent: None,
            since: Instant::now(),
        }
    }

    /// Some account can pay for less than a whole block and is not already
    /// waiting for its limiter.
    pub fn wants_credit(&self) -> bool {
        [self.shard, self.torrent]
            .into_iter()
            .flatten()
            .any(|a| !a.waiting && a.credit < MAX_BLOCK_MESSAGE)
    }
}

/// What holds a connection's credit in the table [`Egress::poll`] credits.
pub trait Credited {
    fn credit_mut(&mut self) -> Option<&mut ConnEgress>;
}

/// A shard's limiters. Exists only when some cap is configured.
pub struct Egress {
    /// This shard's limiter on the box-wide pool; `None` when the box is
    /// unlimited.
    shard: Option<EgressLimiter<u32>>,
    /// Per torrent id: its limiter if the torrent has its own cap.
    torrents: Vec<Option<EgressLimiter<u32>>>,
    /// Ids of the torrents with a limiter (to poll only those).
    capped: Vec<u32>,
    /// Connections waiting in any limiter.
    waiting: usize,
    /// Scratch for `poll_ready`.
    ready: Vec<(u32, u64)>,
}

impl Egress {
    /// A shard's limiters: on the box pool (`None`: the box is not capped)
    /// and on each capped torrent's pool. `None` when nothing is capped.
    pub fn new(now: Instant, box_pool: Option<Arc<TokenPool>>, catalog: &Catalog) -> Option<Self> {
        // Indexed by torrent id (ids of torrents removed stay `None`).
        let mut torrents: Vec<Option<EgressLimiter<u32>>> =
            (0..catalog.id_bound()).map(|_| None).collect();
        for t in catalog.torrents() {
            torrents[t.id.0 as usize] = t.egress_pool(now).map(|p| EgressLimiter::shared(Some(p)));
        }
        let capped: Vec<u32> = (0..torrents.len() as u32)
            .filter(|&i| torrents[i as usize].is_some())
            .collect();
        if box_pool.is_none() && capped.is_empty() {
            return None;
        }
        Some(Self {
            shard: box_pool.map(|p| EgressLimiter::shared(Some(p))),
            torrents,
            capped,
            waiting: 0,
            ready: Vec::new(),
        })
    }

    /// Follow a new catalogue: a limiter for each torrent added since with
    /// a cap of its own, none for torrents gone (their connections have all
    /// closed, and released their credit, before a torrent is forgotten).
    pub fn follow(&mut self, now: Instant, catalog: &Catalog) {
        let old = self.torrents.len();
        let bound = catalog.id_bound() as usize;
        if old < bound {
            self.torrents.resize_with(bound, || None);
        }
        for (i, slot) in self.torrents.iter_mut().enumerate() {
            match catalog.get(TorrentId(i as u32)) {
                None => *slot = None,
                Some(t) if i >= old => {
                    *slot = t.egress_pool(now).map(|p| EgressLimiter::shared(Some(p)));
                }
                Some(_) => {}
            }
        }
        self.capped = (0..self.torrents.len() as u32)
            .filter(|&i| self.torrents[i as usize].is_some())
            .collect();
    }

    /// The state for a new connection of torrent `t`, if any cap applies.
    pub fn attach(&self, now: Instant, t: TorrentId) -> Option<ConnEgress> {
        let ce = ConnEgress {
            shard: self.shard.is_some().then(Account::default),
            torrent: self.torrent(t).is_some().then(Account::default),
            since: now,
        };
        (ce.shard.is_some() || ce.torrent.is_some()).then_some(ce)
    }

    fn torrent(&self, t: TorrentId) -> Option<&EgressLimiter<u32>> {
        self.torrents.get(t.0 as usize)?.as_ref()
    }

    /// Connection `idx` (torrent `t`) needs credit for about `want` bytes
    /// (a batch): each account short of a block asks its limiter, and is
    /// credited at once or parked until [`Egress::poll`] credits it.
    pub fn acquire(
        &mut self,
        now: Instant,
        idx: u32,
        t: TorrentId,
        ce: &mut ConnEgress,
        want: u64,
        stats: &ShardStats,
    ) {
        let was_waiting = ce.waiting();
        let torrent = self.torrents.get_mut(t.0 as usize).and_then(Option::as_mut);
        // The torrent's account first: while it cannot pay, shard credit
        // would sit idle, so it goes back to the shard's bucket (and the
        // shard's other connections) instead.
        if let (Some(a), Some(l)) = (ce.torrent.as_mut(), torrent) {
            ask(now, idx, a, l, want);
        }
        if let (Some(a), Some(l)) = (ce.shard.as_mut(), self.shard.as_mut()) {
            if ce.torrent.is_some_and(|t| t.waiting) {
                if !a.waiting && a.credit > 0 {
                    l.give_back(std::mem::take(&mut a.credit));
                }
            } else {
                ask(now, idx, a, l, want);
            }
        }
        if !was_waiting && ce.waiting() {
            ce.since = now;
            self.waiting += 1;
            stats.throttled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connection `idx` has nothing to send, was choked or is closing:
    /// leave every queue and return unused credit to the buckets.
    pub fn release(
        &mut self,
        now: Instant,
        idx: u32,
        t: TorrentId,
        ce: &mut ConnEgress,
        stats: &ShardStats,
    ) {
        let was_waiting = ce.waiting();
        let torrent = self.torrents.get_mut(t.0 as usize).and_then(Option::as_mut);
        for (account, limiter) in [
            (&mut ce.shard, self.shard.as_mut()),
            (&mut ce.torrent, torrent),
        ] {
            let (Some(a), Some(l)) = (account.as_mut(), limiter) else {
                continue;
            };
            if a.waiting {
                l.remove(idx);
            }
            if a.credit > 0 {
                l.give_back(a.credit);
            }
            *a = Account::default();
        }
        if was_waiting {
            unparked(&mut self.waiting, now, ce, stats);
        }
    }

    /// When the next parked connection can be served, if any waits.
    pub fn next_ready(&self, now: Instant) -> Option<Instant> {
        if self.waiting == 0 {
            return None;
        }
        let torrents = self
            .capped
            .iter()
            .filter_map(|&i| self.torrents[i as usize].as_ref()?.next_ready(now));
        self.shard
            .as_ref()
            .and_then(|s| s.next_ready(now))
            .into_iter()
            .chain(torrents)
            .min()
    }

    /// Credits parked connections whose turn has come; appends those that
    /// got credit (to be flushed) to `woken`.
    pub fn poll<C: Credited>(
        &mut self,
        now: Instant,
        conns: &mut ConnTable<C>,
        stats: &ShardStats,
        woken: &mut Vec<u32>,
    ) {
        if self.waiting == 0 {
            return;
        }
        let mut ready = std::mem::take(&mut self.ready);
        // Level 0: the shard's limiter; then each capped torrent's.
        for level in 0..=self.capped.len() {
            ready.clear();
            let limiter = match level {
                0 => self.shard.as_mut(),
                k => self.torrents[self.capped[k - 1] as usize].as_mut(),
            };
            let Some(l) = limiter else {
                continue;
            };
            l.poll_ready(now, &mut ready);
            for &(idx, g) in &ready {
                let ce = conns.at_mut(idx).and_then(Credited::credit_mut);
                let Some(ce) = ce else {
                    // Cannot happen (closing connections leave the queues);
                    // never lose the tokens.
                    l.give_back(g);
                    continue;
                };
                let account = if level == 0 {
                    &mut ce.shard
                } else {
                    &mut ce.torrent
                };
                let Some(a) = account.as_mut() else {
                    l.give_back(g);
                    continue;
                };
                a.credit += g;
                a.waiting = false;
                if !ce.waiting() {
                    unparked(&mut self.waiting, now, ce, stats);
                }
                woken.push(idx);
            }
        }
        ready.clear();
        self.ready = ready;
    }
}

/// `ce` stopped waiting on every limiter: count it out and its wait.
fn unparked(waiting: &mut usize, now: Instant, ce: &ConnEgress, stats: &ShardStats) {
    *waiting -= 1;
    stats.throttled.fetch_sub(1, Ordering::Relaxed);
    let waited = now.saturating_duration_since(ce.since).as_nanos();
    ShardStats::add(&stats.throttle_wait_nanos, waited as u64);
}

/// Asks `l` for a batch if account `a` cannot pay for a whole block and is
/// not already queued: credited at once, or queued.
fn ask(now: Instant, idx: u32, a: &mut Account, l: &mut EgressLimiter<u32>, want: u64) {
    if a.waiting || a.credit >= MAX_BLOCK_MESSAGE {
        return;
    }
    match l.request(now, idx, want.saturating_sub(a.credit).max(1)) {
        0 => a.waiting = true,
        g => a.credit += g,
    }
}

#[cfg(test)]
mod tests {
    //! The upload cap as the shards apply it, on a virtual clock: N shards'
    //! [`Egress`] on one box pool, each connection sending like `flush`
    //! does (ask for a batch when short of a block, pay per block, one batch
    //! in flight at its link's speed).
    use super::*;
    use crate::swarm::ratelimit::{pool_for, Rate};
    use std::time::Duration;

    struct Leecher {
        ce: Option<ConnEgress>,
        busy_until: Instant,
        got: u64,
    }

    impl Credited for Leecher {
        fn credit_mut(&mut self) -> Option<&mut ConnEgress> {
            self.ce.as_mut()
        }
    }

    const MS: Duration = Duration::from_millis(1);
    /// Bytes per second one connection's socket drains.
    const LINK: u64 = 200_000_000;

    /// Runs `layout[i]` always-backlogged connections on shard `i` for
    /// `secs` virtual seconds; returns the bytes paid per ms and per
    /// connection.
    fn run(rate: Rate, layout: &[usize], secs: u64) -> (Vec<u64>, Vec<u64>) {
        let t0 = Instant::now();
        let pool = pool_for(t0, rate);
        let catalog = Catalog::new(Vec::new());
        let stats = ShardStats::default();
        let mut shards: Vec<(Egress, ConnTable<Leecher>)> = layout
            .iter()
            .map(|&n| {
                let e = Egress::new(t0, pool.clone(), &catalog).expect("capped");
                let mut table = ConnTable::default();
                for _ in 0..n {
                    let ce = e.attach(t0, TorrentId(0));
                    assert!(ce.is_some(), "the box cap applies to every connection");
                    table.insert_with(|_| Leecher {
                        ce,
                        busy_until: t0,
                        got: 0,
                    });
                }
                (e, table)
            })
            .collect();
        let cost = MAX_BLOCK_MESSAGE;
        let mut per_ms = vec![0u64; (secs * 1000) as usize];
        let mut woken = Vec::new();
        for (step, slot) in per_ms.iter_mut().enumerate() {
            let now = t0 + MS * step as u32;
            for (e, table) in shards.iter_mut() {
                woken.clear();
                e.poll(now, table, &stats, &mut woken);
                for (id, c) in table.iter_mut() {
                    if now < c.busy_until {
                        continue;
                    }
                    let ce = c.ce.as_mut().expect("capped");
                    if ce.wants_credit() {
                        e.acquire(now, id.index(), TorrentId(0), ce, 16 * cost, &stats);
                    }
                    let mut blocks = 0u64;
                    while blocks < 16 && ce.can_pay(cost) {
                        ce.pay(cost);
                        blocks += 1;
                    }
                    c.got += blocks * cost;
                    *slot += blocks * cost;
                    let busy = Duration::from_nanos(blocks * cost * 1_000_000_000 / LINK);
                    c.busy_until = now + busy;
                }
            }
        }
        let got = shards
            .iter()
            .flat_map(|(_, t)| t.iter().map(|(_, c)| c.got))
            .collect();
        (per_ms, got)
    }

    /// The least and most of the 10 s windows after a 1 s warm-up, as a
    /// fraction of `rate`, every 100 ms.
    fn windows(per_ms: &[u64], rate: u64) -> (f64, f64) {
        let (mut lo, mut hi) = (f64::MAX, 0f64);
        for start in (1000..=per_ms.len() - 10_000).step_by(100) {
            let sum: u64 = per_ms[start..start + 10_000].iter().sum();
            let r = sum as f64 / (rate as f64 * 10.0);
            lo = lo.min(r);
            hi = hi.max(r);
        }
        (lo, hi)
    }

    #[test]
    fn one_leecher_gets_the_whole_box_cap_at_1_2_and_8_shards() {
        let rate: Rate = "40MB/s".parse().unwrap();
        let r = rate.bytes_per_sec().unwrap();
        for shards in [1usize, 2, 8] {
            let mut layout = vec![0; shards];
            layout[shards - 1] = 1;
            let (per_ms, _) = run(rate, &layout, 13);
            let (lo, hi) = windows(&per_ms, r);
            eprintln!("{shards} shard(s), one leecher: {lo:.4}..{hi:.4} of the cap");
            assert!(
                lo >= 0.98 && hi <= 1.02,
                "{shards} shards: 10 s windows at {lo:.4}..{hi:.4} of the cap"
            );
        }
    }

    #[test]
    fn connections_share_the_box_cap_fairly_wherever_they_landed() {
        let rate: Rate = "100MB/s".parse().unwrap();
        let r = rate.bytes_per_sec().unwrap();
        let (per_ms, got) = run(rate, &[1, 7, 0, 0, 3, 0, 0, 1], 13);
        let (lo, hi) = windows(&per_ms, r);
        eprintln!("8 shards, 12 leechers: {lo:.4}..{hi:.4} of the cap; shares {got:?}");
        assert!(lo >= 0.98 && hi <= 1.02, "{lo:.4}..{hi:.4} of the cap");
        let (min, max) = (got.iter().min().unwrap(), got.iter().max().unwrap());
        assert!(*max as f64 <= *min as f64 * 1.05, "unfair: {got:?}");
    }
}
