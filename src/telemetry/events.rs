//! Typed events: each is emitted from one place that both logs and counts, so handlers carry no metric
//! code. Log fields never include URLs, query strings, keys or payload values.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntCounter;
use xxhash_rust::xxh3::Xxh3;

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

/// What logging, counting and answering a decision needs that does not change when the same answer is
/// served again. Built with the answer; the decision cache keeps it with the answer, so a hit is logged
/// and counted without formatting or label look-ups. The parts a device does not change (the outcome's
/// log fields, counters, header) are shared through [`Outcomes`].
pub struct Prepared {
    /// `,"decision_id":…` through `,"enrollment":"…"` as the JSON formatter writes them, when JSON logging
    /// is installed (else empty).
    head: Box<[u8]>,
    /// Every field as a value, when JSON logging is not installed (a terminal, a test's own subscriber).
    values: Option<Box<Fields<Box<str>>>>,
    common: Arc<Common>,
}

/// The part of a decision's log line, counters and header that depends only on its outcome (status,
/// rule, strategy, hub, stickiness, reasons, error, revision), not on the device: shared by every answer
/// with the same outcome.
pub struct Common {
    /// `,"status":…` through `,"revision":"…"`, as the JSON formatter writes them.
    tail: Box<[u8]>,
    requests: IntCounter,
    assignment: Option<IntCounter>,
    rejection: Option<IntCounter>,
    header: Option<Box<str>>,
    hub: Option<Box<str>>,
}

/// The [`Common`] parts of answers, one per distinct outcome, so that answers share them: the decision
/// cache keeps one copy per outcome instead of one per device, and a decision with a known outcome skips
/// the metric label look-ups and the header's formatting. Bounded: past [`OUTCOMES_MAX`] distinct outcomes
/// (only a client inventing linked hubs gets there) it starts over. Cleared when a revision activates.
#[derive(Default)]
pub struct Outcomes(Mutex<HashMap<u128, Arc<Common>>>);

/// Distinct outcomes [`Outcomes`] keeps before starting over.
pub const OUTCOMES_MAX: usize = 4096;

impl Outcomes {
    /// The shared part for the outcome `key` (see [`outcome_key`]), made by `make` when it is new.
    fn get(&self, key: u128, make: impl FnOnce() -> Common) -> Arc<Common> {
        let Ok(mut map) = self.0.lock() else {
            return Arc::new(make());
        };
        if let Some(c) = map.get(&key) {
            return c.clone();
        }
        if map.len() >= OUTCOMES_MAX {
            map.clear();
        }
        let c = Arc::new(make());
        map.insert(key, c.clone());
        c
    }

    /// Forgets every outcome (a new revision is active).
    pub fn clear(&self) {
        if let Ok(mut map) = self.0.lock() {
            map.clear();
        }
    }

    /// Outcomes kept now.
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |m| m.len())
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The fields of a decision, in log order, from `decision_id` to `revision`.
struct Fields<S> {
    decision_id: S,
    registration_id: S,
    enrollment: S,
    status: u16,
    outcome: S,
    rule: S,
    strategy: S,
    hub: S,
    sticky: bool,
    reasons: S,
    error: S,
    revision: S,
}

impl<'a> Fields<Cow<'a, str>> {
    /// The fields of `a`, given under `revision`, borrowed from them (the reasons are rendered).
    fn of(a: &'a Answer, revision: &'a str) -> Self {
        let [outcome, rule, strategy, hub, error] = outcome_texts(a);
        let reasons = match reasons_of(a) {
            Ok(reasons) => Cow::Owned(Reasons(reasons).to_string()),
            Err(message) => Cow::Borrowed(message),
        };
        Fields {
            decision_id: a.decision_id.as_str().into(),
            registration_id: a.registration_id.as_deref().unwrap_or("").into(),
            enrollment: a.enrollment.as_deref().unwrap_or("").into(),
            status: a.status,
            outcome: outcome.into(),
            rule: rule.into(),
            strategy: strategy.into(),
            hub: hub.into(),
            sticky: a.summary.as_ref().is_some_and(|s| s.sticky),
            reasons,
            error: error.into(),
            revision: revision.into(),
        }
    }

