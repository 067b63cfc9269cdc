//! One generator thread over uTP (`--transport utp`): the same
//! [`Leecher`]s as [`crate::net`], carried by ringseed's sans-IO uTP
//! ([`ringseed::utp::Endpoint`]) instead of TCP sockets.
//!
//! A thread has one nonblocking UDP socket per source address (as a real
//! client has one UDP socket for all its uTP peers), each with its own
//! `Endpoint`; connections are spread over them round robin. Each loop
//! turn: datagrams in (up to [`RECV_BATCH`] per socket), the touched
//! connections' bytes to and from their leechers, timers, then every
//! datagram the endpoints have ready out. A connection the run closes gets
//! a FIN and stays in its endpoint until the FIN is acknowledged or
//! [`DRAIN`] has passed, so a seeder is not left with half-dead peers.
//!
//! Payload is copied once, out of the uTP receive buffer into the
//! leecher's parser: uTP has no kernel-side stream to discard from.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringseed::utp::{CloseReason, ConnKey, Endpoint, EndpointConfig};
use socket2::SockRef;

use crate::leecher::Leecher;
use crate::net::{
    note_completed, pick_torrent, pin_to_cpu, rarity_tables, record_close, Epoll, Shared,
    ThreadPlan, READ_BUF,
};
use crate::rng::Rng;
use crate::stats::{DropReason, Live, Stats};

/// Datagrams read per socket per loop turn.
const RECV_BATCH: usize = 512;
/// How long a closed connection may take to finish its FIN.
const DRAIN: Duration = Duration::from_secs(2);
/// Socket buffers asked for: a burst of a seeder's window must not be
/// dropped by our own socket.
const SOCKET_BUFFER: usize = 8 << 20;

struct UConn {
    sock: usize,
    key: ConnKey,
    leecher: Leecher,
    connecting: bool,
    opened: Instant,
    leftover: Vec<u8>,
    torrent_index: usize,
}

struct Udp {
    sock: UdpSocket,
    endpoint: Endpoint,
    slots: HashMap<ConnKey, usize>,
}

struct UtpThread<'a> {
    sh: &'a Shared,
    plan: &'a ThreadPlan,
    udp: Vec<Udp>,
    conns: Vec<Option<UConn>>,
    free: Vec<usize>,
    active: usize,
    next_sock: usize,
    rng: Rng,
    stats: Stats,
    rarity: Vec<Vec<u32>>,
    scratch: Vec<u32>,
    /// Slots that received something this turn.
    touched: Vec<usize>,
    /// Closed by us, waiting for their FIN to finish: (socket, key, since).
    draining: Vec<(usize, ConnKey, Instant)>,
    no_open_before: Instant,
}

fn bind_sockets(sh: &Shared, plan: &ThreadPlan, seed: u64) -> std::io::Result<Vec<Udp>> {
    let any = match sh.target.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let ips = if plan.source_ips.is_empty() {
        vec![any]
    } else {
        plan.source_ips.clone()
    };
    ips.iter()
        .enumerate()
        .map(|(i, ip)| {
            let sock = UdpSocket::bind(SocketAddr::new(*ip, 0))?;
            sock.set_nonblocking(true)?;
            let r = SockRef::from(&sock);
            // Best effort: the kernel caps these at rmem_max / wmem_max.
            let _ = r.set_recv_buffer_size(SOCKET_BUFFER);
            let _ = r.set_send_buffer_size(SOCKET_BUFFER);
            let cfg = EndpointConfig {
                accept: false,
                ..EndpointConfig::default()
            };
            Ok(Udp {
                sock,
                endpoint: Endpoint::new(cfg, seed ^ (i as u64).wrapping_mul(0x9e37_79b9)),
                slots: HashMap::new(),
            })
        })
        .collect()
}

