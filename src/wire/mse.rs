//! Message Stream Encryption (MSE, "protocol encryption"), the receiving side.
//!
//! Stock clients (libtorrent, qBittorrent, aria2, rtorrent, Transmission) try
//! MSE first and lose about a second per connection falling back to
//! plaintext against a seeder that does not speak it. [`MseResponder`]
//! accepts the MSE handshake as side B of the Azureus/Vuze spec (libtorrent's
//! `bt_peer_connection` is the reference) and then selects, according to the
//! [`EncryptionPolicy`], either **plaintext** (the rest of the connection is
//! the ordinary peer protocol, so the zero-copy send path is kept) or
//! **RC4** (everything after the handshake goes through an [`Rc4Stream`]:
//! a copying path).
//!
//! The exchange, A being the peer and B us:
//!
//! ```text
//! 1 A->B: Ya, PadA                     (96 bytes, 0..=512 random bytes)
//! 2 B->A: Yb, PadB
//! 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
//! ```
//!
//! S is the Diffie-Hellman secret ([`dh`]), SKEY the info-hash of the torrent
//! the peer wants, ENCRYPT RC4 with the first 1024 bytes dropped ([`rc4`]),
//! keyed `HASH('keyA', S, SKEY)` for A->B and `HASH('keyB', S, SKEY)` for B->A
//! ([`kdf`]). IA, the initial payload, is normally the BitTorrent handshake;
//! it is always RC4-encrypted, even when plaintext is selected.
//!
//! # Call order (the engine's contract)
//!
//! 1. On accept, wait for the first bytes and route them with [`classify`]:
//!    [`Route::Plaintext`] goes straight to `PeerState`, [`Route::Encrypted`]
//!    to a new [`MseResponder`] (fed the same bytes), [`Route::NeedMore`]
//!    waits for more (only when the bytes so far are a prefix of the 20-byte
//!    `"\x13BitTorrent protocol"`).
//! 2. [`MseResponder::handle_bytes`] with every chunk received, in order,
//!    split anywhere. After each call, send [`MseResponder::poll_transmit`]
//!    and report what the kernel took with [`MseResponder::advance_transmit`]
//!    (or move it out with [`MseResponder::take_transmit`]).
//!    `Err(e)`: close the connection and count `e`.
//! 3. [`MseProgress::Done`]: the handshake is over. Any bytes still in
//!    `poll_transmit` go out **before** anything `PeerState` produces. Create
//!    the `PeerState` and feed it [`MseDone::leftover`] (the decrypted IA plus
//!    whatever followed it, decrypted too under RC4). From then on the
//!    responder is no longer fed.
//! 4. With [`Crypto::Rc4`], keep [`MseDone::rc4`] for the life of the
//!    connection: [`Rc4Stream::decrypt`] every received chunk in place before
//!    `PeerState::handle_bytes`, and [`Rc4Stream::encrypt`] every byte sent,
//!    in send order, control bytes and piece headers and block data alike
//!    (copy mmap data into a buffer first; never encrypt a shared mapping).
//!
//! Memory is bounded: before the peer has proved it knows S, at most
//! 96 + 512 + 20 bytes are looked at (more is junk); PadC is at most 512
//! bytes and IA at most [`MAX_IA_LEN`]. Bytes beyond the handshake that
//! arrive in the same chunk are kept and handed back as leftover.
//!
//! Not done here: timeouts (the engine's handshake timeout applies), the
//! initiating side (we are a seed), and checking that the info-hash in the
//! BitTorrent handshake inside IA equals SKEY (the engine can compare
//! [`MseDone::skey`] with the torrent `PeerState` resolved).

pub mod dh;
pub mod rc4;

use std::collections::HashMap;

use sha1::{Digest, Sha1};
use thiserror::Error;

pub use dh::{DhKeyPair, KEY_LEN};
pub use rc4::Rc4;