    /// The same fields, owning their text.
    fn into_owned(self) -> Fields<Box<str>> {
        let own = |c: Cow<'_, str>| c.into_owned().into_boxed_str();
        Fields {
            decision_id: own(self.decision_id),
            registration_id: own(self.registration_id),
            enrollment: own(self.enrollment),
            status: self.status,
            outcome: own(self.outcome),
            rule: own(self.rule),
            strategy: own(self.strategy),
            hub: own(self.hub),
            sticky: self.sticky,
            reasons: own(self.reasons),
            error: own(self.error),
            revision: own(self.revision),
        }
    }
}

impl<S: AsRef<str>> Fields<S> {
    /// The fields as [`super::json::JsonLines`] writes them (a unit test holds the two together).
    #[cfg(test)]
    fn render(&self) -> Vec<u8> {
        let mut out = self.render_head().into_vec();
        out.extend_from_slice(&self.render_tail());
        out
    }

    /// The device's fields: `decision_id`, `registration_id`, `enrollment`.
    #[cfg(test)]
    fn render_head(&self) -> Box<[u8]> {
        render_head(
            self.decision_id.as_ref(),
            self.registration_id.as_ref(),
            self.enrollment.as_ref(),
        )
    }

    /// The outcome's fields: `status` through `revision`.
    fn render_tail(&self) -> Box<[u8]> {
        use super::json::push_key;
        let mut out = Vec::with_capacity(320);
        push_key(&mut out, "status");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        push_strs(
            &mut out,
            [
                ("outcome", &self.outcome),
                ("rule", &self.rule),
                ("strategy", &self.strategy),
                ("hub", &self.hub),
            ],
        );
        push_key(&mut out, "sticky");
        out.extend_from_slice(if self.sticky { b"true" } else { b"false" });
        push_strs(
            &mut out,
            [
                ("reasons", &self.reasons),
                ("error", &self.error),
                ("revision", &self.revision),
            ],
        );
        out.into_boxed_slice()
    }
}

/// `,"decision_id":…,"registration_id":…,"enrollment":…`, as the JSON formatter writes them.
fn render_head(decision_id: &str, registration_id: &str, enrollment: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(160);
    push_strs(
        &mut out,
        [
            ("decision_id", &decision_id),
            ("registration_id", &registration_id),
            ("enrollment", &enrollment),
        ],
    );
    out.into_boxed_slice()
}

/// Appends `,"key":"value"` for each pair.
fn push_strs<S: AsRef<str>, const N: usize>(out: &mut Vec<u8>, fields: [(&str, &S); N]) {
    for (key, value) in fields {
        super::json::push_key(out, key);
        super::json::push_str(out, value.as_ref());
    }
}

/// The outcome's text fields of an answer, in log order: `outcome`, `rule`, `strategy`, `hub`, `error`.
fn outcome_texts(a: &Answer) -> [&str; 5] {
    let s = a.summary.as_ref();
    [
        a.outcome(),
        s.and_then(|s| s.rule.as_deref()).unwrap_or(""),
        s.and_then(|s| s.strategy).unwrap_or(""),
        a.hub().unwrap_or(""),
        a.error.as_ref().map_or("", |e| e.code()),
    ]
}

/// What the `reasons` field says: the decision's reasons, or, for a refused request (no decision), the
/// error's message.
fn reasons_of(a: &Answer) -> Result<&[Reason], &str> {
    match (&a.summary, &a.error) {
        (None, Some(e)) => Err(e.message.as_str()),
        (s, _) => Ok(s.as_ref().map_or(&[][..], |s| &s.reasons)),
    }
}

/// A 128-bit hash of everything an answer's [`Common`] part is made of (the fields of its log tail, and
/// whether a decision was made), taken from the fields themselves: an answer whose outcome is already
/// known is never rendered. Two answers with the same key render the same tail.
fn outcome_key(a: &Answer, revision: &str) -> u128 {
    use std::hash::Hash;
    let mut h = Xxh3::new();
    let s = a.summary.as_ref();
    (outcome_texts(a), revision).hash(&mut h);
    (a.status, s.is_some(), s.is_some_and(|s| s.sticky)).hash(&mut h);
    reasons_of(a).hash(&mut h);
    h.digest128()
}

