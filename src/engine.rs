//! The decision engine: which hub a device goes to, with what twin and payload, and why.
//!
//! [`decide`] is a pure, synchronous function of the request and the compiled revision: no I/O, no clock,
//! no globals. The HTTP server, `explain`, `test` and `simulate` all run it. It finds the device's tenant,
//! the first matching rule (or the default rule), applies the reprovisioning semantics (never-reprovision
//! keeps the current hub; a sticky rule keeps it while it is a candidate, except for devices in the
//! rebalance wave), builds the candidates (linked hubs the selector picks, minus disabled ones, draining
//! ones only for their own devices) and lets the strategy choose. The result records the rule, strategy,
//! hub, stickiness and reasons. Each step is a function of its own, called in order from
//! [`decide_with`]; a [`Recorder`] sees every step: [`NoTrace`] (the server, `test`, `simulate`) compiles
//! to nothing, [`Trace`] (`explain`) keeps everything. Both run the same code, rule index included.

pub mod locate;
pub mod rendezvous;
mod trace;

use std::fmt;

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::dps::AllocationRequest;
use crate::geo::{self, GeoIp};
use crate::hashing::rebalance_bucket;
use crate::policy::condition::Facts;
use crate::policy::template::{Budget, ValueTemplate, Vars, write_json_object};
use crate::policy::{
    Action, Fallback, GeoSettings, HubState, Revision, Rule, Selector, Strategy, StrategyName, UnknownLinkedHubs,
};
use locate::{LazyPlace, LocationSource, Unknown};
use rendezvous::Entrant;
pub use trace::{CandidateTrace, LocationTrace, NoTrace, PlaceTrace, Recorder, RuleTrace, Trace};

/// IoT Hub's limit on twin tags, in bytes of JSON.
pub const TWIN_TAGS_LIMIT: usize = 8 * 1024;
/// IoT Hub's limit on desired properties, in bytes of JSON.
pub const TWIN_DESIRED_LIMIT: usize = 32 * 1024;
/// The largest payload returned to a device, in bytes of JSON (DPS messages are at most 96 KB).
pub const PAYLOAD_LIMIT: usize = 32 * 1024;

/// The outcome of one decision, independent of the request's lifetime (hubs are indices into its
/// `linkedHubs`), so it can be cached and rendered later.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What happens to the device.
    pub outcome: Outcome,
    /// Index of the rule that decided (`None`: no rule matched and there is no default).
    pub rule: Option<usize>,
    /// Index of the device's tenant.
    pub tenant: Option<usize>,
    /// Why, in order.
    pub reasons: Vec<Reason>,
}

/// What happens to the device.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Assigned to a hub.
    Assigned(Assignment),
    /// A rule rejected the device.
    Rejected {
        /// 4xx status.
        status: u16,
    },
    /// No rule matched without a default, or the rule has no eligible hub.
    NoEligibleHub,
    /// The rendered twin or payload exceeds IoT Hub's or DPS's limits.
    TooLarge {
        /// Which part.
        part: &'static str,
        /// Its size in bytes; `None` when rendering stopped as soon as it was certain to be over.
        size: Option<usize>,
        /// The limit.
        limit: usize,
    },
}

/// A hub assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// Index into the request's `linkedHubs`.
    pub linked: usize,
    /// Catalogue index of the hub, when catalogued.
    pub hub: Option<usize>,
    /// The strategy of the rule (for a sticky or never-reprovision decision, the one that would have run).
    pub strategy: StrategyName,
    /// Whether the device stayed on its current hub.
    pub sticky: bool,
    /// The initial twin, when the policy gives one: compact JSON text, as `serde_json` would write it.
    pub initial_twin: Option<Vec<u8>>,
    /// The device payload, when the policy gives one: compact JSON text.
    pub payload: Option<Vec<u8>>,
}