/// crypto_provide / crypto_select bit: plaintext after the handshake.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
/// crypto_provide / crypto_select bit: RC4 after the handshake.
pub const CRYPTO_RC4: u32 = 0x02;
/// Largest PadA, PadB, PadC or PadD.
pub const MAX_PAD_LEN: usize = 512;
/// Largest IA we accept. libtorrent sends the 68-byte BitTorrent handshake
/// and refuses anything longer; we allow some room for other clients.
pub const MAX_IA_LEN: usize = 1024;
/// The verification constant: 8 zero bytes.
pub const VC: [u8; 8] = [0; 8];
/// Random bytes a responder needs: 32 for the DH private exponent (the spec
/// asks for at least 160 bits), 16 to key the generator of PadB.
pub const ENTROPY_LEN: usize = 48;

const HASH_LEN: usize = 20;
/// The plaintext BitTorrent handshake starts with these 20 bytes.
const BT_PROTOCOL: &[u8; 20] = b"\x13BitTorrent protocol";

/// What to do after the MSE handshake (`--encryption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncryptionPolicy {
    /// `prefer-plaintext` (default): plaintext whenever the peer allows it
    /// (crypto_provide has 0x01), RC4 only for peers that insist. Every
    /// stock client allows plaintext by default, so nearly all connections
    /// keep the zero-copy path while no peer is turned away.
    #[default]
    PreferPlaintext,
    /// `require-plaintext`: plaintext only; peers that insist on RC4 are
    /// refused ([`MseError::NoCommonCrypto`]). No copying path at all.
    RequirePlaintext,
    /// `allow-rc4`: RC4 whenever the peer offers it, plaintext otherwise
    /// (for operators who value obfuscation over CPU; every RC4 connection
    /// takes the copying path).
    AllowRc4,
}

impl EncryptionPolicy {
    /// The command-line spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            EncryptionPolicy::PreferPlaintext => "prefer-plaintext",
            EncryptionPolicy::RequirePlaintext => "require-plaintext",
            EncryptionPolicy::AllowRc4 => "allow-rc4",
        }
    }

    /// crypto_select for a peer's crypto_provide, `None` when nothing fits.
    pub fn select(self, crypto_provide: u32) -> Option<Crypto> {
        let plain = crypto_provide & CRYPTO_PLAINTEXT != 0;
        let rc4 = crypto_provide & CRYPTO_RC4 != 0;
        match self {
            EncryptionPolicy::RequirePlaintext => plain.then_some(Crypto::Plaintext),
            EncryptionPolicy::PreferPlaintext if plain => Some(Crypto::Plaintext),
            EncryptionPolicy::PreferPlaintext => rc4.then_some(Crypto::Rc4),
            EncryptionPolicy::AllowRc4 if rc4 => Some(Crypto::Rc4),
            EncryptionPolicy::AllowRc4 => plain.then_some(Crypto::Plaintext),
        }
    }
}

impl std::fmt::Display for EncryptionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EncryptionPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            EncryptionPolicy::PreferPlaintext,
            EncryptionPolicy::RequirePlaintext,
            EncryptionPolicy::AllowRc4,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| {
            format!("unknown encryption policy {s:?}: use prefer-plaintext, require-plaintext or allow-rc4")
        })
    }
}

/// What the connection uses after the MSE handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crypto {
    /// The ordinary peer protocol, unencrypted: zero-copy sends.
    Plaintext,
    /// Every byte both ways through an [`Rc4Stream`].
    Rc4,
}

impl Crypto {
    /// The crypto_select bit.
    pub const fn bits(self) -> u32 {
        match self {
            Crypto::Plaintext => CRYPTO_PLAINTEXT,
            Crypto::Rc4 => CRYPTO_RC4,
        }
    }
}

/// How to route a new incoming connection by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A plaintext BitTorrent handshake: `PeerState` directly.
    Plaintext,
    /// Anything else: an MSE handshake (or junk it will reject).
    Encrypted,
    /// The bytes so far are a proper prefix of `"\x13BitTorrent protocol"`.
    NeedMore,
}