impl Prepared {
    /// The bytes this answer's own log fields hold on the heap (the shared [`Common`] part not counted:
    /// it is interned once per outcome), for the decision cache's byte budget.
    pub fn heap_bytes(&self) -> usize {
        self.head.len()
            + self.values.as_deref().map_or(0, |f| {
                std::mem::size_of::<Fields<Box<str>>>()
                    + [
                        &f.decision_id,
                        &f.registration_id,
                        &f.enrollment,
                        &f.outcome,
                        &f.rule,
                        &f.strategy,
                        &f.hub,
                        &f.reasons,
                        &f.error,
                        &f.revision,
                    ]
                    .iter()
                    .map(|s| s.len())
                    .sum::<usize>()
            })
    }

    /// Prepares the log fields, counters and header of `answer`, given by revision `revision`, sharing
    /// the outcome's part through `outcomes`: only an outcome not seen before is rendered.
    pub fn new(answer: &Answer, revision: &str, m: &Metrics, outcomes: &Outcomes) -> Self {
        let common = outcomes.get(outcome_key(answer, revision), || {
            let fields = Fields::of(answer, revision);
            let s = answer.summary.as_ref();
            Common {
                tail: fields.render_tail(),
                requests: m.requests.with_label_values(&[&fields.outcome]),
                assignment: s.filter(|s| s.verdict == Verdict::Assigned).map(|s| {
                    let hub = s.catalogued_hub.as_deref().unwrap_or("uncatalogued");
                    let sticky = if s.sticky { "true" } else { "false" };
                    m.assignments
                        .with_label_values(&[hub, &fields.rule, &fields.strategy, sticky])
                }),
                rejection: match (s, &answer.error) {
                    (Some(s), Some(e)) if s.verdict == Verdict::Rejected && s.rule.is_some() => {
                        Some(m.rejections.with_label_values(&[&fields.rule, e.code()]))
                    }
                    _ => None,
                },
                header: s.map(|s| s.header().into_boxed_str()),
                hub: answer.hub().map(Box::from),
            }
        });
        let json = super::json_sink().is_some();
        Prepared {
            head: if json {
                render_head(
                    &answer.decision_id,
                    answer.registration_id.as_deref().unwrap_or(""),
                    answer.enrollment.as_deref().unwrap_or(""),
                )
            } else {
                Box::default()
            },
            values: (!json).then(|| Box::new(Fields::of(answer, revision).into_owned())),
            common,
        }
    }

    /// The `x-dps-allocator-decision` header, for answers that carry a decision.
    pub fn header(&self) -> Option<&str> {
        self.common.header.as_deref()
    }

    /// The chosen hub, as spelled in `linkedHubs`.
    pub fn hub(&self) -> Option<&str> {
        self.common.hub.as_deref()
    }
}

