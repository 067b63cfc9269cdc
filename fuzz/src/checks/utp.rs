//! uTP (BEP 29): the packet parser and the connection state machine.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringseed::utp::packet::{self, Header, PacketError, PacketType, HEADER_LEN};
use ringseed::utp::{ConnKey, Endpoint, EndpointConfig, RefuseConfig, Refuser};

/// `utp_packet`: any datagram. Accepted packets re-encode (header and
/// selective ACK) and decode back to the same values; the payload is the
/// input's tail; rejections name the right reason; the refuser answers at
/// most one 20-byte reset, only to a SYN, never more bytes than it got.
pub fn check_utp_packet(data: &[u8]) {
    let head = packet::decode_header(data);
    match packet::decode(data) {
        Ok(p) => {
            let (h, _) = head.expect("decode accepted what decode_header rejected");
            assert_eq!(h, p.header, "decode and decode_header disagree");
            assert!(data.ends_with(p.payload), "payload is not the input's tail");
            assert!(HEADER_LEN + p.payload.len() <= data.len());
            let mask = p.sack.map(|s| s.mask);
            let mut out = vec![0u8; data.len() + 300];
            let n = packet::encode(&p.header, mask, &mut out).expect("room to encode");
            out.truncate(n);
            out.extend_from_slice(p.payload);
            let again = packet::decode(&out).expect("our encoding decodes");
            assert_eq!(again.header, p.header, "header round trip");
            assert_eq!(again.payload, p.payload, "payload round trip");
            let expect_mask = mask.filter(|m| !m.is_empty() && m.len() <= 255);
            assert_eq!(again.sack.map(|s| s.mask), expect_mask, "sack round trip");
        }
        Err(e) => match e {
            PacketError::TooShort => assert!(data.len() < HEADER_LEN),
            PacketError::BadVersion(v) => assert_eq!(data[0] & 0x0f, v),
            PacketError::BadType(t) => assert!(t > 4 && data[0] >> 4 == t),
            PacketError::BadExtension | PacketError::TooManyExtensions => {
                assert!(head.is_ok(), "extension error with a bad header")
            }
        },
    }
    let mut r = Refuser::new(RefuseConfig::default());
    let mut out = [0u8; HEADER_LEN];
    let src = std::net::IpAddr::from([10, 0, 0, 1]);
    if let Ok(n) = r.handle(Instant::now(), 7, src, data, &mut out) {
        let syn = head.expect("answered a non-packet").0;
        assert_eq!(syn.ty, PacketType::Syn, "answered a non-SYN");
        assert!(
            n <= data.len(),
            "amplification: {n} bytes for {}",
            data.len()
        );
        let reset = packet::decode(&out[..n]).expect("our reset decodes").header;
        assert_eq!(reset.ty, PacketType::Reset);
        assert_eq!(reset.connection_id, syn.connection_id);
        assert_eq!(reset.ack_nr, syn.seq_nr);
    }
}

const SERVER: ([u8; 4], u16) = ([10, 0, 0, 1], 6881);
const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 2], 40000);

