//! The pinned hash behind every placement: which hub a device lands on, and which rebalance bucket it is in.
//!
//! Built from XXH3-64 (a frozen, specified algorithm) and the splitmix64 finaliser, never from Rust's
//! `DefaultHasher`, whose output may change between toolchains. Changing anything here moves devices
//! between hubs, so golden vectors in the tests pin the outputs. Registration ids and host names are
//! hashed ASCII-case-insensitively: DPS treats registration ids case-insensitively and host names are DNS
//! names. The policy compiler precomputes host keys; the engine computes one device key per request.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A map keyed by values that are already hashes, so hashing them again would only cost time.
pub type PrehashedMap<V> = HashMap<u64, V, BuildHasherDefault<Prehashed>>;

/// The identity hasher behind [`PrehashedMap`].
#[derive(Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = (n as u64) ^ ((n >> 64) as u64);
    }
}

/// Domain separators, so the same string hashed for different purposes gives unrelated values.
const HOST_DOMAIN: u64 = 0x686f_7374_5f6b_6579; // "host_key"
const DEVICE_DOMAIN: u64 = 0x6465_7669_6365_5f6b; // "device_k"
const BUCKET_DOMAIN: u64 = 0x6275_636b_6574_5f6b; // "bucket_k"

/// The per-policy key derived from `settings.hash_seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeedKey(u64);

impl SeedKey {
    /// Derives the key from the policy's `hash_seed` (case-sensitive: it is the operator's own string).
    pub fn new(hash_seed: &str) -> Self {
        SeedKey(xxh3_64_with_seed(hash_seed.as_bytes(), 0))
    }

    /// The key of a hub host name under this seed.
    pub fn host_key(self, host: &str) -> u64 {
        caseless_xxh3(host, self.0 ^ HOST_DOMAIN)
    }

    /// The key of a registration id under this seed.
    pub fn device_key(self, registration_id: &str) -> u64 {
        caseless_xxh3(registration_id, self.0 ^ DEVICE_DOMAIN)
    }
}

/// The 64-bit hash of (seed, host, registration id) that rendezvous hashing scores.
#[inline]
pub fn pair_hash(host_key: u64, device_key: u64) -> u64 {
    mix64(host_key ^ mix64(device_key))
}

/// Maps a 64-bit hash into the open interval (0, 1) using its top 52 bits: with 53, the largest value
/// would round up to exactly 1.0 and its logarithm to 0.
#[inline]
pub fn unit_interval(h: u64) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 52) as f64;
    ((h >> 12) as f64 + 0.5) * SCALE
}

/// The device's stable rebalance bucket in 0..10_000 (hundredths of a percent).
#[inline]
pub fn rebalance_bucket(device_key: u64) -> u32 {
    (mix64(device_key ^ BUCKET_DOMAIN) % 10_000) as u32
}

/// XXH3-64 of the ASCII-lowercased bytes, without allocating for strings up to 256 bytes (every DNS name
/// and DPS registration id).
pub fn caseless_xxh3(s: &str, seed: u64) -> u64 {
    caseless(s, |b| xxh3_64_with_seed(b, seed))
}

/// `f` of the ASCII-lowercased bytes of `s`, without allocating for strings up to 256 bytes.
fn caseless<R>(s: &str, f: impl Fn(&[u8]) -> R) -> R {
    let bytes = s.as_bytes();
    if !bytes.iter().any(u8::is_ascii_uppercase) {
        return f(bytes);
    }
    let mut buf = [0u8; 256];
    if let Some(dst) = buf.get_mut(..bytes.len()) {
        for (d, b) in dst.iter_mut().zip(bytes) {
            *d = b.to_ascii_lowercase();
        }
        f(dst)
    } else {
        f(&bytes.to_ascii_lowercase())
    }
}

/// Registration ids seen so far, ignoring ASCII case as DPS does: each kept as its 128-bit XXH3 (16 bytes
/// and the set's slot, about 30 bytes an id), so a fleet file of any id length costs the same. Two
/// different ids share a hash with probability about n^2 / 2^129 (below 10^-20 for a billion ids), so the
/// set is exact in practice. Used to take every device once in `simulate`, `plan` and `rollout`.
#[derive(Default)]
pub struct SeenIds(std::collections::HashSet<u128, BuildHasherDefault<Prehashed>>);

