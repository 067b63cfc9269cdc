//! The set of torrents served, for `/metrics`: how many are in each state
//! (`ringseed_torrents{state}`) and how many changes were made while
//! serving (`ringseed_torrent_changes_total{kind}`). Written by the control
//! plane (`control::registry`), read at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::names;

/// What a torrent is doing (the `state` label, and the control API's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorrentState {
    /// Being created or verified; not served yet.
    Verifying,
    Serving,
    /// Taken out: no new peers, its peers being closed.
    Draining,
}

impl TorrentState {
    pub const ALL: [TorrentState; 3] = [Self::Verifying, Self::Serving, Self::Draining];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verifying => "verifying",
            Self::Serving => "serving",
            Self::Draining => "draining",
        }
    }
}

/// A change to the served set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorrentChange {
    Added,
    Removed,
    /// New content under a name already served (`serve DIR`).
    Replaced,
}

impl TorrentChange {
    pub const ALL: [TorrentChange; 3] = [Self::Added, Self::Removed, Self::Replaced];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Replaced => "replaced",
        }
    }
}

/// Gauges by state and counters by change.
#[derive(Debug, Default)]
pub struct TorrentCounts {
    states: [AtomicU64; 3],
    changes: [AtomicU64; 3],
}

impl TorrentCounts {
    /// A torrent entered `to` (and left `from`, if it was somewhere).
    pub fn moved(&self, from: Option<TorrentState>, to: Option<TorrentState>) {
        if let Some(f) = from {
            self.states[f as usize].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(t) = to {
            self.states[t as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn changed(&self, kind: TorrentChange) {
        self.changes[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn in_state(&self, s: TorrentState) -> u64 {
        self.states[s as usize].load(Ordering::Relaxed)
    }

    pub fn changes(&self, kind: TorrentChange) -> u64 {
        self.changes[kind as usize].load(Ordering::Relaxed)
    }

    /// Both families in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {n} Torrents by state (verifying, serving, draining).\n# TYPE {n} gauge",
            n = names::TORRENTS
        );
        for s in TorrentState::ALL {
            let _ = writeln!(
                out,
                "{}{{state=\"{}\"}} {}",
                names::TORRENTS,
                s.as_str(),
                self.in_state(s)
            );
        }
        let _ = writeln!(
            out,
            "# HELP {n} Torrents added, removed and replaced while serving.\n# TYPE {n} counter",
            n = names::TORRENT_CHANGES
        );
        for k in TorrentChange::ALL {
            let _ = writeln!(
                out,
                "{}{{kind=\"{}\"}} {}",
                names::TORRENT_CHANGES,
                k.as_str(),
                self.changes(k)
            );
        }
    }
}
