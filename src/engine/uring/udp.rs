//! Receiving datagrams: one multishot RECVMSG per UDP socket into a
//! provided-buffer ring of its own (buffer group [`UDP_BGID`]). Each CQE
//! carries one datagram with its source address (`io_uring_recvmsg_out`
//! header, then the `sockaddr`, then the payload) in one buffer.
//!
//! The `msghdr` the kernel reads lives in a box owned by [`UdpInput`]; if
//! the input is dropped while the receive may still be armed it is leaked,
//! never freed under the kernel.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use io_uring::{opcode, types};

use super::{ProvidedBufRing, Ring};

/// Buffer group of the UDP receive ring (group 1 is the TCP receive ring).
pub const UDP_BGID: u16 = 2;
/// Room for a `sockaddr_in6` after the recvmsg header.
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// `struct io_uring_recvmsg_out`: namelen, controllen, payloadlen, flags.
const RECVMSG_OUT_LEN: usize = 16;

/// One datagram as the kernel delivered it.
#[derive(Debug)]
pub struct Datagram<'a> {
    pub from: SocketAddr,
    pub payload: &'a [u8],
    /// The datagram was longer than the buffer (payload cut short).
    pub truncated: bool,
}

/// A UDP socket's multishot receive: the buffer ring and the `msghdr`.
pub struct UdpInput {
    bufs: ProvidedBufRing,
    hdr: Box<libc::msghdr>,
    armed: bool,
}

impl UdpInput {
    /// `entries` buffers (a power of two) of `payload` bytes of datagram each.
    pub fn new(ring: &Ring, entries: u16, payload: u32) -> io::Result<Self> {
        let buf_size = payload + (RECVMSG_OUT_LEN + NAME_LEN) as u32;
        let bufs = ProvidedBufRing::new(&ring.uring.submitter(), UDP_BGID, entries, buf_size)?;
        // SAFETY: msghdr is a plain C struct for which all-zero is valid
        // (null pointers, zero lengths).
        let mut hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        hdr.msg_namelen = NAME_LEN as libc::socklen_t;
        Ok(Self {
            bufs,
            hdr,
            armed: false,
        })
    }

    pub fn is_armed(&self) -> bool {
        self.armed
    }

    /// Arm the multishot receive on `fd`, tagged `user_data`.
    pub fn arm(&mut self, ring: &mut Ring, fd: RawFd, user_data: u64) -> io::Result<()> {
        if self.armed {
            return Ok(());
        }
        let e = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.hdr, UDP_BGID)
            .build()
            .user_data(user_data);
        // SAFETY: the msghdr is boxed (it does not move) and owned by self,
        // which leaks it on drop while armed; the buffers belong to the
        // registered ring, which also leaks itself if dropped registered.
        unsafe { ring.push(&e) }?;
        self.armed = true;
        Ok(())
    }

    /// A completion of the receive: whether it stays armed (`more`). Call
    /// with every CQE of this operation; `f` sees the datagram, if any, and
    /// the buffer is recycled afterwards on every path.
    pub fn complete<T>(
        &mut self,
        res: i32,
        flags: u32,
        f: impl FnOnce(Result<Datagram<'_>, i32>) -> T,
    ) -> T {
        if !io_uring::cqueue::more(flags) {
            self.armed = false;
        }
        let bid = io_uring::cqueue::buffer_select(flags);
        let out = match bid {
            Some(bid) if res >= 0 => {
                let buf = self.bufs.data(bid, res as usize);
                match types::RecvMsgOut::parse(buf, &self.hdr) {
                    Ok(m) => match parse_sockaddr(m.name_data()) {
                        Some(from) => f(Ok(Datagram {
                            from,
                            payload: m.payload_data(),
                            truncated: m.is_payload_truncated(),
                        })),
                        None => f(Err(-libc::EAFNOSUPPORT)),
                    },
                    Err(()) => f(Err(-libc::EINVAL)),
                }
            }
            _ => f(Err(res.min(-1))),
        };
        if let Some(bid) = bid {
            self.bufs.recycle(bid);
        }
        out
    }

    /// Unregister the buffer ring (before the ring goes away).
    pub fn unregister(&mut self, ring: &Ring) {
        self.bufs.unregister(&ring.uring.submitter());
    }
}

impl Drop for UdpInput {
    fn drop(&mut self) {
        if self.armed {
            // The kernel may still hold the msghdr's address.
            let hdr = std::mem::replace(
                &mut self.hdr,
                // SAFETY: all-zero is a valid msghdr.
                Box::new(unsafe { std::mem::zeroed() }),
            );
            std::mem::forget(hdr);
        }
    }
}

/// A `sockaddr_in` / `sockaddr_in6` as bytes, without pointer casts.
fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    if b.len() < 2 {
        return None;
    }
    let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    if family == libc::AF_INET && b.len() >= 8 {
        let port = u16::from_be_bytes([b[2], b[3]]);
        let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
        Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    } else if family == libc::AF_INET6 && b.len() >= 28 {
        let port = u16::from_be_bytes([b[2], b[3]]);
        let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&b[8..24]);
        let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6_sockaddrs() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&6881u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 2]);
        assert_eq!(parse_sockaddr(&v4), Some("127.0.0.2:6881".parse().unwrap()));
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&80u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(parse_sockaddr(&v6), Some("[::1]:80".parse().unwrap()));
        assert_eq!(parse_sockaddr(&[1]), None);
        assert_eq!(parse_sockaddr(&v6[..20]), None);
    }
}
