//! The ceiling `compare` measures against: a protocol-less sender with the
//! fastest send path measured on this machine (io_uring SENDMSG of
//! [13-byte header, mmap slice] iovecs, up to [`BATCH`] blocks per send).
//!
//! "Protocol-less": it answers any 68-byte handshake with a fixed
//! handshake + have_all + unchoke, then answers each 17-byte request message
//! with the block from the mmap; every other message is skipped by its
//! length prefix. No validation beyond bounds, no choking, no state. It only
//! serves single-file torrents (one mmap, piece space == file).
//!
//! Buffer lifetimes: each connection lives in a `Box` whose address does not
//! move; its receive buffer, headers, iovecs and msghdr are referenced by at
//! most one in-flight recv and one in-flight send, and the box is freed only
//! after both completions have arrived.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context};
use io_uring::{opcode, types, IoUring};
use ringseed::wire::codec::{
    piece_header, Handshake, Message, ReservedFlags, HANDSHAKE_LEN, MAX_BLOCK_LEN, PIECE_HEADER_LEN,
};

use crate::torrents::LoadTorrent;

/// Blocks per SENDMSG.
pub const BATCH: usize = 16;
const RBUF: usize = 16 * 1024;
const OP_ACCEPT: u64 = 0;
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;

#[derive(Debug, clap::Args)]
pub struct CeilingArgs {
    #[arg(long)]
    pub torrent: PathBuf,
    /// The torrent's single file (or a directory containing it).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

struct Conn {
    fd: i32,
    rbuf: [u8; RBUF],
    rlen: usize,
    handshaken: bool,
    requests: VecDeque<(u32, u32, u32)>,
    ctl: Vec<u8>,
    headers: [[u8; PIECE_HEADER_LEN]; BATCH],
    iov: [libc::iovec; BATCH * 2 + 1],
    iov_start: usize,
    iov_len: usize,
    msg: libc::msghdr,
    /// Blocks in the in-flight send, and ctl bytes it carries.
    in_send_ctl: usize,
    recv_in_flight: bool,
    send_in_flight: bool,
    closing: bool,
}

pub fn main_ceiling(args: CeilingArgs) -> anyhow::Result<bool> {
    let t = LoadTorrent::load(&args.torrent)?;
    if t.torrent.files.len() != 1 || t.torrent.files[0].length != t.piece_space_len {
        bail!(
            "the ceiling serves single-file torrents only; {} has {} files",
            t.name,
            t.torrent.files.len()
        );
    }
    let path = if args.data.is_dir() {
        args.data.join(&t.name)
    } else {
        args.data.clone()
    };
    let file = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: read-only map of a file we do not modify; if another process
    // truncates it we may fault, which a benchmark run accepts.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mmap {}", path.display()))?;
    if map.len() as u64 != t.piece_space_len {
        bail!(
            "{} is {} bytes, the torrent says {}",
            path.display(),
            map.len(),
            t.piece_space_len
        );
    }
    let listener = TcpListener::bind(args.listen).context("bind")?;
    let mut reply = Handshake {
        reserved: ReservedFlags {
            fast: true,
            extension: false,
            v2: false,
            dht: false,
        }
        .to_bytes(),
        info_hash: t.handshake_hash,
        peer_id: *b"-CE0100-ceiling00000",
    }
    .encode()
    .to_vec();
    Message::HaveAll.encode(&mut reply);
    Message::Unchoke.encode(&mut reply);
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    serve(&listener, &map, t.piece_length, &reply)?;
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

fn serve(
    listener: &TcpListener,
    map: &[u8],
    piece_length: u32,
    reply: &[u8],
) -> anyhow::Result<()> {
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
                        rbuf: [0; RBUF],
                        rlen: 0,
                        handshaken: false,
                        requests: VecDeque::new(),
                        ctl: Vec::new(),
                        headers: [[0; PIECE_HEADER_LEN]; BATCH],
                        iov: [libc::iovec {
                            iov_base: std::ptr::null_mut(),
                            iov_len: 0,
                        }; BATCH * 2 + 1],
                        iov_start: 0,
                        iov_len: 0,
                        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
                        msg: unsafe { std::mem::zeroed() },
                        in_send_ctl: 0,
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
                    c.rlen += res as usize;
                    if !parse(c, reply) {
                        c.closing = true;
                    }
                }
            } else if op == OP_SEND {
                c.send_in_flight = false;
                if res < 0 {
                    c.closing = true;
                } else {
                    advance(c, res as usize);
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
            arm_send(&mut ring, &mut conns, slot, map, piece_length)?;
        }
    }
}