/// One step of the reasoning, recorded on every decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The rule's conditions held.
    RuleMatched,
    /// No rule matched; the default rule decided.
    DefaultRule,
    /// No rule matched and there is no default rule.
    NoRuleMatched,
    /// The rule rejects the device.
    RuleRejects,
    /// `updateHubAssignment` is false: the device stays on its current hub.
    NeverReprovision,
    /// `updateHubAssignment` is false but the current hub is not linked, so a hub is chosen.
    NeverReprovisionButCurrentNotLinked,
    /// The current hub is still a candidate and the rule is sticky.
    Sticky,
    /// The device is in the rule's rebalance wave: stickiness ignored.
    Rebalancing,
    /// The rule is not sticky.
    NotSticky,
    /// The current hub is not a candidate (not linked, not selected, disabled or unknown).
    CurrentHubNotCandidate,
    /// The rule's selector leaves no eligible linked hub.
    NoCandidates,
    /// geo-latency located the device.
    Located(LocationSource),
    /// geo-latency could not locate the device; the fallback decides.
    LocationUnknown(Unknown),
    /// No candidate has coordinates; the fallback decides.
    NoCandidateCoordinates,
    /// geo-latency kept the current hub: no candidate is nearer by more than `hysteresis_km`.
    HysteresisKept,
    /// This many candidates lie within `tie_band_km` of the nearest and were split by weighted hashing.
    TieBand(u32),
    /// The strategy chose among this many candidates.
    Chose(StrategyName, u32),
    /// A known DPS field sits at the wrong level of the request and was not read.
    Misplaced(crate::dps::Misplaced),
}

impl fmt::Display for Reason {
    /// Written piece by piece (no format strings): every decision log line carries the reasons.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |f: &mut fmt::Formatter<'_>, n: u32| f.write_str(itoa::Buffer::new().format(n));
        match self {
            Reason::RuleMatched => f.write_str("rule matched"),
            Reason::DefaultRule => f.write_str("no rule matched: default rule"),
            Reason::NoRuleMatched => f.write_str("no rule matched and no default_rule"),
            Reason::RuleRejects => f.write_str("rule rejects the device"),
            Reason::NeverReprovision => f.write_str("updateHubAssignment is false: kept the current hub"),
            Reason::NeverReprovisionButCurrentNotLinked => {
                f.write_str("updateHubAssignment is false but the current hub is not linked")
            }
            Reason::Sticky => f.write_str("sticky: current hub is still a candidate"),
            Reason::Rebalancing => f.write_str("in the rebalance wave: stickiness ignored"),
            Reason::NotSticky => f.write_str("rule is not sticky"),
            Reason::CurrentHubNotCandidate => f.write_str("current hub is no longer a candidate"),
            Reason::NoCandidates => f.write_str("no linked hub is eligible for the rule"),
            Reason::Located(src) => {
                f.write_str("device located by ")?;
                f.write_str(src.as_str())
            }
            Reason::LocationUnknown(why) => {
                f.write_str("location unknown (")?;
                fmt::Display::fmt(why, f)?;
                f.write_str("): fallback decides")
            }
            Reason::NoCandidateCoordinates => f.write_str("no candidate hub has coordinates: fallback decides"),
            Reason::HysteresisKept => {
                f.write_str("kept the current hub: no candidate is nearer by more than hysteresis_km")
            }
            Reason::TieBand(n) => {
                count(f, *n)?;
                f.write_str(" candidates within tie_band_km of the nearest: split by weighted-hash")
            }
            Reason::Misplaced(m) => f.write_str(m.as_str()),
            Reason::Chose(s, n) => {
                f.write_str(s.as_str())?;
                f.write_str(" chose among ")?;
                count(f, *n)?;
                f.write_str(" candidate(s)")
            }
        }
    }
}

/// A linked hub resolved against the catalogue.
struct Linked {
    index: usize,
    hub: Option<usize>,
    key: u64,
}

/// The request's facts, gathered once.
struct Ctx<'c, 'a> {
    req: &'c AllocationRequest<'a>,
    rev: &'c Revision,
    geoip: Option<&'c GeoIp>,
    device_key: u64,
    tenant: Option<usize>,
    current: Option<usize>,
}

/// Decides one request against one revision, with a GeoIP database when one is configured. Pure: the
/// same inputs always give the same decision. Records nothing.
pub fn decide(req: &AllocationRequest<'_>, rev: &Revision, geoip: Option<&GeoIp>) -> Decision {
    decide_with(req, rev, geoip, &mut NoTrace)
}