impl SeenIds {
    fn key(id: &str) -> u128 {
        caseless(id, |b| xxhash_rust::xxh3::xxh3_128_with_seed(b, DEVICE_DOMAIN))
    }

    /// Notes `id`; whether it is the first time.
    pub fn first(&mut self, id: &str) -> bool {
        self.0.insert(Self::key(id))
    }

    /// Forgets `id`; whether it was noted. A second pass over the same rows takes each id once by taking
    /// it out of the set the first pass filled: the first row of an id finds it, the others do not.
    pub fn take(&mut self, id: &str) -> bool {
        self.0.remove(&Self::key(id))
    }

    /// How many ids are noted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A fast hash of a host name for catalogue lookups, ignoring ASCII case. Not a placement hash: nothing
/// persists it, and callers verify matches. `| 0x20` folds ASCII letters to lower case and leaves the
/// other host-name bytes (digits, `-`, `.`) unchanged; any other byte pair it merges is caught by the
/// verification.
#[inline]
pub fn lookup_hash(s: &str) -> u64 {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes = s.as_bytes();
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(23) ^ (u64::from_le_bytes(w) | FOLD)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        let folded = u64::from_le_bytes(w) | (FOLD >> (8 * (8 - rest.len())));
        h = (h.rotate_left(23) ^ folded).wrapping_mul(K);
    }
    mix64(h)
}

/// The splitmix64 finaliser: a bijection with full avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vectors: if any of these change, every fleet in the field would be reshuffled. They were
    /// cross-checked against an independent XXH3 (Python `xxhash`), see `docs/hashing.md`.
    #[test]
    fn golden_vectors_never_change() {
        let seed = SeedKey::new("fleet-2026");
        assert_eq!(seed, SeedKey(0xe871_e94e_1653_62c3), "seed key");
        let host = seed.host_key("contoso-eu-1.azure-devices.net");
        let device = seed.device_key("breakroom499-contoso-tstrsd-007");
        assert_eq!(host, 0xd40e_ca5c_a00c_09ab, "host key");
        assert_eq!(device, 0x4c51_c127_7cf5_df5a, "device key");
        assert_eq!(pair_hash(host, device), 0xc74b_e290_df1e_8a63, "pair hash");
        assert_eq!(rebalance_bucket(device), 5957, "bucket");
    }

    #[test]
    fn hashing_ignores_ascii_case() {
        let seed = SeedKey::new("s");
        assert_eq!(seed.device_key("Device-ABC"), seed.device_key("device-abc"));
        assert_eq!(
            seed.host_key("HUB.azure-devices.NET"),
            seed.host_key("hub.azure-devices.net")
        );
        let long = "X".repeat(300);
        assert_eq!(seed.device_key(&long), seed.device_key(&long.to_ascii_lowercase()));
    }

    #[test]
    fn lookup_hashes_ignore_case_and_length_matters() {
        assert_eq!(
            lookup_hash("Hub-1.Azure-Devices.NET"),
            lookup_hash("hub-1.azure-devices.net")
        );
        assert_ne!(
            lookup_hash("hub-1.azure-devices.net"),
            lookup_hash("hub-2.azure-devices.net")
        );
        assert_ne!(lookup_hash("a"), lookup_hash("a\0"));
        assert_ne!(lookup_hash(""), lookup_hash("a"));
    }

    #[test]
    fn domains_and_seeds_separate() {
        let seed = SeedKey::new("s");
        assert_ne!(seed.device_key("a"), seed.host_key("a"));
        assert_ne!(SeedKey::new("s").device_key("a"), SeedKey::new("t").device_key("a"));
    }

    #[test]
    fn unit_interval_is_open() {
        assert!(unit_interval(0) > 0.0);
        assert!(unit_interval(u64::MAX) < 1.0);
        assert!(unit_interval(u64::MAX).ln() < 0.0);
    }
}
