//! The MSE Diffie-Hellman group: the 768-bit safe prime of the spec
//! (RFC 2409 Oakley group 1) with generator 2, keys as 96 big-endian bytes.

use num_bigint::BigUint;

/// Bytes in a public key or shared secret.
pub const KEY_LEN: usize = 96;

/// P, big-endian.
pub const PRIME: [u8; KEY_LEN] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC9, 0x0F, 0xDA, 0xA2, 0x21, 0x68, 0xC2, 0x34,
    0xC4, 0xC6, 0x62, 0x8B, 0x80, 0xDC, 0x1C, 0xD1, 0x29, 0x02, 0x4E, 0x08, 0x8A, 0x67, 0xCC, 0x74,
    0x02, 0x0B, 0xBE, 0xA6, 0x3B, 0x13, 0x9B, 0x22, 0x51, 0x4A, 0x08, 0x79, 0x8E, 0x34, 0x04, 0xDD,
    0xEF, 0x95, 0x19, 0xB3, 0xCD, 0x3A, 0x43, 0x1B, 0x30, 0x2B, 0x0A, 0x6D, 0xF2, 0x5F, 0x14, 0x37,
    0x4F, 0xE1, 0x35, 0x6D, 0x6D, 0x51, 0xC2, 0x45, 0xE4, 0x85, 0xB5, 0x76, 0x62, 0x5E, 0x7E, 0xC6,
    0xF4, 0x4C, 0x42, 0xE9, 0xA6, 0x3A, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63,
];

/// Why a public key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Diffie-Hellman public key is outside 2..=P-2")]
pub struct BadPublicKey;

/// One side's ephemeral key pair.
pub struct DhKeyPair {
    private: BigUint,
    public: [u8; KEY_LEN],
}

impl std::fmt::Debug for DhKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhKeyPair")
            .field("private", &"..")
            .finish_non_exhaustive()
    }
}

fn prime() -> BigUint {
    BigUint::from_bytes_be(&PRIME)
}

fn to_fixed(n: &BigUint) -> [u8; KEY_LEN] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    // n < P < 2^768, so it always fits.
    out[KEY_LEN - bytes.len()..].copy_from_slice(&bytes);
    out
}

impl DhKeyPair {
    /// A key pair from a private exponent given as big-endian bytes (the
    /// spec asks for at least 160 random bits).
    pub fn from_private(private: &[u8]) -> Self {
        let private = BigUint::from_bytes_be(private);
        let public = to_fixed(&BigUint::from(2u32).modpow(&private, &prime()));
        DhKeyPair { private, public }
    }

    /// Our public key Y = 2^X mod P, 96 bytes.
    pub fn public(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    /// The shared secret S = Y_remote^X mod P, 96 bytes, after checking
    /// that the remote key is in 2..=P-2 (0, 1 and P-1 would force S).
    pub fn shared_secret(&self, remote: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], BadPublicKey> {
        let p = prime();
        let y = BigUint::from_bytes_be(remote);
        if y < BigUint::from(2u32) || y >= &p - 1u32 {
            return Err(BadPublicKey);
        }
        Ok(to_fixed(&y.modpow(&self.private, &p)))
    }
}
