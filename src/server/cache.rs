//! The decision cache (moka): answers keyed by everything they depend on, so a hit is always the answer
//! the active policy would give.
//!
//! A decision is a pure function of the request body, the policy revision and the GeoIP database. The key
//! is exactly those bytes: the revision id, the GeoIP database's build stamp, and the whole body. No hash
//! stands in for the key (moka compares keys in full), so a collision can never return another device's
//! answer; a new revision simply misses (and the cache is cleared when one activates). A hit skips
//! parsing, deciding and rendering. Capacity 0 turns the cache off.

use std::sync::Arc;
use std::time::Duration;

use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::answer::Answer;

/// Entries kept by default: none. Measured (docs/benchmarks.md), a hit is several times cheaper than
/// deciding but a miss several times dearer, so the cache pays only when well over a third of requests
/// repeat an earlier body within the TTL, which DPS traffic (first registrations, rare re-registrations)
/// does not do.
pub const DEFAULT_CAPACITY: u64 = 0;
/// A sensible size when the cache is turned on.
pub const SUGGESTED_CAPACITY: u64 = 16_384;
/// Seconds an entry lives by default.
pub const DEFAULT_TTL_SECS: u64 = 300;

/// The cache key: revision id, GeoIP stamp, body.
pub type Key = Box<[u8]>;

/// The decision cache.
pub struct DecisionCache {
    inner: Option<moka::sync::Cache<Key, Arc<Answer>, Xxh3DefaultBuilder>>,
    capacity: u64,
    ttl: Duration,
}

impl DecisionCache {
    /// A cache of `capacity` entries living `ttl` each; capacity 0 disables it.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let inner = (capacity > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build_with_hasher(Xxh3DefaultBuilder::new())
        });
        DecisionCache { inner, capacity, ttl }
    }

    /// A disabled cache.
    pub fn disabled() -> Self {
        Self::new(0, Duration::ZERO)
    }

    /// Whether the cache is on.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The key of a request body under a revision and GeoIP database.
    pub fn key(revision: &str, geoip_stamp: u64, body: &[u8]) -> Key {
        let mut k = Vec::with_capacity(revision.len() + 9 + body.len());
        k.extend_from_slice(revision.as_bytes());
        k.push(0);
        k.extend_from_slice(&geoip_stamp.to_le_bytes());
        k.extend_from_slice(body);
        k.into_boxed_slice()
    }

    /// The cached answer, if any.
    pub fn get(&self, key: &Key) -> Option<Arc<Answer>> {
        self.inner.as_ref()?.get(key)
    }

    /// Keeps an answer.
    pub fn insert(&self, key: Key, answer: Arc<Answer>) {
        if let Some(c) = &self.inner {
            c.insert(key, answer);
        }
    }

    /// Drops every entry (a new revision is active: old entries can never hit again).
    pub fn clear(&self) {
        if let Some(c) = &self.inner {
            c.invalidate_all();
        }
    }

    /// Entries now.
    pub fn entries(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_revision_database_and_body() {
        let a = DecisionCache::key("rev1", 0, b"{}");
        assert_ne!(a, DecisionCache::key("rev2", 0, b"{}"));
        assert_ne!(a, DecisionCache::key("rev1", 1, b"{}"));
        assert_ne!(a, DecisionCache::key("rev1", 0, b"{ }"));
        // The separator keeps a revision/body boundary from being ambiguous.
        assert_ne!(DecisionCache::key("ab", 0, b"c"), DecisionCache::key("a", 0, b"bc"));
    }

    #[test]
    fn a_disabled_cache_holds_nothing() {
        let c = DecisionCache::disabled();
        assert!(!c.enabled());
        assert_eq!(c.entries(), 0);
    }
}
