//! One generator thread over uTP (`--transport utp`): the same
//! [`Leecher`]s as [`crate::net`], carried by ringseed's sans-IO uTP
//! ([`ringseed::utp::Endpoint`]) instead of TCP sockets.
//!
//! Each connection is its own client: its own nonblocking UDP socket,
//! connected to the target and bound to the next source address, with its
//! own `Endpoint`. So connections spread over a seeder's shards as real
//! clients do (SO_REUSEPORT hashes the address pair), and one connection's
//! burst cannot overflow a socket buffer another shares. Each loop turn:
//! timers, datagrams in (up to [`RECV_BATCH`] per ready socket), the
//! touched connections' bytes to and from their leechers, then every
//! datagram ready out. A connection the run closes gets a FIN and is kept
//! (off epoll, polled each turn) until the FIN is acknowledged or [`DRAIN`]
//! has passed, so a seeder is not left with half-dead peers.
//!
//! Payload is copied once, out of the uTP receive buffer into the
//! leecher's parser: uTP has no kernel-side stream to discard from.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringseed::utp::{CloseReason, ConnKey, Endpoint, EndpointConfig};
use socket2::SockRef;

use crate::leecher::Leecher;
use crate::net::{
    note_completed, pick_torrent, record_close, thread_setup, Base, Driver, Epoll, Pacer, Shared,
    ThreadPlan, READ_BUF,
};
use crate::stats::{DropReason, Live, Stats};

/// Datagrams read per ready socket per loop turn.
const RECV_BATCH: usize = 256;
/// How long a closed connection may take to finish its FIN.
const DRAIN: Duration = Duration::from_secs(2);
/// Socket buffers asked for: more than the 1 MiB a seeder may have in
/// flight to one connection (the kernel caps it at rmem_max / wmem_max).
const SOCKET_BUFFER: usize = 4 << 20;

/// One uTP client: a socket connected to the target and its endpoint.
struct Client {
    sock: UdpSocket,
    endpoint: Endpoint,
    key: ConnKey,
}

impl Client {
    fn open(local: IpAddr, target: SocketAddr, now: Instant, seed: u64) -> std::io::Result<Self> {
        let sock = UdpSocket::bind(SocketAddr::new(local, 0))?;
        sock.connect(target)?;
        sock.set_nonblocking(true)?;
        let r = SockRef::from(&sock);
        // Best effort: a smaller buffer only means loss under bursts.
        let _ = r.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = r.set_send_buffer_size(SOCKET_BUFFER);
        let cfg = EndpointConfig {
            accept: false,
            max_connections: 1,
            ..EndpointConfig::default()
        };
        let mut endpoint = Endpoint::new(cfg, seed);
        let key = endpoint.connect(now, target);
        Ok(Client {
            sock,
            endpoint,
            key,
        })
    }

    /// Datagrams waiting into the endpoint; false if none arrived.
    fn receive(&mut self, now: Instant, dgram: &mut [u8]) -> bool {
        let mut any = false;
        for _ in 0..RECV_BATCH {
            match self.sock.recv(dgram) {
                Ok(n) => {
                    self.endpoint.handle(now, self.key.remote, &dgram[..n]);
                    any = true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // WouldBlock; or an ICMP error for an earlier datagram
                // (the seeder's port closed): the connection times out.
                Err(_) => break,
            }
        }
        any
    }

    /// Every datagram the endpoint has ready, out.
    fn transmit(&mut self, now: Instant, dgram: &mut [u8]) {
        while let Some((_, n)) = self.endpoint.poll_transmit(now, dgram) {
            // A full socket buffer drops this one; uTP resends it.
            if let Err(e) = self.sock.send(&dgram[..n]) {
                if e.kind() == ErrorKind::WouldBlock {
                    break;
                }
            }
        }
    }

    fn timers(&mut self, now: Instant) {
        if self.endpoint.poll_timeout().is_some_and(|d| d <= now) {
            self.endpoint.handle_timeout(now);
        }
    }
}

struct UConn {
    client: Client,
    leecher: Leecher,
    connecting: bool,
    opened: Instant,
    leftover: Vec<u8>,
    torrent_index: usize,
}

struct UtpThread<'a> {
    b: Base<'a>,
    ep: Epoll,
    /// Source addresses, round robin.
    local: Vec<IpAddr>,
    conns: Vec<Option<UConn>>,
    /// Slots that received something this turn.
    touched: Vec<usize>,
    /// Closed by us, finishing their FIN.
    draining: Vec<(Client, Instant)>,
}

