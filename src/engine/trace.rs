//! The rule trace behind `explain`: every rule tried and why it matched or not, every linked hub and why
//! it was or was not a candidate, with rendezvous scores. Built only when asked for; the request path
//! passes no trace and pays nothing for it.

use serde::Serialize;

use crate::dps::AllocationRequest;
use crate::geo::locate::Located;
use crate::geo::{LocationSource, Unknown};
use crate::policy::{HubState, Revision};

/// What the engine did, step by step.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Trace {
    /// The device's tenant.
    pub tenant: Option<String>,
    /// Rules in the order tried, up to the one that matched.
    pub rules: Vec<RuleTrace>,
    /// The default rule, when no rule matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_rule: Option<String>,
    /// Every linked hub, and whether it was a candidate.
    pub candidates: Vec<CandidateTrace>,
    /// Where geo-latency located the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationTrace>,
}

/// The device's location as geo-latency saw it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LocationTrace {
    /// Where it came from (`coordinates`, `ip`, `region`); `None` when unknown.
    #[schema(value_type = Option<String>)]
    pub source: Option<LocationSource>,
    /// Latitude.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Longitude.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// GeoIP accuracy radius in km.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_km: Option<u16>,
    /// Why sources present in the payload did not yield, in order.
    #[schema(value_type = Vec<String>)]
    pub misses: Vec<Unknown>,
}

impl LocationTrace {
    pub(super) fn new(l: &Located) -> Self {
        LocationTrace {
            source: l.location.map(|x| x.source),
            lat: l.location.map(|x| x.point.lat),
            lon: l.location.map(|x| x.point.lon),
            accuracy_km: l.location.and_then(|x| x.accuracy_km),
            misses: l.misses.clone(),
        }
    }
}

/// One rule tried.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RuleTrace {
    /// Rule name.
    pub rule: String,
    /// Where it is defined.
    pub at: String,
    /// Whether every condition held.
    pub matched: bool,
    /// The first condition that did not hold, as written in the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// One linked hub as the chosen rule saw it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CandidateTrace {
    /// Host as spelled in `linkedHubs`.
    pub host: String,
    /// Index in `linkedHubs`.
    #[serde(skip)]
    #[schema(ignore)]
    pub linked_index: usize,
    /// Whether it is in the catalogue.
    pub catalogued: bool,
    /// Its state.
    #[schema(value_type = String)]
    pub state: HubState,
    /// Its weight.
    pub weight: u32,
    /// Its region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<&'static str>,
    /// Why it is not a candidate, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
    /// Its rendezvous score, when weighted hashing ran (highest wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Its great-circle distance to the device, when geo-latency ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
}

impl CandidateTrace {
    pub(super) fn new(
        rev: &Revision,
        req: &AllocationRequest<'_>,
        linked_index: usize,
        hub: Option<usize>,
        excluded: Option<&str>,
    ) -> Self {
        let h = hub.map(|h| &rev.hubs[h]);
        CandidateTrace {
            host: req.linked_hubs[linked_index].as_str().to_owned(),
            linked_index,
            catalogued: h.is_some(),
            state: h.map_or(HubState::Active, |h| h.state),
            weight: h.map_or(1, |h| h.weight),
            region: h.and_then(|h| h.region).map(|r| r.name),
            excluded: excluded.map(str::to_owned),
            score: None,
            distance_km: None,
        }
    }
}
