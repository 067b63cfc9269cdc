//! RC4 as MSE uses it: a 20-byte key, the first 1024 bytes of keystream
//! discarded, then a continuous stream for the life of the connection.
//!
//! RC4 is broken as a cipher; MSE uses it for obfuscation only, and so do we.

/// Bytes of keystream MSE throws away after keying (RC4-drop1024).
pub const MSE_DISCARD: usize = 1024;

/// One direction of RC4: a keyed permutation and its two indices.
#[derive(Clone)]
pub struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl std::fmt::Debug for Rc4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The state is key material.
        f.write_str("Rc4 { .. }")
    }
}

impl Rc4 {
    /// Plain RC4 keyed with `key` (1..=256 bytes), nothing discarded.
    ///
    /// An empty key is treated as the single byte 0 rather than panicking.
    pub fn new(key: &[u8]) -> Self {
        let key: &[u8] = if key.is_empty() { &[0] } else { key };
        let mut s = [0u8; 256];
        for (i, b) in s.iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
            s.swap(i, usize::from(j));
        }
        Rc4 { s, i: 0, j: 0 }
    }

    /// RC4 keyed with `key` with the first [`MSE_DISCARD`] bytes dropped.
    pub fn new_mse(key: &[u8; 20]) -> Self {
        let mut rc4 = Rc4::new(key);
        rc4.skip(MSE_DISCARD);
        rc4
    }

    /// XORs `buf` with the next `buf.len()` keystream bytes (encrypts and
    /// decrypts alike).
    pub fn apply(&mut self, buf: &mut [u8]) {
        let (mut i, mut j, s) = (self.i, self.j, &mut self.s);
        for b in buf {
            i = i.wrapping_add(1);
            j = j.wrapping_add(s[usize::from(i)]);
            s.swap(usize::from(i), usize::from(j));
            let k = s[usize::from(i)].wrapping_add(s[usize::from(j)]);
            *b ^= s[usize::from(k)];
        }
        self.i = i;
        self.j = j;
    }

    /// Advances the keystream by `n` bytes.
    pub fn skip(&mut self, mut n: usize) {
        let mut scratch = [0u8; 256];
        while n > 0 {
            let k = n.min(scratch.len());
            self.apply(&mut scratch[..k]);
            n -= k;
        }
    }
}
