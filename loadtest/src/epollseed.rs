//! The bar `compare` asks ringseed to beat: a minimal epoll seeder, the
//! classic design without io_uring. One thread, level-triggered epoll,
//! nonblocking sockets, and `writev` of [13-byte header, mmap slice] pairs
//! (up to [`crate::minimal::BATCH`] blocks per call) straight from the page
//! cache; `EPOLLOUT` is armed only while a write is blocked. What it speaks
//! is in [`crate::minimal`] (protocol-less: no choking, no validation).
//!
//! Buffer lifetimes are trivial: `writev` copies into the socket before it
//! returns, so nothing is referenced across calls but the `Batch` cursor.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use anyhow::Context;

use crate::minimal::{Batch, Content, MinimalPeer};
use crate::net::Epoll;

const IN: u32 = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
const LISTENER: u64 = u64::MAX;

pub type EpollSeedArgs = crate::minimal::BaselineArgs;

struct Conn {
    sock: TcpStream,
    peer: Box<MinimalPeer>,
    batch: Box<Batch>,
    want_out: bool,
}

pub fn main_epoll_seed(args: EpollSeedArgs) -> anyhow::Result<bool> {
    let content = Content::open(&args.torrent, &args.data, *b"-EP0100-epollseed000")?;
    let listener = TcpListener::bind(args.listen).context("bind")?;
    listener.set_nonblocking(true).context("nonblocking")?;
    crate::net::raise_nofile_limit();
    let ep = Epoll::new().context("epoll_create1")?;
    ep.ctl(
        libc::EPOLL_CTL_ADD,
        listener.as_raw_fd(),
        libc::EPOLLIN as u32,
        LISTENER,
    )
    .context("epoll_ctl listener")?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        let n = ep.wait(&mut events, -1);
        for ev in &events[..n] {
            let (flags, token) = (ev.events, ev.u64);
            if token == LISTENER {
                accept_all(&listener, &ep, &mut conns, &mut free);
                continue;
            }
            let slot = token as usize;
            let Some(Some(c)) = conns.get_mut(slot) else {
                continue;
            };
            if !serve_conn(c, flags, &content, &ep, slot) {
                // Dropping the stream closes it, which also takes it out of epoll.
                conns[slot] = None;
                free.push(slot);
            }
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    ep: &Epoll,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
) {
    loop {
        let sock = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // WouldBlock, or out of descriptors: try again on the next event.
            Err(_) => return,
        };
        if sock.set_nonblocking(true).is_err() {
            continue;
        }
        let slot = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        if ep
            .ctl(libc::EPOLL_CTL_ADD, sock.as_raw_fd(), IN, slot as u64)
            .is_err()
        {
            free.push(slot);
            continue;
        }
        conns[slot] = Some(Conn {
            sock,
            peer: Box::new(MinimalPeer::new()),
            batch: Box::new(Batch::new()),
            want_out: false,
        });
    }
}

/// One readiness event: read what is there, then write until the socket is
/// full or nothing is left. False: close the connection.
fn serve_conn(c: &mut Conn, flags: u32, content: &Content, ep: &Epoll, slot: usize) -> bool {
    if flags & (IN | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32) != 0 {
        let p = &mut *c.peer;
        match (&c.sock).read(&mut p.rbuf[p.rlen..]) {
            Ok(0) => return false,
            Ok(n) => {
                p.rlen += n;
                if !p.parse(&content.reply) {
                    return false;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => return false,
        }
    }
    let mut blocked = false;
    while c.batch.fill(&mut c.peer, content) {
        let b = &c.batch;
        let iov = &b.iov[b.start..b.len];
        // SAFETY: the iovecs point into `c.peer.ctl`, `c.batch` and the
        // mmap, all alive and unchanged for the duration of the call.
        let n = unsafe {
            libc::writev(
                c.sock.as_raw_fd(),
                iov.as_ptr(),
                iov.len().min(libc::c_int::MAX as usize) as libc::c_int,
            )
        };
        if n < 0 {
            match std::io::Error::last_os_error().kind() {
                ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                ErrorKind::Interrupted => continue,
                _ => return false,
            }
        }
        c.batch.advance(&mut c.peer, n as usize);
        if c.batch.pending() {
            // A short write: the socket buffer is full.
            blocked = true;
            break;
        }
    }
    if blocked != c.want_out {
        c.want_out = blocked;
        let ev = if blocked { IN | OUT } else { IN };
        if ep
            .ctl(libc::EPOLL_CTL_MOD, c.sock.as_raw_fd(), ev, slot as u64)
            .is_err()
        {
            return false;
        }
    }
    true
}
