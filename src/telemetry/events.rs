//! Typed events: each is emitted from one place that both logs and counts, so handlers carry no metric
//! code. Log fields never include URLs, query strings, keys or payload values.

use std::fmt;
use std::time::Duration;

use prometheus::IntCounter;

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

/// What logging and counting a decision needs that does not change when the same answer is served
/// again: the decision's log fields, rendered once as the JSON formatter would write them, and its
/// counters, looked up once by their labels. Built with the answer; the decision cache keeps it with the
/// answer, so a hit is logged and counted without formatting or label look-ups.
pub struct Prepared {
    /// `,"decision_id":…` through `,"revision":"…"`; empty when JSON logging is not installed.
    fields: Box<[u8]>,
    requests: IntCounter,
    assignment: Option<IntCounter>,
    rejection: Option<IntCounter>,
}

/// The fields of a decision, in log order, from `decision_id` to `revision`.
struct Fields<'a> {
    decision_id: &'a str,
    registration_id: &'a str,
    enrollment: &'a str,
    status: u16,
    outcome: &'a str,
    rule: &'a str,
    strategy: &'a str,
    hub: &'a str,
    sticky: bool,
    reasons: OrElse<'a>,
    error: &'a str,
    revision: &'a str,
}

impl<'a> Fields<'a> {
    fn of(a: &'a Answer, revision: &'a str) -> Self {
        let s = a.summary.as_ref();
        // A refused request has no decision: its reason is the error's message.
        let refusal = s
            .is_none()
            .then(|| a.error.as_ref().map(|e| e.message.as_str()))
            .flatten();
        Fields {
            decision_id: a.decision_id.as_str(),
            registration_id: a.registration_id.as_deref().unwrap_or(""),
            enrollment: a.enrollment.as_deref().unwrap_or(""),
            status: a.status,
            outcome: a.outcome(),
            rule: s.and_then(|s| s.rule.as_deref()).unwrap_or(""),
            strategy: s.and_then(|s| s.strategy).unwrap_or(""),
            hub: a.hub().unwrap_or(""),
            sticky: s.is_some_and(|s| s.sticky),
            reasons: OrElse(Reasons(s.map_or(&[][..], |s| &s.reasons)), refusal),
            error: a.error.as_ref().map_or("", |e| e.code()),
            revision,
        }
    }

    /// The fields as [`super::json::JsonLines`] writes them (a unit test holds the two together).
    fn render(&self) -> Box<[u8]> {
        use super::json::{push_key, push_str};
        let mut out = Vec::with_capacity(512);
        for (key, value) in [
            ("decision_id", self.decision_id),
            ("registration_id", self.registration_id),
            ("enrollment", self.enrollment),
        ] {
            push_key(&mut out, key);
            push_str(&mut out, value);
        }
        push_key(&mut out, "status");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        for (key, value) in [
            ("outcome", self.outcome),
            ("rule", self.rule),
            ("strategy", self.strategy),
            ("hub", self.hub),
        ] {
            push_key(&mut out, key);
            push_str(&mut out, value);
        }
        push_key(&mut out, "sticky");
        out.extend_from_slice(if self.sticky { b"true" } else { b"false" });
        push_key(&mut out, "reasons");
        push_str(&mut out, &self.reasons.to_string());
        for (key, value) in [("error", self.error), ("revision", self.revision)] {
            push_key(&mut out, key);
            push_str(&mut out, value);
        }
        out.into_boxed_slice()
    }
}

impl Prepared {
    /// Prepares the log fields and counters of `answer`, given by revision `revision`.
    pub fn new(answer: &Answer, revision: &str, m: &Metrics) -> Self {
        let fields = Fields::of(answer, revision);
        let s = answer.summary.as_ref();
        let assignment = s.filter(|s| s.verdict == Verdict::Assigned).map(|s| {
            let hub = s.catalogued_hub.as_deref().unwrap_or("uncatalogued");
            let sticky = if s.sticky { "true" } else { "false" };
            m.assignments
                .with_label_values(&[hub, fields.rule, fields.strategy, sticky])
        });
        let rejection = match (s, &answer.error) {
            (Some(s), Some(e)) if s.verdict == Verdict::Rejected && s.rule.is_some() => {
                Some(m.rejections.with_label_values(&[fields.rule, e.code()]))
            }
            _ => None,
        };
        Prepared {
            fields: if super::json_sink().is_some() {
                fields.render()
            } else {
                Box::default()
            },
            requests: m.requests.with_label_values(&[fields.outcome]),
            assignment,
            rejection,
        }
    }
}

