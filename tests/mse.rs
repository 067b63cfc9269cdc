//! MSE/PE responder: known answers (RC4 from RFC 6229, DH and key derivation
//! from an independent Python computation), full handshakes against an
//! initiator (side A) written here at every split point, rejections, and
//! "never panics" properties.

mod support;

use proptest::prelude::*;
use ringseed::wire::mse::{
    dh::PRIME, kdf, Crypto, DhKeyPair, EncryptionPolicy, MseDone, MseError, MseProgress,
    MseResponder, Rc4, SkeyIndex, CRYPTO_PLAINTEXT, CRYPTO_RC4, ENTROPY_LEN, KEY_LEN, MAX_PAD_LEN,
};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const SKEY: [u8; 20] = [0xab; 20];
const XA: [u8; 32] = [0x11; 32];

fn entropy() -> [u8; ENTROPY_LEN] {
    let mut e = [0x22; ENTROPY_LEN];
    e[32..].fill(0x33);
    e
}

fn index() -> SkeyIndex {
    [[1u8; 20], SKEY, [2u8; 20]].into_iter().collect()
}

// ---------------------------------------------------------------- known answers

#[test]
fn rc4_rfc6229_vectors() {
    // (key, offset, keystream) from RFC 6229 section 2.
    let cases = [
        ("0102030405", 0, "b2396305f03dc027ccc3524a0a1118a8"),
        ("0102030405", 1024, "30abbcc7c20b01609f23ee2d5f6bb7df"),
        ("0102030405", 1536, "d8729db41882259bee4f825325f5a130"),
        (
            "0102030405060708090a0b0c0d0e0f10",
            0,
            "9ac7cc9a609d1ef7b2932899cde41b97",
        ),
        (
            "0102030405060708090a0b0c0d0e0f10",
            1024,
            "bdf0324e6083dcc6d3cedd3ca8c53c16",
        ),
        (
            "0102030405060708090a0b0c0d0e0f10",
            1536,
            "ffa0b514647ec04f6306b892ae661181",
        ),
    ];
    for (key, offset, want) in cases {
        let mut rc4 = Rc4::new(&hex(key));
        rc4.skip(offset);
        let mut ks = [0u8; 16];
        rc4.apply(&mut ks);
        assert_eq!(ks.to_vec(), hex(want), "key {key} offset {offset}");
        // Split application gives the same stream.
        let mut rc4 = Rc4::new(&hex(key));
        let mut all = vec![0u8; offset + 16];
        for chunk in all.chunks_mut(7) {
            rc4.apply(chunk);
        }
        assert_eq!(all[offset..].to_vec(), hex(want));
    }
}