/// Runs one uTP generator thread until `deadline` or `stop`.
pub fn run_thread_utp(sh: &Shared, plan: &ThreadPlan, deadline: Instant) -> Stats {
    if let Some(cpu) = plan.cpu {
        if let Err(e) = pin_to_cpu(cpu) {
            eprintln!("loadtest thread {}: pin to CPU {cpu}: {e}", plan.index);
        }
    }
    let failed = |what: &str, e: std::io::Error| {
        eprintln!("loadtest thread {}: {what}: {e}", plan.index);
        let mut s = Stats::default();
        s.count_drop(DropReason::IoError);
        s
    };
    let ep = match Epoll::new() {
        Ok(ep) => ep,
        Err(e) => return failed("epoll_create1", e),
    };
    let udp = match bind_sockets(sh, plan, plan.seed) {
        Ok(u) => u,
        Err(e) => return failed("bind UDP socket", e),
    };
    for (i, u) in udp.iter().enumerate() {
        if let Err(e) = ep.ctl(
            libc::EPOLL_CTL_ADD,
            u.sock.as_raw_fd(),
            libc::EPOLLIN as u32,
            i as u64,
        ) {
            return failed("epoll_ctl", e);
        }
    }
    let start = Instant::now();
    let mut t = UtpThread {
        sh,
        plan,
        udp,
        conns: Vec::new(),
        free: Vec::new(),
        active: 0,
        next_sock: plan.index,
        rng: Rng::new(plan.seed),
        stats: Stats::default(),
        rarity: rarity_tables(sh),
        scratch: Vec::new(),
        touched: Vec::new(),
        draining: Vec::new(),
        no_open_before: start,
    };
    let mut buf = vec![0u8; READ_BUF + crate::leecher::MAX_MESSAGE_LEN as usize + 64];
    let mut dgram = vec![0u8; 64 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut last_tick = start;
    let mut churn_credit = 0.0f64;
    let mut last_churn = start;
    while !sh.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        t.open_more(now, start);
        if plan.churn > 0.0 {
            churn_credit += plan.churn * now.duration_since(last_churn).as_secs_f64();
            last_churn = now;
            while churn_credit >= 1.0 {
                churn_credit -= 1.0;
                t.churn_one(now);
            }
        }
        if now.duration_since(last_tick) >= Duration::from_millis(250) {
            last_tick = now;
            t.check_timeouts(now);
        }
        // Timers first: what they queue goes out with this turn's sends.
        for u in &mut t.udp {
            if u.endpoint.poll_timeout().is_some_and(|d| d <= now) {
                u.endpoint.handle_timeout(now);
            }
        }
        t.flush(now, &mut dgram);
        let wait_ms = t
            .udp
            .iter()
            .filter_map(|u| u.endpoint.poll_timeout())
            .min()
            .map_or(10, |d| {
                d.saturating_duration_since(now).as_millis().clamp(0, 10) as i32
            });
        let n = ep.wait(&mut events, wait_ms);
        let now = Instant::now();
        for ev in events.iter().take(n) {
            t.receive(now, ev.u64 as usize, &mut dgram);
        }
        t.service(now, &mut buf);
        t.flush(now, &mut dgram);
    }
    let now = Instant::now();
    for i in 0..t.conns.len() {
        if t.conns[i].is_some() {
            t.close(i, now, DropReason::RunEnded);
        }
    }
    // Send the FINs once; the seeder learns the rest by its timeouts.
    t.flush(now, &mut dgram);
    t.stats
}

