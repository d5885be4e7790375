//! Typed events: each is emitted from one place that both logs and counts, so handlers carry no metric
//! code. Log fields never include URLs, query strings, keys or payload values.

use std::fmt;
use std::time::Duration;

use super::Metrics;
use crate::answer::{Answer, Verdict};
use crate::engine::Reason;

/// How the decision cache took part in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Answered from the cache.
    Hit,
    /// Decided and stored.
    Miss,
    /// The cache is off.
    Off,
}

impl CacheUse {
    fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Off => "off",
        }
    }
}

/// One answered allocation request.
pub struct DecisionEvent<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The answer.
    pub answer: &'a Answer,
    /// The id of the revision that answered.
    pub revision: &'a str,
    /// Cache involvement.
    pub cache: CacheUse,
    /// Time from the body read to the answer.
    pub elapsed: Duration,
}

struct Reasons<'a>(&'a [Reason]);

impl fmt::Display for Reasons<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// The reasons of a decision, else the message of a refusal.
struct OrElse<'a>(Reasons<'a>, Option<&'a str>);

impl fmt::Display for OrElse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(message) => f.write_str(message),
            None => self.0.fmt(f),
        }
    }
}

impl DecisionEvent<'_> {
    /// Logs the decision and counts it.
    pub fn emit(&self, m: &Metrics) {
        let a = self.answer;
        let s = a.summary.as_ref();
        let rule = s.and_then(|s| s.rule.as_deref());
        let outcome = a.outcome();
        let strategy = s.and_then(|s| s.strategy);
        let sticky = s.is_some_and(|s| s.sticky);
        let reasons = Reasons(s.map_or(&[][..], |s| &s.reasons));
        // A refused request has no decision: its reason is the error's message.
        let refusal = s
            .is_none()
            .then(|| a.error.as_ref().map(|e| e.message.as_str()))
            .flatten();
        let error_code = a.error.as_ref().map(|e| e.code());
        tracing::info!(
            target: "decision",
            request_id = self.request_id,
            decision_id = a.decision_id.as_str(),
            registration_id = a.registration_id.as_deref().unwrap_or(""),
            enrollment = a.enrollment.as_deref().unwrap_or(""),
            status = a.status,
            outcome,
            rule = rule.unwrap_or(""),
            strategy = strategy.unwrap_or(""),
            hub = a.hub().unwrap_or(""),
            sticky,
            reasons = %OrElse(reasons, refusal),
            error = error_code.unwrap_or(""),
            revision = self.revision,
            cache = self.cache.as_str(),
            duration_us = self.elapsed.as_micros() as u64,
            "decision"
        );
        m.requests.with_label_values(&[outcome]).inc();
        m.duration.observe(self.elapsed.as_secs_f64());
        if self.cache != CacheUse::Off {
            let result = if self.cache == CacheUse::Hit { "hit" } else { "miss" };
            m.cache_requests.with_label_values(&["decision", result]).inc();
        }
        if let Some(s) = s.filter(|s| s.verdict == Verdict::Assigned) {
            let hub = s.catalogued_hub.as_deref().unwrap_or("uncatalogued");
            let sticky = if s.sticky { "true" } else { "false" };
            m.assignments
                .with_label_values(&[hub, rule.unwrap_or(""), s.strategy.unwrap_or(""), sticky])
                .inc();
        }
        if s.is_some_and(|s| s.verdict == Verdict::Rejected)
            && let (Some(rule), Some(e)) = (rule, &a.error)
        {
            m.rejections.with_label_values(&[rule, e.code()]).inc();
        }
    }
}

/// A request refused before its body was read (401, 408, 413, 503): logged with the reason, and counted.
pub fn refused(request_id: &str, code: &str, status: u16, reason: &str, m: &Metrics) {
    tracing::info!(target: "decision", request_id, status, outcome = code, reasons = reason, "refused");
    m.requests.with_label_values(&[code]).inc();
}
