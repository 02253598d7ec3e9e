//! The hash of the engine's exact-match tables (VM addresses, SID, FIB and mapping levels).
//!
//! Keys are addresses (`u128` for IPv6, `u32` for IPv4). A general-purpose hasher spends most
//! of a lookup mixing 16 bytes through several rounds; here a 128-bit key costs one 64x64->128
//! multiply of its two halves, each XORed with a secret key first, folded to 64 bits (the
//! "folded multiply" of foldhash and ahash's fallback). One lookup went from ~60 to ~25
//! instructions (`docs/perf.md`).
//!
//! DoS: the tables hold configured keys only; packets look keys up but never insert, so an
//! attacker cannot grow a probe chain, only hit the chains the configuration built. The keys
//! are still secret when the driver wants them to be: the core has no RNG, so the driver passes
//! a random seed to [`crate::Dataplane::with_hash_seed`]; [`crate::Dataplane::new`] uses
//! [`DEFAULT_SEED`] so tests and simulations are reproducible.

use core::hash::{BuildHasher, Hasher};

use hashbrown::HashMap;

/// The seed of [`crate::Dataplane::new`].
pub const DEFAULT_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// Hash map of the engine's tables.
pub(crate) type FastMap<K, V> = HashMap<K, V, AddrHash>;

/// An empty [`FastMap`] hashing with `h`.
pub(crate) fn fast_map<K, V>(h: AddrHash) -> FastMap<K, V> {
    HashMap::with_hasher(h)
}

/// 64x64 -> 128-bit multiply, folded to 64 bits by XOR of the halves.
#[inline(always)]
const fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// SplitMix64 step (expands one seed into independent keys).
const fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Builds [`AddrHasher`]s with two secret 64-bit keys derived from a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrHash {
    k0: u64,
    k1: u64,
}

impl AddrHash {
    /// Keys derived from `seed`.
    pub const fn new(seed: u64) -> AddrHash {
        let k0 = splitmix(seed);
        AddrHash {
            k0,
            k1: splitmix(k0),
        }
    }
}

impl Default for AddrHash {
    fn default() -> Self {
        AddrHash::new(DEFAULT_SEED)
    }
}

impl BuildHasher for AddrHash {
    type Hasher = AddrHasher;

    #[inline(always)]
    fn build_hasher(&self) -> AddrHasher {
        AddrHasher {
            k0: self.k0,
            k1: self.k1,
            h: 0,
        }
    }
}

/// The hasher: a folded multiply per 128 bits written.
#[derive(Debug, Clone, Copy)]
pub struct AddrHasher {
    k0: u64,
    k1: u64,
    h: u64,
}

impl AddrHasher {
    #[inline(always)]
    fn mix(&mut self, lo: u64, hi: u64) {
        self.h = folded_multiply(lo ^ self.k0 ^ self.h, hi ^ self.k1);
    }
}

impl Hasher for AddrHasher {
    #[inline(always)]
    fn finish(&self) -> u64 {
        self.h
    }

    #[inline(always)]
    fn write_u128(&mut self, x: u128) {
        self.mix(x as u64, (x >> 64) as u64);
    }

    #[inline(always)]
    fn write_u64(&mut self, x: u64) {
        self.mix(x, 0);
    }

    #[inline(always)]
    fn write_u32(&mut self, x: u32) {
        self.mix(u64::from(x), 0);
    }

    #[inline(always)]
    fn write_u16(&mut self, x: u16) {
        self.mix(u64::from(x), 0);
    }

    #[inline(always)]
    fn write_u8(&mut self, x: u8) {
        self.mix(u64::from(x), 0);
    }

    #[inline(always)]
    fn write_usize(&mut self, x: usize) {
        self.mix(x as u64, 0);
    }

    /// Other keys (not used by the engine's tables): 16 bytes per folded multiply, with the
    /// length mixed in so that prefixes of one another differ.
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(16);
        for c in &mut chunks {
            let mut a = [0u8; 16];
            a.copy_from_slice(c);
            self.write_u128(u128::from_le_bytes(a));
        }
        let mut a = [0u8; 16];
        let rest = chunks.remainder();
        a[..rest.len()].copy_from_slice(rest);
        self.mix(
            u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
            u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]])
                ^ (bytes.len() as u64),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash<T: core::hash::Hash>(h: AddrHash, x: T) -> u64 {
        h.hash_one(x)
    }

    #[test]
    fn deterministic_and_seeded() {
        let a = AddrHash::default();
        let k = 0x2001_0db8_0000_0000_0000_0000_0000_0001u128;
        assert_eq!(hash(a, k), hash(AddrHash::new(DEFAULT_SEED), k));
        assert_ne!(hash(a, k), hash(AddrHash::new(1), k));
        assert_ne!(hash(a, k), hash(a, k + 1));
        assert_ne!(hash(a, 7u32), hash(a, 8u32));
        assert_ne!(hash(a, &b"ab"[..]), hash(a, &b"ab\0"[..]));
    }

    /// Sequential addresses (a /64 of VMs, a locator's SIDs) spread over the low bits (the
    /// bucket index) and the top 7 bits (hashbrown's control byte).
    #[test]
    fn sequential_keys_spread() {
        let a = AddrHash::default();
        let base = 0xfc00_0000_0001_0000_0000_0000_0000_0000u128;
        let mut low = [0u32; 256];
        let mut top = [0u32; 128];
        for i in 0..4096u128 {
            let h = hash(a, base + i);
            low[(h & 0xff) as usize] += 1;
            top[(h >> 57) as usize] += 1;
            let h = hash(a, base + (i << 64));
            low[(h & 0xff) as usize] += 1;
            top[(h >> 57) as usize] += 1;
        }
        // 8192 keys: 32 per low byte and 64 per top-7 value on average.
        assert!(low.iter().all(|&n| (8..=80).contains(&n)), "{low:?}");
        assert!(top.iter().all(|&n| (20..=140).contains(&n)), "{top:?}");
    }

    #[test]
    fn map_works() {
        let mut m: FastMap<u128, u32> = fast_map(AddrHash::new(42));
        for i in 0..1000u32 {
            m.insert(u128::from(i) << 64 | 5, i);
        }
        for i in 0..1000u32 {
            assert_eq!(m.get(&(u128::from(i) << 64 | 5)), Some(&i));
        }
        assert_eq!(m.get(&5), Some(&0));
        assert_eq!(m.get(&6), None);
    }
}