impl UtpThread<'_> {
    fn open_more(&mut self, now: Instant, start: Instant) {
        if now < self.no_open_before {
            return;
        }
        let allowed = self.plan.allowed(now, start);
        let mut budget = 256;
        while self.active < allowed && budget > 0 {
            budget -= 1;
            self.open(now);
        }
    }

    fn open(&mut self, now: Instant) {
        self.stats.connect_attempts += 1;
        let si = self.next_sock % self.udp.len();
        self.next_sock = self.next_sock.wrapping_add(1);
        let ti = pick_torrent(&self.sh.popularity_cdf, &mut self.rng);
        let leecher = Leecher::new(
            self.sh.torrents[ti].clone(),
            self.sh.leecher.clone(),
            &mut self.rng,
            &self.rarity[ti],
        );
        let key = self.udp[si].endpoint.connect(now, self.sh.target);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.udp[si].slots.insert(key, slot);
        self.conns[slot] = Some(UConn {
            sock: si,
            key,
            leecher,
            connecting: true,
            opened: now,
            leftover: Vec::new(),
            torrent_index: ti,
        });
        self.active += 1;
        Live::add(&self.sh.live.active, 1);
    }

    /// Datagrams waiting on socket `si` into its endpoint.
    fn receive(&mut self, now: Instant, si: usize, dgram: &mut [u8]) {
        let Some(u) = self.udp.get_mut(si) else {
            return;
        };
        for _ in 0..RECV_BATCH {
            let (n, from) = match u.sock.recv_from(dgram) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // WouldBlock; or an ICMP error for an earlier datagram
                // (the seeder's port closed): its connection times out.
                Err(_) => return,
            };
            if let Some(key) = u.endpoint.handle(now, from, &dgram[..n]) {
                if let Some(&slot) = u.slots.get(&key) {
                    self.touched.push(slot);
                }
            }
        }
    }

    /// Moves bytes between the touched connections and their leechers.
    fn service(&mut self, now: Instant, buf: &mut [u8]) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &slot in &touched {
            if let Err(reason) = self.service_one(now, slot, buf) {
                self.close(slot, now, reason);
            }
        }
        touched.clear();
        self.touched = touched;
    }

    fn service_one(&mut self, now: Instant, slot: usize, buf: &mut [u8]) -> Result<(), DropReason> {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return Ok(());
        };
        let Some(conn) = self.udp[c.sock].endpoint.conn_mut(c.key) else {
            return Err(DropReason::IoError);
        };
        if c.connecting {
            if conn.is_established() {
                c.connecting = false;
                c.leecher.on_connected(now);
                self.stats.connections_established += 1;
                Live::add(&self.sh.live.established, 1);
            } else if conn.is_closed() {
                return Err(DropReason::IoError);
            } else {
                return Ok(());
            }
        }
        let before = self.stats.payload_bytes;
        let blocks_before = self.stats.blocks;
        loop {
            let keep = c.leftover.len();
            buf[..keep].copy_from_slice(&c.leftover);
            let n = conn.read(&mut buf[keep..]);
            if n == 0 {
                break;
            }
            let consumed = c
                .leecher
                .handle_data(now, &buf[..keep + n], &mut self.stats)?;
            c.leftover.clear();
            c.leftover.extend_from_slice(&buf[consumed..keep + n]);
        }
        Live::add(
            &self.sh.live.payload_bytes,
            self.stats.payload_bytes - before,
        );
        Live::add(&self.sh.live.blocks, self.stats.blocks - blocks_before);
        note_completed(
            &mut self.rarity[c.torrent_index],
            &mut c.leecher,
            &mut self.scratch,
        );
        let out = c.leecher.pending_output();
        if !out.is_empty() {
            let n = conn.write(out);
            c.leecher.consume_output(n);
        }
        if c.leecher.is_done() {
            return Err(DropReason::Completed);
        }
        match conn.close_reason() {
            None if conn.is_eof() => Err(DropReason::PeerClosed),
            None => Ok(()),
            Some(CloseReason::Done | CloseReason::Reset) => Err(DropReason::PeerClosed),
            Some(CloseReason::Timeout | CloseReason::ZeroWindow) => Err(DropReason::Stalled),
            Some(CloseReason::ConnectTimeout | CloseReason::Aborted) => Err(DropReason::IoError),
        }
    }

    /// Every datagram the endpoints have ready, then drained connections out.
    fn flush(&mut self, now: Instant, dgram: &mut [u8]) {
        for u in &mut self.udp {
            while let Some((to, n)) = u.endpoint.poll_transmit(now, dgram) {
                match u.sock.send_to(&dgram[..n], to) {
                    Ok(_) => {}
                    // A full socket buffer drops this one; uTP resends it.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {}
                }
            }
        }
        let udp = &mut self.udp;
        self.draining.retain(|&(si, key, since)| {
            let e = &mut udp[si].endpoint;
            let done = e.conn(key).is_none_or(|c| c.is_closed());
            if done || now.saturating_duration_since(since) > DRAIN {
                e.remove(key);
                false
            } else {
                true
            }
        });
    }

    fn close(&mut self, slot: usize, now: Instant, reason: DropReason) {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.active -= 1;
        self.sh.live.active.fetch_sub(1, Ordering::Relaxed);
        let u = &mut self.udp[c.sock];
        u.slots.remove(&c.key);
        if let Some(conn) = u.endpoint.conn_mut(c.key) {
            if conn.is_closed() {
                u.endpoint.remove(c.key);
            } else {
                conn.close();
                self.draining.push((c.sock, c.key, now));
            }
        }
        if c.connecting {
            self.stats.connections_failed += 1;
            Live::add(&self.sh.live.failed, 1);
            return;
        }
        record_close(&mut self.stats, &self.sh.live, &c.leecher, now, reason);
    }

    fn churn_one(&mut self, now: Instant) {
        if self.active == 0 {
            return;
        }
        let start = self.rng.below(self.conns.len() as u64) as usize;
        for k in 0..self.conns.len() {
            let i = (start + k) % self.conns.len();
            if matches!(&self.conns[i], Some(c) if !c.connecting) {
                self.close(i, now, DropReason::Churn);
                return;
            }
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let reason = match &self.conns[i] {
                Some(c) if c.connecting => (now.duration_since(c.opened) > self.sh.connect_timeout)
                    .then_some(DropReason::Stalled),
                Some(c) => c.leecher.check_timeout(now),
                None => None,
            };
            if let Some(r) = reason {
                self.close(i, now, r);
            }
        }
    }
}
