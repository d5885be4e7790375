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

use bytes::Bytes;

use crate::answer::{self, Answer, ApiError};
use crate::geo::GeoIp;
use crate::policy::Revision;
use crate::telemetry::Metrics;
use crate::telemetry::events::{CacheUse, Outcomes, Prepared};
use cache::{DecisionCache, Lookup};
use keys::ApiKeys;
use reload::{Attempt, PolicySource, PolicyStore, ReloadResult, Trigger, now_unix};

/// An answer ready to serve, and to serve again: what goes on the wire, what the Functions envelope's log
/// line names, and the log fields and counters. What the decision cache keeps, so it holds nothing else
/// (the full [`Answer`] is dropped once this is made).
pub struct Served {
    /// Status.
    pub status: u16,
    /// JSON body.
    pub body: Bytes,
    /// `Retry-After` seconds, for errors that have one.
    pub retry_after: Option<u32>,
    /// The decision id (empty for a body that is no AllocationRequest).
    pub decision_id: Box<str>,
    /// The log fields and counters.
    pub prepared: Prepared,
}

/// What an answer holds: itself, its body, its decision id and its own log fields (the outcome's shared
/// part is interned, not counted per answer).
impl cache::Weigh for Served {
    fn bytes(&self) -> usize {
        std::mem::size_of::<Served>() + self.body.len() + self.decision_id.len() + self.prepared.heap_bytes()
    }
}

impl Served {
    /// Prepares `answer`, given under `revision`, for serving.
    pub fn new(answer: Answer, revision: &str, metrics: &Metrics, outcomes: &Outcomes) -> Self {
        Served {
            prepared: Prepared::new(&answer, revision, metrics, outcomes),
            retry_after: answer.error.as_ref().and_then(ApiError::retry_after),
            decision_id: answer.decision_id.into_boxed_str(),
            status: answer.status,
            body: answer.body,
        }
    }

    /// Whether this answers with a decision (else it refuses the body: cheap to refuse again, not cached).
    pub fn is_decision(&self) -> bool {
        self.header().is_some()
    }

    /// The `x-dps-allocator-decision` header, for answers that carry a decision.
    pub fn header(&self) -> Option<&str> {
        self.prepared.header()
    }

    /// The chosen hub, as spelled in `linkedHubs`.
    pub fn hub(&self) -> Option<&str> {
        self.prepared.hub()
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
    /// The parts of answers that depend only on their outcome, shared.
    pub outcomes: Outcomes,
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
            outcomes: Outcomes::default(),
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
            outcomes: Outcomes::default(),
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
    pub fn with_cache(mut self, capacity: u64, max_bytes: u64, ttl: Duration) -> Self {
        self.cache = DecisionCache::new(capacity, max_bytes, ttl);
        self
    }

    /// With these API keys.
    pub fn with_keys(mut self, keys: ApiKeys) -> Self {
        self.keys = keys;
        self
    }

    /// Reloads the policy, clears the cache when a new revision activates, logs and counts the attempt.
    pub fn reload(&self, trigger: Trigger) -> Attempt {
        let was_failing = self
            .policy
            .status()
            .last_attempt
            .is_some_and(|a| a.result == ReloadResult::Failed);
        let attempt = self.policy.reload(trigger);
        if attempt.result == ReloadResult::Activated {
            self.cache.clear();
            self.outcomes.clear();
        }
        let serving = self.policy.active().map(|r| r.id.clone());
        reload::log_attempt(
            &attempt,
            &self.policy.source().describe(),
            &self.metrics,
            serving.as_deref(),
            was_failing,
        );
        attempt
    }

    /// The answer to one body under one revision: from the decision cache, else decided (and offered to
    /// the cache).
    pub fn answer(&self, rev: &Revision, body: &[u8]) -> (Arc<Served>, CacheUse) {
        let hash = answer::decision_hash(&rev.id, body);
        let (key, lookup) = self.cache.lookup(hash, || {
            DecisionCache::<Arc<Served>>::key(hash, &rev.id, self.geoip_stamp(), body)
        });
        let admit = match lookup {
            Lookup::Hit(served) => return (served, CacheUse::Hit),
            Lookup::Admit => true,
            Lookup::Pass => false,
        };
        let answer = answer::allocate_hashed(body, rev, self.geoip.as_ref(), hash);
        crate::telemetry::events::misplaced_fields(&answer);
        let served = Arc::new(Served::new(answer, &rev.id, &self.metrics, &self.outcomes));
        // Only decisions are cached: a malformed body is cheap to refuse again.
        if admit && served.is_decision() {
            self.cache.insert(key, served.clone());
        }
        let cache = if self.cache.enabled() {
            CacheUse::Miss
        } else {
            CacheUse::Off
        };
        (served, cache)
    }

    /// What identifies the GeoIP database in cache keys (0: none).
    pub fn geoip_stamp(&self) -> u64 {
        self.geoip.as_ref().map_or(0, GeoIp::build_epoch)
    }
}
