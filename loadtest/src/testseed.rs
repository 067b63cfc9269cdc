//! A tiny seed for in-process swarm tests ([`TestSeed`]): a thread per
//! connection, blocking sockets, everyone unchoked, requests served in
//! order through one shared upload cap (like ringseed's
//! `--upload-rate-limit`).
//!
//! Two modes: [`SeedMode::Plain`] announces every piece (have_all);
//! [`SeedMode::SuperSeed`] runs ringseed's own BEP 16 selector
//! ([`ringseed::swarm::superseed::SuperSeeder`]): have_none at the
//! handshake, then a `have` + `suggest_piece` per offered piece, requests
//! for pieces not offered to that peer rejected, and every `have` the peers
//! send fed back to the selector. So swarm tests can check the leechers
//! against the real super-seeding policy without the `ringseed serve`
//! binary. Not a server: no choking, no validation beyond bounds, no
//! extension protocol.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringseed::swarm::choker::PeerId;
use ringseed::swarm::ratelimit::{Rate, TokenBucket};
use ringseed::swarm::superseed::{Offer, SuperSeedConfig, SuperSeeder};
use ringseed::wire::codec::{
    piece_header, BlockRequest, Message, MSG_ID_BITFIELD, MSG_ID_HAVE, MSG_ID_HAVE_ALL,
    MSG_ID_HAVE_NONE, MSG_ID_REQUEST,
};
use ringseed::wire::types::PeerHaves;
use ringseed::wire::Bitfield;

use crate::testkit::seeder_handshake;
use crate::torrents::LoadTorrent;

/// How the test seed announces its pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedMode {
    Plain,
    SuperSeed,
}

const POLL: Duration = Duration::from_millis(10);

/// Offers waiting for each connection, and what each may request.
struct SuperState {
    seeder: SuperSeeder,
    outbox: HashMap<u32, Vec<u8>>,
    allowed: HashMap<u32, Bitfield>,
}

impl SuperState {
    fn apply(&mut self, offers: &mut Vec<Offer>, n: u32) {
        for o in offers.drain(..) {
            let out = self.outbox.entry(o.peer.0).or_default();
            Message::Have(o.piece).encode(out);
            if o.suggest {
                Message::Suggest(o.piece).encode(out);
            }
            self.allowed
                .entry(o.peer.0)
                .or_insert_with(|| Bitfield::new(n))
                .set(o.piece);
        }
    }
}

struct Shared {
    t: Arc<LoadTorrent>,
    data: Arc<Vec<u8>>,
    bucket: Mutex<TokenBucket>,
    uploaded: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sup: Option<Mutex<SuperState>>,
    next_id: AtomicU32,
}

