//! From request bytes to response bytes, without actix: parse, decide, render, map errors. The server's
//! handlers, `dps-allocator test` and `explain` all go through [`allocate`], so a fixture checks exactly
//! what DPS would receive.

use serde::Serialize;

use super::ApiError;
use crate::dps::{AllocationRequest, AllocationResponse};
use crate::engine::{self, Decision, Outcome, Trace};
use crate::geo::GeoIp;
use crate::policy::{Action, Revision};

/// Everything about one answered request: what goes on the wire and what the log records.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
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
    fn error(error: ApiError, decision: Option<Decision>, registration_id: Option<String>) -> Self {
        Answer {
            status: error.status,
            body: error.body(),
            decision,
            error: Some(error),
            registration_id,
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
#[derive(Debug, Clone, Serialize, PartialEq)]
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

impl Summary<'_> {
    /// The `x-dps-allocator-decision` header: `rule=...; strategy=...; sticky=...; revision=...`.
    pub fn header(&self) -> String {
        format!(
            "rule={}; strategy={}; sticky={}; revision={}",
            self.rule.unwrap_or("-"),
            self.strategy.unwrap_or("-"),
            self.sticky,
            self.revision
        )
    }
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
        Err(e) => return Answer::error(ApiError::bad_request(e.0), None, None),
    };
    let decision = engine::decide(&req, rev, geoip, trace);
    let registration_id = Some(req.registration_id.as_str().to_owned());
    match &decision.outcome {
        Outcome::Assigned(a) => {
            let host = req.linked_hubs[a.linked].as_str();
            let response = AllocationResponse {
                iot_hub_host_name: host,
                initial_twin: a.initial_twin.as_ref(),
                payload: a.payload.as_ref(),
            };
            match serde_json::to_vec(&response) {
                Ok(body) => Answer {
                    status: 200,
                    body,
                    hub: Some(host.to_owned()),
                    decision: Some(decision),
                    error: None,
                    registration_id,
                },
                Err(_) => Answer::error(ApiError::internal(), Some(decision), registration_id),
            }
        }
        Outcome::Rejected { .. } => {
            let rule = decision.rule.map(|r| &rev.rules[r]);
            let error = match rule.map(|r| &r.action) {
                Some(Action::Reject(rej)) => ApiError::new(rej.status, rej.reason.clone(), rej.message.clone()),
                _ => ApiError::internal(),
            };
            Answer::error(error, Some(decision), registration_id)
        }
        Outcome::NoEligibleHub => {
            let message = match decision.rule.map(|r| &rev.rules[r]) {
                Some(rule) => format!("rule `{}`: no linked hub is eligible", rule.name),
                None => "no rule matched the device and there is no default_rule".to_owned(),
            };
            Answer::error(
                ApiError::new(422, "no_eligible_hub", message),
                Some(decision),
                registration_id,
            )
        }
        Outcome::TooLarge { part, size, limit } => {
            let message = format!("rendered {part} is {size} bytes, over the limit of {limit}");
            Answer::error(
                ApiError::new(422, "twin_too_large", message),
                Some(decision),
                registration_id,
            )
        }
    }
}
