//! Batching the uTP datagrams of one shard turn into UDP GSO sends
//! (`UDP_SEGMENT`, Linux 4.18+): consecutive datagrams of one size to one
//! peer go out in one `sendmsg` of up to [`MAX_SEGMENTS`] segments (the
//! kernel cuts them; the last may be shorter). A datagram is its header,
//! written in place into the batch by the caller, and its payload as
//! [`Bytes`] slices of the connection's send buffer (blocks of a torrent's
//! mmap, or copied protocol bytes): the `sendmsg` iovec points at them, so
//! the kernel's copy into the socket buffer is the only one. A kernel
//! without GSO (`EIO`, `EINVAL`, `ENOPROTOOPT`) turns it off for the shard:
//! the batch then goes one `sendmsg` per datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use bytes::Bytes;

/// `UDP_SEGMENT` from `linux/udp.h` (not in every libc target).
const UDP_SEGMENT: libc::c_int = 103;
/// Segments per send at most (the kernel's `UDP_MAX_SEGMENTS` is 64, and a
/// GSO datagram is at most 64 KiB).
pub(super) const MAX_SEGMENTS: usize = 40;

/// One batched datagram.
#[derive(Clone, Copy)]
struct Dgram {
    header_len: usize,
    /// Its payload is `parts[first_part..]` up to the next datagram's.
    first_part: usize,
}

/// See the module docs.
pub(super) struct GsoBatch {
    /// One header slot of `header_slot` bytes per datagram (and one more
    /// for the datagram being written).
    headers: Vec<u8>,
    header_slot: usize,
    dgrams: Vec<Dgram>,
    /// Payload slices of the batched datagrams, in order.
    parts: Vec<Bytes>,
    /// Where the datagram being written starts in `parts` (`parts.len()`
    /// when none is being written).
    open_part: usize,
    seg: usize,
    to: Option<SocketAddr>,
    enabled: bool,
    /// Reused for the `sendmsg` iovecs.
    iov: Vec<libc::iovec>,
    /// Sends that carried more than one datagram (for tests and metrics).
    pub(super) batched_sends: u64,
}

impl GsoBatch {
    /// A batch for headers of at most `max_header` bytes.
    pub(super) fn new(max_header: usize) -> Self {
        Self {
            headers: vec![0; max_header * (MAX_SEGMENTS + 1)],
            header_slot: max_header,
            dgrams: Vec::with_capacity(MAX_SEGMENTS + 1),
            parts: Vec::with_capacity(4 * (MAX_SEGMENTS + 1)),
            open_part: 0,
            seg: 0,
            to: None,
            enabled: true,
            iov: Vec::with_capacity(5 * (MAX_SEGMENTS + 1)),
            batched_sends: 0,
        }
    }

    /// Where the next datagram is to be written: its header slot and the
    /// list its payload slices go onto.
    pub(super) fn next(&mut self) -> (&mut [u8], &mut Vec<Bytes>) {
        let at = self.dgrams.len() * self.header_slot;
        self.open_part = self.parts.len();
        (
            &mut self.headers[at..at + self.header_slot],
            &mut self.parts,
        )
    }

    fn payload_len(&self, first: usize, end: usize) -> usize {
        self.parts[first..end].iter().map(Bytes::len).sum()
    }

    /// The caller wrote a datagram for `to` at [`Self::next`]: a header of
    /// `header_len` bytes and its payload slices. Sends what must go first
    /// (a batch ends on another peer, another size, a short datagram or a
    /// full batch).
    pub(super) fn push(
        &mut self,
        sock: &UdpSocket,
        to: SocketAddr,
        header_len: usize,
    ) -> io::Result<()> {
        let header_len = header_len.min(self.header_slot);
        let n = header_len + self.payload_len(self.open_part, self.parts.len());
        let count = self.dgrams.len();
        let fits = self.to == Some(to) && n <= self.seg && count < MAX_SEGMENTS;
        let mut sent = Ok(());
        if count > 0 && !fits {
            // Send the batch before this one, then move this one to the front.
            sent = self.send(sock, count);
            let slot = self.header_slot;
            self.headers
                .copy_within(count * slot..count * slot + header_len, 0);
            self.parts.drain(..self.open_part);
            self.dgrams.clear();
            self.open_part = 0;
        }
        if self.dgrams.is_empty() {
            self.to = Some(to);
            self.seg = n;
        }
        self.dgrams.push(Dgram {
            header_len,
            first_part: self.open_part,
        });
        self.open_part = self.parts.len();
        if n < self.seg || self.dgrams.len() == MAX_SEGMENTS || !self.enabled {
            // A shorter datagram ends a GSO batch; without GSO send at once.
            let r = self.flush(sock);
            sent = sent.and(r);
        }
        sent
    }

