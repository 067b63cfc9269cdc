//! The ceiling `compare` measures against: a protocol-less sender with the
//! fastest send path measured on this machine (io_uring SENDMSG of
//! [13-byte header, mmap slice] iovecs, up to [`crate::minimal::BATCH`] blocks per send).
//! What it speaks is in [`crate::minimal`].
//!
//! Buffer lifetimes: each connection lives in a `Box` whose address does not
//! move; its receive buffer, headers, iovecs and msghdr are referenced by at
//! most one in-flight recv and one in-flight send, and the box is freed only
//! after both completions have arrived.

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use anyhow::Context;
use io_uring::{opcode, types, IoUring};

use crate::minimal::{Batch, Content, MinimalPeer};

const OP_ACCEPT: u64 = 0;
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;

pub type CeilingArgs = crate::minimal::BaselineArgs;

struct Conn {
    fd: i32,
    peer: MinimalPeer,
    batch: Batch,
    msg: libc::msghdr,
    recv_in_flight: bool,
    send_in_flight: bool,
    closing: bool,
}

pub fn main_ceiling(args: CeilingArgs) -> anyhow::Result<bool> {
    let content = Content::open(&args.torrent, &args.data, *b"-CE0100-ceiling00000")?;
    let listener = TcpListener::bind(args.listen).context("bind")?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    serve(&listener, &content)?;
    Ok(true)
}

fn push(ring: &mut IoUring, e: &io_uring::squeue::Entry) -> anyhow::Result<()> {
    loop {
        // SAFETY: every pointer in the entries we push refers to a boxed
        // `Conn` (or the listener) that outlives the operation (see module doc).
        if unsafe { ring.submission().push(e) }.is_ok() {
            return Ok(());
        }
        ring.submit().context("io_uring submit")?;
    }
}

fn serve(listener: &TcpListener, content: &Content) -> anyhow::Result<()> {
    let mut ring =
        IoUring::new(4096).context("io_uring setup (kernel too old or io_uring disabled?)")?;
    let lfd = listener.as_raw_fd();
    let mut conns: Vec<Option<Box<Conn>>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    push(
        &mut ring,
        &opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut())
            .build()
            .user_data(OP_ACCEPT),
    )?;
    let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(1024);
    loop {
        ring.submit_and_wait(1).context("io_uring wait")?;
        cqes.clear();
        cqes.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &cqes {
            let op = ud & 3;
            let slot = (ud >> 2) as usize;
            if op == OP_ACCEPT {
                if res >= 0 {
                    let c = Box::new(Conn {
                        fd: res,
                        peer: MinimalPeer::new(),
                        batch: Batch::new(),
                        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
                        msg: unsafe { std::mem::zeroed() },
                        recv_in_flight: false,
                        send_in_flight: false,
                        closing: false,
                    });
                    let s = match free.pop() {
                        Some(s) => s,
                        None => {
                            conns.push(None);
                            conns.len() - 1
                        }
                    };
                    conns[s] = Some(c);
                    arm_recv(&mut ring, &mut conns, s)?;
                }
                push(
                    &mut ring,
                    &opcode::Accept::new(
                        types::Fd(lfd),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                    .build()
                    .user_data(OP_ACCEPT),
                )?;
                continue;
            }
            let Some(Some(c)) = conns.get_mut(slot) else {
                continue;
            };
            if op == OP_RECV {
                c.recv_in_flight = false;
                if res <= 0 || c.closing {
                    c.closing = true;
                } else {
                    c.peer.rlen += res as usize;
                    if !c.peer.parse(&content.reply) {
                        c.closing = true;
                    }
                }
            } else if op == OP_SEND {
                c.send_in_flight = false;
                if res < 0 {
                    c.closing = true;
                } else {
                    c.batch.advance(&mut c.peer, res as usize);
                }
            }
            if c.closing {
                if !c.recv_in_flight && !c.send_in_flight {
                    // SAFETY: we own the accepted fd; no op references it now.
                    unsafe { libc::close(c.fd) };
                    conns[slot] = None;
                    free.push(slot);
                }
                continue;
            }
            if !c.recv_in_flight {
                arm_recv(&mut ring, &mut conns, slot)?;
            }
            arm_send(&mut ring, &mut conns, slot, content)?;
        }
    }
}

fn arm_recv(
    ring: &mut IoUring,
    conns: &mut [Option<Box<Conn>>],
    slot: usize,
) -> anyhow::Result<()> {
    let Some(Some(c)) = conns.get_mut(slot) else {
        return Ok(());
    };
    let buf = &mut c.peer.rbuf[c.peer.rlen..];
    let e = opcode::Recv::new(types::Fd(c.fd), buf.as_mut_ptr(), buf.len() as u32)
        .build()
        .user_data(((slot as u64) << 2) | OP_RECV);
    c.recv_in_flight = true;
    push(ring, &e)
}

fn arm_send(
    ring: &mut IoUring,
    conns: &mut [Option<Box<Conn>>],
    slot: usize,
    content: &Content,
) -> anyhow::Result<()> {
    let Some(Some(c)) = conns.get_mut(slot) else {
        return Ok(());
    };
    if c.send_in_flight || !c.batch.fill(&mut c.peer, content) {
        return Ok(());
    }
    c.msg.msg_iov = c.batch.iov[c.batch.start..].as_mut_ptr();
    c.msg.msg_iovlen = c.batch.len - c.batch.start;
    let e = opcode::SendMsg::new(types::Fd(c.fd), &c.msg)
        .flags(libc::MSG_NOSIGNAL as u32)
        .build()
        .user_data(((slot as u64) << 2) | OP_SEND);
    c.send_in_flight = true;
    push(ring, &e)
}