#[test]
fn dh_and_key_derivation_known_answers() {
    // Computed independently with Python's pow() and hashlib.
    let a = DhKeyPair::from_private(&XA);
    let b = DhKeyPair::from_private(&[0x22; 32]);
    assert_eq!(a.public().to_vec(), hex("9154e984d6e09a171ac7b73396f39e23f58d9f7d2210a6721923a920e001b618d035962b3f342b1ce2dc4a4b871d7c128493c356da42c71373466358a8c51dc10520aa2d3b3880f274a4800b4381602bc7dca609c246de95ae484f4d607afceb"));
    assert_eq!(b.public().to_vec(), hex("c35159dedad67610d4c3c43bcf549ac1ee430e193f745303ba6136460e0251b49b03a336564a201d477e204c61d90835183dcb02e4480b650c7127121d5b2ebda79ce44364d2e3723795910b9959305c4a258b39496137e05ce419d1045402ea"));
    let s = a.shared_secret(b.public()).unwrap();
    assert_eq!(s, b.shared_secret(a.public()).unwrap());
    assert_eq!(s.to_vec(), hex("c07713a287d2e2d2ea94a40a54a2e719c12a6f91f7852a1e27019207d2e4962cf83409106637a2e44424d85a48e07e78b0b8fd8e17728e8a0a9df9af13251b505751a78cc7337b75d342078873e9c7ae659cc2965dc93dc5cd0cead710899829"));
    assert_eq!(
        kdf::req1(&s).to_vec(),
        hex("1747d4bf30216f5a3b5bd10584b0de7e85ff46cc")
    );
    assert_eq!(
        kdf::req2(&SKEY).to_vec(),
        hex("debcbb002ca1ef763a10a40caaeab1f00a565dbe")
    );
    assert_eq!(
        kdf::req3(&s).to_vec(),
        hex("dcde1224e45168717ce08902ccc96750802b7f34")
    );
    let key_a = kdf::key_a(&s, &SKEY);
    let key_b = kdf::key_b(&s, &SKEY);
    assert_eq!(
        key_a.to_vec(),
        hex("837a6f3e8fa0d3751a8a80e29e46c000f67ea70b")
    );
    assert_eq!(
        key_b.to_vec(),
        hex("42e00ba0d24c14358d1e9e17f5ea339d6f52b64b")
    );
    // RC4 keyed with them, first 1024 bytes dropped.
    for (key, want) in [
        (key_a, "c1e96c890f7624010cd2d47f0ab3600b"),
        (key_b, "ad778bf7a598ad430a4456900073cbaa"),
    ] {
        let mut ks = [0u8; 16];
        Rc4::new_mse(&key).apply(&mut ks);
        assert_eq!(ks.to_vec(), hex(want));
    }
}

#[test]
fn degenerate_public_keys_are_refused() {
    let b = DhKeyPair::from_private(&[0x22; 32]);
    let mut p_minus_1 = PRIME;
    p_minus_1[KEY_LEN - 1] -= 1;
    let mut one = [0u8; KEY_LEN];
    one[KEY_LEN - 1] = 1;
    for bad in [[0u8; KEY_LEN], one, p_minus_1, PRIME, [0xff; KEY_LEN]] {
        assert!(b.shared_secret(&bad).is_err());
    }
    let mut r = MseResponder::new(EncryptionPolicy::default(), entropy());
    assert!(matches!(
        r.handle_bytes(&[0u8; KEY_LEN], &index()),
        Err(MseError::BadPublicKey(_))
    ));
}

// ---------------------------------------------------------------- side A

/// The initiating side of MSE, as a stock client does it.
struct Initiator {
    pair: DhKeyPair,
    skey: [u8; 20],
    provide: u32,
    pad_a: usize,
    pad_c: usize,
    ia: Vec<u8>,
    s: [u8; KEY_LEN],
    enc: Option<Rc4>,
    dec: Option<Rc4>,
}

impl Initiator {
    fn new(provide: u32, pad_a: usize, pad_c: usize, ia: &[u8]) -> Self {
        Initiator {
            pair: DhKeyPair::from_private(&XA),
            skey: SKEY,
            provide,
            pad_a,
            pad_c,
            ia: ia.to_vec(),
            s: [0; KEY_LEN],
            enc: None,
            dec: None,
        }
    }

    /// Ya, PadA.
    fn step1(&self) -> Vec<u8> {
        let mut v = self.pair.public().to_vec();
        v.extend((0..self.pad_a).map(|i| (i * 7 + 3) as u8));
        v
    }

    /// HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
    /// ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA).
    fn step3(&mut self, yb: &[u8; KEY_LEN]) -> Vec<u8> {
        self.s = self.pair.shared_secret(yb).unwrap();
        let mut v = kdf::req1(&self.s).to_vec();
        let (req2, req3) = (kdf::req2(&self.skey), kdf::req3(&self.s));
        v.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
        let mut e = vec![0u8; 8];
        e.extend_from_slice(&self.provide.to_be_bytes());
        e.extend_from_slice(&(self.pad_c as u16).to_be_bytes());
        e.extend(std::iter::repeat_n(0x5c, self.pad_c));
        e.extend_from_slice(&(self.ia.len() as u16).to_be_bytes());
        e.extend_from_slice(&self.ia);
        let mut enc = Rc4::new_mse(&kdf::key_a(&self.s, &self.skey));
        enc.apply(&mut e);
        self.enc = Some(enc);
        v.extend(e);
        v
    }