/// One answered allocation request.
pub struct DecisionEvent<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The answer's prepared log fields and counters.
    pub prepared: &'a Prepared,
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
    /// Logs the decision and counts it. With JSON logging installed, the line is written straight into
    /// the log buffer from the prepared fields; otherwise (a terminal, or a test's own subscriber) it is
    /// a tracing event with the same fields.
    pub fn emit(&self, m: &Metrics) {
        let p = self.prepared;
        if tracing::enabled!(target: "decision", tracing::Level::INFO) {
            match (&p.values, super::json_sink()) {
                (None, Some(sink)) => sink.append(|line| {
                    use super::json::{push_key, push_line_start, push_str};
                    push_line_start(line, std::time::SystemTime::now(), "decision", "decision");
                    push_key(line, "request_id");
                    push_str(line, self.request_id);
                    line.extend_from_slice(&p.head);
                    line.extend_from_slice(&p.common.tail);
                    push_key(line, "cache");
                    push_str(line, self.cache.as_str());
                    push_key(line, "duration_us");
                    line.extend_from_slice(itoa::Buffer::new().format(self.elapsed.as_micros() as u64).as_bytes());
                    line.extend_from_slice(b"}\n");
                }),
                (Some(fields), _) => self.trace(fields),
                // Prepared for a JSON sink, which stays installed once it is: not reached.
                (None, None) => {}
            }
        }
        let c = &p.common;
        c.requests.inc();
        m.duration.observe(self.elapsed.as_secs_f64());
        match self.cache {
            CacheUse::Hit => m.decision_cache_hits.inc(),
            CacheUse::Miss => m.decision_cache_misses.inc(),
            CacheUse::Off => {}
        }
        if let Some(c) = &c.assignment {
            c.inc();
        }
        if let Some(c) = &c.rejection {
            c.inc();
        }
    }

    fn trace(&self, f: &Fields<Box<str>>) {
        tracing::info!(
            target: "decision",
            request_id = self.request_id,
            decision_id = &*f.decision_id,
            registration_id = &*f.registration_id,
            enrollment = &*f.enrollment,
            status = f.status,
            outcome = &*f.outcome,
            rule = &*f.rule,
            strategy = &*f.strategy,
            hub = &*f.hub,
            sticky = f.sticky,
            reasons = &*f.reasons,
            error = &*f.error,
            revision = &*f.revision,
            cache = self.cache.as_str(),
            duration_us = self.elapsed.as_micros() as u64,
            "decision"
        );
    }
}

/// A request refused before its body was read (401, 408, 413, 503): logged with the reason at `warn`
/// (a wrong key in an enrollment, a client that stalls, a service without a policy: all problems), and
/// counted.
pub fn refused(request_id: &str, code: &str, status: u16, reason: &str, m: &Metrics) {
    tracing::warn!(target: "decision", request_id, status, outcome = code, reasons = reason, "refused");
    m.requests.with_label_values(&[code]).inc();
}

