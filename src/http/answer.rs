//! From request bytes to response bytes, without actix: parse, decide, render, map errors. The server's
//! handlers, `dps-allocator test` and `explain` all go through [`allocate`], so a fixture checks exactly
//! what DPS would receive.

use actix_web::web::Bytes;
use serde::Serialize;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::ApiError;
use crate::dps::{AllocationRequest, AllocationResponse};
use crate::engine::{self, Decision, Outcome, Trace};
use crate::geo::GeoIp;
use crate::policy::{Action, Revision};

/// Everything about one answered request: what goes on the wire and what the log records. Cacheable:
/// it holds no reference to the request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Bytes,
    /// The `x-dps-allocator-decision` header, when a decision was made.
    pub decision_header: Option<String>,
    /// A content address of the decision: the same request under the same revision has the same id (a
    /// DPS retry shows up with a new request id and the same decision id).
    pub decision_id: String,
    /// The enrollment group id, or `individual`.
    pub enrollment: Option<String>,
    /// The decision, when the request parsed.
    pub decision: Option<Decision>,
    /// The error, for non-200 answers.
    pub error: Option<ApiError>,
    /// The registration id, when the request parsed (for the log; never a metric label).
    pub registration_id: Option<String>,
    /// The chosen hub as spelled in `linkedHubs`.
    pub hub: Option<String>,
}

impl Answer {
    /// An error answer outside any decision (bad body, not ready, unauthorized).
    pub fn refusal(error: ApiError) -> Self {
        Answer {
            status: error.status,
            body: Bytes::from(error.body()),
            decision_header: None,
            decision_id: String::new(),
            enrollment: None,
            decision: None,
            error: Some(error),
            registration_id: None,
            hub: None,
        }
    }

    /// The decision's summary for headers, logs and `explain`.
    pub fn summary<'r>(&self, rev: &'r Revision) -> Summary<'r> {
        let d = self.decision.as_ref();
        let rule = d.and_then(|d| d.rule).map(|r| &rev.rules[r]);
        let assignment = d.and_then(|d| match &d.outcome {
            Outcome::Assigned(a) => Some(a),
            _ => None,
        });
        Summary {
            revision: &rev.id,
            rule: rule.map(|r| r.name.as_str()),
            tenant: d.and_then(|d| d.tenant).map(|t| rev.tenants[t].id.as_str()),
            strategy: assignment.map(|a| a.strategy.as_str()),
            sticky: assignment.is_some_and(|a| a.sticky),
            reasons: d
                .map(|d| d.reasons.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        }
    }
}

/// What the engine decided, for people and logs.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Summary<'r> {
    /// Revision id.
    pub revision: &'r str,
    /// Deciding rule.
    pub rule: Option<&'r str>,
    /// Tenant.
    pub tenant: Option<&'r str>,
    /// Strategy of an assignment.
    pub strategy: Option<&'static str>,
    /// Whether the device stayed on its current hub.
    pub sticky: bool,
    /// Reasons, in order.
    pub reasons: Vec<String>,
}

/// Answers one AllocationRequest body against a revision (and the GeoIP database, when configured).
pub fn allocate(body: &[u8], rev: &Revision, geoip: Option<&GeoIp>) -> Answer {
    answer(body, rev, geoip, None)
}

/// Like [`allocate`], recording the engine's trace.
pub fn explain(body: &[u8], rev: &Revision, geoip: Option<&GeoIp>) -> (Answer, Trace) {
    let mut trace = Trace::default();
    let a = answer(body, rev, geoip, Some(&mut trace));
    (a, trace)
}

fn answer(body: &[u8], rev: &Revision, geoip: Option<&GeoIp>, trace: Option<&mut Trace>) -> Answer {
    let req = match AllocationRequest::parse(body) {
        Ok(r) => r,
        Err(e) => return Answer::refusal(ApiError::bad_request(e.0)),
    };
    let decision = engine::decide(&req, rev, geoip, trace);
    let decision_id = decision_id(&rev.id, body);
    let (status, out, hub, error) = match &decision.outcome {
        Outcome::Assigned(a) => {
            let host = req.linked_hubs[a.linked].as_str();
            let response = AllocationResponse {
                iot_hub_host_name: host,
                initial_twin: a.initial_twin.as_ref(),
                payload: a.payload.as_ref(),
            };
            match serde_json::to_vec(&response) {
                Ok(json) => (200, Bytes::from(json), Some(host.to_owned()), None),
                Err(_) => error_parts(ApiError::internal()),
            }
        }
        Outcome::Rejected { .. } => match decision.rule.map(|r| &rev.rules[r].action) {
            Some(Action::Reject(rej)) => {
                error_parts(ApiError::new(rej.status, rej.reason.clone(), rej.message.clone()))
            }
            _ => error_parts(ApiError::internal()),
        },
        Outcome::NoEligibleHub => {
            let message = match decision.rule.map(|r| &rev.rules[r]) {
                Some(rule) => format!("rule `{}`: no linked hub is eligible", rule.name),
                None => "no rule matched the device and there is no default_rule".to_owned(),
            };
            error_parts(ApiError::new(422, "no_eligible_hub", message))
        }
        Outcome::TooLarge { part, size, limit } => {
            let message = format!("rendered {part} is {size} bytes, over the limit of {limit}");
            error_parts(ApiError::new(422, "twin_too_large", message))
        }
    };
    let mut answer = Answer {
        status,
        body: out,
        decision_header: None,
        decision_id,
        enrollment: Some(match req.enrollment.group_id.as_ref() {
            Some(g) => g.as_str().to_owned(),
            None if req.enrollment.kind == crate::dps::EnrollmentKind::Individual => "individual".to_owned(),
            None => String::new(),
        }),
        decision: Some(decision),
        error,
        registration_id: Some(req.registration_id.as_str().to_owned()),
        hub,
    };
    answer.decision_header = answer.decision.as_ref().map(|d| header(d, rev));
    answer
}

/// `rule=...; strategy=...; sticky=...; revision=...`, without formatting the reasons.
fn header(d: &Decision, rev: &Revision) -> String {
    let (strategy, sticky) = match &d.outcome {
        Outcome::Assigned(a) => (a.strategy.as_str(), a.sticky),
        _ => ("-", false),
    };
    let rule = d.rule.map_or("-", |r| rev.rules[r].name.as_str());
    format!("rule={rule}; strategy={strategy}; sticky={sticky}; revision={}", rev.id)
}

fn error_parts(e: ApiError) -> (u16, Bytes, Option<String>, Option<ApiError>) {
    (e.status, Bytes::from(e.body()), None, Some(e))
}

/// 16 hex digits of XXH3 over the request body, seeded by the revision id.
pub fn decision_id(revision: &str, body: &[u8]) -> String {
    format!("{:016x}", xxh3_64_with_seed(body, xxh3_64(revision.as_bytes())))
}