/// [`decide`], recording every step in a [`Trace`]: the same code, rule index included.
pub fn decide_traced(req: &AllocationRequest<'_>, rev: &Revision, geoip: Option<&GeoIp>) -> (Decision, Trace) {
    let mut trace = Trace::default();
    let decision = decide_with(req, rev, geoip, &mut trace);
    (decision, trace)
}

/// The decision, step by step: the subject's facts and tenant, the first matching rule (through the rule
/// index), the linked hubs, never-reprovision, the candidates, stickiness and the rebalance wave, the
/// strategy, and the rendered twin and payload. `rec` sees each step; [`NoTrace`] compiles to nothing.
pub fn decide_with<R: Recorder>(
    req: &AllocationRequest<'_>,
    rev: &Revision,
    geoip: Option<&GeoIp>,
    rec: &mut R,
) -> Decision {
    let reg_lower = ascii_lower(req.registration_id.as_str());
    let current_lower = req.current_hub.as_ref().map(|h| ascii_lower(h.as_str()));
    let place = LazyPlace::new(req.payload.as_ref(), &rev.settings.geo, geoip);
    let (facts, tenant) = subject(req, rev, &reg_lower, current_lower.as_deref(), &place, rec);
    let mut reasons = Vec::with_capacity(4);
    reasons.extend(req.misplaced.iter().map(|m| Reason::Misplaced(*m)));
    let decision = |rule, outcome, reasons| Decision {
        outcome,
        rule,
        tenant,
        reasons,
    };

    let matched = match_rule(rev, &facts, &mut reasons, rec);
    if R::ON
        && let Some(p) = place.computed()
    {
        rec.place(PlaceTrace::new(p, &rev.fences));
    }
    let Some(rule_index) = matched else {
        return decision(None, Outcome::NoEligibleHub, reasons);
    };
    let rule = &rev.rules[rule_index];
    let decision = |outcome, reasons| decision(Some(rule_index), outcome, reasons);
    let strategy = match &rule.action {
        Action::Reject(r) => {
            reasons.push(Reason::RuleRejects);
            return decision(Outcome::Rejected { status: r.status }, reasons);
        }
        Action::Assign(s) => s,
    };

    let linked = link(req, rev);
    let current = current_slot(req, rev, &linked, current_lower.as_deref());
    let cx = Ctx {
        req,
        rev,
        geoip,
        device_key: rev.settings.seed.device_key(req.registration_id.as_str()),
        tenant,
        current,
    };

    if !req.enrollment.update_hub_assignment && req.current_hub.is_some() {
        if let Some(c) = current {
            reasons.push(Reason::NeverReprovision);
            return decision(cx.assign(rule, c, linked[c].hub, strategy.name(), true), reasons);
        }
        reasons.push(Reason::NeverReprovisionButCurrentNotLinked);
    }

    let mut candidates = Candidates::new();
    cx.candidates(rule, &linked, &mut candidates, rec);
    if candidates.is_empty() {
        reasons.push(Reason::NoCandidates);
        return decision(Outcome::NoEligibleHub, reasons);
    }

    if let Some(kept) = cx.stay(rule, &candidates, &mut reasons) {
        return decision(cx.assign(rule, kept.index, kept.hub, strategy.name(), true), reasons);
    }

    let chosen = cx.choose(strategy, &candidates, &mut reasons, rec);
    decision(
        cx.assign(rule, chosen.index, chosen.hub, strategy.name(), false),
        reasons,
    )
}

/// Step 1: the facts conditions test, and the device's tenant (the first whose conditions hold).
fn subject<'f, R: Recorder>(
    req: &'f AllocationRequest<'_>,
    rev: &'f Revision,
    reg_lower: &'f str,
    current_lower: Option<&'f str>,
    place: &'f LazyPlace<'f>,
    rec: &mut R,
) -> (Facts<'f>, Option<usize>) {
    let mut facts = Facts {
        registration_id: reg_lower,
        device_id: req.device_id(),
        enrollment_group: req.enrollment.group_id.as_ref().map(|g| g.as_str()),
        enrollment_kind: req.enrollment.kind,
        attestation: req.attestation_kind(),
        iot_edge: req.enrollment.iot_edge,
        current_hub: current_lower,
        tenant: None,
        payload: req.payload.as_ref(),
        x509: req.x509.as_ref(),
        whereabouts: Some(place),
    };
    let tenant = rev.tenants.iter().position(|t| t.when.holds(&facts));
    facts.tenant = tenant.map(|t| rev.tenants[t].id.as_str());
    rec.tenant(facts.tenant);
    (facts, tenant)
}

