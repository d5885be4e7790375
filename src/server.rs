//! The running service without HTTP: its shared state (the policy store, the GeoIP database, the decision
//! cache, the metrics and the API keys) and what a request asks of it (the answer to a body under a
//! revision, from the cache or decided). Built once by `serve` (or a test) and shared read-only by every
//! worker; the only thing that changes is the active revision, through the store's atomic swap.
//!
//! [`cache`] is the decision cache, [`reload`] the policy store and hot reload, [`keys`] the API keys.

pub mod cache;
pub mod keys;
pub mod reload;

use std::sync::Arc;
use std::time::Duration;

use crate::answer::{self, Answer};
use crate::geo::GeoIp;
use crate::policy::Revision;
use crate::telemetry::Metrics;
use crate::telemetry::events::{CacheUse, Prepared};
use cache::DecisionCache;
use keys::ApiKeys;
use reload::{Attempt, PolicySource, PolicyStore, ReloadResult, Trigger, now_unix};

/// An answer ready to serve again: the answer, its decision header, and its log fields and counters.
/// What the decision cache keeps.
pub struct Served {
    /// The answer.
    pub answer: Answer,
    /// The `x-dps-allocator-decision` header, for answers that carry a decision.
    pub header: Option<String>,
    /// The log fields and counters.
    pub prepared: Prepared,
}

impl Served {
    /// Prepares `answer`, given under `revision`, for serving.
    pub fn new(answer: Answer, revision: &str, metrics: &Metrics) -> Self {
        Served {
            header: answer.summary.as_ref().map(answer::Summary::header),
            prepared: Prepared::new(&answer, revision, metrics),
            answer,
        }
    }
}

/// Everything a request handler needs.
pub struct Service {
    /// The active policy revision and its reload history.
    pub policy: PolicyStore,
    /// The GeoIP database, when configured.
    pub geoip: Option<GeoIp>,
    /// The decision cache.
    pub cache: DecisionCache<Arc<Served>>,
    /// The metrics.
    pub metrics: Metrics,
    /// The API keys (empty: no key required).
    pub keys: ApiKeys,
    /// When the service started, in seconds since the Unix epoch.
    pub started_unix: f64,
}

impl Service {
    /// A service with nothing loaded yet; call [`Service::reload`] to load the policy.
    pub fn new(
        source: PolicySource,
        geoip: Option<GeoIp>,
        cache: DecisionCache<Arc<Served>>,
        keys: ApiKeys,
    ) -> Result<Self, prometheus::Error> {
        let metrics = Metrics::new()?;
        metrics.sync_geoip(geoip.as_ref());
        Ok(Service {
            policy: PolicyStore::new(source),
            geoip,
            cache,
            metrics,
            keys,
            started_unix: now_unix(),
        })
    }

    /// A service already serving a revision, without cache or keys (tests, benchmarks).
    pub fn for_revision(rev: Revision) -> Result<Self, prometheus::Error> {
        let metrics = Metrics::new()?;
        metrics.set_revision(&rev.id, now_unix());
        Ok(Service {
            policy: PolicyStore::with_revision(PolicySource::Embedded, rev),
            geoip: None,
            cache: DecisionCache::disabled(),
            metrics,
            keys: ApiKeys::none(),
            started_unix: now_unix(),
        })
    }

    /// With this GeoIP database.
    pub fn with_geoip(mut self, geoip: Option<GeoIp>) -> Self {
        self.metrics.sync_geoip(geoip.as_ref());
        self.geoip = geoip;
        self
    }

    /// With this decision cache.
    pub fn with_cache(mut self, capacity: u64, ttl: Duration) -> Self {
        self.cache = DecisionCache::new(capacity, ttl);
        self
    }

    /// With these API keys.
    pub fn with_keys(mut self, keys: ApiKeys) -> Self {
        self.keys = keys;
        self
    }

    /// Reloads the policy, clears the cache when a new revision activates, logs and counts the attempt.
    pub fn reload(&self, trigger: Trigger) -> Attempt {
        let attempt = self.policy.reload(trigger);
        if attempt.result == ReloadResult::Activated {
            self.cache.clear();
        }
        reload::log_attempt(&attempt, &self.policy.source().describe(), &self.metrics);
        attempt
    }

    /// The answer to one body under one revision: from the decision cache, else decided (and offered to
    /// the cache).
    pub fn answer(&self, rev: &Revision, body: &[u8]) -> (Arc<Served>, CacheUse) {
        let key = self
            .cache
            .enabled()
            .then(|| DecisionCache::<Arc<Served>>::key(&rev.id, self.geoip_stamp(), body));
        if let Some(hit) = key.as_ref().and_then(|k| self.cache.get(k)) {
            return (hit, CacheUse::Hit);
        }
        let answer = answer::allocate(body, rev, self.geoip.as_ref());
        let served = Arc::new(Served::new(answer, &rev.id, &self.metrics));
        let cache = match key {
            Some(k) => {
                // Only decisions are cached: a malformed body is cheap to refuse again.
                if served.answer.summary.is_some() {
                    self.cache.offer(k, || served.clone());
                }
                CacheUse::Miss
            }
            None => CacheUse::Off,
        };
        (served, cache)
    }

    /// What identifies the GeoIP database in cache keys (0: none).
    pub fn geoip_stamp(&self) -> u64 {
        self.geoip.as_ref().map_or(0, GeoIp::build_epoch)
    }
}