/// Runs one uTP generator thread until `deadline` or `stop`.
pub fn run_thread_utp(sh: &Shared, plan: &ThreadPlan, deadline: Instant) -> Stats {
    let ep = match thread_setup(plan) {
        Ok(ep) => ep,
        Err(failed) => return *failed,
    };
    let any = match sh.target.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let start = Instant::now();
    let mut t = UtpThread {
        b: Base::new(sh, plan, start),
        ep,
        local: if plan.source_ips.is_empty() {
            vec![any]
        } else {
            plan.source_ips.clone()
        },
        conns: Vec::new(),
        touched: Vec::new(),
        draining: Vec::new(),
    };
    let mut buf = vec![0u8; READ_BUF + crate::leecher::MAX_MESSAGE_LEN as usize + 64];
    let mut dgram = vec![0u8; 64 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut pacer = Pacer::new(start);
    while !sh.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        pacer.turn(&mut t, now);
        // Timers first: what they queue goes out with this turn's sends.
        let mut next_timer: Option<Instant> = None;
        for i in 0..t.conns.len() {
            if let Some(c) = &mut t.conns[i] {
                c.client.timers(now);
                if c.client
                    .endpoint
                    .conn(c.client.key)
                    .is_none_or(|x| x.is_closed())
                {
                    t.touched.push(i);
                }
                next_timer = match (next_timer, c.client.endpoint.poll_timeout()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        t.service(now, &mut buf, &mut dgram);
        let wait_ms = next_timer.map_or(10, |d| {
            d.saturating_duration_since(now).as_millis().min(10) as i32
        });
        let n = t.ep.wait(&mut events, wait_ms);
        let now = Instant::now();
        for ev in events.iter().take(n) {
            let slot = ev.u64 as usize;
            if let Some(Some(c)) = t.conns.get_mut(slot) {
                if c.client.receive(now, &mut dgram) {
                    t.touched.push(slot);
                }
            }
        }
        t.service(now, &mut buf, &mut dgram);
        t.drain(now, &mut dgram);
    }
    let now = Instant::now();
    t.close_all(now);
    // Send the FINs once; the seeder learns the rest by its timeouts.
    for (c, _) in &mut t.draining {
        c.transmit(now, &mut dgram);
    }
    t.b.stats
}

impl<'a> Driver<'a> for UtpThread<'a> {
    fn base(&self) -> &Base<'a> {
        &self.b
    }
    fn base_mut(&mut self) -> &mut Base<'a> {
        &mut self.b
    }
    fn slots(&self) -> usize {
        self.conns.len()
    }
    fn slot(&self, i: usize) -> Option<(bool, Instant, &Leecher)> {
        let c = self.conns.get(i)?.as_ref()?;
        Some((c.connecting, c.opened, &c.leecher))
    }
    fn open(&mut self, now: Instant) -> std::io::Result<()> {
        self.open_utp(now)
    }
    fn close(&mut self, slot: usize, now: Instant, reason: DropReason) {
        self.close_utp(slot, now, reason)
    }
}