/// One answered allocation request.
pub struct DecisionEvent<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The answer.
    pub answer: &'a Answer,
    /// Its prepared log fields and counters.
    pub prepared: &'a Prepared,
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
    /// Logs the decision and counts it. With JSON logging installed, the line is written straight into
    /// the log buffer from the prepared fields; otherwise (a terminal, or a test's own subscriber) it is
    /// a tracing event with the same fields.
    pub fn emit(&self, m: &Metrics) {
        let p = self.prepared;
        if tracing::enabled!(target: "decision", tracing::Level::INFO) {
            match super::json_sink() {
                Some(sink) if !p.fields.is_empty() => sink.append(|line| {
                    use super::json::{push_key, push_line_start, push_str};
                    push_line_start(line, std::time::SystemTime::now(), "decision", "decision");
                    push_key(line, "request_id");
                    push_str(line, self.request_id);
                    line.extend_from_slice(&p.fields);
                    push_key(line, "cache");
                    push_str(line, self.cache.as_str());
                    push_key(line, "duration_us");
                    line.extend_from_slice(itoa::Buffer::new().format(self.elapsed.as_micros() as u64).as_bytes());
                    line.extend_from_slice(b"}\n");
                }),
                _ => self.trace(),
            }
        }
        p.requests.inc();
        m.duration.observe(self.elapsed.as_secs_f64());
        match self.cache {
            CacheUse::Hit => m.decision_cache_hits.inc(),
            CacheUse::Miss => m.decision_cache_misses.inc(),
            CacheUse::Off => {}
        }
        if let Some(c) = &p.assignment {
            c.inc();
        }
        if let Some(c) = &p.rejection {
            c.inc();
        }
    }

    fn trace(&self) {
        let f = Fields::of(self.answer, self.revision);
        tracing::info!(
            target: "decision",
            request_id = self.request_id,
            decision_id = f.decision_id,
            registration_id = f.registration_id,
            enrollment = f.enrollment,
            status = f.status,
            outcome = f.outcome,
            rule = f.rule,
            strategy = f.strategy,
            hub = f.hub,
            sticky = f.sticky,
            reasons = %f.reasons,
            error = f.error,
            revision = f.revision,
            cache = self.cache.as_str(),
            duration_us = self.elapsed.as_micros() as u64,
            "decision"
        );
    }
}

/// A request refused before its body was read (401, 408, 413, 503): logged with the reason, and counted.
pub fn refused(request_id: &str, code: &str, status: u16, reason: &str, m: &Metrics) {
    tracing::info!(target: "decision", request_id, status, outcome = code, reasons = reason, "refused");
    m.requests.with_label_values(&[code]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Source, compile};

    /// The prepared fields are exactly what the JSON formatter writes for the same event.
    #[test]
    fn prepared_fields_match_the_json_formatter() {
        let rev = compile(vec![Source::new(
            "t.toml",
            "[[hub]]\nhost = \"h1.azure-devices.net\"\n[[rule]]\nname = \"all\"\n",
        )])
        .expect("policy");
        let body = br#"{"enrollmentGroup":{"enrollmentGroupId":"g\n1"},"deviceRuntimeContext":{"registrationId":"dev-1"},"linkedHubs":["h1.azure-devices.net"]}"#;
        let answer = crate::answer::allocate(body, &rev, None);
        let expected = Fields::of(&answer, &rev.id).render();
        // The same fields through tracing and the JSON formatter.
        let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(super::super::json::JsonLines)
            .with_writer(move || Capture(out.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            DecisionEvent {
                request_id: "r-1",
                answer: &answer,
                prepared: &Prepared::new(&answer, &rev.id, &Metrics::new().expect("metrics")),
                revision: &rev.id,
                cache: CacheUse::Off,
                elapsed: Duration::from_micros(5),
            }
            .trace();
        });
        let line = String::from_utf8(sink.lock().expect("lock").clone()).expect("utf-8");
        let fields = String::from_utf8(expected.to_vec()).expect("utf-8");
        let from = line.find(",\"decision_id\"").expect("decision_id");
        let to = line.find(",\"cache\"").expect("cache");
        assert_eq!(&line[from..to], fields);
        assert!(fields.contains(r#""enrollment":"g\n1""#), "{fields}");
    }

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
