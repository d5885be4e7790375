//! The decision cache (moka): answers keyed by everything they depend on, so a hit is always the answer
//! the active policy would give.
//!
//! A decision is a pure function of the request body, the policy revision and the GeoIP database. The key
//! is 128 bits from two XXH3 passes over the whole body with independent seeds: the decision id's own hash
//! (seeded by the revision id), and a second pass seeded by the revision id and the GeoIP database's build
//! stamp: a new revision or database can never hit an old entry (and the cache is cleared when a revision
//! activates). Two different bodies share a key with probability about n² / 2¹²⁹ for n cached entries
//! (below 10⁻²⁹ at the default capacity), far below the rate of undetected memory errors; the key costs
//! 16 bytes per entry instead of a copy of the body, and a first sight costs no pass at all beyond the
//! decision id's.
//!
//! Admission: a body is stored the second time it is seen, not the first. Most DPS traffic is first
//! registrations that never repeat, and storing an entry (moka's bookkeeping, an allocation) costs more
//! than deciding again; a small bit set of recently seen keys (a "doorkeeper", as in TinyLFU) lets those
//! pass with a few instructions, so a cache that only misses costs almost nothing, while a device that
//! re-registers (DPS retries, reprovisioning waves, restarts) is answered from the cache from its third
//! request on. A first sight does not even look in the cache (it cannot be there). The bit set has 32
//! bits per entry of capacity and forgets everything after twice the capacity's worth of new keys, so a
//! device coming back within two cache-fulls of other devices is admitted, and a false "seen" stays rare
//! (under 1.5 %; it only ever costs an entry). After the bit set forgets, a cached device's next request
//! is one miss (decided again, same answer). Capacity 0 turns the cache off.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::notification::RemovalCause;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Entries kept by default. With the doorkeeper a miss costs about what no cache costs and a hit a
/// fraction of a decision (docs/benchmarks.md); at this size the cache's memory stays small (the RSS at
/// full is measured in docs/benchmarks.md).
pub const DEFAULT_CAPACITY: u64 = 65_536;
/// Bytes the cached answers may hold by default (64 MiB). Each entry is weighed at its own bytes
/// ([`Weigh`]) plus [`ENTRY_OVERHEAD`], and at least `max_bytes / capacity`, so the cache holds at most
/// `capacity` entries and at most `max_bytes` bytes of answers, whichever binds first: typical answers
/// (under 1 KiB) fill the entries first; a policy that copies a 30 KB payload field into the twin fills
/// the bytes first (about 2,000 entries) instead of taking 2 GB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// What moka and the cache spend per entry beside the value's own bytes: the 16-byte key, moka's entry
/// (key, value handle, access-order and write-order nodes, timestamps) and its hash table slot, measured
/// as about 150 bytes; rounded up.
pub const ENTRY_OVERHEAD: usize = 192;
/// Seconds an entry lives by default.
pub const DEFAULT_TTL_SECS: u64 = 300;
/// Bits of the doorkeeper per entry of capacity (256 KiB at the default capacity).
const DOORKEEPER_BITS_PER_ENTRY: u64 = 32;

/// The cache key: two 64-bit XXH3 passes over the body with independent seeds (see [`DecisionCache::key`]).
pub type Key = u128;

/// Keeps the key's second pass independent of the decision hash even without a GeoIP database.
const SECOND_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// What a cached value holds in bytes, for the cache's byte budget.
pub trait Weigh {
    /// The bytes this value holds (itself and what it owns on the heap; shared parts not counted).
    fn bytes(&self) -> usize;
}

impl<T: Weigh> Weigh for Arc<T> {
    fn bytes(&self) -> usize {
        T::bytes(self)
    }
}

/// The decision cache, generic over what it keeps (the server keeps ready-to-serve answers).
pub struct DecisionCache<V: Clone + Send + Sync + Weigh + 'static> {
    inner: Option<moka::sync::Cache<Key, V, KeyHasher>>,
    doorkeeper: Doorkeeper,
    evicted: Arc<Evictions>,
    capacity: u64,
    max_bytes: u64,
    ttl: Duration,
}

/// What the cache holds for a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<V> {
    /// The answer, cached.
    Hit(V),
    /// Seen before and not cached: store the answer once decided.
    Admit,
    /// Seen for the first time (now noted), or the cache is off: decide, do not store.
    Pass,
}

/// Entries moka dropped to stay within capacity, or past their time to live.
#[derive(Default)]
pub struct Evictions {
    /// Over capacity.
    pub size: AtomicU64,
    /// Past the TTL.
    pub expired: AtomicU64,
}