/// `utp_conn`: an honest client and a server endpoint talk over a link
/// whose losses the input picks, while the input also injects its own
/// datagrams to the server, moves the clock, and drives both applications.
///
/// Input: a sequence of ops, each a selector byte and its arguments:
/// `0 n` client writes `n * 97` bytes; `1` server reads everything;
/// `2 mask` exchange datagrams, dropping those whose bit in `mask` is set;
/// `3 ms` advance the clock `ms * 7` ms; `4 len bytes..` inject raw bytes;
/// `5 ty seq ack wnd` inject a header (optionally for the live
/// connection, then bytes read are no longer checked: uTP has no
/// authentication); `6` client closes; `7` server writes 1000 bytes.
///
/// Invariants: no panic; bytes the server reads are a prefix of what the
/// client wrote (while nothing was injected into the live connection);
/// connection buffers within their configured bounds; half-open state
/// within its cap.
pub fn check_utp_conn(data: &[u8]) {
    let server_addr = SocketAddr::from(SERVER);
    let client_addr = SocketAddr::from(CLIENT);
    let cfg = EndpointConfig {
        max_half_open: 4,
        ..EndpointConfig::default()
    };
    let bound = cfg.conn.send_buffer + cfg.conn.recv_window as usize;
    let mut now = Instant::now();
    let mut client = Endpoint::new(cfg, 11);
    let mut server = Endpoint::new(cfg, 12);
    let ck = client.connect(now, server_addr);
    // The server's key for the honest connection (the client sends to its
    // recv id + 1); injected SYNs may make other connections first.
    let honest = ConnKey {
        remote: client_addr,
        recv_id: ck.recv_id.wrapping_add(1),
    };
    let hits = |id: u16| id == honest.recv_id || id.wrapping_add(1) == honest.recv_id;
    let mut sk: Option<ConnKey> = None;
    let mut written: Vec<u8> = Vec::new();
    let mut read: Vec<u8> = Vec::new();
    let mut tampered = false;
    let mut buf = vec![0u8; 2048];
    let mut rbuf = vec![0u8; 1 << 16];
    let mut it = data.iter().copied();
    let mut next = move || it.next();
    while let Some(op) = next() {
        match op % 8 {
            0 => {
                let n = usize::from(next().unwrap_or(1)) * 97;
                if let Some(c) = client.conn_mut(ck) {
                    let chunk: Vec<u8> = (0..n).map(|i| (written.len() + i) as u8).collect();
                    // Odd sizes copied, even ones shared (as the shards
                    // give mmap blocks): both end up in one send buffer.
                    let took = if n % 2 == 1 {
                        c.write(&chunk)
                    } else {
                        c.write_shared(bytes::Bytes::from(chunk.clone()))
                    };
                    written.extend_from_slice(&chunk[..took]);
                }
            }
            1 => {
                if let Some(c) = sk.and_then(|k| server.conn_mut(k)) {
                    loop {
                        let n = c.read(&mut rbuf);
                        if n == 0 {
                            break;
                        }
                        read.extend_from_slice(&rbuf[..n]);
                    }
                }
            }
            2 => {
                let mask = next().unwrap_or(0);
                let mut i = 0u32;
                for _ in 0..64 {
                    let mut moved = false;
                    while let Some((to, n)) = client.poll_transmit(now, &mut buf) {
                        assert_eq!(to, server_addr);
                        if mask & (1 << (i % 8)) == 0 {
                            server.handle(now, client_addr, &buf[..n]);
                        }
                        i += 1;
                        moved = true;
                    }
                    while let Some(k) = server.poll_accept() {
                        if k == honest {
                            sk = Some(k);
                        }
                    }
                    while let Some((to, n)) = server.poll_transmit(now, &mut buf) {
                        if to == client_addr && mask & (1 << (i % 8)) == 0 {
                            client.handle(now, server_addr, &buf[..n]);
                        }
                        i += 1;
                        moved = true;
                    }
                    if !moved {
                        break;
                    }
                }
            }
            3 => {
                now += Duration::from_millis(u64::from(next().unwrap_or(1)) * 7);
                client.handle_timeout(now);
                server.handle_timeout(now);
            }
            4 => {
                let len = usize::from(next().unwrap_or(0) % 64);
                let bytes: Vec<u8> = (0..len).map_while(|_| next()).collect();
                if bytes.len() >= 4 {
                    let id = u16::from_be_bytes([bytes[2], bytes[3]]);
                    tampered |= hits(id);
                }
                server.handle(now, client_addr, &bytes);
            }
            5 => {
                let ty = next().unwrap_or(0);
                let seq = u16::from(next().unwrap_or(0)) << 8 | u16::from(next().unwrap_or(0));
                let ack = u16::from(next().unwrap_or(0)) << 8 | u16::from(next().unwrap_or(0));
                let wnd = u32::from(next().unwrap_or(0)) << 12;
                let live = ty & 0x80 != 0;
                let id = if live { honest.recv_id } else { seq ^ 0x5a5a };
                tampered |= hits(id);
                let h = Header {
                    ty: match ty % 5 {
                        0 => PacketType::Data,
                        1 => PacketType::Fin,
                        2 => PacketType::State,
                        3 => PacketType::Reset,
                        _ => PacketType::Syn,
                    },
                    connection_id: id,
                    timestamp_us: u32::from(ty) << 10,
                    timestamp_diff_us: 0,
                    wnd_size: wnd,
                    seq_nr: seq,
                    ack_nr: ack,
                };
                let mut pkt = vec![0u8; HEADER_LEN + 40];
                let sack = [ty, !ty, 0, 0xff];
                let n = packet::encode(&h, (ty & 0x40 != 0).then_some(&sack[..]), &mut pkt)
                    .expect("room");
                pkt.truncate(n + usize::from(ty % 3) * 5);
                server.handle(now, client_addr, &pkt);
            }
            6 => {
                if let Some(c) = client.conn_mut(ck) {
                    c.close();
                }
            }
            _ => {
                if let Some(c) = sk.and_then(|k| server.conn_mut(k)) {
                    c.write(&[0xab; 1000]);
                }
            }
        }
        for ep in [&client, &server] {
            assert!(
                ep.half_open() <= cfg.max_half_open,
                "half-open over its cap"
            );
        }
        if let Some(c) = sk.and_then(|k| server.conn(k)) {
            assert!(
                c.buffered_bytes() <= bound,
                "server connection buffers unbounded"
            );
        }
        if let Some(c) = client.conn(ck) {
            assert!(
                c.buffered_bytes() <= bound,
                "client connection buffers unbounded"
            );
        }
        if !tampered {
            assert!(read.len() <= written.len(), "read more than was written");
            assert!(written.starts_with(&read), "bytes corrupted or reordered");
        }
    }
}
