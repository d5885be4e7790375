//! Typed events: each is emitted from one place that both logs and counts, so handlers carry no metric
//! code. Log fields never include URLs, query strings, keys or payload values.

use std::fmt;
use std::time::Duration;

use super::Metrics;
use crate::engine::{Outcome, Reason};
use crate::http::Answer;
use crate::policy::Revision;
use crate::reload::{Attempt, ReloadResult};

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
    /// The revision that answered.
    pub revision: &'a Revision,
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

impl DecisionEvent<'_> {
    /// Logs the decision and counts it.
    pub fn emit(&self, m: &Metrics) {
        let a = self.answer;
        let rev = self.revision;
        let d = a.decision.as_ref();
        let rule = d.and_then(|d| d.rule).map(|r| rev.rules[r].name.as_str());
        let assignment = d.and_then(|d| match &d.outcome {
            Outcome::Assigned(x) => Some(x),
            _ => None,
        });
        let outcome = match (d.map(|d| &d.outcome), &a.error) {
            (Some(Outcome::Assigned(_)), _) => "assigned",
            (Some(Outcome::Rejected { .. }), _) => "rejected",
            (_, Some(e)) => e.code.as_str(),
            (_, None) => "internal",
        };
        let strategy = assignment.map(|x| x.strategy.as_str());
        let sticky = assignment.is_some_and(|x| x.sticky);
        let reasons = Reasons(d.map_or(&[][..], |d| &d.reasons));
        let error_code = a.error.as_ref().map(|e| e.code.as_str());
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
            hub = a.hub.as_deref().unwrap_or(""),
            sticky,
            reasons = %reasons,
            error = error_code.unwrap_or(""),
            revision = rev.id.as_str(),
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
        if let Some(x) = assignment {
            let hub = x.hub.map_or("uncatalogued", |h| rev.hubs[h].host.as_str());
            let sticky = if x.sticky { "true" } else { "false" };
            m.assignments
                .with_label_values(&[hub, rule.unwrap_or(""), x.strategy.as_str(), sticky])
                .inc();
        }
        if outcome == "rejected"
            && let (Some(rule), Some(e)) = (rule, &a.error)
        {
            m.rejections.with_label_values(&[rule, e.code.as_str()]).inc();
        }
    }
}

/// A request refused before any decision (401, 413, 503, 400 before parsing): logged and counted.
pub fn refused(request_id: &str, code: &str, status: u16, m: &Metrics) {
    tracing::info!(target: "decision", request_id, status, outcome = code, "refused");
    m.requests.with_label_values(&[code]).inc();
}

/// One reload attempt: logged (a failure with every error) and counted.
pub fn reload(attempt: &Attempt, source: &str, m: &Metrics) {
    m.reloads.with_label_values(&[attempt.result.as_str()]).inc();
    let revision = attempt.revision.as_deref().unwrap_or("");
    match attempt.result {
        ReloadResult::Activated => {
            m.set_revision(revision, attempt.at_unix);
            tracing::info!(target: "policy", revision, source, trigger = ?attempt.trigger, duration_ms = attempt.duration_ms, "policy revision activated");
        }
        ReloadResult::Unchanged => {
            tracing::debug!(target: "policy", revision, source, trigger = ?attempt.trigger, "policy unchanged");
        }
        ReloadResult::Failed => {
            for e in &attempt.errors {
                tracing::error!(target: "policy", source, error = %e, "policy error");
            }
            tracing::error!(
                target: "policy",
                source,
                trigger = ?attempt.trigger,
                errors = attempt.errors.len(),
                "policy reload failed; the previous revision keeps serving"
            );
        }
    }
}