impl<V: Clone + Send + Sync + Weigh + 'static> DecisionCache<V> {
    /// A cache of at most `capacity` entries and `max_bytes` bytes of entries ([`DEFAULT_MAX_BYTES`]
    /// says how they are weighed), each living `ttl`; capacity 0 or `max_bytes` 0 disables it.
    pub fn new(capacity: u64, max_bytes: u64, ttl: Duration) -> Self {
        let evicted = Arc::new(Evictions::default());
        let counts = evicted.clone();
        // Every entry weighs at least a capacity's share of the budget: the weight bound is then the
        // entry bound too.
        let floor = u32::try_from(max_bytes.div_ceil(capacity.max(1))).unwrap_or(u32::MAX);
        let inner = (capacity > 0 && max_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(move |_k, v: &V| {
                    u32::try_from(v.bytes().saturating_add(ENTRY_OVERHEAD))
                        .unwrap_or(u32::MAX)
                        .max(floor)
                })
                .time_to_live(ttl)
                .eviction_listener(move |_k, _v, cause| match cause {
                    RemovalCause::Size => {
                        counts.size.fetch_add(1, Ordering::Relaxed);
                    }
                    RemovalCause::Expired => {
                        counts.expired.fetch_add(1, Ordering::Relaxed);
                    }
                    RemovalCause::Explicit | RemovalCause::Replaced => {}
                })
                .build_with_hasher(KeyHasher)
        });
        DecisionCache {
            inner,
            doorkeeper: Doorkeeper::new(
                usize::try_from(capacity.saturating_mul(DOORKEEPER_BITS_PER_ENTRY).clamp(0, 1 << 30))
                    .unwrap_or(1 << 30),
            ),
            evicted,
            capacity,
            max_bytes,
            ttl,
        }
    }

    /// A disabled cache.
    pub fn disabled() -> Self {
        Self::new(0, 0, Duration::ZERO)
    }

    /// Whether the cache is on.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The key of a request body under a revision and GeoIP database: its decision hash
    /// ([`crate::answer::decision_hash`], XXH3 seeded by the revision) in the high half, and a second XXH3
    /// pass seeded by the revision, the GeoIP database and a constant in the low half.
    pub fn key(decision_hash: u64, revision: &str, geoip_stamp: u64, body: &[u8]) -> Key {
        let seed = xxh3_64(revision.as_bytes()) ^ geoip_stamp.rotate_left(32) ^ SECOND_SEED;
        (Key::from(decision_hash) << 64) | Key::from(xxh3_64_with_seed(body, seed))
    }

    /// What the cache holds for the body with this decision hash; `key` makes its full key. A body the
    /// doorkeeper has not seen (it knows bodies by their decision hash, computed for the decision id
    /// anyway) cannot have been stored, so its first sight (now noted) skips the cache and the key.
    pub fn lookup(&self, decision_hash: u64, key: impl FnOnce() -> Key) -> (Key, Lookup<V>) {
        let Some(c) = &self.inner else { return (0, Lookup::Pass) };
        if !self.doorkeeper.seen_before(decision_hash) {
            return (0, Lookup::Pass);
        }
        let key = key();
        match c.get(&key) {
            Some(v) => (key, Lookup::Hit(v)),
            None => (key, Lookup::Admit),
        }
    }

    /// Stores an answer (after [`Lookup::Admit`]).
    pub fn insert(&self, key: Key, value: V) {
        if let Some(c) = &self.inner {
            c.insert(key, value);
        }
    }

    /// Drops every entry (a new revision is active: old entries can never hit again).
    pub fn clear(&self) {
        if let Some(c) = &self.inner {
            c.invalidate_all();
        }
        self.doorkeeper.clear();
    }

    /// Entries now.
    pub fn entries(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    /// The bytes the entries weigh now (their own bytes and [`ENTRY_OVERHEAD`] each, at least a
    /// capacity's share of the budget each).
    pub fn bytes(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.weighted_size()
        })
    }

    /// Configured byte budget.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Entries evicted so far.
    pub fn evictions(&self) -> &Evictions {
        &self.evicted
    }

    /// Configured capacity.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Configured time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Keys are already uniform hashes: moka's table uses their low 64 bits as they are.
#[derive(Clone, Default)]
pub struct KeyHasher;

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

/// Hashes a `u128` key to its own low bits (mixed with the high ones).
pub struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for u128 keys; a plain fold keeps it correct for anything else.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 ^= (i as u64) ^ ((i >> 64) as u64);
    }
}

/// Remembers which keys were looked up recently, two bits per key, forgetting all after `window` new keys
/// (a sixteenth of its bits: at most an eighth of the bits are set, so a key never seen is taken for seen
/// under 1.5 % of the time, 0.7 % on average).
struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    marked: AtomicU64,
    window: u64,
}