    /// Payload after the handshake as A sends it under `crypto`.
    fn payload(&mut self, crypto: Crypto, data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        if crypto == Crypto::Rc4 {
            self.enc.as_mut().unwrap().apply(&mut v);
        }
        v
    }

    /// Parses what B sent after Yb: PadB, ENCRYPT(VC, crypto_select,
    /// len(PadD), PadD). Returns crypto_select and the bytes that follow.
    fn read_step4<'a>(&mut self, after_yb: &'a [u8]) -> (u32, &'a [u8]) {
        let mut dec = Rc4::new_mse(&kdf::key_b(&self.s, &self.skey));
        let mut vc = [0u8; 8];
        dec.clone().apply(&mut vc);
        let at = (0..=MAX_PAD_LEN.min(after_yb.len().saturating_sub(8)))
            .find(|&i| after_yb[i..i + 8] == vc)
            .expect("B's encrypted VC within 512 bytes of PadB");
        let mut head = after_yb[at..at + 14].to_vec();
        dec.apply(&mut head);
        assert_eq!(head[..8], [0; 8]);
        let select = u32::from_be_bytes(head[8..12].try_into().unwrap());
        let pad_d = usize::from(u16::from_be_bytes(head[12..14].try_into().unwrap()));
        assert!(pad_d <= MAX_PAD_LEN);
        let mut pad = after_yb[at + 14..at + 14 + pad_d].to_vec();
        dec.apply(&mut pad);
        self.dec = Some(dec);
        (select, &after_yb[at + 14 + pad_d..])
    }
}

/// The BitTorrent handshake a client puts in IA.
fn bt_handshake() -> Vec<u8> {
    let mut v = b"\x13BitTorrent protocol".to_vec();
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 5]);
    v.extend_from_slice(&SKEY);
    v.extend_from_slice(b"-LT2110-abcdefghijkl");
    v
}

struct Case {
    name: &'static str,
    policy: EncryptionPolicy,
    provide: u32,
    pad_a: usize,
    pad_c: usize,
    ia: Vec<u8>,
    /// Plaintext A sends right after IA.
    extra: Vec<u8>,
    want: Crypto,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "libtorrent default: provide both, IA = handshake, plaintext",
            policy: EncryptionPolicy::PreferPlaintext,
            provide: CRYPTO_PLAINTEXT | CRYPTO_RC4,
            pad_a: 0,
            pad_c: 0,
            ia: bt_handshake(),
            extra: b"\0\0\0\x01\x02".to_vec(),
            want: Crypto::Plaintext,
        },
        Case {
            name: "forced RC4, max pads, empty IA",
            policy: EncryptionPolicy::PreferPlaintext,
            provide: CRYPTO_RC4,
            pad_a: MAX_PAD_LEN,
            pad_c: MAX_PAD_LEN,
            ia: Vec::new(),
            extra: bt_handshake(),
            want: Crypto::Rc4,
        },
        Case {
            name: "allow-rc4 picks RC4 when offered",
            policy: EncryptionPolicy::AllowRc4,
            provide: CRYPTO_PLAINTEXT | CRYPTO_RC4,
            pad_a: 37,
            pad_c: 5,
            ia: bt_handshake(),
            extra: b"\0\0\0\x01\x02\0\0\0\0".to_vec(),
            want: Crypto::Rc4,
        },
    ]
}

struct Exchange {
    /// Everything A sends (steps 1 and 3, then `extra`).
    stream: Vec<u8>,
    /// Where step 3 starts.
    step3_at: usize,
    init: Initiator,
    yb: [u8; KEY_LEN],
}

