//! C2SP signed notes (c2sp.org/signed-note), Ed25519 note signatures
//! (signature type 0x01), tlog-cosignature/v1 (type 0x04), verifier keys
//! (vkeys) and the private-key file form.
//!
//! A note is UTF-8 text (no control characters but newline, ending in a
//! newline), a blank line, then one or more signature lines
//! `— <key name> base64(key ID || signature)`. Signature lines for keys the
//! verifier does not know are kept but ignored; a line for a known key with a
//! bad signature rejects the whole note.
//!
//! Not done here: ML-DSA cosignatures, and the timestamp-in-the-future check
//! (the caller has the clock).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type byte of a plain Ed25519 note signature.
pub const ALG_ED25519: u8 = 0x01;
/// Signature type byte of an Ed25519 tlog-cosignature/v1.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// The most signature lines a note may carry.
pub const MAX_SIGNATURES: usize = 100;
/// The largest note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

const SIG_PREFIX: &str = "\u{2014} ";

/// Why a note, key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("note is larger than {MAX_NOTE_BYTES} bytes")]
    TooLarge,
    #[error("note is not valid UTF-8 text without control characters")]
    BadText,
    #[error("note has no blank line before its signatures")]
    NoSignatureBlock,
    #[error("malformed signature line {0}")]
    BadSignatureLine(usize),
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("bad key name {0:?} (must be non-empty, no spaces, no '+')")]
    BadKeyName(String),
    #[error("malformed verifier key")]
    BadVerifierKey,
    #[error("malformed private key")]
    BadPrivateKey,
    #[error("unsupported signature type {0:#04x}")]
    UnsupportedAlgorithm(u8),
    #[error("signature by {0} does not verify")]
    BadSignature(String),
    #[error("no signature by {0}")]
    MissingSignature(String),
}

/// A key name is non-empty with no Unicode spaces and no '+'.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(|c| c.is_whitespace()) {
        return Err(NoteError::BadKeyName(name.to_owned()));
    }
    Ok(())
}

/// `SHA-256(name || "\n" || alg || public key)[:4]`.
pub fn key_id(name: &str, alg: u8, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// A public key that checks note signatures of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub name: String,
    pub alg: u8,
    pub key: VerifyingKey,
    pub id: [u8; 4],
}

impl Verifier {
    pub fn new(name: &str, alg: u8, key: VerifyingKey) -> Result<Self, NoteError> {
        check_key_name(name)?;
        if alg != ALG_ED25519 && alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::UnsupportedAlgorithm(alg));
        }
        Ok(Self {
            name: name.to_owned(),
            alg,
            id: key_id(name, alg, key.as_bytes()),
            key,
        })
    }

    /// Parse `<name>+<hex key ID>+<base64(alg || key)>`.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        let vkey = vkey.trim();
        // Names have no '+', base64 may: split from the left.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadVerifierKey);
        };
        let raw = B64.decode(b64).map_err(|_| NoteError::BadVerifierKey)?;
        if raw.len() != 33 || hex.len() != 8 {
            return Err(NoteError::BadVerifierKey);
        }
        let key_bytes: [u8; 32] = raw[1..].try_into().map_err(|_| NoteError::BadVerifierKey)?;
        let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| NoteError::BadVerifierKey)?;
        let v = Self::new(name, raw[0], key)?;
        if hex_encode(&v.id) != hex.to_ascii_lowercase() {
            return Err(NoteError::BadVerifierKey);
        }
        Ok(v)
    }

    pub fn to_vkey(&self) -> String {
        let mut raw = vec![self.alg];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{}+{}", self.name, hex_encode(&self.id), B64.encode(raw))
    }

    /// Check one signature line's bytes against `text`. For cosignatures
    /// the verified timestamp is returned.
    pub fn verify(&self, text: &str, sig: &[u8]) -> Result<Option<u64>, NoteError> {
        let bad = || NoteError::BadSignature(self.name.clone());
        match self.alg {
            ALG_ED25519 => {
                let s = ed25519_dalek::Signature::from_slice(sig).map_err(|_| bad())?;
                self.key
                    .verify_strict(text.as_bytes(), &s)
                    .map_err(|_| bad())?;
                Ok(None)
            }
            ALG_COSIGNATURE_V1 => {
                if sig.len() != 72 {
                    return Err(bad());
                }
                let ts = u64::from_be_bytes(sig[..8].try_into().map_err(|_| bad())?);
                if ts > i64::MAX as u64 {
                    return Err(bad());
                }
                let s = ed25519_dalek::Signature::from_slice(&sig[8..]).map_err(|_| bad())?;
                let msg = cosigned_message(text, ts);
                self.key.verify_strict(&msg, &s).map_err(|_| bad())?;
                Ok(Some(ts))
            }
            other => Err(NoteError::UnsupportedAlgorithm(other)),
        }
    }
}