impl Doorkeeper {
    fn new(bits: usize) -> Self {
        Doorkeeper {
            bits: (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            marked: AtomicU64::new(0),
            window: (bits / 16) as u64,
        }
    }

    /// Whether `hash` was marked before; marks it. Both of a hash's bits are in one 64-bit word (the high
    /// half picks the word, the low bits the two bits), so a look-up touches one cache line, and a body
    /// seen before (every cache hit) costs one read and no atomic write.
    fn seen_before(&self, hash: u64) -> bool {
        let words = self.bits.len() as u64;
        if words == 0 {
            return false;
        }
        let word = &self.bits[((hash >> 32) % words) as usize];
        let mask = (1u64 << (hash & 63)) | (1u64 << ((hash >> 6) & 63));
        if word.load(Ordering::Relaxed) & mask == mask || word.fetch_or(mask, Ordering::Relaxed) & mask == mask {
            return true;
        }
        if self.marked.fetch_add(1, Ordering::Relaxed) + 1 >= self.window {
            self.clear();
        }
        false
    }

    fn clear(&self) {
        self.marked.store(0, Ordering::Relaxed);
        for w in self.bits.iter() {
            w.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weigh for u32 {
        fn bytes(&self) -> usize {
            4
        }
    }

    impl Weigh for u8 {
        fn bytes(&self) -> usize {
            1
        }
    }

    impl Weigh for Vec<u8> {
        fn bytes(&self) -> usize {
            self.len()
        }
    }

    #[test]
    fn the_byte_budget_binds_whatever_the_answers_weigh() {
        // 30 KB answers (a payload field copied into the twin): entries alone would hold 65,536 of them
        // (2 GB); the budget holds what fits in its bytes.
        let budget = 4 << 20;
        let c = DecisionCache::<Vec<u8>>::new(65_536, budget, Duration::from_secs(60));
        for k in 0..2_000u64 {
            c.lookup(k, || k.into());
            if let (key, Lookup::Admit) = c.lookup(k, || k.into()) {
                c.insert(key, vec![0; 30_000]);
            }
        }
        let (entries, bytes) = (c.entries(), c.bytes());
        assert!(bytes <= budget, "{bytes} bytes held, budget {budget}");
        assert!(entries * 30_000 <= budget && entries > 100, "{entries} entries");
        assert!(c.evictions().size.load(Ordering::Relaxed) > 0);
        // Small answers: the entry count binds first, and the weight stays within the budget.
        let c = DecisionCache::<u32>::new(100, budget, Duration::from_secs(60));
        for k in 0..1_000u64 {
            c.lookup(k, || k.into());
            if let (key, Lookup::Admit) = c.lookup(k, || k.into()) {
                c.insert(key, 0);
            }
        }
        assert!(c.entries() <= 100 && c.entries() > 50, "{}", c.entries());
        assert!(c.bytes() <= budget);
    }

    #[test]
    fn keys_differ_by_revision_database_and_body() {
        let k = |rev: &str, stamp, body: &[u8]| {
            DecisionCache::<u8>::key(crate::answer::decision_hash(rev, body), rev, stamp, body)
        };
        let a = k("rev1", 0, b"{}");
        assert_ne!(a, k("rev2", 0, b"{}"));
        assert_ne!(a, k("rev1", 1, b"{}"));
        assert_ne!(a, k("rev1", 0, b"{ }"));
        assert_eq!(a, k("rev1", 0, b"{}"));
        assert_ne!(a >> 64, a & u128::from(u64::MAX), "two independent halves");
    }

    #[test]
    fn a_disabled_cache_holds_nothing() {
        let c = DecisionCache::<u8>::disabled();
        assert!(!c.enabled());
        assert_eq!(c.lookup(1, || 1).1, Lookup::Pass);
        c.insert(1, 1);
        assert_eq!(c.lookup(1, || 1).1, Lookup::Pass);
        assert_eq!(c.entries(), 0);
    }

    #[test]
    fn a_body_is_stored_the_second_time_it_is_seen() {
        let c = DecisionCache::<u32>::new(100, DEFAULT_MAX_BYTES, Duration::from_secs(60));
        assert_eq!(c.lookup(7, || 70), (0, Lookup::Pass), "first sight: only noted");
        assert_eq!(c.lookup(7, || 70), (70, Lookup::Admit), "second sight: to be stored");
        c.insert(70, 2);
        assert_eq!(c.lookup(7, || 70), (70, Lookup::Hit(2)));
        c.clear();
        assert_eq!(c.entries(), 0);
        assert_eq!(c.lookup(7, || 70).1, Lookup::Pass, "clearing forgets what was seen");
    }

    #[test]
    fn the_doorkeeper_rarely_takes_a_new_key_for_a_seen_one() {
        let d = Doorkeeper::new(1 << 20);
        let mut false_seen = 0;
        let total = 3 * d.window;
        for i in 0..total {
            let key = xxh3_64_with_seed(&i.to_le_bytes(), 1);
            false_seen += u64::from(d.seen_before(key));
        }
        // At most an eighth of the bits set per window, two bits per key: under 1.5 %, 0.7 % on average.
        assert!(false_seen * 1000 < total * 10, "{false_seen} of {total}");
    }

    #[test]
    fn evictions_over_capacity_are_counted() {
        let c = DecisionCache::<u32>::new(10, DEFAULT_MAX_BYTES, Duration::from_secs(60));
        for k in 0..100u64 {
            c.lookup(k, || k.into());
            if let (key, Lookup::Admit) = c.lookup(k, || k.into()) {
                c.insert(key, 0);
            }
        }
        let _ = c.entries();
        assert!(c.evictions().size.load(Ordering::Relaxed) > 0);
    }
}