fn exchange(c: &Case) -> Exchange {
    let mut init = Initiator::new(c.provide, c.pad_a, c.pad_c, &c.ia);
    let yb = *DhKeyPair::from_private(&entropy()[..32]).public();
    let mut stream = init.step1();
    let step3_at = stream.len();
    stream.extend(init.step3(&yb));
    let extra = init.payload(c.want, &c.extra);
    stream.extend(extra);
    Exchange {
        stream,
        step3_at,
        init,
        yb,
    }
}

/// Feeds `chunks` to a fresh responder; returns what it sent, the outcome
/// and the peer-protocol bytes (leftover plus later chunks, decrypted).
fn drive(c: &Case, chunks: &[&[u8]]) -> (Vec<u8>, MseDone, Vec<u8>) {
    let mut r = MseResponder::new(c.policy, entropy());
    let mut sent = Vec::new();
    let mut done: Option<MseDone> = None;
    let mut app = Vec::new();
    for chunk in chunks {
        if let Some(d) = done.as_mut() {
            let mut v = chunk.to_vec();
            if let Some(rc4) = d.rc4.as_mut() {
                rc4.decrypt(&mut v);
            }
            app.extend(v);
            continue;
        }
        let progress = r.handle_bytes(chunk, &index()).unwrap();
        // Send in two pieces to exercise advance_transmit.
        let out = r.poll_transmit().to_vec();
        let half = out.len() / 2;
        sent.extend_from_slice(&out[..half]);
        r.advance_transmit(half);
        sent.extend(r.take_transmit());
        if let MseProgress::Done(d) = progress {
            app.extend_from_slice(&d.leftover);
            done = Some(d);
            assert_eq!(
                r.handle_bytes(b"x", &index()).unwrap_err(),
                MseError::Finished
            );
        }
    }
    (sent, done.expect("handshake completes"), app)
}

fn check(c: &Case, ex: &Exchange, sent: &[u8], done: MseDone, app: &[u8]) {
    let name = c.name;
    assert_eq!(done.selected, c.want, "{name}");
    assert_eq!(done.skey, SKEY, "{name}");
    assert_eq!(done.rc4.is_some(), c.want == Crypto::Rc4, "{name}");
    let mut want_app = c.ia.clone();
    want_app.extend_from_slice(&c.extra);
    assert_eq!(app, &want_app[..], "{name}");
    assert_eq!(&sent[..KEY_LEN], &ex.yb[..], "{name}");
    let mut init = Initiator {
        pair: DhKeyPair::from_private(&XA),
        s: ex.init.s,
        enc: ex.init.enc.clone(),
        dec: None,
        ia: Vec::new(),
        ..Initiator::new(c.provide, 0, 0, &[])
    };
    let (select, rest) = init.read_step4(&sent[KEY_LEN..]);
    assert_eq!(select, c.want.bits(), "{name}");
    assert!(rest.is_empty(), "{name}: nothing after step 4 yet");
}

#[test]
fn handshake_at_every_split_point() {
    for c in cases() {
        let ex = exchange(&c);
        let n = ex.stream.len();
        for k in 0..=n {
            let (sent, done, app) = drive(&c, &[&ex.stream[..k], &ex.stream[k..]]);
            check(&c, &ex, &sent, done, &app);
        }
        // Byte by byte.
        let chunks: Vec<&[u8]> = ex.stream.chunks(1).collect();
        let (sent, done, app) = drive(&c, &chunks);
        check(&c, &ex, &sent, done, &app);
        // Three pieces at a spread of points.
        for k1 in (0..n).step_by(41) {
            for k2 in (k1..n).step_by(53) {
                let parts = [&ex.stream[..k1], &ex.stream[k1..k2], &ex.stream[k2..]];
                let (sent, done, app) = drive(&c, &parts);
                check(&c, &ex, &sent, done, &app);
            }
        }
    }
}