fn cosigned_message(text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{text}").into_bytes()
}

/// A private key that makes note signatures (type 0x01) or cosignatures (0x04).
pub struct Signer {
    pub verifier: Verifier,
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("verifier", &self.verifier.to_vkey())
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn from_seed(name: &str, alg: u8, seed: [u8; 32]) -> Result<Self, NoteError> {
        let key = SigningKey::from_bytes(&seed);
        Ok(Self {
            verifier: Verifier::new(name, alg, key.verifying_key())?,
            key,
        })
    }

    /// Parse `PRIVATE+KEY+<name>+<hex key ID>+<base64(alg || seed)>` (the
    /// form Go's `note` package writes).
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let rest = skey
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::BadPrivateKey)?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadPrivateKey);
        };
        let raw = B64.decode(b64).map_err(|_| NoteError::BadPrivateKey)?;
        if raw.len() != 33 {
            return Err(NoteError::BadPrivateKey);
        }
        let seed: [u8; 32] = raw[1..].try_into().map_err(|_| NoteError::BadPrivateKey)?;
        let s = Self::from_seed(name, raw[0], seed)?;
        if hex_encode(&s.verifier.id) != hex {
            return Err(NoteError::BadPrivateKey);
        }
        Ok(s)
    }

    pub fn to_skey(&self) -> String {
        let mut raw = vec![self.verifier.alg];
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.verifier.name,
            hex_encode(&self.verifier.id),
            B64.encode(raw)
        )
    }

    /// A signature line for `text` (a cosignature carries `timestamp`).
    pub fn sign(&self, text: &str, timestamp: u64) -> NoteSignature {
        let mut sig = Vec::with_capacity(72);
        if self.verifier.alg == ALG_COSIGNATURE_V1 {
            let ts = timestamp.min(i64::MAX as u64);
            sig.extend_from_slice(&ts.to_be_bytes());
            sig.extend_from_slice(&self.key.sign(&cosigned_message(text, ts)).to_bytes());
        } else {
            sig.extend_from_slice(&self.key.sign(text.as_bytes()).to_bytes());
        }
        NoteSignature {
            name: self.verifier.name.clone(),
            id: self.verifier.id,
            sig,
        }
    }
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub id: [u8; 4],
    pub sig: Vec<u8>,
}

impl NoteSignature {
    pub fn line(&self) -> String {
        let mut raw = self.id.to_vec();
        raw.extend_from_slice(&self.sig);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(raw))
    }

    /// Does this line claim to be by `v`?
    pub fn is_by(&self, v: &Verifier) -> bool {
        self.name == v.name && self.id == v.id
    }
}

/// A parsed signed note: the signed text (ending in `\n`) and its signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge);
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::BadText)?;
        if s.chars().any(|c| c.is_control() && c != '\n') {
            return Err(NoteError::BadText);
        }
        let split = s.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
        let text = &s[..split + 1];
        let sigs = &s[split + 2..];
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::NoSignatureBlock);
        }
        let mut signatures = Vec::new();
        for (i, line) in sigs[..sigs.len() - 1].split('\n').enumerate() {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            let bad = || NoteError::BadSignatureLine(i + 1);
            let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(bad)?;
            let (name, b64) = rest.split_once(' ').ok_or_else(bad)?;
            check_key_name(name).map_err(|_| bad())?;
            let raw = B64.decode(b64).map_err(|_| bad())?;
            if raw.len() < 5 {
                return Err(bad());
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                id: [raw[0], raw[1], raw[2], raw[3]],
                sig: raw[4..].to_vec(),
            });
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Verify the signature of `v`; a line by a key of the same name and ID
    /// that does not verify is an error.
    pub fn verify_by(&self, v: &Verifier) -> Result<Option<u64>, NoteError> {
        let sig = self
            .signatures
            .iter()
            .find(|s| s.is_by(v))
            .ok_or_else(|| NoteError::MissingSignature(v.name.clone()))?;
        v.verify(&self.text, &sig.sig)
    }

    pub fn encode(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
        }
        out
    }

    /// Add (or replace) a signature line.
    pub fn add_signature(&mut self, sig: NoteSignature) {
        self.signatures
            .retain(|s| !(s.name == sig.name && s.id == sig.id));
        self.signatures.push(sig);
    }
}

pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
