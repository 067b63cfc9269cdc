//! Following the catalogue in a shard: take a new version at the top of the
//! loop, keep the per-torrent state (upload-cap limiters, super-seed
//! selectors) in step with it, and drain the connections of torrents being
//! taken out.
//!
//! A connection of a draining torrent goes through, in order:
//! 1. [`Drain::Grace`]: served as usual until the torrent's drain grace
//!    (`--drain-grace`, default 0) has passed;
//! 2. [`Drain::Choked`]: choked and out of the choker and the super-seed
//!    selector, so nothing new is queued for it (queued requests are dropped,
//!    or rejected for fast peers); the send in flight and any disk reads
//!    complete, the choke goes out;
//! 3. [`Drain::FinSent`]: with nothing left to send, our side of the stream
//!    is shut (FIN after the last whole message, never a torn one); what the
//!    peer still sends is ignored until it closes, or `core::FIN_WAIT` passes.
//!
//! Where a connection goes next is `Conn::drain_step` (sans-IO); this file
//! carries the steps out.
//!
//! The connection then closes as usual; its slot (and with it its hold on the
//! torrent's files) is freed once nothing of it is in flight.

use std::time::Instant;

use super::super::core::{Carrier, Drain, DrainStep};
use super::super::stats::CloseKind;
use super::Shard;

impl Shard {
    /// Top of the loop, before the fence is observed: take the current
    /// catalogue if it changed (one atomic load when it did not).
    pub(super) fn follow_catalog(&mut self, now: Instant) {
        if self.live.version() == self.catalog_version {
            return;
        }
        let (version, catalog) = self.live.load_versioned();
        self.catalog_version = version;
        self.catalog = catalog;
        self.policies.follow(now, &self.catalog);
        if !self.catalog.torrents().iter().any(|t| t.is_draining()) {
            return;
        }
        for (id, c) in self.conns.iter_mut() {
            if c.closing.is_some() || c.drain.is_some() {
                continue;
            }
            if let Some(t) = c.torrent.as_ref().filter(|t| t.is_draining()) {
                c.drain = Some(Drain::Grace {
                    until: now + t.drain_grace(),
                });
                self.draining.push(id.index());
            }
        }
    }

    /// Every loop turn: move draining connections along.
    pub(super) fn drain_turn(&mut self, now: Instant) {
        if self.draining.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.draining);
        let mut keep = Vec::with_capacity(list.len());
        for idx in list {
            let Some(c) = self.conns.at_mut(idx) else {
                continue;
            };
            if c.closing.is_some() {
                continue;
            }
            match c.drain_step(now) {
                Some(DrainStep::Wait) => keep.push(idx),
                Some(DrainStep::Choke) => {
                    self.drain_choke(now, idx);
                    keep.push(idx);
                }
                Some(DrainStep::SendFin { deadline }) => {
                    match &c.carrier {
                        Carrier::Tcp(fd) => {
                            let _ = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Write);
                        }
                        Carrier::Utp(l) => self.utp_fin.push(*l),
                    }
                    c.drain = Some(Drain::FinSent { deadline });
                    keep.push(idx);
                }
                Some(DrainStep::Close) => self.close(idx, CloseKind::Shutdown),
                None => {}
            }
        }
        keep.append(&mut self.draining);
        self.draining = keep;
    }

    /// Stop serving connection `idx`: choke it and take it out of the
    /// choker, the super-seed selector and the upload-cap queues.
    fn drain_choke(&mut self, now: Instant, idx: u32) {
        let mut cx = conns!(self);
        self.policies.handle_drain(now, &mut cx, idx);
    }
}