#[test]
fn rc4_stream_continues_both_ways() {
    let c = &cases()[1];
    let mut ex = exchange(c);
    let (sent, mut done, app) = drive(c, &[&ex.stream]);
    assert_eq!(app, bt_handshake());
    let (_, rest) = ex.init.read_step4(&sent[KEY_LEN..]);
    assert!(rest.is_empty());
    let rc4 = done.rc4.as_mut().unwrap();
    // B -> A, in two sends.
    let mut msg = b"\x13BitTorrent protocol reply and a bitfield".to_vec();
    let (a, b) = msg.split_at_mut(11);
    rc4.encrypt(a);
    rc4.encrypt(b);
    ex.init.dec.as_mut().unwrap().apply(&mut msg);
    assert_eq!(msg, b"\x13BitTorrent protocol reply and a bitfield");
    // A -> B.
    let mut req = ex.init.payload(Crypto::Rc4, b"\0\0\0\x0d\x06request!");
    rc4.decrypt(&mut req);
    assert_eq!(req, b"\0\0\0\x0d\x06request!");
}

#[test]
fn step3_before_yb_is_sent_still_works() {
    // The responder does not care when bytes arrive relative to its sends.
    let c = &cases()[0];
    let ex = exchange(c);
    let (sent, done, app) = drive(c, &[&ex.stream[..ex.step3_at], &ex.stream[ex.step3_at..]]);
    check(c, &ex, &sent, done, &app);
}

// ---------------------------------------------------------------- rejections

fn reject(policy: EncryptionPolicy, stream: &[u8]) -> MseError {
    let mut r = MseResponder::new(policy, entropy());
    match r.handle_bytes(stream, &index()) {
        Err(e) => {
            assert_eq!(
                r.handle_bytes(b"", &index()).unwrap_err(),
                MseError::Finished
            );
            e
        }
        Ok(p) => panic!("accepted: {p:?}"),
    }
}

#[test]
fn rejections() {
    let yb = *DhKeyPair::from_private(&entropy()[..32]).public();
    let base = || Initiator::new(CRYPTO_PLAINTEXT | CRYPTO_RC4, 10, 0, &bt_handshake());

    // RC4-only peer under require-plaintext.
    let mut i = Initiator::new(CRYPTO_RC4, 0, 0, &[]);
    let mut s = i.step1();
    s.extend(i.step3(&yb));
    assert_eq!(
        reject(EncryptionPolicy::RequirePlaintext, &s),
        MseError::NoCommonCrypto {
            provided: CRYPTO_RC4,
            policy: EncryptionPolicy::RequirePlaintext
        }
    );
    // Unknown crypto bits only.
    let mut i = Initiator::new(0x04, 0, 0, &[]);
    let mut s = i.step1();
    s.extend(i.step3(&yb));
    assert!(matches!(
        reject(EncryptionPolicy::PreferPlaintext, &s),
        MseError::NoCommonCrypto { provided: 4, .. }
    ));
    // Unknown SKEY.
    let mut i = base();
    i.skey = [9; 20];
    let mut s = i.step1();
    s.extend(i.step3(&yb));
    assert_eq!(
        reject(EncryptionPolicy::default(), &s),
        MseError::UnknownSkey
    );
    // VC mismatch: flip a bit of the encrypted VC.
    let mut i = base();
    let mut s = i.step1();
    let at = s.len() + 40;
    s.extend(i.step3(&yb));
    s[at + 3] ^= 0x01;
    assert_eq!(
        reject(EncryptionPolicy::default(), &s),
        MseError::VcMismatch
    );
    // PadC too long.
    let mut i = Initiator::new(CRYPTO_PLAINTEXT, 0, MAX_PAD_LEN + 1, &[]);
    let mut s = i.step1();
    s.extend(i.step3(&yb));
    assert_eq!(
        reject(EncryptionPolicy::default(), &s),
        MseError::PadTooLong(513)
    );
    // IA too long.
    let mut i = Initiator::new(CRYPTO_PLAINTEXT, 0, 0, &vec![0u8; 1025]);
    let mut s = i.step1();
    s.extend(i.step3(&yb));
    assert_eq!(
        reject(EncryptionPolicy::default(), &s),
        MseError::IaTooLong(1025)
    );
    // PadA longer than 512: no sync.
    let mut i = Initiator::new(CRYPTO_PLAINTEXT, MAX_PAD_LEN + 1, 0, &[]);
    let mut s = i.step1();
    s.extend(i.step3(&yb));
    assert_eq!(reject(EncryptionPolicy::default(), &s), MseError::NoSync);
    // Junk (a TLS hello, repeated): no sync, decided by byte 96 + 512 + 20.
    let junk: Vec<u8> = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        .iter()
        .copied()
        .cycle()
        .take(KEY_LEN + MAX_PAD_LEN + 20)
        .collect();
    let mut r = MseResponder::new(EncryptionPolicy::default(), entropy());
    assert!(matches!(
        r.handle_bytes(&junk[..junk.len() - 1], &index()),
        Ok(MseProgress::NeedMore)
    ));
    assert_eq!(
        r.handle_bytes(&junk[junk.len() - 1..], &index())
            .unwrap_err(),
        MseError::NoSync
    );
    // A plaintext handshake fed to MSE by mistake is junk too.
    let mut hs = bt_handshake();
    hs.resize(KEY_LEN + MAX_PAD_LEN + 40, 0);
    assert_eq!(reject(EncryptionPolicy::default(), &hs), MseError::NoSync);
}