/// Step 2: the first rule whose conditions hold, through the rule index when the policy is big enough
/// for it to pay, else the default rule.
fn match_rule<R: Recorder>(rev: &Revision, facts: &Facts<'_>, reasons: &mut Vec<Reason>, rec: &mut R) -> Option<usize> {
    let matched = first_match(rev, facts);
    if R::ON {
        rec.rules(rev, facts, matched);
    }
    match (matched, rev.default_rule) {
        (Some(i), _) => {
            reasons.push(Reason::RuleMatched);
            Some(i)
        }
        (None, Some(d)) => {
            reasons.push(Reason::DefaultRule);
            rec.default_rule(&rev.rules[d].name);
            Some(d)
        }
        (None, None) => {
            reasons.push(Reason::NoRuleMatched);
            None
        }
    }
}

/// The first rule whose conditions hold: the index's candidates in rule order (a rule the index leaves
/// out cannot match), or every rule.
fn first_match(rev: &Revision, facts: &Facts<'_>) -> Option<usize> {
    if rev.rule_index.enabled() {
        let mut candidates = crate::policy::index::Candidates::new();
        rev.rule_index
            .candidates(facts.enrollment_group, facts.registration_id, &mut candidates);
        candidates
            .iter()
            .map(|&i| i as usize)
            .find(|&i| rev.rules[i].when.holds(facts))
    } else {
        first_match_scan(rev, facts)
    }
}

/// The first rule whose conditions hold, testing every rule (what the index must agree with).
fn first_match_scan(rev: &Revision, facts: &Facts<'_>) -> Option<usize> {
    rev.rules.iter().position(|r| r.when.holds(facts))
}

/// Step 3: `linkedHubs` resolved against the catalogue, with their rendezvous keys.
fn link(req: &AllocationRequest<'_>, rev: &Revision) -> SmallVec<[Linked; 64]> {
    let seed = rev.settings.seed;
    // Linked hubs often come in catalogue order: try the slot after the previous match first.
    let mut hint = 0;
    req.linked_hubs
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let hub = rev.find_hub_from(host.as_str(), hint);
            if let Some(h) = hub {
                hint = h + 1;
            }
            let key = hub.map_or_else(|| seed.host_key(host.as_str()), |h| rev.hubs[h].key);
            Linked { index, hub, key }
        })
        .collect()
}

/// The current hub's place in `linkedHubs`: by catalogue index when catalogued (no string compares).
fn current_slot(
    req: &AllocationRequest<'_>,
    rev: &Revision,
    linked: &[Linked],
    current_lower: Option<&str>,
) -> Option<usize> {
    current_lower.and_then(|c| match rev.find_hub(c) {
        Some(hub) => linked.iter().find(|l| l.hub == Some(hub)).map(|l| l.index),
        None => req.linked_hubs.iter().position(|h| h.as_str().eq_ignore_ascii_case(c)),
    })
}

/// Candidates, on the stack for up to 64 (DPS links at most 50 hubs).
type Candidates = SmallVec<[Cand; 64]>;

/// A candidate: its linked index and catalogue index.
#[derive(Debug, Clone, Copy)]
struct Cand {
    index: usize,
    hub: Option<usize>,
    key: u64,
}