/// Routes a new connection by the bytes received so far (an MSE public key
/// starts with those 20 bytes with probability 2^-160).
pub fn classify(first_bytes: &[u8]) -> Route {
    let n = first_bytes.len().min(BT_PROTOCOL.len());
    if first_bytes[..n] != BT_PROTOCOL[..n] {
        Route::Encrypted
    } else if n < BT_PROTOCOL.len() {
        Route::NeedMore
    } else {
        Route::Plaintext
    }
}

/// True when `first_bytes` start with the plaintext BitTorrent handshake's
/// 20-byte protocol header. See [`classify`] for the partial case.
pub fn looks_like_plaintext(first_bytes: &[u8]) -> bool {
    classify(first_bytes) == Route::Plaintext
}

/// The hashes of the handshake.
pub mod kdf {
    use super::{Digest, Sha1, HASH_LEN, KEY_LEN};

    fn hash(parts: &[&[u8]]) -> [u8; HASH_LEN] {
        let mut h = Sha1::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    }

    /// HASH('req1', S): where B synchronises on A's step 3.
    pub fn req1(s: &[u8; KEY_LEN]) -> [u8; HASH_LEN] {
        hash(&[b"req1", s])
    }
    /// HASH('req2', SKEY): precomputed per torrent by [`super::SkeyIndex`].
    pub fn req2(skey: &[u8; HASH_LEN]) -> [u8; HASH_LEN] {
        hash(&[b"req2", skey])
    }
    /// HASH('req3', S): the mask over req2.
    pub fn req3(s: &[u8; KEY_LEN]) -> [u8; HASH_LEN] {
        hash(&[b"req3", s])
    }
    /// HASH('keyA', S, SKEY): RC4 key of the initiator's (the peer's) sends.
    pub fn key_a(s: &[u8; KEY_LEN], skey: &[u8; HASH_LEN]) -> [u8; HASH_LEN] {
        hash(&[b"keyA", s, skey])
    }
    /// HASH('keyB', S, SKEY): RC4 key of the receiver's (our) sends.
    pub fn key_b(s: &[u8; KEY_LEN], skey: &[u8; HASH_LEN]) -> [u8; HASH_LEN] {
        hash(&[b"keyB", s, skey])
    }
}

/// Finds SKEY (an info-hash we serve) from `HASH('req2', SKEY)`.
pub trait SkeyLookup {
    /// `req2` is `HASH('req2', SKEY)` with the `HASH('req3', S)` mask
    /// already removed. `None`: not one of our torrents.
    fn find_skey(&self, req2: &[u8; 20]) -> Option<[u8; 20]>;
}

impl<F: Fn(&[u8; 20]) -> Option<[u8; 20]>> SkeyLookup for F {
    fn find_skey(&self, req2: &[u8; 20]) -> Option<[u8; 20]> {
        self(req2)
    }
}

/// `HASH('req2', info-hash) -> info-hash` for every torrent served, so the
/// per-connection lookup is one hash-map probe. Insert both the v1
/// info-hash and the truncated v2 info-hash of hybrid torrents.
#[derive(Debug, Clone, Default)]
pub struct SkeyIndex {
    by_req2: HashMap<[u8; 20], [u8; 20]>,
}

impl SkeyIndex {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, info_hash: [u8; 20]) {
        self.by_req2.insert(kdf::req2(&info_hash), info_hash);
    }
    pub fn remove(&mut self, info_hash: &[u8; 20]) {
        self.by_req2.remove(&kdf::req2(info_hash));
    }
    pub fn len(&self) -> usize {
        self.by_req2.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_req2.is_empty()
    }
}

impl FromIterator<[u8; 20]> for SkeyIndex {
    fn from_iter<I: IntoIterator<Item = [u8; 20]>>(iter: I) -> Self {
        let mut index = SkeyIndex::new();
        for h in iter {
            index.insert(h);
        }
        index
    }
}