/// Parses whole messages at the front of the receive buffer; false: close.
fn parse(c: &mut Conn, reply: &[u8]) -> bool {
    let mut pos = 0;
    if !c.handshaken {
        if c.rlen < HANDSHAKE_LEN {
            return true;
        }
        pos = HANDSHAKE_LEN;
        c.handshaken = true;
        c.ctl.extend_from_slice(reply);
    }
    while c.rlen - pos >= 4 {
        let b = &c.rbuf[pos..c.rlen];
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len + 4 > RBUF {
            return false;
        }
        if b.len() < 4 + len {
            break;
        }
        if len == 13 && b[4] == 6 {
            let r = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            c.requests.push_back((r(5), r(9), r(13)));
        }
        pos += 4 + len;
    }
    c.rbuf.copy_within(pos..c.rlen, 0);
    c.rlen -= pos;
    true
}

fn arm_recv(
    ring: &mut IoUring,
    conns: &mut [Option<Box<Conn>>],
    slot: usize,
) -> anyhow::Result<()> {
    let Some(Some(c)) = conns.get_mut(slot) else {
        return Ok(());
    };
    let buf = &mut c.rbuf[c.rlen..];
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
    map: &[u8],
    piece_length: u32,
) -> anyhow::Result<()> {
    let Some(Some(c)) = conns.get_mut(slot) else {
        return Ok(());
    };
    if c.send_in_flight {
        return Ok(());
    }
    if c.iov_start == c.iov_len {
        // Build a new batch.
        let mut n = 0;
        c.in_send_ctl = c.ctl.len();
        if !c.ctl.is_empty() {
            c.iov[n] = libc::iovec {
                iov_base: c.ctl.as_mut_ptr().cast(),
                iov_len: c.ctl.len(),
            };
            n += 1;
        }
        let mut blocks = 0;
        while blocks < BATCH {
            let Some((piece, begin, len)) = c.requests.pop_front() else {
                break;
            };
            let off = u64::from(piece) * u64::from(piece_length) + u64::from(begin);
            let Some(data) = usize::try_from(off)
                .ok()
                .and_then(|o| map.get(o..o + len as usize))
                .filter(|_| len <= MAX_BLOCK_LEN && len > 0)
            else {
                continue;
            };
            c.headers[blocks] = piece_header(piece, begin, len);
            c.iov[n] = libc::iovec {
                iov_base: c.headers[blocks].as_mut_ptr().cast(),
                iov_len: PIECE_HEADER_LEN,
            };
            c.iov[n + 1] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            n += 2;
            blocks += 1;
        }
        if n == 0 {
            return Ok(());
        }
        c.iov_start = 0;
        c.iov_len = n;
    }
    c.msg.msg_iov = c.iov[c.iov_start..].as_mut_ptr();
    c.msg.msg_iovlen = c.iov_len - c.iov_start;
    let e = opcode::SendMsg::new(types::Fd(c.fd), &c.msg)
        .flags(libc::MSG_NOSIGNAL as u32)
        .build()
        .user_data(((slot as u64) << 2) | OP_SEND);
    c.send_in_flight = true;
    push(ring, &e)
}

/// `n` bytes of the in-flight batch were sent: skip and trim iovecs.
fn advance(c: &mut Conn, mut n: usize) {
    while n > 0 && c.iov_start < c.iov_len {
        let v = &mut c.iov[c.iov_start];
        if n >= v.iov_len {
            n -= v.iov_len;
            c.iov_start += 1;
        } else {
            // SAFETY: n < iov_len, so the new base stays inside the buffer.
            v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
            v.iov_len -= n;
            n = 0;
        }
    }
    if c.iov_start == c.iov_len {
        c.iov_start = 0;
        c.iov_len = 0;
        if c.in_send_ctl > 0 {
            c.ctl.drain(..c.in_send_ctl.min(c.ctl.len()));
            c.in_send_ctl = 0;
        }
    }
}