impl Ctx<'_, '_> {
    /// Linked hubs the rule may choose, in the selector's order: a host list's order, else catalogue
    /// order followed by uncatalogued linked hubs in `linkedHubs` order.
    /// Step 4: the candidates.
    fn candidates<R: Recorder>(&self, rule: &Rule, linked: &[Linked], out: &mut Candidates, rec: &mut R) {
        let rev = self.rev;
        let include_unknown = rev.settings.unknown_linked_hubs == UnknownLinkedHubs::Include;
        let tenant = self.tenant.map(|t| rev.tenants[t].id.as_str());
        let mut note = |l: &Linked, why: Option<&str>| {
            if R::ON {
                rec.candidate(CandidateTrace::new(rev, self.req, l.index, l.hub, why));
            }
        };
        for l in linked {
            let host = self.req.linked_hubs[l.index].as_str();
            let selected = match (&rule.selector, l.hub) {
                (Selector::All, Some(_)) => true,
                (Selector::All, None) => include_unknown,
                (Selector::List(list), Some(h)) => list.contains(&h),
                (Selector::List(_), None) => false,
                (
                    Selector::Filter {
                        tags,
                        host_contains,
                        regions,
                    },
                    hub,
                ) => {
                    let hub = hub.map(|h| &rev.hubs[h]);
                    let host_ok = host_contains.as_deref().is_none_or(|s| contains_ignore_case(host, s));
                    let known_ok = hub.is_some() || (include_unknown && tags.is_empty() && regions.is_none());
                    let tags_ok = tags.iter().all(|(k, tpl)| {
                        let want = tpl.render(&tenant_only_vars(tenant));
                        hub.and_then(|h| h.tags.get(k)).is_some_and(|v| *v == want)
                    });
                    let regions_ok = regions
                        .as_ref()
                        .is_none_or(|rs| hub.and_then(|h| h.region).is_some_and(|r| rs.contains(&r.name)));
                    host_ok && known_ok && tags_ok && regions_ok
                }
            };
            if !selected {
                let why = if l.hub.is_none() && !include_unknown {
                    "not in the catalogue (unknown_linked_hubs = \"ignore\")"
                } else {
                    "not selected by the rule"
                };
                note(l, Some(why));
                continue;
            }
            let state = l.hub.map_or(HubState::Active, |h| rev.hubs[h].state);
            match state {
                HubState::Disabled => note(l, Some("disabled")),
                HubState::Draining if self.current != Some(l.index) => {
                    note(l, Some("draining: takes no new devices"));
                }
                _ => {
                    note(l, None);
                    out.push(Cand {
                        index: l.index,
                        hub: l.hub,
                        key: l.key,
                    });
                }
            }
        }
        // Only `static` (and a static fallback) depends on the order; hashing and distances do not.
        let ordered = matches!(
            rule.action,
            Action::Assign(
                Strategy::Static
                    | Strategy::GeoLatency {
                        fallback: Fallback::Static,
                        ..
                    }
            )
        );
        if ordered {
            match &rule.selector {
                Selector::List(list) => out.sort_by_key(|c| c.hub.and_then(|h| list.iter().position(|&x| x == h))),
                _ => out.sort_by_key(|c| (c.hub.is_none(), c.hub.unwrap_or(0), c.index)),
            }
        }
    }

    /// Step 5: the current hub kept, when the device may stay there: never-reprovision was handled
    /// before; here a sticky rule keeps a device on a hub that is still a candidate, except for devices in
    /// the rule's rebalance wave.
    fn stay(&self, rule: &Rule, candidates: &[Cand], reasons: &mut Vec<Reason>) -> Option<Cand> {
        let c = self.current?;
        let Some(&cand) = candidates.iter().find(|l| l.index == c) else {
            reasons.push(Reason::CurrentHubNotCandidate);
            return None;
        };
        if !rule.sticky {
            reasons.push(Reason::NotSticky);
            None
        } else if rule.rebalance_bp > 0 && rebalance_bucket(self.device_key) < rule.rebalance_bp {
            reasons.push(Reason::Rebalancing);
            None
        } else {
            reasons.push(Reason::Sticky);
            Some(cand)
        }
    }

    /// Step 6: the strategy chooses among the candidates.
    fn choose<R: Recorder>(
        &self,
        strategy: &Strategy,
        candidates: &[Cand],
        reasons: &mut Vec<Reason>,
        rec: &mut R,
    ) -> Cand {
        match strategy {
            Strategy::Static => self.first_or_hashed(Fallback::Static, candidates, reasons, rec),
            Strategy::WeightedHash => self.first_or_hashed(Fallback::WeightedHash, candidates, reasons, rec),
            Strategy::GeoLatency { geo, fallback } => self.geo_latency(candidates, geo, *fallback, reasons, rec),
        }
    }