impl SkeyLookup for SkeyIndex {
    fn find_skey(&self, req2: &[u8; 20]) -> Option<[u8; 20]> {
        self.by_req2.get(req2).copied()
    }
}

/// The two RC4 directions of an established RC4 connection, from our side.
#[derive(Debug, Clone)]
pub struct Rc4Stream {
    recv: Rc4,
    send: Rc4,
}

impl Rc4Stream {
    /// Decrypts received bytes in place; call on every byte received, in order.
    pub fn decrypt(&mut self, buf: &mut [u8]) {
        self.recv.apply(buf);
    }
    /// Encrypts bytes to send in place; call on every byte sent, in order.
    pub fn encrypt(&mut self, buf: &mut [u8]) {
        self.send.apply(buf);
    }
}

/// Why an MSE handshake failed. The connection is to be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MseError {
    #[error("MSE: peer public key is not a valid Diffie-Hellman key")]
    BadPublicKey(#[source] dh::BadPublicKey),
    #[error("MSE: no HASH('req1', S) within {MAX_PAD_LEN} bytes of padding: not MSE, or junk")]
    NoSync,
    #[error("MSE: peer asks for a torrent we do not serve (unknown SKEY)")]
    UnknownSkey,
    #[error("MSE: verification constant mismatch")]
    VcMismatch,
    #[error("MSE: PadC of {0} bytes is longer than {MAX_PAD_LEN}")]
    PadTooLong(usize),
    #[error("MSE: initial payload of {0} bytes is longer than {MAX_IA_LEN}")]
    IaTooLong(usize),
    #[error("MSE: peer provides crypto {provided:#x}, none allowed by --encryption {policy}")]
    NoCommonCrypto {
        provided: u32,
        policy: EncryptionPolicy,
    },
    #[error("MSE: handshake already finished or failed; feed the connection elsewhere")]
    Finished,
    #[error("MSE: cannot read random bytes from the OS: {0}")]
    Entropy(String),
}

/// Progress after [`MseResponder::handle_bytes`].
#[derive(Debug)]
pub enum MseProgress {
    /// Waiting for more bytes (possibly with something to transmit).
    NeedMore,
    /// The handshake is complete.
    Done(MseDone),
}

/// The outcome of a completed handshake.
#[derive(Debug)]
pub struct MseDone {
    /// What the rest of the connection uses.
    pub selected: Crypto,
    /// The info-hash the peer asked for.
    pub skey: [u8; 20],
    /// Decrypted IA followed by every byte received after the handshake
    /// (decrypted when RC4): the start of the peer-protocol stream.
    pub leftover: Vec<u8>,
    /// `Some` exactly when `selected` is [`Crypto::Rc4`]. Boxed (~520 bytes
    /// of cipher state) so plaintext connections, the common case, stay small.
    pub rc4: Option<Box<Rc4Stream>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Ya,
    SyncReq1 { searched: usize },
    Skey,
    CryptoHeader,
    PadC { len: usize },
    Ia { len: usize },
    Finished,
}

/// Per-connection secrets derived once S is known.
struct Shared {
    s: [u8; KEY_LEN],
    req1: [u8; HASH_LEN],
    req3: [u8; HASH_LEN],
}

/// The receiving side of an MSE handshake. See the module docs for the
/// call order.
pub struct MseResponder {
    policy: EncryptionPolicy,
    entropy: [u8; ENTROPY_LEN],
    step: Step,
    inbuf: Vec<u8>,
    /// Bytes of `inbuf` already consumed.
    pos: usize,
    out: Vec<u8>,
    out_pos: usize,
    shared: Option<Shared>,
    skey: [u8; HASH_LEN],
    recv: Option<Rc4>,
    send: Option<Rc4>,
    selected: Option<Crypto>,
}

