//! The Prometheus metrics (prefix `dps_allocator_`), registered on one [`Registry`] that the service owns
//! and passes down; nothing is global. Labels are bounded: a hub label is a catalogued host or
//! `uncatalogued`, a rule label a rule name, never a registration id, IP or URL.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
    exponential_buckets,
};

use crate::geo::GeoIp;

const NS: &str = "dps_allocator";

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// `requests_total{outcome}`: every allocate answer, by outcome (`assigned`, `rejected`, or the error code).
    pub requests: IntCounterVec,
    /// `request_duration_seconds`: time from the body read to the answer.
    pub duration: Histogram,
    /// `assignments_total{hub,rule,strategy,sticky}`.
    pub assignments: IntCounterVec,
    /// `rejections_total{rule,reason}`.
    pub rejections: IntCounterVec,
    /// `cache_requests_total{cache,result}`.
    pub cache_requests: IntCounterVec,
    /// `cache_requests_total{cache="decision",result="hit"}`, looked up once.
    pub decision_cache_hits: IntCounter,
    /// `cache_requests_total{cache="decision",result="miss"}`, looked up once.
    pub decision_cache_misses: IntCounter,
    /// `cache_evictions_total{cache,cause}`: entries the decision cache dropped to stay within its capacity
    /// (`size`) or because they outlived the TTL (`expired`); a new revision's clearing is not counted.
    pub cache_evictions: IntCounterVec,
    /// `cache_bytes{cache}`: the bytes a cache's entries weigh now.
    pub cache_bytes: IntGaugeVec,
    /// `cache_max_bytes{cache}`: a cache's byte budget.
    pub cache_max_bytes: IntGaugeVec,
    /// `log_lines_dropped_total`: log lines dropped because standard output did not keep up.
    pub log_lines_dropped: IntCounter,
    /// `policy_reloads_total{result}`: `activated`, `unchanged`, `failed`.
    pub reloads: IntCounterVec,
    /// `build_info{version}`: 1, labelled with this build's version; also what alert rules use to find
    /// this service's targets whatever job name the scrape gives them.
    pub build_info: IntGaugeVec,
    /// `policy_revision_info{revision}`: 1 for the active revision.
    pub revision_info: IntGaugeVec,
    /// `policy_loaded_timestamp_seconds`: when the active revision was activated.
    pub loaded_timestamp: Gauge,
    /// `geoip_lookups_total{result}`: `found`, `not_found`, `error`.
    pub geoip_lookups: IntCounterVec,
    /// `geoip_database_build_timestamp_seconds`.
    pub geoip_build_timestamp: Gauge,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NS)
}

impl Metrics {
    /// Creates and registers every metric, with the process collector.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(opts(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let requests = counter(
            "requests_total",
            "Allocation requests answered, by outcome.",
            &["outcome"],
        )?;
        let assignments = counter(
            "assignments_total",
            "Devices assigned, by hub, rule, strategy and stickiness.",
            &["hub", "rule", "strategy", "sticky"],
        )?;
        let rejections = counter(
            "rejections_total",
            "Devices rejected by a rule, by rule and reason.",
            &["rule", "reason"],
        )?;
        let cache_requests = counter(
            "cache_requests_total",
            "Cache lookups, by cache and result.",
            &["cache", "result"],
        )?;
        let cache_evictions = counter(
            "cache_evictions_total",
            "Entries evicted from a cache, by cache and cause (size: over capacity, expired: past the TTL).",
            &["cache", "cause"],
        )?;
        let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(opts(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let cache_bytes = gauge(
            "cache_bytes",
            "Bytes a cache's entries weigh now (their answers and bookkeeping), by cache.",
            &["cache"],
        )?;
        let cache_max_bytes = gauge("cache_max_bytes", "A cache's byte budget, by cache.", &["cache"])?;
        let build_info = gauge("build_info", "This build (value 1), by version.", &["version"])?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let log_lines_dropped = IntCounter::with_opts(opts(
            "log_lines_dropped_total",
            "Log lines dropped because standard output did not keep up.",
        ))?;
        registry.register(Box::new(log_lines_dropped.clone()))?;
        let reloads = counter(
            "policy_reloads_total",
            "Policy reload attempts, by result.",
            &["result"],
        )?;
        let geoip_lookups = counter("geoip_lookups_total", "GeoIP database lookups, by result.", &["result"])?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time to answer an allocation request, from its body.",
            )
            .namespace(NS)
            .buckets(exponential_buckets(0.000_010, 2.0, 18)?),
        )?;
        registry.register(Box::new(duration.clone()))?;
        let revision_info = IntGaugeVec::new(
            opts("policy_revision_info", "The active policy revision (value 1)."),
            &["revision"],
        )?;
        registry.register(Box::new(revision_info.clone()))?;
        let loaded_timestamp = Gauge::with_opts(opts(
            "policy_loaded_timestamp_seconds",
            "When the active policy revision was activated.",
        ))?;
        registry.register(Box::new(loaded_timestamp.clone()))?;
        let geoip_build_timestamp = Gauge::with_opts(opts(
            "geoip_database_build_timestamp_seconds",
            "When MaxMind built the GeoIP database in use (0: none configured).",
        ))?;
        registry.register(Box::new(geoip_build_timestamp.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            assignments,
            rejections,
            decision_cache_hits: cache_requests.with_label_values(&["decision", "hit"]),
            decision_cache_misses: cache_requests.with_label_values(&["decision", "miss"]),
            cache_requests,
            cache_evictions,
            cache_bytes,
            cache_max_bytes,
            build_info,
            log_lines_dropped,
            reloads,
            revision_info,
            loaded_timestamp,
            geoip_lookups,
            geoip_build_timestamp,
        })
    }

    /// Marks `revision` active (and only it) as of `unix_seconds`.
    pub fn set_revision(&self, revision: &str, unix_seconds: f64) {
        self.revision_info.reset();
        self.revision_info.with_label_values(&[revision]).set(1);
        self.loaded_timestamp.set(unix_seconds);
    }

    /// Copies the GeoIP database's own counters (kept as atomics on the lookup path) into the metrics.
    pub fn sync_geoip(&self, geoip: Option<&GeoIp>) {
        let Some(db) = geoip else { return };
        let s = db.stats();
        let set = |c: prometheus::IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        set(self.geoip_lookups.with_label_values(&["found"]), s.found);
        set(self.geoip_lookups.with_label_values(&["not_found"]), s.not_found);
        set(self.geoip_lookups.with_label_values(&["error"]), s.errors);
        set(self.cache_requests.with_label_values(&["geoip", "hit"]), s.cache_hits);
        set(
            self.cache_requests.with_label_values(&["geoip", "miss"]),
            s.cache_misses,
        );
        self.geoip_build_timestamp.set(db.build_epoch() as f64);
    }

    /// Sets a cache's byte gauges: what its entries weigh now, and its budget.
    pub fn sync_cache_bytes(&self, cache: &str, held: u64, max: u64) {
        for (g, v) in [(&self.cache_bytes, held), (&self.cache_max_bytes, max)] {
            g.with_label_values(&[cache]).set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    /// Copies a cache's eviction counts (kept as atomics by the cache) into the metrics.
    pub fn sync_evictions(&self, cache: &str, size: u64, expired: u64) {
        for (cause, v) in [("size", size), ("expired", expired)] {
            let c = self.cache_evictions.with_label_values(&[cache, cause]);
            c.inc_by(v.saturating_sub(c.get()));
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let dropped = super::dropped_log_lines();
        self.log_lines_dropped
            .inc_by(dropped.saturating_sub(self.log_lines_dropped.get()));
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}