    /// `static` (the first candidate) or `weighted-hash`: a strategy of its own, or geo-latency's fallback.
    fn first_or_hashed<R: Recorder>(
        &self,
        how: Fallback,
        candidates: &[Cand],
        reasons: &mut Vec<Reason>,
        rec: &mut R,
    ) -> Cand {
        let n = candidates.len() as u32;
        match how {
            Fallback::Static => {
                reasons.push(Reason::Chose(StrategyName::Static, n));
                candidates[0]
            }
            Fallback::WeightedHash => {
                reasons.push(Reason::Chose(StrategyName::WeightedHash, n));
                self.weighted(candidates, rec)
            }
        }
    }

    fn weighted<R: Recorder>(&self, candidates: &[Cand], rec: &mut R) -> Cand {
        let entrant = |c: &Cand| Entrant {
            key: c.key,
            weight: c.hub.map_or(1, |h| self.rev.hubs[h].weight),
            host: self.req.linked_hubs[c.index].as_str(),
        };
        if R::ON {
            for c in candidates {
                let e = entrant(c);
                rec.score(c.index, rendezvous::score(e.key, e.weight, self.device_key));
            }
        }
        let i = rendezvous::choose(candidates.iter().map(entrant), self.device_key).unwrap_or(0);
        candidates[i]
    }

    /// The nearest candidate; within the tie band, split by weight; the current hub kept under hysteresis;
    /// the fallback when the device or the candidates have no location.
    fn geo_latency<R: Recorder>(
        &self,
        candidates: &[Cand],
        geo: &GeoSettings,
        fallback: Fallback,
        reasons: &mut Vec<Reason>,
        rec: &mut R,
    ) -> Cand {
        let located = locate::locate(self.req.payload.as_ref(), geo, self.geoip);
        if R::ON {
            rec.location(LocationTrace::new(&located));
        }
        let distances: Vec<(Cand, f64)> = match located.location {
            None => {
                reasons.push(Reason::LocationUnknown(located.why_unknown()));
                Vec::new()
            }
            Some(loc) => {
                reasons.push(Reason::Located(loc.source));
                let d: Vec<(Cand, f64)> = candidates
                    .iter()
                    .filter_map(|c| {
                        let at = self.rev.hubs[c.hub?].location?;
                        Some((*c, geo::distance_km(loc.point, at)))
                    })
                    .collect();
                if d.is_empty() {
                    reasons.push(Reason::NoCandidateCoordinates);
                }
                d
            }
        };
        if R::ON {
            for (c, km) in &distances {
                rec.distance(c.index, *km);
            }
        }
        let Some(nearest) = distances.iter().map(|(_, d)| *d).min_by(f64::total_cmp) else {
            return self.first_or_hashed(fallback, candidates, reasons, rec);
        };
        if let Some(&(cur, d)) = distances.iter().find(|(c, _)| Some(c.index) == self.current)
            && d - nearest <= geo.hysteresis_km
        {
            reasons.push(Reason::HysteresisKept);
            return cur;
        }
        let band: Vec<Cand> = distances
            .iter()
            .filter(|(_, d)| *d <= nearest + geo.tie_band_km)
            .map(|(c, _)| *c)
            .collect();
        if band.len() > 1 {
            reasons.push(Reason::TieBand(band.len() as u32));
        }
        reasons.push(Reason::Chose(StrategyName::GeoLatency, distances.len() as u32));
        self.weighted(&band, rec)
    }

