//! What the engine did, step by step: the [`Recorder`] the decision reports to, and the [`Trace`] behind
//! `explain` (every rule up to the one that matched and why, every linked hub and why it was or was not a
//! candidate, rendezvous scores and distances). The request path records into [`NoTrace`], whose `ON` is
//! false: every recording call and the work to build its argument compile away.

use serde::Serialize;

use super::locate::{FactSource, Located, LocationSource, Place, Unknown};
use crate::dps::AllocationRequest;
use crate::policy::condition::Facts;
use crate::policy::{HubState, Revision};

/// Receives the steps of a decision. Every method has an empty default; the engine builds a method's
/// argument only when `ON` is true.
pub trait Recorder {
    /// Whether anything is recorded.
    const ON: bool;
    /// The device's tenant.
    fn tenant(&mut self, _tenant: Option<&str>) {}
    /// The rules in order up to the one that matched (`matched`), each with the first condition that does
    /// not hold; every rule when none matched.
    fn rules(&mut self, _rev: &Revision, _facts: &Facts<'_>, _matched: Option<usize>) {}
    /// The default rule decided.
    fn default_rule(&mut self, _name: &str) {}
    /// A linked hub, and why it is not a candidate when it is not.
    fn candidate(&mut self, _candidate: CandidateTrace) {}
    /// The rendezvous score of the linked hub at this index.
    fn score(&mut self, _linked_index: usize, _score: f64) {}
    /// The distance from the device to the linked hub at this index.
    fn distance(&mut self, _linked_index: usize, _km: f64) {}
    /// Where geo-latency located the device.
    fn location(&mut self, _location: LocationTrace) {}
    /// Where `location` conditions saw the device.
    fn place(&mut self, _place: PlaceTrace) {}
}

/// Records nothing: the request path.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTrace;

impl Recorder for NoTrace {
    const ON: bool = false;
}

impl Recorder for Trace {
    const ON: bool = true;

    fn tenant(&mut self, tenant: Option<&str>) {
        self.tenant = tenant.map(str::to_owned);
    }

    fn rules(&mut self, rev: &Revision, facts: &Facts<'_>, matched: Option<usize>) {
        let upto = matched.map_or(rev.rules.len(), |m| m + 1);
        for r in &rev.rules[..upto] {
            let failed = r.when.first_failing(facts);
            self.rules.push(RuleTrace {
                rule: r.name.clone(),
                at: r.origin.to_string(),
                matched: failed.is_none(),
                failed: failed.map(str::to_owned),
            });
        }
    }

    fn default_rule(&mut self, name: &str) {
        self.default_rule = Some(name.to_owned());
    }

    fn candidate(&mut self, candidate: CandidateTrace) {
        self.candidates.push(candidate);
    }

    fn score(&mut self, linked_index: usize, score: f64) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.linked_index == linked_index) {
            c.score = Some(score);
        }
    }

    fn distance(&mut self, linked_index: usize, km: f64) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.linked_index == linked_index) {
            c.distance_km = Some(km);
        }
    }

    fn location(&mut self, location: LocationTrace) {
        self.location = Some(location);
    }

    fn place(&mut self, place: PlaceTrace) {
        self.place = Some(place);
    }
}

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
    /// Where `location` conditions saw the device, when a rule or tenant had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<PlaceTrace>,
}

/// The facts `location` conditions used: country and continent with their sources, the location, and
/// which of the revision's fences hold it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PlaceTrace {
    /// ISO 3166-1 alpha-2 code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Where it came from (`payload`, `ip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub country_source: Option<FactSource>,
    /// Continent code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continent: Option<String>,
    /// Where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub continent_source: Option<FactSource>,
    /// The location.
    pub location: LocationTrace,
    /// The fences (of those the policy names) that hold the location.
    pub within: Vec<String>,
}

impl PlaceTrace {
    pub(super) fn new(p: &Place, fences: &[std::sync::Arc<crate::geo::Fence>]) -> Self {
        let point = p.located.location.map(|l| l.point);
        PlaceTrace {
            country: p.country.map(|c| c.code.as_str().to_owned()),
            country_source: p.country.map(|c| c.source),
            continent: p.continent.map(|c| c.code.as_str().to_owned()),
            continent_source: p.continent.map(|c| c.source),
            location: LocationTrace::new(&p.located),
            within: fences
                .iter()
                .filter(|f| point.is_some_and(|at| f.contains(at)))
                .map(|f| f.name.clone())
                .collect(),
        }
    }
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