impl Shared {
    fn sup(&self) -> Option<MutexGuard<'_, SuperState>> {
        self.sup
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// See the module docs.
pub struct TestSeed {
    pub addr: SocketAddr,
    /// Payload bytes sent.
    pub uploaded: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TestSeed {
    /// Serves `data` (the piece space of `t`) on 127.0.0.1, port 0,
    /// announcing every piece.
    pub fn start(t: Arc<LoadTorrent>, data: Arc<Vec<u8>>, rate: Rate) -> std::io::Result<Self> {
        Self::start_mode(t, data, rate, SeedMode::Plain)
    }

    pub fn start_mode(
        t: Arc<LoadTorrent>,
        data: Arc<Vec<u8>>,
        rate: Rate,
        mode: SeedMode,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let now = Instant::now();
        let bucket = match rate.bytes_per_sec() {
            Some(r) => TokenBucket::new(now, r, (r / 20).max(65_536)),
            None => TokenBucket::unlimited(now),
        };
        let sup = (mode == SeedMode::SuperSeed).then(|| {
            Mutex::new(SuperState {
                seeder: SuperSeeder::new(SuperSeedConfig::default(), &Bitfield::full(t.num_pieces)),
                outbox: HashMap::new(),
                allowed: HashMap::new(),
            })
        });
        let sh = Arc::new(Shared {
            t,
            data,
            bucket: Mutex::new(bucket),
            uploaded: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            sup,
            next_id: AtomicU32::new(1),
        });
        let (uploaded, stop) = (sh.uploaded.clone(), sh.stop.clone());
        let accept = std::thread::Builder::new()
            .name("test-seed".into())
            .spawn(move || {
                for s in listener.incoming() {
                    if sh.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(s) = s else { continue };
                    let sh = sh.clone();
                    let _ = std::thread::Builder::new()
                        .name("test-seed-conn".into())
                        .spawn(move || {
                            let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
                            let _ = serve_conn(s, &sh, id);
                            if let Some(mut st) = sh.sup() {
                                let mut offers = Vec::new();
                                st.seeder.peer_disconnected(
                                    Instant::now(),
                                    PeerId(id),
                                    &mut offers,
                                );
                                st.apply(&mut offers, sh.t.num_pieces);
                                st.outbox.remove(&id);
                            }
                        });
                }
            })?;
        Ok(TestSeed {
            addr,
            uploaded,
            stop,
            accept: Some(accept),
        })
    }
}

impl Drop for TestSeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn wait_for_tokens(bucket: &Mutex<TokenBucket>, n: u64) {
    loop {
        let wait = {
            let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if b.available(now) >= n {
                b.take(now, n);
                return;
            }
            b.next_ready(now, n).saturating_duration_since(now)
        };
        std::thread::sleep(wait.max(Duration::from_micros(200)));
    }
}

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// A super-seed peer event: feeds the selector, queues resulting offers.
fn haves_changed(sh: &Shared, id: u32, body: &[u8]) {
    let Some(mut st) = sh.sup() else { return };
    let (now, n) = (Instant::now(), sh.t.num_pieces);
    let mut offers = Vec::new();
    let peer = PeerId(id);
    match body[0] {
        MSG_ID_HAVE if body.len() == 5 => {
            st.seeder.peer_have(now, peer, word(body, 1), &mut offers)
        }
        MSG_ID_HAVE_ALL => st
            .seeder
            .peer_haves_replaced(now, peer, PeerHaves::All, &mut offers),
        MSG_ID_HAVE_NONE => st
            .seeder
            .peer_haves_replaced(now, peer, PeerHaves::None, &mut offers),
        MSG_ID_BITFIELD => {
            if let Ok(b) = Bitfield::from_wire(&body[1..], n) {
                st.seeder
                    .peer_haves_replaced(now, peer, PeerHaves::Some(&b), &mut offers);
            }
        }
        _ => {}
    }
    st.apply(&mut offers, n);
}

fn serve_conn(mut s: TcpStream, sh: &Shared, id: u32) -> std::io::Result<()> {
    let t = &sh.t;
    s.set_read_timeout(Some(POLL))?;
    s.set_nodelay(true)?;
    let mut hs = [0u8; 68];
    loop {
        match s.read_exact(&mut hs) {
            Ok(()) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if sh.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
    let mut out = seeder_handshake(t, true);
    match sh.sup() {
        None => Message::HaveAll.encode(&mut out),
        Some(mut st) => {
            Message::HaveNone.encode(&mut out);
            let mut offers = Vec::new();
            st.seeder
                .peer_connected(Instant::now(), PeerId(id), PeerHaves::None, &mut offers);
            st.apply(&mut offers, t.num_pieces);
        }
    }
    Message::Unchoke.encode(&mut out);
    s.write_all(&out)?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    while !sh.stop.load(Ordering::Relaxed) {
        if let Some(mut st) = sh.sup() {
            let now = Instant::now();
            if st.seeder.next_timeout().is_some_and(|at| at <= now) {
                let mut offers = Vec::new();
                st.seeder.tick(now, &mut offers);
                st.apply(&mut offers, t.num_pieces);
            }
            if let Some(o) = st.outbox.get_mut(&id).filter(|o| !o.is_empty()) {
                let bytes = std::mem::take(o);
                drop(st);
                s.write_all(&bytes)?;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        }
        let mut pos = 0;
        while let Some(head) = buf.get(pos..pos + 4) {
            let n = word(head, 0) as usize;
            let Some(body) = buf.get(pos + 4..pos + 4 + n) else {
                break;
            };
            pos += 4 + n;
            if n == 0 {
                continue;
            }
            if body[0] != MSG_ID_REQUEST || n != 13 {
                haves_changed(sh, id, body);
                continue;
            }
            let r = BlockRequest {
                piece: word(body, 1),
                begin: word(body, 5),
                len: word(body, 9),
            };
            let offered = sh
                .sup()
                .is_none_or(|st| st.allowed.get(&id).is_some_and(|b| b.get(r.piece)));
            if !offered {
                let mut m = Vec::new();
                Message::Reject(r).encode(&mut m);
                s.write_all(&m)?;
                continue;
            }
            let off = u64::from(r.piece) * u64::from(t.piece_length) + u64::from(r.begin);
            let Some(block) = sh.data.get(off as usize..off as usize + r.len as usize) else {
                return Ok(());
            };
            wait_for_tokens(&sh.bucket, u64::from(r.len));
            let mut msg = piece_header(r.piece, r.begin, r.len).to_vec();
            msg.extend_from_slice(block);
            s.write_all(&msg)?;
            sh.uploaded.fetch_add(u64::from(r.len), Ordering::Relaxed);
        }
        buf.drain(..pos);
    }
    Ok(())
}
