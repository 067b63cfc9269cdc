//! The send fence: "every shard has finished every send and disk read it
//! started before I withdrew these pieces".
//!
//! Why: a zero-copy send points the kernel at the file's pages. When a
//! served file is about to be written (a lease break, see [`super::lease`]),
//! the watcher withdraws its pieces and must then know that no operation
//! that may still read those pages is in flight before it lets the writer
//! go. New operations are safe once a shard has seen the withdrawal: every
//! block is checked against the availability bits when its send is built.
//!
//! How: the watcher clears the bits and then [`SendFence::raise`]s the
//! epoch. Each shard, once per loop turn, [`FenceTracker::observe`]s the
//! epoch before building any send, tags every send and disk read it starts
//! with the epoch it observed, and [`FenceTracker::publish`]es the oldest
//! epoch still in flight (or the observed one when nothing older is). An
//! epoch is passed when every registered shard has published at least it.
//! A shard that exits counts as passed.
//!
//! What it does not do: it never blocks a shard, and a shard never takes a
//! lock (registration aside). A send stuck behind a peer that stopped
//! reading keeps the fence closed; after a deadline the watcher
//! [`SendFence::force`]s it and the shards close the connections that hold
//! such sends (see `engine::shard`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared by the watcher and every shard (one per catalog).
#[derive(Debug, Default)]
pub struct SendFence {
    epoch: AtomicU64,
    forced: AtomicU64,
    shards: Mutex<Vec<Arc<ShardMark>>>,
}

#[derive(Debug, Default)]
struct ShardMark {
    /// Every operation started before this epoch has finished.
    passed: AtomicU64,
    exited: AtomicBool,
}

impl SendFence {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shard joins; it must observe and publish once per loop turn.
    pub fn register(&self) -> FenceTracker {
        let mark = Arc::new(ShardMark::default());
        let now = self.epoch.load(Ordering::SeqCst);
        mark.passed.store(now, Ordering::SeqCst);
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&mark));
        FenceTracker {
            mark,
            seen: now,
            inflight: VecDeque::with_capacity(4),
        }
    }

    /// Start a new epoch (call after withdrawing pieces); returns it.
    pub fn raise(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The current epoch (what a shard observes).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether every live shard has passed `epoch`.
    pub fn passed(&self, epoch: u64) -> bool {
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        shards
            .iter()
            .all(|m| m.exited.load(Ordering::Acquire) || m.passed.load(Ordering::Acquire) >= epoch)
    }

    /// Wait (polling every millisecond) until `epoch` is passed or
    /// `timeout` runs out; true if passed.
    pub fn wait(&self, epoch: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.passed(epoch) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Ask the shards to close connections whose sends started before
    /// `epoch` are still in flight.
    pub fn force(&self, epoch: u64) {
        self.forced.fetch_max(epoch, Ordering::SeqCst);
    }

    /// The epoch the shards are asked to force (0: none).
    pub fn forced(&self) -> u64 {
        self.forced.load(Ordering::Relaxed)
    }
}

/// One shard's side of the fence. Not shared: the shard owns it.
#[derive(Debug)]
pub struct FenceTracker {
    mark: Arc<ShardMark>,
    seen: u64,
    /// (epoch, operations in flight started under it), oldest first.
    inflight: VecDeque<(u64, u32)>,
}

impl FenceTracker {
    /// Read the fence's epoch. Call at the top of every loop turn, before
    /// building any send: sends built after this see every withdrawal made
    /// before the epoch was raised.
    pub fn observe(&mut self, fence: &SendFence) {
        self.seen = fence.epoch();
    }

    /// An operation that may read file pages starts; tag it with the result.
    pub fn begin(&mut self) -> u64 {
        match self.inflight.back_mut() {
            Some((e, n)) if *e == self.seen => *n += 1,
            _ => self.inflight.push_back((self.seen, 1)),
        }
        self.seen
    }

    /// Another operation under `epoch` starts, e.g. a carrier that keeps a
    /// send's bytes after the send completes (uTP holds them until they
    /// are acknowledged). `epoch` is one this tracker handed out.
    pub fn retain(&mut self, epoch: u64) {
        match self.inflight.iter().position(|&(e, _)| e >= epoch) {
            Some(i) if self.inflight[i].0 == epoch => self.inflight[i].1 += 1,
            Some(i) => self.inflight.insert(i, (epoch, 1)),
            None => self.inflight.push_back((epoch, 1)),
        }
    }

    /// The operation tagged `epoch` has finished (its last completion).
    pub fn end(&mut self, epoch: u64) {
        if let Some(i) = self.inflight.iter().position(|&(e, _)| e == epoch) {
            self.inflight[i].1 -= 1;
        }
        while self.inflight.front().is_some_and(|&(_, n)| n == 0) {
            self.inflight.pop_front();
        }
    }

    /// The oldest epoch with an operation in flight.
    pub fn oldest(&self) -> Option<u64> {
        self.inflight.front().map(|&(e, _)| e)
    }

    /// Tell the watcher how far this shard has got. Call at the end of
    /// every loop turn.
    pub fn publish(&self) {
        let passed = self.oldest().map_or(self.seen, |o| o.min(self.seen));
        self.mark.passed.store(passed, Ordering::Release);
    }
}

impl Drop for FenceTracker {
    fn drop(&mut self) {
        self.mark.exited.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_passes_when_older_operations_finish() {
        let fence = SendFence::new();
        let mut a = fence.register();
        let mut b = fence.register();
        a.observe(&fence);
        let old = a.begin();
        a.publish();
        b.observe(&fence);
        b.publish();

        let e = fence.raise();
        assert!(!fence.passed(e), "nobody observed yet");
        b.observe(&fence);
        b.publish();
        a.observe(&fence);
        let new = a.begin(); // built after the withdrawal: fine
        a.publish();
        assert!(!fence.passed(e), "a still has an old send in flight");
        a.end(old);
        a.publish();
        assert!(fence.passed(e));
        a.end(new);
        a.publish();
        assert!(fence.passed(e));
        assert_eq!(a.oldest(), None);
    }

    #[test]
    fn an_exited_shard_does_not_hold_the_fence() {
        let fence = SendFence::new();
        let mut a = fence.register();
        a.observe(&fence);
        let _stuck = a.begin();
        a.publish();
        let e = fence.raise();
        assert!(!fence.wait(e, Duration::from_millis(5)));
        drop(a);
        assert!(fence.wait(e, Duration::from_millis(5)));
    }

    #[test]
    fn out_of_order_completions_keep_the_oldest() {
        let fence = SendFence::new();
        let mut a = fence.register();
        a.observe(&fence);
        let e0 = a.begin();
        fence.raise();
        a.observe(&fence);
        let e1 = a.begin();
        let e1b = a.begin();
        assert_eq!(e1, e1b);
        a.end(e1);
        assert_eq!(a.oldest(), Some(e0));
        a.end(e0);
        assert_eq!(a.oldest(), Some(e1));
        a.end(e1b);
        assert_eq!(a.oldest(), None);
        fence.force(3);
        assert_eq!(fence.forced(), 3);
    }
}
