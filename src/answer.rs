//! The application layer: from request bytes to response bytes, without HTTP. Parse, decide, render, map
//! errors, and summarise the decision once ([`Summary`]) for the response header, the log event, the
//! metrics, the fixtures and `explain`. The server's handlers, the Functions envelope, `dps-allocator test`,
//! `explain`, the benches and the fuzz targets all go through [`allocate`] or [`explain`], so a fixture
//! checks exactly what DPS would receive.

mod error;

use bytes::Bytes;
use serde::{Serialize, Serializer};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

pub use error::{ApiError, ErrorBody, ErrorCode, ErrorDetail};

use crate::dps::{AllocationRequest, AllocationResponse, EnrollmentKind};
use crate::engine::{self, Decision, Outcome, Reason, Trace};
use crate::geo::GeoIp;
use crate::policy::{Action, Revision};

/// Everything about one answered request: what goes on the wire and what the log records. Cacheable:
/// it holds no reference to the request or the revision.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// JSON body.
    pub body: Bytes,
    /// A content address of the decision: the same request under the same revision has the same id (a
    /// DPS retry shows up with a new request id and the same decision id).
    pub decision_id: String,
    /// The registration id, when the request parsed (for the log; never a metric label).
    pub registration_id: Option<String>,
    /// The enrollment group id, or `individual`, when the request parsed.
    pub enrollment: Option<String>,
    /// What was decided, when the request parsed.
    pub summary: Option<Summary>,
    /// The error, for non-200 answers.
    pub error: Option<ApiError>,
}

/// What the engine decided, for people and logs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// Revision id.
    pub revision: String,
    /// Deciding rule.
    pub rule: Option<String>,
    /// Tenant.
    pub tenant: Option<String>,
    /// Strategy of an assignment.
    pub strategy: Option<&'static str>,
    /// Whether the device stayed on its current hub.
    pub sticky: bool,
    /// Reasons, in order.
    #[serde(serialize_with = "reason_strings")]
    #[schema(value_type = Vec<String>)]
    pub reasons: Vec<Reason>,
    /// What happened to the device.
    #[serde(skip)]
    #[schema(ignore)]
    pub verdict: Verdict,
    /// The chosen hub, spelled as in `linkedHubs`.
    #[serde(skip)]
    #[schema(ignore)]
    pub hub: Option<String>,
    /// The chosen hub's catalogue host (the metric label), when it is catalogued.
    #[serde(skip)]
    #[schema(ignore)]
    pub catalogued_hub: Option<String>,
}

/// What happened to the device, as the log's `outcome` and the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Assigned to a hub.
    Assigned,
    /// A rule rejected it.
    Rejected,
    /// No eligible hub.
    NoEligibleHub,
    /// Twin or payload over the limits.
    TooLarge,
}

impl Verdict {
    /// The `outcome` log field and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Assigned => "assigned",
            Verdict::Rejected => "rejected",
            Verdict::NoEligibleHub => "no_eligible_hub",
            Verdict::TooLarge => "twin_too_large",
        }
    }
}

fn reason_strings<S: Serializer>(reasons: &[Reason], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(reasons.iter().map(ToString::to_string))
}

impl Summary {
    /// Names the parts of a decision made for `req` under `rev`.
    pub fn of(decision: &Decision, req: &AllocationRequest<'_>, rev: &Revision) -> Self {
        let assignment = match &decision.outcome {
            Outcome::Assigned(a) => Some(a),
            _ => None,
        };
        Summary {
            revision: rev.id.clone(),
            rule: decision.rule.map(|r| rev.rules[r].name.clone()),
            tenant: decision.tenant.map(|t| rev.tenants[t].id.clone()),
            strategy: assignment.map(|a| a.strategy.as_str()),
            sticky: assignment.is_some_and(|a| a.sticky),
            reasons: decision.reasons.clone(),
            verdict: match decision.outcome {
                Outcome::Assigned(_) => Verdict::Assigned,
                Outcome::Rejected { .. } => Verdict::Rejected,
                Outcome::NoEligibleHub => Verdict::NoEligibleHub,
                Outcome::TooLarge { .. } => Verdict::TooLarge,
            },
            hub: assignment.map(|a| req.linked_hubs[a.linked].as_str().to_owned()),
            catalogued_hub: assignment.and_then(|a| a.hub).map(|h| rev.hubs[h].host.clone()),
        }
    }

    /// The `x-dps-allocator-decision` header value: `rule=...; strategy=...; sticky=...; revision=...`.
    pub fn header(&self) -> String {
        format!(
            "rule={}; strategy={}; sticky={}; revision={}",
            self.rule.as_deref().unwrap_or("-"),
            self.strategy.unwrap_or("-"),
            self.sticky,
            self.revision
        )
    }
}

impl Answer {
    /// An error answer outside any decision (bad body, not ready, unauthorized).
    pub fn refusal(error: ApiError) -> Self {
        Answer {
            status: error.status(),
            body: Bytes::from(error.body()),
            decision_id: String::new(),
            registration_id: None,
            enrollment: None,
            summary: None,
            error: Some(error),
        }
    }

    /// The chosen hub as spelled in `linkedHubs`.
    pub fn hub(&self) -> Option<&str> {
        self.summary.as_ref()?.hub.as_deref()
    }

    /// The `outcome` of the log line and the metrics: the verdict, else the error's code.
    pub fn outcome(&self) -> &str {
        match (&self.summary, &self.error) {
            (Some(s), _) => s.verdict.as_str(),
            (None, Some(e)) => e.code(),
            (None, None) => "internal",
        }
    }
}

