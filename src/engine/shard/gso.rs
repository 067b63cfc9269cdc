//! Batching the uTP datagrams of one shard turn into UDP GSO sends
//! (`UDP_SEGMENT`, Linux 4.18+): consecutive datagrams of one size to one
//! peer go out in one `sendmsg` of up to [`MAX_SEGMENTS`] segments (the
//! kernel cuts them; the last may be shorter). Datagrams are written into
//! the batch buffer in place by the caller (no copy), and a kernel without
//! GSO (`EIO`, `EINVAL`, `ENOPROTOOPT`) turns it off for the shard: the
//! batch is then sent one `sendto` per datagram, as before.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// `UDP_SEGMENT` from `linux/udp.h` (not in every libc target).
const UDP_SEGMENT: libc::c_int = 103;
/// Segments per send at most (the kernel's `UDP_MAX_SEGMENTS` is 64, and a
/// GSO datagram is at most 64 KiB).
pub(super) const MAX_SEGMENTS: usize = 40;

/// See the module docs.
pub(super) struct GsoBatch {
    /// `MAX_SEGMENTS` x the largest datagram.
    buf: Vec<u8>,
    max_packet: usize,
    len: usize,
    seg: usize,
    count: usize,
    to: Option<SocketAddr>,
    enabled: bool,
    /// Sends that carried more than one datagram (for tests and metrics).
    pub(super) batched_sends: u64,
}

impl GsoBatch {
    pub(super) fn new(max_packet: usize) -> Self {
        Self {
            buf: vec![0; max_packet * (MAX_SEGMENTS + 1)],
            max_packet,
            len: 0,
            seg: 0,
            count: 0,
            to: None,
            enabled: true,
            batched_sends: 0,
        }
    }

    /// Where the next datagram is to be written.
    pub(super) fn tail(&mut self) -> &mut [u8] {
        let at = self.len;
        &mut self.buf[at..at + self.max_packet]
    }

    /// The caller wrote a datagram of `n` bytes for `to` at [`Self::tail`].
    /// Sends what must go first (a batch ends on another peer, another
    /// size, a short datagram or a full batch).
    pub(super) fn push(&mut self, sock: &UdpSocket, to: SocketAddr, n: usize) -> io::Result<()> {
        let fits = self.to == Some(to) && n <= self.seg && self.count < MAX_SEGMENTS;
        if self.count > 0 && !fits {
            // Send the batch before this one, then move this one to the front.
            let start = self.len;
            self.flush_first(sock, start)?;
            self.buf.copy_within(start..start + n, 0);
        }
        if self.count == 0 {
            self.to = Some(to);
            self.seg = n;
        }
        self.len += n;
        self.count += 1;
        if n < self.seg || self.count == MAX_SEGMENTS || !self.enabled {
            // A shorter datagram ends a GSO batch; without GSO send at once.
            self.flush(sock)?;
        }
        Ok(())
    }

    /// Sends everything batched.
    pub(super) fn flush(&mut self, sock: &UdpSocket) -> io::Result<()> {
        let len = self.len;
        self.flush_first(sock, len)
    }

    /// Sends bytes `..end` (whole datagrams of the batch) and forgets them.
    fn flush_first(&mut self, sock: &UdpSocket, end: usize) -> io::Result<()> {
        let Some(to) = self.to else {
            self.reset();
            return Ok(());
        };
        let count = end.div_ceil(self.seg.max(1));
        let r = if count > 1 && self.enabled {
            match send_gso(sock, &self.buf[..end], self.seg, to) {
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
                    ) =>
                {
                    tracing::info!(error = %e, "no UDP GSO on this kernel or device; sending uTP datagrams one by one");
                    self.enabled = false;
                    self.send_each(sock, end, to)
                }
                r => {
                    self.batched_sends += 1;
                    r
                }
            }
        } else {
            self.send_each(sock, end, to)
        };
        self.reset();
        r
    }

    fn send_each(&self, sock: &UdpSocket, end: usize, to: SocketAddr) -> io::Result<()> {
        for d in self.buf[..end].chunks(self.seg.max(1)) {
            sock.send_to(d, to)?;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.len = 0;
        self.count = 0;
        self.to = None;
        self.seg = 0;
    }
}

/// One `sendmsg` of `data` cut by the kernel into `seg`-byte datagrams.
fn send_gso(sock: &UdpSocket, data: &[u8], seg: usize, to: SocketAddr) -> io::Result<()> {
    let addr = socket2::SockAddr::from(to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    let mut control = [0u64; 4]; // 32 bytes, aligned for cmsghdr
    debug_assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = addr.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` writable, aligned bytes, so
    // CMSG_FIRSTHDR is that buffer and CMSG_DATA has room for the u16.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg as u16);
    }
    // SAFETY: every pointer in `msg` is valid for the call: `data`, `addr`
    // and `control` outlive it.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams pushed for two peers arrive whole, in order, with their
    /// sizes (the kernel cut the GSO sends, or the fallback sent them).
    #[test]
    fn batched_datagrams_arrive_one_by_one() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
        }
        let mut g = GsoBatch::new(1400);
        let plan: Vec<(&UdpSocket, usize)> = [(&a, 1200); 45]
            .into_iter()
            .chain([(&a, 300), (&b, 1200), (&b, 1200), (&a, 1200)])
            .collect();
        for (i, (to, n)) in plan.iter().enumerate() {
            let t = g.tail();
            t[..*n].fill(i as u8);
            g.push(&tx, to.local_addr().unwrap(), *n).unwrap();
        }
        g.flush(&tx).unwrap();
        let mut buf = [0u8; 2048];
        for (i, (from, n)) in plan.iter().enumerate() {
            let got = from.recv(&mut buf).unwrap();
            assert_eq!(got, *n, "datagram {i}");
            assert!(buf[..got].iter().all(|&x| x == i as u8), "datagram {i}");
        }
        if g.enabled {
            assert!(g.batched_sends > 0, "GSO sends were made");
        } else {
            eprintln!("no UDP GSO here: the fallback sent every datagram");
        }
    }
}