    /// Step 7: the assignment, with the twin and payload rendered for the chosen hub.
    fn assign(&self, rule: &Rule, linked: usize, hub: Option<usize>, strategy: StrategyName, sticky: bool) -> Outcome {
        let rev = self.rev;
        let catalogued = hub.map(|h| &rev.hubs[h]);
        let vars = Vars {
            registration_id: self.req.registration_id.as_str(),
            device_id: self.req.device_id(),
            enrollment_group: self.req.enrollment.group_id.as_ref().map(|g| g.as_str()),
            tenant: self.tenant.map(|t| rev.tenants[t].id.as_str()),
            rule: &rule.name,
            hub: self.req.linked_hubs[linked].as_str(),
            hub_region: catalogued.and_then(|h| h.region).map(|r| r.name),
            hub_tags: catalogued.map(|h| &h.tags),
            revision: &rev.id,
            payload: self.req.payload.as_ref(),
        };
        let tenant_twin = self.tenant.map(|t| &rev.tenants[t].twin);
        let stopped = |part, limit| Outcome::TooLarge {
            part,
            size: None,
            limit,
        };
        // The twin is written as JSON text, `{"tags":{..},"properties":{"desired":{..}}}` with the empty
        // parts left out; each part's size is checked once both are rendered, tags first.
        let mut twin = Vec::new();
        let tags_entries = merged(tenant_twin.map_or(&[][..], |t| &t.tags), &rule.twin.tags);
        let desired_entries = merged(tenant_twin.map_or(&[][..], |t| &t.desired), &rule.twin.desired);
        let mut tags_size = 0;
        if !tags_entries.is_empty() {
            twin.extend_from_slice(b"{\"tags\":");
            let at = twin.len();
            let mut budget = Budget::new(TWIN_TAGS_LIMIT);
            if write_json_object(tags_entries, &vars, &mut budget, &mut twin).is_err() {
                return stopped("twin tags", TWIN_TAGS_LIMIT);
            }
            tags_size = twin.len() - at;
        }
        let mut desired_size = 0;
        if !desired_entries.is_empty() {
            twin.extend_from_slice(if twin.is_empty() {
                b"{\"properties\":{\"desired\":"
            } else {
                b",\"properties\":{\"desired\":"
            });
            let at = twin.len();
            let mut budget = Budget::new(TWIN_DESIRED_LIMIT);
            if write_json_object(desired_entries, &vars, &mut budget, &mut twin).is_err() {
                return stopped("desired properties", TWIN_DESIRED_LIMIT);
            }
            desired_size = twin.len() - at;
            twin.push(b'}');
        }
        for (part, size, limit) in [
            ("twin tags", tags_size, TWIN_TAGS_LIMIT),
            ("desired properties", desired_size, TWIN_DESIRED_LIMIT),
        ] {
            if size > limit {
                return Outcome::TooLarge {
                    part,
                    size: Some(size),
                    limit,
                };
            }
        }
        let initial_twin = if twin.is_empty() {
            None
        } else {
            twin.push(b'}');
            Some(twin)
        };
        let payload = match &rule.payload {
            Some(p) => {
                let mut out = Vec::new();
                if p.write_json_within(&vars, &mut Budget::new(PAYLOAD_LIMIT), &mut out)
                    .is_err()
                {
                    return stopped("payload", PAYLOAD_LIMIT);
                }
                if out.len() > PAYLOAD_LIMIT {
                    return Outcome::TooLarge {
                        part: "payload",
                        size: Some(out.len()),
                        limit: PAYLOAD_LIMIT,
                    };
                }
                Some(out)
            }
            None => None,
        };
        Outcome::Assigned(Assignment {
            linked,
            hub,
            strategy,
            sticky,
            initial_twin,
            payload,
        })
    }
}

/// The ASCII-lowercased string, borrowed when it already is (DPS ids and hosts usually are).
fn ascii_lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn tenant_only_vars(tenant: Option<&str>) -> Vars<'_> {
    Vars {
        registration_id: "",
        device_id: "",
        enrollment_group: None,
        tenant,
        rule: "",
        hub: "",
        hub_region: None,
        hub_tags: None,
        revision: "",
        payload: None,
    }
}

fn contains_ignore_case(haystack: &str, lower_needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), lower_needle.as_bytes());
    n.is_empty()
        || h.windows(n.len())
            .any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
}

/// Tenant entries first, then the rule's: a key both give keeps the tenant's position and the rule's value.
/// Only the entries that stay are rendered, by the caller, within a budget of the limit's bytes of keys and
/// strings (a lower bound of the JSON size), so rendering stops as soon as the result is certain to be over
/// the limit.
fn merged<'t>(
    tenant: &'t [(String, ValueTemplate)],
    rule: &'t [(String, ValueTemplate)],
) -> SmallVec<[(&'t str, &'t ValueTemplate); 16]> {
    let mut entries: SmallVec<[(&str, &ValueTemplate); 16]> = tenant.iter().map(|(k, t)| (k.as_str(), t)).collect();
    for (k, t) in rule {
        match entries.iter_mut().find(|(key, _)| *key == k) {
            Some(e) => e.1 = t,
            None => entries.push((k.as_str(), t)),
        }
    }
    entries
}

#[cfg(test)]
mod tests;
