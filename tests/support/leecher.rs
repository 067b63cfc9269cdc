//! A small blocking test leecher over `std::net::TcpStream`, built on
//! `ringseed::wire::codec`, plus raw helpers for hostile-peer tests.
//!
//! It is deliberately simple: one connection, no piece verification (the
//! caller compares bytes), errors as strings that say what went wrong.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringseed::wire::codec::{
    decode, BlockRequest, Decoded, Handshake, HandshakeDecoded, Message, ReservedFlags,
    HANDSHAKE_LEN, MAX_BLOCK_LEN,
};

/// Time without any progress after which `download` gives up.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_MESSAGE: u32 = 4 * 1024 * 1024;

pub type Result<T> = std::result::Result<T, String>;

/// Reads whole messages from a stream, keeping leftovers.
pub struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Reader {
    pub fn new(stream: TcpStream) -> Self {
        Reader {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    fn fill(&mut self) -> Result<()> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        let mut chunk = [0u8; 64 * 1024];
        let read = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match read {
            Ok(0) => Err("seeder closed the connection".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(format!("no data from seeder within {STALL_TIMEOUT:?}"))
            }
            Err(e) => Err(format!("read from seeder failed: {e}")),
        }
    }

    pub fn read_handshake(&mut self) -> Result<Handshake> {
        loop {
            match Handshake::decode(&self.buf[self.start..]).map_err(|e| e.to_string())? {
                HandshakeDecoded::Complete(h) => {
                    self.start += HANDSHAKE_LEN;
                    return Ok(h);
                }
                HandshakeDecoded::Incomplete { .. } => self.fill()?,
            }
        }
    }

    /// Calls `f` with the next message.
    pub fn next<T>(&mut self, f: impl FnOnce(Message<'_>) -> T) -> Result<T> {
        loop {
            match decode(&self.buf[self.start..], MAX_MESSAGE).map_err(|e| e.to_string())? {
                Decoded::Message { msg, consumed } => {
                    let out = f(msg);
                    self.start += consumed;
                    return Ok(out);
                }
                Decoded::Incomplete { .. } => {
                    if self.start > 0 {
                        self.buf.drain(..self.start);
                        self.start = 0;
                    }
                    self.fill()?
                }
            }
        }
    }
}

/// What the seeder told us, besides blocks.
#[derive(Debug, Default, Clone)]
pub struct SeederInfo {
    pub handshake: Option<Handshake>,
    pub have_all: bool,
    pub bitfield: Option<Vec<u8>>,
    pub ext_handshake: Option<Vec<u8>>,
    pub rejects: u64,
    pub chokes: u64,
}

/// Downloads the whole piece space of a torrent from `addr`.
pub fn download(
    addr: SocketAddr,
    info_hash: [u8; 20],
    num_pieces: u32,
    piece_length: u32,
    total_len: u64,
    pipeline: usize,
) -> Result<Vec<u8>> {
    download_with_info(
        addr,
        info_hash,
        num_pieces,
        piece_length,
        total_len,
        pipeline,
    )
    .map(|(d, _)| d)
}

/// [`download`], also returning what the seeder sent besides blocks.
pub fn download_with_info(
    addr: SocketAddr,
    info_hash: [u8; 20],
    num_pieces: u32,
    piece_length: u32,
    total_len: u64,
    pipeline: usize,
) -> Result<(Vec<u8>, SeederInfo)> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(STALL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut r = Reader::new(stream);
    let ours = Handshake {
        reserved: ReservedFlags {
            fast: true,
            extension: true,
            v2: false,
            dht: false,
        }
        .to_bytes(),
        info_hash,
        peer_id: *b"-TL0001-testleecher0",
    };
    let mut out = ours.encode().to_vec();
    Message::Interested.encode(&mut out);
    r.stream()
        .write_all(&out)
        .map_err(|e| format!("send handshake: {e}"))?;
    let mut info = SeederInfo::default();
    let theirs = r.read_handshake()?;
    if theirs.info_hash != info_hash {
        return Err("seeder answered with a different info-hash".into());
    }
    info.handshake = Some(theirs);

    // Every block of the piece space, in order.
    let mut todo: std::collections::VecDeque<BlockRequest> = Default::default();
    for piece in 0..num_pieces {
        let start = u64::from(piece) * u64::from(piece_length);
        let plen = (total_len - start).min(u64::from(piece_length)) as u32;
        let mut begin = 0;
        while begin < plen {
            let len = (plen - begin).min(MAX_BLOCK_LEN);
            todo.push_back(BlockRequest { piece, begin, len });
            begin += len;
        }
    }
    let mut data = vec![0u8; total_len as usize];
    let mut outstanding: Vec<BlockRequest> = Vec::new();
    let mut received = 0u64;
    let mut unchoked = false;
    let deadline_per_step = STALL_TIMEOUT;
    let mut last_progress = Instant::now();

    while received < total_len {
        if last_progress.elapsed() > deadline_per_step {
            return Err(format!("stalled at {received}/{total_len} bytes"));
        }
        if unchoked && outstanding.len() < pipeline && !todo.is_empty() {
            let mut out = Vec::new();
            while outstanding.len() < pipeline {
                let Some(req) = todo.pop_front() else { break };
                Message::Request(req).encode(&mut out);
                outstanding.push(req);
            }
            r.stream()
                .write_all(&out)
                .map_err(|e| format!("send requests: {e}"))?;
        }
        enum Ev {
            Unchoke,
            Choke,
            Reject(BlockRequest),
            Block(BlockRequest),
            Other,
        }
        let ev = r.next(|m| match m {
            Message::Unchoke => Ev::Unchoke,
            Message::Choke => Ev::Choke,
            Message::Reject(req) => Ev::Reject(req),
            Message::HaveAll => {
                info.have_all = true;
                Ev::Other
            }
            Message::Bitfield(b) => {
                info.bitfield = Some(b.to_vec());
                Ev::Other
            }
            Message::Extended { id: 0, payload } => {
                info.ext_handshake = Some(payload.to_vec());
                Ev::Other
            }
            Message::Piece {
                index,
                begin,
                data: block,
            } => {
                let req = BlockRequest {
                    piece: index,
                    begin,
                    len: block.len() as u32,
                };
                let off = u64::from(index) * u64::from(piece_length) + u64::from(begin);
                match data.get_mut(off as usize..off as usize + block.len()) {
                    Some(dst) => {
                        dst.copy_from_slice(block);
                        Ev::Block(req)
                    }
                    None => Ev::Other,
                }
            }
            _ => Ev::Other,
        })?;
        match ev {
            Ev::Unchoke => unchoked = true,
            Ev::Choke => {
                // Without fast, a choke drops everything outstanding; with
                // fast, rejects follow, but re-queueing here is harmless.
                info.chokes += 1;
                unchoked = false;
                for req in outstanding.drain(..).rev() {
                    todo.push_front(req);
                }
            }
            Ev::Reject(req) => {
                info.rejects += 1;
                if let Some(pos) = outstanding.iter().position(|o| *o == req) {
                    outstanding.remove(pos);
                    todo.push_front(req);
                }
            }
            Ev::Block(req) => {
                let Some(pos) = outstanding.iter().position(|o| *o == req) else {
                    return Err(format!("unrequested block {req:?}"));
                };
                outstanding.remove(pos);
                received += u64::from(req.len);
                last_progress = Instant::now();
            }
            Ev::Other => {}
        }
    }
    Ok((data, info))
}

/// Connects with a read timeout.
pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// Our handshake bytes for `info_hash`, with the given capabilities.
pub fn handshake_bytes(info_hash: [u8; 20], fast: bool, extension: bool) -> [u8; HANDSHAKE_LEN] {
    Handshake {
        reserved: ReservedFlags {
            fast,
            extension,
            v2: false,
            dht: false,
        }
        .to_bytes(),
        info_hash,
        peer_id: *b"-TL0001-hostilepeer0",
    }
    .encode()
}

/// Sends raw bytes; errors (e.g. the seeder already closed) are returned.
pub fn send_raw(s: &mut TcpStream, bytes: &[u8]) -> Result<()> {
    s.write_all(bytes).map_err(|e| format!("send: {e}"))
}

/// Reads until the seeder closes the connection (Ok with everything read)
/// or `timeout` passes (Err). A reset counts as closed.
pub fn read_until_close(s: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("seeder did not close within {timeout:?}"));
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return Ok(all)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// A message from the seeder, owned (block data reduced to its length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Have(u32),
    Suggest(u32),
    HaveAll,
    HaveNone,
    Bitfield(Vec<u8>),
    Unchoke,
    Choke,
    Reject(BlockRequest),
    AllowedFast(u32),
    /// A block; its bytes are in [`RawPeer::last_block`].
    Piece(BlockRequest),
    KeepAlive,
    /// An extended message (BEP 10): its id and payload.
    Extended(u8, Vec<u8>),
    Other,
}

/// One scripted peer on a raw socket: handshake, then single messages in
/// and out, so a test can check exactly what the seeder sends and when.
pub struct RawPeer {
    r: Reader,
    /// The bytes of the last [`Got::Piece`].
    pub last_block: Vec<u8>,
}

impl RawPeer {
    /// Connects, sends our handshake (with `then` appended, e.g.
    /// `interested`) and reads the seeder's handshake.
    pub fn connect(
        addr: SocketAddr,
        info_hash: [u8; 20],
        fast: bool,
        then: &[Message<'_>],
    ) -> Result<RawPeer> {
        let stream = connect(addr, STALL_TIMEOUT)?;
        Self::handshake(stream, info_hash, fast, false, then)
    }

    /// [`RawPeer::connect`] with the extension bit set and `ext` (the
    /// bencoded dictionary of a BEP 10 handshake) sent after our handshake.
    pub fn connect_extended(addr: SocketAddr, info_hash: [u8; 20], ext: &[u8]) -> Result<RawPeer> {
        let stream = connect(addr, STALL_TIMEOUT)?;
        let hs = [Message::Extended {
            id: 0,
            payload: ext,
        }];
        Self::handshake(stream, info_hash, true, true, &hs)
    }

    /// [`RawPeer::connect`] with the receive buffer set to `rcvbuf` bytes
    /// before connecting (so the TCP window stays small: a peer that stops
    /// reading stalls the seeder's sends after a few KiB), and the extension
    /// bit set when `extension`.
    pub fn connect_small_window(
        addr: SocketAddr,
        info_hash: [u8; 20],
        fast: bool,
        extension: bool,
        then: &[Message<'_>],
        rcvbuf: usize,
    ) -> Result<RawPeer> {
        let mut p = Self::open_small_window(addr, info_hash, fast, extension, then, rcvbuf)?;
        p.read_handshake(info_hash)?;
        Ok(p)
    }

    /// [`RawPeer::connect_small_window`] without waiting for the seeder's
    /// handshake (call [`RawPeer::read_handshake`]), so that many peers can
    /// be opened without a round trip each.
    pub fn open_small_window(
        addr: SocketAddr,
        info_hash: [u8; 20],
        fast: bool,
        extension: bool,
        then: &[Message<'_>],
        rcvbuf: usize,
    ) -> Result<RawPeer> {
        let domain = socket2::Domain::for_address(addr);
        let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)
            .map_err(|e| format!("socket: {e}"))?;
        sock.set_recv_buffer_size(rcvbuf)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
        sock.connect(&addr.into())
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let stream: TcpStream = sock.into();
        stream
            .set_read_timeout(Some(STALL_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Self::open(stream, info_hash, fast, extension, then)
    }

    fn handshake(
        stream: TcpStream,
        info_hash: [u8; 20],
        fast: bool,
        extension: bool,
        then: &[Message<'_>],
    ) -> Result<RawPeer> {
        let mut p = Self::open(stream, info_hash, fast, extension, then)?;
        p.read_handshake(info_hash)?;
        Ok(p)
    }

    /// Sends our handshake (and `then`), without reading.
    fn open(
        stream: TcpStream,
        info_hash: [u8; 20],
        fast: bool,
        extension: bool,
        then: &[Message<'_>],
    ) -> Result<RawPeer> {
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut r = Reader::new(stream);
        let mut out = handshake_bytes(info_hash, fast, extension).to_vec();
        for m in then {
            m.encode(&mut out);
        }
        send_raw(r.stream(), &out)?;
        Ok(RawPeer {
            r,
            last_block: Vec::new(),
        })
    }

    /// Reads the seeder's handshake, which must name `info_hash`.
    pub fn read_handshake(&mut self, info_hash: [u8; 20]) -> Result<()> {
        let theirs = self.r.read_handshake()?;
        if theirs.info_hash != info_hash {
            return Err("seeder answered with a different info-hash".into());
        }
        Ok(())
    }

    /// The socket, for raw writes (e.g. a flood encoded by the caller).
    pub fn stream(&mut self) -> &mut TcpStream {
        self.r.stream()
    }

    pub fn send(&mut self, msgs: &[Message<'_>]) -> Result<()> {
        let mut out = Vec::new();
        for m in msgs {
            m.encode(&mut out);
        }
        send_raw(self.r.stream(), &out)
    }

    /// The next message, waiting at most `timeout`; `Ok(None)` if none came.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Got>> {
        let timeout = timeout.max(Duration::from_millis(1));
        self.r
            .stream()
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let last = &mut self.last_block;
        let got = self.r.next(|m| match m {
            Message::Have(p) => Got::Have(p),
            Message::Suggest(p) => Got::Suggest(p),
            Message::HaveAll => Got::HaveAll,
            Message::HaveNone => Got::HaveNone,
            Message::Bitfield(b) => Got::Bitfield(b.to_vec()),
            Message::Unchoke => Got::Unchoke,
            Message::Choke => Got::Choke,
            Message::Reject(r) => Got::Reject(r),
            Message::AllowedFast(p) => Got::AllowedFast(p),
            Message::KeepAlive => Got::KeepAlive,
            Message::Extended { id, payload } => Got::Extended(id, payload.to_vec()),
            Message::Piece { index, begin, data } => {
                last.clear();
                last.extend_from_slice(data);
                Got::Piece(BlockRequest {
                    piece: index,
                    begin,
                    len: data.len() as u32,
                })
            }
            _ => Got::Other,
        });
        match got {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.starts_with("no data from seeder") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every message until the seeder is quiet for `quiet` (or `max` passed).
    pub fn recv_all(&mut self, quiet: Duration, max: Duration) -> Result<Vec<Got>> {
        let deadline = Instant::now() + max;
        let mut all = Vec::new();
        while Instant::now() < deadline {
            match self.recv(quiet.min(deadline - Instant::now()))? {
                Some(m) => all.push(m),
                None => break,
            }
        }
        Ok(all)
    }

    /// Messages until one satisfies `stop` (included), within `timeout`.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        mut stop: impl FnMut(&Got) -> bool,
    ) -> Result<Vec<Got>> {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("nothing matching within {timeout:?}; got {all:?}"));
            }
            if let Some(m) = self.recv(left)? {
                let done = stop(&m);
                all.push(m);
                if done {
                    return Ok(all);
                }
            }
        }
    }
}

/// The requests for every block of `piece`.
pub fn piece_blocks(piece: u32, piece_length: u32, total_len: u64) -> Vec<BlockRequest> {
    let start = u64::from(piece) * u64::from(piece_length);
    let plen = (total_len - start).min(u64::from(piece_length)) as u32;
    (0..plen)
        .step_by(MAX_BLOCK_LEN as usize)
        .map(|begin| BlockRequest {
            piece,
            begin,
            len: (plen - begin).min(MAX_BLOCK_LEN),
        })
        .collect()
}

/// Pulls blocks of the piece space round and round for `duration`, keeping
/// `pipeline` requests outstanding; returns `(time since connect, bytes)`
/// per block received, for rate measurements.
pub fn pull(
    addr: SocketAddr,
    info_hash: [u8; 20],
    piece_length: u32,
    total_len: u64,
    pipeline: usize,
    duration: Duration,
) -> Result<Vec<(Duration, u32)>> {
    let start = Instant::now();
    let mut p = RawPeer::connect(addr, info_hash, true, &[Message::Interested])?;
    let num_pieces = total_len.div_ceil(u64::from(piece_length)) as u32;
    let blocks: Vec<BlockRequest> = (0..num_pieces)
        .flat_map(|i| piece_blocks(i, piece_length, total_len))
        .collect();
    let mut next = 0usize;
    let mut outstanding = 0usize;
    let mut unchoked = false;
    let mut got = Vec::new();
    while start.elapsed() < duration {
        if unchoked && outstanding < pipeline {
            let mut reqs = Vec::new();
            while outstanding < pipeline {
                reqs.push(Message::Request(blocks[next % blocks.len()]));
                next += 1;
                outstanding += 1;
            }
            p.send(&reqs)?;
        }
        match p.recv(STALL_TIMEOUT)? {
            Some(Got::Unchoke) => unchoked = true,
            Some(Got::Choke) => {
                unchoked = false;
                outstanding = 0;
            }
            Some(Got::Reject(_)) => outstanding = outstanding.saturating_sub(1),
            Some(Got::Piece(r)) => {
                outstanding = outstanding.saturating_sub(1);
                got.push((start.elapsed(), r.len));
            }
            Some(_) => {}
            None => return Err(format!("stalled after {} blocks", got.len())),
        }
    }
    Ok(got)
}

/// Bytes of `samples` received in `[from, to)`, as bytes per second.
pub fn rate_between(samples: &[(Duration, u32)], from: Duration, to: Duration) -> f64 {
    let bytes: u64 = samples
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, n)| u64::from(*n))
        .sum();
    bytes as f64 / (to - from).as_secs_f64()
}

/// What [`download_without_fast`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFastReport {
    /// Payload bytes received (each block once).
    pub bytes: u64,
    /// Requests sent in total, re-requests included.
    pub requests: u64,
    /// Requests sent again because the seeder skipped (dropped) them.
    pub rerequested: u64,
    /// Blocks that arrived twice (a re-request raced the first answer).
    pub duplicates: u64,
    pub elapsed: Duration,
}

/// Downloads the whole piece space like a client without the fast extension
/// that pipelines far beyond the seeder's `reqq`: it keeps `outstanding`
/// requests in flight and, since a seeder answers in order, treats requests
/// older than an arriving block as dropped and asks for them again (what
/// such clients do after a timeout). Every block is handed to `check(offset,
/// bytes)` once; the download fails if `check` says a block is wrong.
pub fn download_without_fast(
    addr: SocketAddr,
    info_hash: [u8; 20],
    piece_length: u32,
    total_len: u64,
    outstanding: usize,
    mut check: impl FnMut(u64, &[u8]) -> bool,
) -> Result<NoFastReport> {
    use std::collections::VecDeque;
    let start = Instant::now();
    let mut p = RawPeer::connect(addr, info_hash, false, &[Message::Interested])?;
    let num_pieces = total_len.div_ceil(u64::from(piece_length)) as u32;
    let blocks: Vec<BlockRequest> = (0..num_pieces)
        .flat_map(|i| piece_blocks(i, piece_length, total_len))
        .collect();
    let index_of = |r: &BlockRequest| -> Option<usize> {
        let i = (u64::from(r.piece) * u64::from(piece_length) + u64::from(r.begin))
            / u64::from(MAX_BLOCK_LEN);
        (blocks.get(i as usize) == Some(r)).then_some(i as usize)
    };
    let mut received = vec![false; blocks.len()];
    let mut done = 0usize;
    let mut next_new = 0usize;
    let mut retry: VecDeque<usize> = VecDeque::new();
    // Requests in flight, in the order sent.
    let mut inflight: VecDeque<usize> = VecDeque::new();
    let mut report = NoFastReport::default();
    let mut unchoked = false;
    let mut last_progress = Instant::now();
    while done < blocks.len() {
        if last_progress.elapsed() > STALL_TIMEOUT {
            return Err(format!(
                "stalled at {done}/{} blocks ({report:?})",
                blocks.len()
            ));
        }
        if unchoked && inflight.len() < outstanding {
            let mut out = Vec::new();
            while inflight.len() < outstanding {
                let i = match retry.pop_front() {
                    Some(i) if received[i] => continue,
                    Some(i) => {
                        report.rerequested += 1;
                        i
                    }
                    None if next_new < blocks.len() => {
                        next_new += 1;
                        next_new - 1
                    }
                    None => break,
                };
                Message::Request(blocks[i]).encode(&mut out);
                inflight.push_back(i);
                report.requests += 1;
            }
            if !out.is_empty() {
                send_raw(p.stream(), &out)?;
            }
        }
        match p.recv(Duration::from_secs(2))? {
            Some(Got::Unchoke) => unchoked = true,
            Some(Got::Choke) => {
                // Without the fast extension a choke drops every request.
                unchoked = false;
                retry.extend(inflight.drain(..));
            }
            Some(Got::Piece(r)) => {
                let Some(i) = index_of(&r) else {
                    return Err(format!("block {r:?} is not one we could request"));
                };
                if let Some(pos) = inflight.iter().position(|&x| x == i) {
                    // Answered in order: everything sent before it was dropped.
                    retry.extend(inflight.drain(..pos));
                    inflight.pop_front();
                }
                if received[i] {
                    report.duplicates += 1;
                    continue;
                }
                let off = u64::from(r.piece) * u64::from(piece_length) + u64::from(r.begin);
                if !check(off, &p.last_block) {
                    return Err(format!("wrong bytes in block {r:?}"));
                }
                received[i] = true;
                done += 1;
                report.bytes += u64::from(r.len);
                last_progress = Instant::now();
            }
            Some(Got::Reject(r)) => {
                return Err(format!("reject {r:?} sent to a peer without fast"))
            }
            Some(_) => {}
            // Quiet: whatever is in flight was dropped; ask again.
            None => retry.extend(inflight.drain(..)),
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// How a [`download_until_closed`] ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ended {
    /// Payload bytes received, every one checked against the expected data.
    pub bytes: u64,
    /// The whole piece space arrived.
    pub complete: bool,
    /// The seeder closed the connection (FIN) before that.
    pub closed: bool,
    /// Bytes of an unfinished message when it closed (a torn message).
    pub torn: usize,
    pub chokes: u64,
}

/// Downloads the piece space `expected` of `info_hash` like [`download`],
/// checking every block, until it is complete or the seeder closes the
/// connection; a close is fine (not an error) if it falls between
/// messages. Errors: a corrupt or unrequested block, a reset, a stall.
pub fn download_until_closed(
    addr: SocketAddr,
    info_hash: [u8; 20],
    piece_length: u32,
    expected: &[u8],
    pipeline: usize,
) -> Result<Ended> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(STALL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut r = Reader::new(stream);
    let hs = handshake_bytes(info_hash, true, false);
    let mut out = hs.to_vec();
    Message::Interested.encode(&mut out);
    r.stream().write_all(&out).map_err(|e| e.to_string())?;
    r.read_handshake()?;
    let total_len = expected.len() as u64;
    let num_pieces = total_len.div_ceil(u64::from(piece_length)) as u32;
    let mut todo: std::collections::VecDeque<BlockRequest> = (0..num_pieces)
        .flat_map(|p| piece_blocks(p, piece_length, total_len))
        .collect();
    let mut outstanding: Vec<BlockRequest> = Vec::new();
    let mut ended = Ended::default();
    let mut unchoked = false;
    while ended.bytes < total_len {
        if unchoked && outstanding.len() < pipeline && !todo.is_empty() {
            let mut out = Vec::new();
            while outstanding.len() < pipeline {
                let Some(req) = todo.pop_front() else { break };
                Message::Request(req).encode(&mut out);
                outstanding.push(req);
            }
            // The seeder may have shut its side already; a failed write
            // shows up as the close read below.
            let _ = r.stream().write_all(&out);
        }
        enum Ev {
            Unchoke,
            Choke,
            Reject(BlockRequest),
            Block(BlockRequest, bool),
            Other,
        }
        let ev = match r.next(|m| match m {
            Message::Unchoke => Ev::Unchoke,
            Message::Choke => Ev::Choke,
            Message::Reject(req) => Ev::Reject(req),
            Message::Piece { index, begin, data } => {
                let off = u64::from(index) * u64::from(piece_length) + u64::from(begin);
                let ok = expected.get(off as usize..off as usize + data.len()) == Some(data);
                let req = BlockRequest {
                    piece: index,
                    begin,
                    len: data.len() as u32,
                };
                Ev::Block(req, ok)
            }
            _ => Ev::Other,
        }) {
            Ok(ev) => ev,
            Err(e) if e == "seeder closed the connection" => {
                ended.closed = true;
                ended.torn = r.buf.len() - r.start;
                return Ok(ended);
            }
            Err(e) => return Err(format!("after {} bytes: {e}", ended.bytes)),
        };
        match ev {
            Ev::Unchoke => unchoked = true,
            Ev::Choke => {
                // Fast extension: what was requested is either still sent
                // or rejected one by one.
                ended.chokes += 1;
                unchoked = false;
            }
            Ev::Reject(req) => {
                if let Some(pos) = outstanding.iter().position(|o| *o == req) {
                    outstanding.remove(pos);
                    todo.push_front(req);
                }
            }
            Ev::Block(req, ok) => {
                if !ok {
                    return Err(format!("corrupt block {req:?}"));
                }
                let Some(pos) = outstanding.iter().position(|o| *o == req) else {
                    return Err(format!("unrequested block {req:?}"));
                };
                outstanding.remove(pos);
                ended.bytes += u64::from(req.len);
            }
            Ev::Other => {}
        }
    }
    ended.complete = true;
    Ok(ended)
}
