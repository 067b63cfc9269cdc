//! The send-progress timeout: a peer that stops reading is closed, whatever
//! it sends us (keep-alives, requests), so it cannot hold its slot, its
//! send and its page-cache references forever.
//!
//! Two ways a peer stops reading, both caught within the timeout:
//! - a send of ours is in flight and makes no progress (the kernel's
//!   socket buffer is full): closed `timeout` after the last progress;
//! - everything fitted into the kernel's buffers, so nothing of ours is in
//!   flight, but the socket's send queue (`SIOCOUTQ`) does not shrink. The
//!   queue is only looked at once the last send completed `timeout / 2` ago
//!   and until it is seen empty, so idle peers that read cost nothing; such
//!   a peer is closed about `1.5 x timeout` after its last completed send.
//!
//! Sans-IO: the driver reports sends and their progress, and reads the
//! queue's length only when asked (the `unsent` closure of
//! [`SendWatch::stalled`]).

use std::time::{Duration, Instant};

/// What is known of bytes left in a connection's socket send queue with
/// nothing of ours in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    /// Not looked at since the last send completed.
    Unknown,
    /// Empty when last looked at: the peer read everything.
    Drained,
    /// This many bytes were queued at this time and have not shrunk since.
    Stuck(u32, Instant),
}

/// One connection's send-progress clock; see the module doc.
#[derive(Clone, Copy, Debug)]
pub struct SendWatch {
    last_progress: Instant,
    queue: Queue,
}

impl SendWatch {
    pub fn new(now: Instant) -> Self {
        Self {
            last_progress: now,
            queue: Queue::Unknown,
        }
    }

    /// A send went in flight with none in flight before: its clock starts.
    pub fn send_started(&mut self, now: Instant) {
        self.last_progress = now;
    }

    /// A send's completion reported bytes taken by the kernel.
    pub fn progressed(&mut self, now: Instant) {
        self.last_progress = now;
        self.queue = Queue::Unknown;
    }

    /// Whether the peer has stopped reading (call once per tick).
    /// `in_flight`: a send of ours is in flight. `unsent`: the bytes in the
    /// socket's send queue, or `None` where there is no queue to watch (uTP,
    /// whose window closes instead; a handshake not yet done).
    pub fn stalled(
        &mut self,
        now: Instant,
        timeout: Duration,
        in_flight: bool,
        unsent: impl FnOnce() -> Option<u32>,
    ) -> bool {
        let idle = now.saturating_duration_since(self.last_progress);
        if in_flight {
            return idle >= timeout;
        }
        if self.queue == Queue::Drained || idle < timeout / 2 {
            return false;
        }
        let Some(queued) = unsent() else {
            return false;
        };
        match self.queue {
            _ if queued == 0 => self.queue = Queue::Drained,
            Queue::Stuck(before, since) if queued >= before => {
                return now.saturating_duration_since(since) >= timeout;
            }
            _ => self.queue = Queue::Stuck(queued, now),
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const T: Duration = Duration::from_secs(30);

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_send_in_flight_without_progress_times_out() {
        let t0 = Instant::now();
        let mut w = SendWatch::new(t0);
        w.send_started(t0);
        let never = || -> Option<u32> { panic!("the queue is not looked at") };
        assert!(!w.stalled(t0 + s(29.9), T, true, never));
        assert!(w.stalled(t0 + T, T, true, never));
        // Progress at 20 s moves the deadline to 50 s.
        w.progressed(t0 + s(20.0));
        assert!(!w.stalled(t0 + s(49.9), T, true, never));
        assert!(w.stalled(t0 + s(50.0), T, true, never));
    }

    #[test]
    fn a_queue_that_does_not_shrink_times_out_at_one_and_a_half_timeouts() {
        let t0 = Instant::now();
        let mut w = SendWatch::new(t0);
        w.progressed(t0); // the last send completed
        let looks = Cell::new(0);
        let queue = |n: u32| {
            let looks = &looks;
            move || {
                looks.set(looks.get() + 1);
                Some(n)
            }
        };
        // Not looked at before half the timeout.
        for sec in 0..15 {
            assert!(!w.stalled(t0 + s(f64::from(sec)), T, false, queue(1000)));
        }
        assert_eq!(looks.get(), 0);
        let mut sec = 15;
        while !w.stalled(t0 + s(f64::from(sec)), T, false, queue(1000)) {
            sec += 1;
            assert!(sec <= 60, "never closed");
        }
        assert_eq!(sec, 45, "1.5 x the timeout after the last send");
    }

    #[test]
    fn a_queue_that_shrinks_or_drains_is_a_reading_peer() {
        let t0 = Instant::now();
        let mut w = SendWatch::new(t0);
        w.progressed(t0);
        // Shrinking by a little every second: never closed.
        for sec in 15..200u32 {
            let left = 100_000 - sec * 10;
            assert!(!w.stalled(t0 + s(f64::from(sec)), T, false, || Some(left)));
        }
        // Seen empty once: not looked at again until the next send.
        assert!(!w.stalled(t0 + s(200.0), T, false, || Some(0)));
        for sec in 201..400 {
            let never = || -> Option<u32> { panic!("looked at a drained queue") };
            assert!(!w.stalled(t0 + s(f64::from(sec)), T, false, never));
        }
        w.progressed(t0 + s(400.0));
        assert!(
            !w.stalled(t0 + s(416.0), T, false, || Some(5)),
            "watched again"
        );
    }

    #[test]
    fn without_a_queue_to_watch_only_a_send_in_flight_times_out() {
        let t0 = Instant::now();
        let mut w = SendWatch::new(t0);
        for sec in 0..1000 {
            assert!(!w.stalled(t0 + s(f64::from(sec)), T, false, || None));
        }
        assert!(w.stalled(t0 + s(1000.0), T, true, || None));
    }
}
