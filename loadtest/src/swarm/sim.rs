//! A deterministic in-memory swarm with a virtual clock: [`Node`]s joined by
//! lossless links, no sockets, no threads, no real time. Used by the tests
//! of the leecher logic (rarest first, choking, rate caps, super-seed
//! haves) the way quinn tests its protocol state machine.
//!
//! Each [`Sim::step`] advances the clock, runs due timers, then moves bytes
//! over every link in both directions exactly as the real driver does:
//! the sender's [`Node::output`] within its upload cap, the receiver's
//! [`Node::handle_data`] within its download cap ([`Node::read_budget`]),
//! leftovers kept. Links have no bandwidth limit or latency of their own.

use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::node::{ConnectRequest, Node};
use super::PeerKey;

#[derive(Debug)]
struct Link {
    /// (node, key) of the connecting end, then the accepting end.
    ends: [(usize, PeerKey); 2],
    /// Bytes on their way to end `i`.
    inflight: [Vec<u8>; 2],
    /// Bytes end `i` has not consumed yet (part of a message).
    leftover: [Vec<u8>; 2],
}

/// See the module docs.
#[derive(Debug)]
pub struct Sim {
    pub now: Instant,
    pub nodes: Vec<Node>,
    links: Vec<Option<Link>>,
    /// Connections closed, with the node-reported reason.
    pub closed: Vec<&'static str>,
}

impl Sim {
    pub fn new(now: Instant, nodes: Vec<Node>) -> Self {
        Sim {
            now,
            nodes,
            links: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// A fake address for node `i` (links do not use addresses).
    pub fn addr(i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8), 6881))
    }

    /// Node `a` connects to node `b`; `target`: `b` is `a`'s `--target` seed.
    pub fn connect(&mut self, a: usize, b: usize, target: bool) {
        let l = self.links.len() as u64;
        let now = self.now;
        let req = ConnectRequest {
            addr: Self::addr(b),
            target,
        };
        let ka = self.nodes[a].add_outgoing(now, 2 * l, req);
        let Some(kb) = self.nodes[b].add_incoming(now, 2 * l + 1, Self::addr(a)) else {
            self.nodes[a].remove_peer(now, ka, "refused");
            return;
        };
        self.nodes[a].on_connected(now, ka);
        self.links.push(Some(Link {
            ends: [(a, ka), (b, kb)],
            inflight: [Vec::new(), Vec::new()],
            leftover: [Vec::new(), Vec::new()],
        }));
    }

    /// Every node connects to every other node with a higher index.
    pub fn full_mesh(&mut self, from: usize) {
        for a in from..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                self.connect(b, a, false);
            }
        }
    }

    /// Runs until `done` holds or `limit` of virtual time passed; returns
    /// the virtual time taken.
    pub fn run_until(
        &mut self,
        dt: Duration,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Duration {
        let start = self.now;
        while !done(self) && self.now.duration_since(start) < limit {
            self.step(dt);
        }
        self.now.duration_since(start)
    }

    pub fn step(&mut self, dt: Duration) {
        self.now += dt;
        let now = self.now;
        for n in &mut self.nodes {
            if now >= n.next_timeout() {
                n.tick(now);
            }
        }
        for l in 0..self.links.len() {
            for to in 0..2 {
                self.send(l, 1 - to, to);
                self.receive(l, to);
            }
        }
        self.closes();
        let mut scratch = Vec::new();
        for n in &mut self.nodes {
            scratch.clear();
            n.take_dirty(&mut scratch);
            n.take_lazy(&mut scratch);
        }
    }

    fn send(&mut self, l: usize, from: usize, to: usize) {
        let now = self.now;
        let Some(link) = self.links[l].as_mut() else {
            return;
        };
        let (node, key) = link.ends[from];
        let n = &mut self.nodes[node];
        loop {
            let mut iov: Vec<IoSlice<'_>> = Vec::new();
            let out = n.output(now, key, &mut iov);
            if out.bytes == 0 {
                break;
            }
            for s in &iov {
                link.inflight[to].extend_from_slice(s);
            }
            drop(iov);
            n.consume_output(now, key, out.bytes);
        }
    }

    fn receive(&mut self, l: usize, to: usize) {
        let now = self.now;
        let Some(link) = self.links[l].as_mut() else {
            return;
        };
        let (node, key) = link.ends[to];
        let n = &mut self.nodes[node];
        let take = n.read_budget(now).min(link.inflight[to].len());
        if take == 0 {
            return;
        }
        let mut data = std::mem::take(&mut link.leftover[to]);
        data.extend(link.inflight[to].drain(..take));
        match n.handle_data(now, key, &data) {
            Ok(used) => link.leftover[to] = data[used..].to_vec(),
            Err(reason) => self.close_link(l, reason),
        }
    }

    fn close_link(&mut self, l: usize, reason: &'static str) {
        let now = self.now;
        if let Some(link) = self.links[l].take() {
            self.closed.push(reason);
            for (node, key) in link.ends {
                self.nodes[node].remove_peer(now, key, reason);
            }
        }
    }

    fn closes(&mut self) {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            out.clear();
            self.nodes[i].take_closes(&mut out);
            for &(_, conn, reason) in &out {
                self.close_link((conn / 2) as usize, reason);
            }
        }
    }
}