    /// Sends everything batched.
    pub(super) fn flush(&mut self, sock: &UdpSocket) -> io::Result<()> {
        let r = self.send(sock, self.dgrams.len());
        self.reset();
        r
    }

    /// Sends the first `count` datagrams of the batch.
    fn send(&mut self, sock: &UdpSocket, count: usize) -> io::Result<()> {
        let Some(to) = self.to else {
            return Ok(());
        };
        if count == 0 {
            return Ok(());
        }
        if count > 1 && self.enabled {
            self.build_iov(0..count);
            match send_msg(sock, &mut self.iov, Some(self.seg), to) {
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
                    ) =>
                {
                    tracing::info!(error = %e, "no UDP GSO on this kernel or device; sending uTP datagrams one by one");
                    self.enabled = false;
                }
                r => {
                    self.batched_sends += 1;
                    return r;
                }
            }
        }
        for i in 0..count {
            self.build_iov(i..i + 1);
            send_msg(sock, &mut self.iov, None, to)?;
        }
        Ok(())
    }

    /// The iovecs of datagrams `range` (all but the open one), in order.
    fn build_iov(&mut self, range: std::ops::Range<usize>) {
        self.iov.clear();
        let closed = self.dgrams.len();
        for i in range {
            let d = self.dgrams[i];
            // The last committed datagram's parts end where the open one's
            // begin (`parts.len()` when none is open).
            let end = if i + 1 < closed {
                self.dgrams[i + 1].first_part
            } else {
                self.open_part
            };
            let at = i * self.header_slot;
            self.iov.push(libc::iovec {
                iov_base: self.headers[at..].as_ptr() as *mut libc::c_void,
                iov_len: d.header_len,
            });
            for p in &self.parts[d.first_part..end] {
                self.iov.push(libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                });
            }
        }
    }

    fn reset(&mut self) {
        self.dgrams.clear();
        self.parts.clear();
        self.open_part = 0;
        self.to = None;
        self.seg = 0;
    }
}

/// One `sendmsg` of the bytes `iov` points at, to `to`; with `seg`, cut by
/// the kernel into `seg`-byte datagrams (UDP GSO).
fn send_msg(
    sock: &UdpSocket,
    iov: &mut [libc::iovec],
    seg: Option<usize>,
    to: SocketAddr,
) -> io::Result<()> {
    let addr = socket2::SockAddr::from(to);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    let mut control = [0u64; 4]; // 32 bytes, aligned for cmsghdr
    debug_assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = addr.len();
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    if let Some(seg) = seg {
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
    }
    // SAFETY: every pointer in `msg` is valid for the call: the iovecs
    // point into the batch's header slots and into `Bytes` the batch holds
    // (both outlive the call), `addr` and `control` are locals.
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
        let mut g = GsoBatch::new(64);
        let plan: Vec<(&UdpSocket, usize)> = [(&a, 1200); 45]
            .into_iter()
            .chain([(&a, 300), (&b, 1200), (&b, 1200), (&a, 1200)])
            .collect();
        for (i, (to, n)) in plan.iter().enumerate() {
            // A 20-byte header and the payload in three slices of one
            // shared buffer and one copied one.
            let (header, parts) = g.next();
            header[..20].fill(i as u8);
            let body = Bytes::from(vec![i as u8; n - 20]);
            let third = (n - 20) / 3;
            parts.push(body.slice(..third));
            parts.push(body.slice(third..2 * third));
            parts.push(Bytes::copy_from_slice(&body[2 * third..]));
            g.push(&tx, to.local_addr().unwrap(), 20).unwrap();
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