impl std::fmt::Debug for MseResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MseResponder")
            .field("policy", &self.policy)
            .field("step", &self.step)
            .field("buffered", &(self.inbuf.len() - self.pos))
            .field("to_send", &(self.out.len() - self.out_pos))
            .finish_non_exhaustive()
    }
}

/// Random bytes from the OS for [`MseResponder::new`].
pub fn os_entropy() -> Result<[u8; ENTROPY_LEN], MseError> {
    let mut e = [0u8; ENTROPY_LEN];
    getrandom::fill(&mut e).map_err(|err| MseError::Entropy(err.to_string()))?;
    Ok(e)
}

impl MseResponder {
    /// A responder for one incoming connection. `entropy` must be fresh
    /// random bytes per connection ([`os_entropy`]); tests pass fixed ones.
    pub fn new(policy: EncryptionPolicy, entropy: [u8; ENTROPY_LEN]) -> Self {
        MseResponder {
            policy,
            entropy,
            step: Step::Ya,
            inbuf: Vec::new(),
            pos: 0,
            out: Vec::new(),
            out_pos: 0,
            shared: None,
            skey: [0; HASH_LEN],
            recv: None,
            send: None,
            selected: None,
        }
    }

    /// [`MseResponder::new`] with [`os_entropy`].
    pub fn with_os_entropy(policy: EncryptionPolicy) -> Result<Self, MseError> {
        Ok(Self::new(policy, os_entropy()?))
    }