/// Known DPS fields at the wrong level of a decided request: one warning each, beside the decision line
/// whose reasons name them too (a cache hit repeats the reasons, not the warning).
pub fn misplaced_fields(answer: &Answer) {
    let Some(summary) = &answer.summary else { return };
    for r in &summary.reasons {
        if let Reason::Misplaced(m) = r {
            tracing::warn!(
                target: "request",
                decision_id = answer.decision_id.as_str(),
                registration_id = answer.registration_id.as_deref().unwrap_or(""),
                "misplaced field: {}",
                m.as_str()
            );
        }
    }
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
        let fields = Fields::of(&answer, &rev.id).into_owned();
        let expected = fields.render();
        // The same fields through tracing and the JSON formatter.
        let captured = super::super::json::Captured::default();
        let out = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(super::super::json::JsonLines)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            DecisionEvent {
                request_id: "r-1",
                prepared: &Prepared::new(
                    &answer,
                    &rev.id,
                    &Metrics::new().expect("metrics"),
                    &Outcomes::default(),
                ),
                cache: CacheUse::Off,
                elapsed: Duration::from_micros(5),
            }
            .trace(&fields);
        });
        let line = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        let fields = String::from_utf8(expected.to_vec()).expect("utf-8");
        let from = line.find(",\"decision_id\"").expect("decision_id");
        let to = line.find(",\"cache\"").expect("cache");
        assert_eq!(&line[from..to], fields);
        assert!(fields.contains(r#""enrollment":"g\n1""#), "{fields}");
    }

    /// Answers with the same outcome share one [`Common`]; a different outcome gets its own; the
    /// interner starts over past its bound.
    #[test]
    fn answers_with_the_same_outcome_share_their_common_part() {
        let rev = compile(vec![Source::new(
            "t.toml",
            "[[hub]]\nhost = \"h1.azure-devices.net\"\n[[rule]]\nname = \"all\"\n",
        )])
        .expect("policy");
        let body = |id: &str| {
            format!(
                r#"{{"enrollmentGroup":{{"enrollmentGroupId":"g"}},"deviceRuntimeContext":{{"registrationId":"{id}"}},"linkedHubs":["h1.azure-devices.net"]}}"#
            )
        };
        let (m, outcomes) = (Metrics::new().expect("metrics"), Outcomes::default());
        let prepare = |b: &[u8]| Prepared::new(&crate::answer::allocate(b, &rev, None), &rev.id, &m, &outcomes);
        let (one, two) = (prepare(body("dev-1").as_bytes()), prepare(body("dev-2").as_bytes()));
        assert!(Arc::ptr_eq(&one.common, &two.common));
        assert_eq!(one.hub(), Some("h1.azure-devices.net"));
        assert_eq!(
            one.header().map(|h| h.split("; revision=").next().unwrap_or_default()),
            Some("rule=all; strategy=weighted-hash; sticky=false")
        );
        let refused = prepare(b"{");
        assert!(!Arc::ptr_eq(&one.common, &refused.common));
        assert_eq!((refused.header(), outcomes.len()), (None, 2));
        for i in 2..OUTCOMES_MAX {
            outcomes.get(i as u128, || common(&m));
        }
        assert_eq!(outcomes.len(), OUTCOMES_MAX);
        outcomes.get(u128::MAX, || common(&m));
        assert_eq!(outcomes.len(), 1, "started over");
    }

    /// The outcome key, taken from the fields without rendering them, tells answers apart exactly as
    /// their rendered tails do: the same key, the same tail; a different tail, a different key.
    #[test]
    fn the_outcome_key_separates_exactly_what_the_tail_renders() {
        let rev = compile(vec![Source::new(
            "t.toml",
            r#"
[[hub]]
host = "h1.azure-devices.net"
[[hub]]
host = "h2.azure-devices.net"
[[hub]]
host = "h3.azure-devices.net"
[[rule]]
name = "revoked"
when = { registration_id = { contains = "bad" } }
reject = { status = 403, reason = "revoked", message = "revoked device" }
[[rule]]
name = "nowhere"
when = { registration_id = { contains = "lost" } }
hubs = ["h3.azure-devices.net"]
[[rule]]
name = "all"
sticky = true
"#,
        )])
        .expect("policy");
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for id in ["dev-1", "dev-2", "dev-3", "bad-1", "bad-2", "lost-1", "lost-2"] {
            for current in [
                "",
                "h1.azure-devices.net",
                "h2.azure-devices.net",
                "H2.azure-devices.net",
            ] {
                let current = if current.is_empty() {
                    String::new()
                } else {
                    format!(r#","currentIotHubHostName":"{current}""#)
                };
                bodies.push(format!(
                    r#"{{"enrollmentGroup":{{"enrollmentGroupId":"g"}},"deviceRuntimeContext":{{"registrationId":"{id}"{current}}},"linkedHubs":["h1.azure-devices.net","H2.azure-devices.net"]}}"#
                ).into_bytes());
            }
        }
        bodies.extend([b"{".to_vec(), b"[]".to_vec(), br#"{"linkedHubs":[]}"#.to_vec()]);
        let mut by_key = HashMap::new();
        let mut tails = std::collections::HashSet::new();
        for b in &bodies {
            let a = crate::answer::allocate(b, &rev, None);
            let tail = (Fields::of(&a, &rev.id).render_tail(), a.summary.is_some());
            tails.insert(tail.clone());
            let shared = (
                tail.clone(),
                a.summary.as_ref().map(|s| s.header()),
                a.hub().map(str::to_owned),
                a.summary.as_ref().and_then(|s| s.catalogued_hub.clone()),
            );
            let kept = by_key.entry(outcome_key(&a, &rev.id)).or_insert_with(|| shared.clone());
            assert_eq!(*kept, shared, "one key, two tails, headers, hubs or metric labels");
        }
        assert_eq!(by_key.len(), tails.len(), "tails that differ have keys that differ");
        assert!(tails.len() >= 8, "the answers cover several outcomes: {}", tails.len());
    }

    fn common(m: &Metrics) -> Common {
        Common {
            tail: Box::default(),
            requests: m.requests.with_label_values(&["assigned"]),
            assignment: None,
            rejection: None,
            header: None,
            hub: None,
        }
    }
}
