//! A fast, non-cryptographic hash for the gateway's maps keyed by what operators define
//! (stages, capacity, tokens) and for "did it change" checks. Maps whose keys agents choose
//! (hosts) keep SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

/// A map keyed by what operators define, looked up by pings: the fast hash is safe there.
pub type FastMap<K, V> = HashMap<K, V, FastHash>;

/// A fast, non-cryptographic hash for change detection and sharding (FxHash's
/// multiply-rotate over 8 bytes at a time); not exposed to untrusted keys in a table.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(SEED);
        }
        for b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(SEED);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`FastHasher`]s.
#[derive(Default, Clone, Copy)]
pub struct FastHash;

impl BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher::default()
    }
}

/// A hash of a value for "did it change" checks (never 0, which means "never").
pub fn hash_of(v: &impl Hash) -> u64 {
    FastHash.hash_one(v).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_tell_values_apart() {
        assert_ne!(hash_of(&("web-1", Some("10.0.0.1"))), hash_of(&("web-1", Some("10.0.0.2"))));
        assert_ne!(hash_of(&"abcdefgh-1"), hash_of(&"abcdefgh-2"));
        assert_eq!(hash_of(&"same"), hash_of(&"same"));
        assert_ne!(hash_of(&""), 0);
    }
}