    /// Bytes to send now.
    pub fn poll_transmit(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// `n` bytes of [`MseResponder::poll_transmit`] were sent.
    pub fn advance_transmit(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// Moves the pending bytes to send out of the responder.
    pub fn take_transmit(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.out);
        v.drain(..self.out_pos);
        self.out_pos = 0;
        v
    }

    /// Consumes received bytes (any split). See [`MseProgress`].
    pub fn handle_bytes<L: SkeyLookup + ?Sized>(
        &mut self,
        bytes: &[u8],
        skeys: &L,
    ) -> Result<MseProgress, MseError> {
        if self.step == Step::Finished {
            return Err(MseError::Finished);
        }
        self.inbuf.extend_from_slice(bytes);
        let result = self.run(skeys);
        match &result {
            Ok(MseProgress::NeedMore) => {
                // Keep only unconsumed bytes (the sync search indexes from pos).
                self.inbuf.drain(..self.pos);
                self.pos = 0;
            }
            Ok(MseProgress::Done(_)) | Err(_) => {
                self.step = Step::Finished;
                self.inbuf = Vec::new();
                self.pos = 0;
                self.shared = None;
                self.recv = None;
                self.send = None;
            }
        }
        result
    }

    fn avail(&self) -> usize {
        self.inbuf.len() - self.pos
    }

    fn run<L: SkeyLookup + ?Sized>(&mut self, skeys: &L) -> Result<MseProgress, MseError> {
        loop {
            match self.step {
                Step::Ya => {
                    if self.avail() < KEY_LEN {
                        return Ok(MseProgress::NeedMore);
                    }
                    let mut ya = [0u8; KEY_LEN];
                    ya.copy_from_slice(&self.inbuf[self.pos..self.pos + KEY_LEN]);
                    self.pos += KEY_LEN;
                    self.on_public_key(&ya)?;
                    self.step = Step::SyncReq1 { searched: 0 };
                }
                Step::SyncReq1 { searched } => {
                    let req1 = self.shared.as_ref().map_or([0; HASH_LEN], |s| s.req1);
                    let window = &self.inbuf[self.pos..];
                    let mut i = searched;
                    while i <= MAX_PAD_LEN && i + HASH_LEN <= window.len() {
                        if window[i..i + HASH_LEN] == req1 {
                            break;
                        }
                        i += 1;
                    }
                    if i > MAX_PAD_LEN {
                        return Err(MseError::NoSync);
                    }
                    if i + HASH_LEN > window.len() {
                        self.step = Step::SyncReq1 { searched: i };
                        return Ok(MseProgress::NeedMore);
                    }
                    self.pos += i + HASH_LEN;
                    self.step = Step::Skey;
                }
                Step::Skey => {
                    if self.avail() < HASH_LEN {
                        return Ok(MseProgress::NeedMore);
                    }
                    self.on_skey_hash(skeys)?;
                    self.step = Step::CryptoHeader;
                }
                Step::CryptoHeader => {
                    // VC(8) crypto_provide(4) len(PadC)(2)
                    let Some(at) = self.decrypt_next(14) else {
                        return Ok(MseProgress::NeedMore);
                    };
                    let mut field = [0u8; 14];
                    field.copy_from_slice(&self.inbuf[at..at + 14]);
                    if field[..8] != VC {
                        return Err(MseError::VcMismatch);
                    }
                    let provide = u32::from_be_bytes([field[8], field[9], field[10], field[11]]);
                    let pad_len = usize::from(u16::from_be_bytes([field[12], field[13]]));
                    if pad_len > MAX_PAD_LEN {
                        return Err(MseError::PadTooLong(pad_len));
                    }
                    let selected = self
                        .policy
                        .select(provide)
                        .ok_or(MseError::NoCommonCrypto {
                            provided: provide,
                            policy: self.policy,
                        })?;
                    self.selected = Some(selected);
                    self.queue_step4(selected);
                    self.step = Step::PadC { len: pad_len };
                }
                Step::PadC { len } => {
                    // PadC, len(IA)(2)
                    let Some(at) = self.decrypt_next(len + 2) else {
                        return Ok(MseProgress::NeedMore);
                    };
                    let ia_len = usize::from(u16::from_be_bytes([
                        self.inbuf[at + len],
                        self.inbuf[at + len + 1],
                    ]));
                    if ia_len > MAX_IA_LEN {
                        return Err(MseError::IaTooLong(ia_len));
                    }
                    self.step = Step::Ia { len: ia_len };
                }
                Step::Ia { len } => {
                    if self.avail() < len {
                        return Ok(MseProgress::NeedMore);
                    }
                    return Ok(MseProgress::Done(self.finish(len)));
                }
                Step::Finished => return Err(MseError::Finished),
            }
        }
    }

    /// Step 1 received: compute S and queue Yb + PadB.
    fn on_public_key(&mut self, ya: &[u8; KEY_LEN]) -> Result<(), MseError> {
        let mut private = [0u8; 32];
        private.copy_from_slice(&self.entropy[..32]);
        let pair = DhKeyPair::from_private(&private);
        let s = pair.shared_secret(ya).map_err(MseError::BadPublicKey)?;
        self.out.extend_from_slice(pair.public());
        // PadB: 0..=512 bytes from RC4 keyed with the rest of the entropy.
        let mut pad_gen = Rc4::new(&self.entropy[32..]);
        let mut len = [0u8; 2];
        pad_gen.apply(&mut len);
        let pad_len = usize::from(u16::from_be_bytes(len)) % (MAX_PAD_LEN + 1);
        let start = self.out.len();
        self.out.resize(start + pad_len, 0);
        pad_gen.apply(&mut self.out[start..]);
        self.shared = Some(Shared {
            req1: kdf::req1(&s),
            req3: kdf::req3(&s),
            s,
        });
        Ok(())
    }

    /// HASH('req2', SKEY) xor HASH('req3', S) received: find SKEY, key RC4.
    fn on_skey_hash<L: SkeyLookup + ?Sized>(&mut self, skeys: &L) -> Result<(), MseError> {
        let Some(shared) = self.shared.as_ref() else {
            return Err(MseError::Finished);
        };
        let mut req2 = [0u8; HASH_LEN];
        for (i, b) in req2.iter_mut().enumerate() {
            *b = self.inbuf[self.pos + i] ^ shared.req3[i];
        }
        self.pos += HASH_LEN;
        let skey = skeys.find_skey(&req2).ok_or(MseError::UnknownSkey)?;
        self.recv = Some(Rc4::new_mse(&kdf::key_a(&shared.s, &skey)));
        self.send = Some(Rc4::new_mse(&kdf::key_b(&shared.s, &skey)));
        self.skey = skey;
        Ok(())
    }

    /// Decrypts the next `n` buffered bytes in place and consumes them,
    /// returning where they start; `None` (nothing consumed) when fewer are
    /// buffered.
    fn decrypt_next(&mut self, n: usize) -> Option<usize> {
        if self.avail() < n {
            return None;
        }
        let at = self.pos;
        if let Some(recv) = self.recv.as_mut() {
            recv.apply(&mut self.inbuf[at..at + n]);
        }
        self.pos += n;
        Some(at)
    }

    /// Queues ENCRYPT(VC, crypto_select, len(PadD), PadD) with an empty PadD.
    fn queue_step4(&mut self, selected: Crypto) {
        let mut msg = [0u8; 14];
        msg[8..12].copy_from_slice(&selected.bits().to_be_bytes());
        if let Some(send) = self.send.as_mut() {
            send.apply(&mut msg);
        }
        self.out.extend_from_slice(&msg);
    }

    /// IA (`ia_len` bytes, buffered) and everything after it become leftover.
    fn finish(&mut self, ia_len: usize) -> MseDone {
        let selected = self.selected.unwrap_or(Crypto::Plaintext);
        let mut leftover = self.inbuf.split_off(self.pos);
        let mut recv = self.recv.take().unwrap_or_else(|| Rc4::new(&[0]));
        let send = self.send.take().unwrap_or_else(|| Rc4::new(&[0]));
        recv.apply(&mut leftover[..ia_len]);
        let rc4 = match selected {
            Crypto::Plaintext => None,
            Crypto::Rc4 => {
                recv.apply(&mut leftover[ia_len..]);
                Some(Box::new(Rc4Stream { recv, send }))
            }
        };
        MseDone {
            selected,
            skey: self.skey,
            leftover,
            rc4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_selection() {
        use Crypto::*;
        use EncryptionPolicy::*;
        let cases = [
            (PreferPlaintext, 3, Some(Plaintext)),
            (PreferPlaintext, 2, Some(Rc4)),
            (PreferPlaintext, 1, Some(Plaintext)),
            (PreferPlaintext, 0, None),
            (PreferPlaintext, 0xfc, None),
            (RequirePlaintext, 3, Some(Plaintext)),
            (RequirePlaintext, 2, None),
            (AllowRc4, 3, Some(Rc4)),
            (AllowRc4, 1, Some(Plaintext)),
            (AllowRc4, 4, None),
        ];
        for (policy, provide, want) in cases {
            assert_eq!(policy.select(provide), want, "{policy} {provide:#x}");
        }
        for p in [PreferPlaintext, RequirePlaintext, AllowRc4] {
            assert_eq!(p.as_str().parse::<EncryptionPolicy>(), Ok(p));
        }
        assert!("rc4".parse::<EncryptionPolicy>().is_err());
    }

    #[test]
    fn routing() {
        assert_eq!(classify(b""), Route::NeedMore);
        assert_eq!(classify(b"\x13Bit"), Route::NeedMore);
        assert_eq!(classify(b"\x13BitTorrent protocol"), Route::Plaintext);
        assert_eq!(classify(b"\x13BitTorrent protocol\0\0"), Route::Plaintext);
        assert_eq!(classify(b"\x13Bix"), Route::Encrypted);
        assert_eq!(classify(&[0x13; 30]), Route::Encrypted);
        assert!(looks_like_plaintext(b"\x13BitTorrent protocolxyz"));
        assert!(!looks_like_plaintext(b"\x13BitTorrent"));
    }
}