#[test]
fn closure_lookup_and_index_maintenance() {
    let mut idx = SkeyIndex::new();
    assert!(idx.is_empty());
    idx.insert(SKEY);
    idx.insert([3; 20]);
    idx.remove(&[3; 20]);
    assert_eq!(idx.len(), 1);
    let c = &cases()[0];
    let ex = exchange(c);
    let req2 = kdf::req2(&SKEY);
    let lookup = move |h: &[u8; 20]| (*h == req2).then_some(SKEY);
    let mut r = MseResponder::new(c.policy, entropy());
    let p = r.handle_bytes(&ex.stream, &lookup).unwrap();
    assert!(matches!(p, MseProgress::Done(d) if d.selected == Crypto::Plaintext));
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..1500),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        points.sort_unstable();
        let mut r = MseResponder::new(EncryptionPolicy::default(), entropy());
        let mut last = 0;
        for p in points.into_iter().chain([data.len()]) {
            if r.handle_bytes(&data[last..p], &index()).is_err() {
                break;
            }
            last = p;
        }
        prop_assert!(r.poll_transmit().len() <= KEY_LEN + MAX_PAD_LEN + 14);
    }

    #[test]
    fn never_panics_on_a_corrupted_handshake(
        case in 0usize..3,
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
        split in any::<prop::sample::Index>(),
    ) {
        let c = &cases()[case];
        let mut stream = exchange(c).stream;
        let at = at.index(stream.len());
        stream[at] ^= xor;
        let split = split.index(stream.len() + 1);
        let mut r = MseResponder::new(c.policy, entropy());
        if r.handle_bytes(&stream[..split], &index()).is_ok() {
            let _ = r.handle_bytes(&stream[split..], &index());
        }
    }
}

// ------------------------------------------------- the engine's RC4 send path

/// A one-file v1 torrent in `dir`, served by an engine catalogue.
fn engine_catalog(dir: &std::path::Path) -> (ringseed::engine::Catalog, [u8; 20]) {
    let path = dir.join("rc4.bin");
    std::fs::write(&path, support::engine::data(7, 100_000)).unwrap();
    let fix =
        support::engine::make_torrent(&path, ringseed::metainfo::MetaVersion::V1, Some(32 * 1024));
    let hash = support::engine::info_hash(&fix.torrent);
    let served = support::engine::served(&fix, &path);
    (ringseed::engine::Catalog::new(vec![served]), hash)
}