impl UtpThread<'_> {
    fn open_utp(&mut self, now: Instant) -> std::io::Result<()> {
        self.b.stats.connect_attempts += 1;
        let local = self.local[self.b.next_ip % self.local.len()];
        self.b.next_ip = self.b.next_ip.wrapping_add(1);
        let client = Client::open(local, self.b.sh.target, now, self.b.rng.next_u64())?;
        let ti = pick_torrent(&self.b.sh.popularity_cdf, &mut self.b.rng);
        let leecher = Leecher::new(
            self.b.sh.torrents[ti].clone(),
            self.b.sh.leecher.clone(),
            &mut self.b.rng,
            &self.b.rarity[ti],
        );
        let slot = self.b.take_slot(&mut self.conns);
        if let Err(e) = self.ep.ctl(
            libc::EPOLL_CTL_ADD,
            client.sock.as_raw_fd(),
            libc::EPOLLIN as u32,
            slot as u64,
        ) {
            self.b.free.push(slot);
            return Err(e);
        }
        self.conns[slot] = Some(UConn {
            client,
            leecher,
            connecting: true,
            opened: now,
            leftover: Vec::new(),
            torrent_index: ti,
        });
        // The SYN goes out with this turn's sends.
        self.touched.push(slot);
        self.b.active += 1;
        Live::add(&self.b.sh.live.active, 1);
        Ok(())
    }

    /// Moves bytes between the touched connections and their leechers,
    /// then sends what they have ready.
    fn service(&mut self, now: Instant, buf: &mut [u8], dgram: &mut [u8]) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &slot in &touched {
            match self.service_one(now, slot, buf) {
                Ok(()) => {
                    if let Some(Some(c)) = self.conns.get_mut(slot) {
                        c.client.transmit(now, dgram);
                    }
                }
                Err(reason) => self.close(slot, now, reason),
            }
        }
        // Timers of untouched connections may have queued resends.
        for c in self.conns.iter_mut().flatten() {
            c.client.transmit(now, dgram);
        }
        touched.clear();
        self.touched = touched;
    }

    fn service_one(&mut self, now: Instant, slot: usize, buf: &mut [u8]) -> Result<(), DropReason> {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return Ok(());
        };
        let Some(conn) = c.client.endpoint.conn_mut(c.client.key) else {
            return Err(DropReason::IoError);
        };
        if c.connecting {
            if conn.is_established() {
                c.connecting = false;
                c.leecher.on_connected(now);
                self.b.stats.connections_established += 1;
                Live::add(&self.b.sh.live.established, 1);
            } else if conn.is_closed() {
                return Err(DropReason::IoError);
            } else {
                return Ok(());
            }
        }
        let before = self.b.stats.payload_bytes;
        let blocks_before = self.b.stats.blocks;
        loop {
            let keep = c.leftover.len();
            buf[..keep].copy_from_slice(&c.leftover);
            let n = conn.read(&mut buf[keep..]);
            if n == 0 {
                break;
            }
            let consumed = c
                .leecher
                .handle_data(now, &buf[..keep + n], &mut self.b.stats)?;
            c.leftover.clear();
            c.leftover.extend_from_slice(&buf[consumed..keep + n]);
        }
        Live::add(
            &self.b.sh.live.payload_bytes,
            self.b.stats.payload_bytes - before,
        );
        Live::add(&self.b.sh.live.blocks, self.b.stats.blocks - blocks_before);
        note_completed(
            &mut self.b.rarity[c.torrent_index],
            &mut c.leecher,
            &mut self.b.scratch,
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

    /// Connections we closed: their FIN exchange, until done or [`DRAIN`].
    fn drain(&mut self, now: Instant, dgram: &mut [u8]) {
        self.draining.retain_mut(|(c, since)| {
            c.receive(now, dgram);
            c.timers(now);
            c.transmit(now, dgram);
            let done = c.endpoint.conn(c.key).is_none_or(|x| x.is_closed());
            !done && now.saturating_duration_since(*since) <= DRAIN
        });
    }

    fn close_utp(&mut self, slot: usize, now: Instant, reason: DropReason) {
        let Some(mut c) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.b.free.push(slot);
        self.b.active -= 1;
        self.b.sh.live.active.fetch_sub(1, Ordering::Relaxed);
        let _ = self
            .ep
            .ctl(libc::EPOLL_CTL_DEL, c.client.sock.as_raw_fd(), 0, 0);
        if let Some(conn) = c.client.endpoint.conn_mut(c.client.key) {
            if !conn.is_closed() {
                conn.close();
                self.draining.push((c.client, now));
            }
        }
        if c.connecting {
            self.b.stats.connections_failed += 1;
            Live::add(&self.b.sh.live.failed, 1);
            return;
        }
        record_close(&mut self.b.stats, &self.b.sh.live, &c.leecher, now, reason);
    }
}