/// Answers one AllocationRequest body against a revision (and the GeoIP database, when configured).
pub fn allocate(body: &[u8], rev: &Revision, geoip: Option<&GeoIp>) -> Answer {
    allocate_hashed(body, rev, geoip, decision_hash(&rev.id, body))
}

/// [`allocate`], given the body's [`decision_hash`] (the server computes it once for the decision cache
/// and the decision id).
pub fn allocate_hashed(body: &[u8], rev: &Revision, geoip: Option<&GeoIp>, hash: u64) -> Answer {
    match AllocationRequest::parse(body) {
        Ok(req) => {
            let decision = engine::decide(&req, rev, geoip);
            answer(&req, &decision, hash, rev)
        }
        Err(e) => bad_request(body, e.0),
    }
}

/// A body that is no AllocationRequest: 400, with whose request it was as far as the body tells.
fn bad_request(body: &[u8], message: String) -> Answer {
    let (registration_id, enrollment) = crate::dps::identity_hint(body);
    Answer {
        registration_id,
        enrollment,
        ..Answer::refusal(ApiError::bad_request(message))
    }
}

/// Like [`allocate`], recording every step of the same decision.
pub fn explain(body: &[u8], rev: &Revision, geoip: Option<&GeoIp>) -> (Answer, Trace) {
    match AllocationRequest::parse(body) {
        Ok(req) => {
            let (decision, trace) = engine::decide_traced(&req, rev, geoip);
            (answer(&req, &decision, decision_hash(&rev.id, body), rev), trace)
        }
        Err(e) => (bad_request(body, e.0), Trace::default()),
    }
}

/// Renders a decision: the body DPS receives, or the error it stands for.
fn answer(req: &AllocationRequest<'_>, decision: &Decision, hash: u64, rev: &Revision) -> Answer {
    let rule = decision.rule.map(|r| &rev.rules[r]);
    let rendered = match &decision.outcome {
        Outcome::Assigned(a) => {
            let response = AllocationResponse {
                iot_hub_host_name: req.linked_hubs[a.linked].as_str(),
                initial_twin: a.initial_twin.as_deref(),
                payload: a.payload.as_deref(),
            };
            Ok(response.to_vec())
        }
        Outcome::Rejected { .. } => Err(match rule.map(|r| &r.action) {
            Some(Action::Reject(rej)) => ApiError::new(
                ErrorCode::Rejected {
                    status: rej.status,
                    reason: rej.reason.clone(),
                },
                rej.message.clone(),
            ),
            _ => ApiError::internal(),
        }),
        Outcome::NoEligibleHub => Err(ApiError::new(
            ErrorCode::NoEligibleHub,
            match rule {
                Some(rule) => format!("rule `{}`: no linked hub is eligible", rule.name),
                None => "no rule matched the device and there is no default_rule".to_owned(),
            },
        )),
        Outcome::TooLarge { part, size, limit } => Err(ApiError::new(
            ErrorCode::TwinTooLarge,
            match size {
                Some(size) => format!("rendered {part} is {size} bytes, over the limit of {limit}"),
                None => format!("rendered {part} is over the limit of {limit} bytes (rendering stopped there)"),
            },
        )),
    };
    let (status, out, error) = match rendered {
        Ok(json) => (200, Bytes::from(json), None),
        Err(e) => (e.status(), Bytes::from(e.body()), Some(e)),
    };
    Answer {
        status,
        body: out,
        decision_id: hex_id(hash),
        registration_id: Some(req.registration_id.as_str().to_owned()),
        enrollment: Some(match req.enrollment.group_id.as_ref() {
            Some(g) => g.as_str().to_owned(),
            None if req.enrollment.kind == EnrollmentKind::Individual => "individual".to_owned(),
            None => String::new(),
        }),
        summary: Some(Summary::of(decision, req, rev)),
        error,
    }
}

/// 16 hex digits of [`decision_hash`].
pub fn decision_id(revision: &str, body: &[u8]) -> String {
    hex_id(decision_hash(revision, body))
}

/// A decision id's text: 16 hex digits.
fn hex_id(hash: u64) -> String {
    format!("{hash:016x}")
}

/// XXH3 (64 bits) over the request body, seeded by the revision id: the decision id's value.
pub fn decision_hash(revision: &str, body: &[u8]) -> u64 {
    xxh3_64_with_seed(body, xxh3_64(revision.as_bytes()))
}

/// The `explain` document: what allocate would answer, the decision and the trace.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExplainReport<'a> {
    /// The status allocate would answer.
    pub status: u16,
    /// The body allocate would answer.
    #[schema(value_type = Object)]
    pub response: serde_json::Value,
    /// The decision.
    pub decision: Summary,
    /// The chosen hub.
    pub hub: Option<&'a str>,
    /// Every step.
    #[schema(value_type = crate::engine::Trace)]
    pub trace: &'a Trace,
}

impl<'a> ExplainReport<'a> {
    /// Builds the report of one explained request. A request that did not parse has no decision: its
    /// summary names the revision and nothing else.
    pub fn new(answer: &'a Answer, trace: &'a Trace, rev: &Revision) -> Self {
        let decision = answer.summary.clone().unwrap_or_else(|| Summary {
            revision: rev.id.clone(),
            rule: None,
            tenant: None,
            strategy: None,
            sticky: false,
            reasons: Vec::new(),
            verdict: Verdict::NoEligibleHub,
            hub: None,
            catalogued_hub: None,
        });
        ExplainReport {
            status: answer.status,
            response: serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null),
            decision,
            hub: answer.hub(),
            trace,
        }
    }
}