/// The suspicion from issue 12: MSE's last step and the peer's BitTorrent
/// handshake arrive in one read, the connection switches to RC4 in that
/// read, and the next send carries both the responder's step 4 (already
/// encrypted) and our handshake reply. Sealing the whole send with RC4
/// encrypted step 4 twice (the peer never finds VC). Confirmed, fixed in
/// `engine::stream::seal_outgoing`: this test builds the send exactly as
/// `shard::transmit` does and decrypts it as side A.
#[test]
fn rc4_step4_and_handshake_reply_in_one_send_are_encrypted_once() {
    use ringseed::engine::stream::{feed, seal_outgoing, MseOutcome, StreamMode};
    use ringseed::wire::{PeerConfig, PeerState};
    let dir = tempfile::tempdir().unwrap();
    let (catalog, hash) = engine_catalog(dir.path());
    let mut ia = b"\x13BitTorrent protocol".to_vec();
    ia.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 5]);
    ia.extend_from_slice(&hash);
    ia.extend_from_slice(b"-LT2110-abcdefghijkl");
    let mut init = Initiator::new(CRYPTO_RC4, 0, 0, &ia);
    init.skey = hash;

    let now = std::time::Instant::now();
    let mut mode = StreamMode::Detect(Vec::new());
    let mut peer = PeerState::new(now, &PeerConfig::default(), "127.0.0.1:1".parse().unwrap());
    let mut pre_tx = Vec::new();
    let policy = EncryptionPolicy::PreferPlaintext;
    // Step 1 in; step 2 (Yb, PadB) out, sent as is (not RC4 yet).
    let out = feed(
        &mut mode,
        &mut peer,
        &mut pre_tx,
        now,
        &init.step1(),
        &catalog,
        policy,
    );
    assert_eq!(out.unwrap(), MseOutcome::None);
    let mut step2 = std::mem::take(&mut pre_tx);
    let len = step2.len();
    seal_outgoing(&mut mode, &mut step2, len);
    let yb: [u8; KEY_LEN] = step2[..KEY_LEN].try_into().unwrap();
    // Step 3 with IA (the BitTorrent handshake) in ONE read.
    let step3 = init.step3(&yb);
    let out = feed(
        &mut mode,
        &mut peer,
        &mut pre_tx,
        now,
        &step3,
        &catalog,
        policy,
    );
    assert_eq!(out.unwrap(), MseOutcome::Rc4);
    assert!(mode.is_rc4() && !pre_tx.is_empty() && !peer.poll_transmit().is_empty());

    // The next send, composed as `Shard::flush` composes it.
    let pre_len = pre_tx.len();
    let mut send = std::mem::take(&mut pre_tx);
    send.extend_from_slice(peer.poll_transmit());
    let mut wrong = send.clone();
    seal_outgoing(&mut mode, &mut send, pre_len);

    // Side A: PadB, then step 4 (VC, crypto_select), then our handshake.
    let mut after_yb = step2[KEY_LEN..].to_vec();
    after_yb.extend_from_slice(&send);
    let (select, rest) = init.read_step4(&after_yb);
    assert_eq!(select, CRYPTO_RC4);
    let mut reply = rest.to_vec();
    init.dec.as_mut().unwrap().apply(&mut reply);
    assert_eq!(&reply[..20], b"\x13BitTorrent protocol");
    assert_eq!(&reply[28..48], &hash, "our handshake names the torrent");

    // What the engine did before the fix: everything through RC4, step 4
    // included, so VC arrives garbled.
    // The connection's send key stream as it was then: B's key, advanced
    // past step 4 by the responder.
    let mut rc4_again = Rc4::new_mse(&kdf::key_b(&init.s, &hash));
    rc4_again.apply(&mut vec![0u8; pre_len]);
    rc4_again.apply(&mut wrong);
    assert_ne!(wrong[..pre_len], send[..pre_len], "step 4 encrypted twice");
}
