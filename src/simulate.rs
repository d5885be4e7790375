//! Fleet simulation: what a policy change does to a whole fleet before it ships.
//!
//! Every device goes through the same [`engine::decide`] the server calls, in parallel (rayon) over
//! chunks of the fleet, and the per-device outcomes are folded in input order, so the result is the same
//! whatever the thread count and memory does not grow with the fleet. For each device:
//!
//! - **before** is the baseline policy's decision for the device as given (with its current hub, if the
//!   fleet says one); without a baseline it is the device's current hub;
//! - **after** is the new policy's decision when the device re-registers from its *before* hub: what will
//!   really happen, stickiness and `rebalance_percent` included;
//! - **target** (only when the new policy uses `rebalance_percent`) is the new policy's placement from
//!   scratch, ignoring stickiness: where the device ends up once every wave has run.
//!
//! A device moves when its before and after hubs differ. `fleet` reads the inputs; `report` prints the
//! table and the JSON; `html` writes the self-contained report.

pub mod fleet;
pub mod html;
pub mod report;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::RwLock;

use rayon::prelude::*;
use serde_json::Value;

use crate::dps::{AllocationRequest, Enrollment, EnrollmentKind, Str};
use crate::engine::{self, Decision, Outcome, Reason};
use crate::geo::GeoIp;
use crate::hashing::SeenIds;
use crate::policy::Revision;
use fleet::{Device, Fleet, FleetError};
pub use report::Summary;

/// What the simulation compares.
pub struct Setup<'a> {
    /// The new policy.
    pub policy: &'a Revision,
    /// The policy in production, when comparing.
    pub baseline: Option<&'a Revision>,
    /// The GeoIP database for devices that report IPs.
    pub geoip: Option<&'a GeoIp>,
    /// Enrollment group of synthetic devices (none: individual enrollments).
    pub synthetic_group: Option<String>,
    /// Seed of synthetic registration ids.
    pub seed: u64,
}

/// Where outputs go.
#[derive(Default)]
pub struct Sinks<'s> {
    /// `registration_id,from_hub,to_hub` for every device that moves.
    pub moves: Option<csv::Writer<&'s mut dyn Write>>,
    /// `registration_id,status,hub,rule` for every device's new decision.
    pub decisions: Option<csv::Writer<&'s mut dyn Write>>,
}

impl<'s> Sinks<'s> {
    /// CSV writers over the given outputs (RFC 4180 quoting where a field needs it).
    pub fn new(moves: Option<&'s mut dyn Write>, decisions: Option<&'s mut dyn Write>) -> Self {
        Sinks {
            moves: moves.map(csv::Writer::from_writer),
            decisions: decisions.map(csv::Writer::from_writer),
        }
    }

    /// Flushes both writers.
    pub fn flush(&mut self) -> std::io::Result<()> {
        for w in [self.moves.as_mut(), self.decisions.as_mut()].into_iter().flatten() {
            w.flush()?;
        }
        Ok(())
    }
}

/// Where a device is under one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Not placed (no current hub, no baseline).
    Nowhere,
    /// On a hub (interned id).
    Hub(u32),
    /// Rejected by a rule (rule index).
    Rejected(u32),
    /// No eligible hub, or a twin over the limits.
    Unplaced,
    /// The request itself is invalid.
    Invalid,
}

/// One device's result, before folding.
struct DeviceResult {
    registration_id: String,
    before: Place,
    after: Place,
    target: Option<Place>,
    rule: Option<u32>,
    rebalancing: bool,
    unknown_location: bool,
}

/// Hub names, interned so outcomes are small and comparable across both policies.
struct Hubs {
    ids: RwLock<HashMap<String, u32>>,
    names: RwLock<Vec<String>>,
}

impl Hubs {
    fn new() -> Self {
        Hubs {
            ids: RwLock::new(HashMap::new()),
            names: RwLock::new(Vec::new()),
        }
    }

    fn id(&self, host: &str) -> u32 {
        let key: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            host.to_ascii_lowercase().into()
        } else {
            host.into()
        };
        if let Some(id) = self.ids.read().ok().and_then(|m| m.get(key.as_ref()).copied()) {
            return id;
        }
        let (Ok(mut ids), Ok(mut names)) = (self.ids.write(), self.names.write()) else {
            return u32::MAX;
        };
        if let Some(id) = ids.get(key.as_ref()) {
            return *id;
        }
        let id = names.len() as u32;
        names.push(host.to_owned());
        ids.insert(key.into_owned(), id);
        id
    }

    fn names(&self) -> Vec<String> {
        self.names.read().map(|n| n.clone()).unwrap_or_default()
    }
}

/// The counters a run folds device results into.
#[derive(Default)]
pub(crate) struct Tally {
    pub devices: u64,
    pub before: HashMap<u32, u64>,
    pub after: HashMap<u32, u64>,
    pub target: HashMap<u32, u64>,
    pub moves: BTreeMap<(u32, u32), u64>,
    pub moved: u64,
    pub new_devices: u64,
    pub moves_per_rule: BTreeMap<u32, u64>,
    pub assignments_per_rule: BTreeMap<u32, u64>,
    pub rejections: BTreeMap<u32, u64>,
    pub unplaced: u64,
    pub invalid: u64,
    pub unknown_location: u64,
    pub wave: u64,
    pub pending: u64,
    pub lost: u64,
    pub duplicates: u64,
}

/// Runs a simulation over a fleet. `progress` is told how many devices are done after each chunk.
pub fn run(
    setup: &Setup<'_>,
    fleet: &mut Fleet,
    sinks: &mut Sinks<'_>,
    progress: &dyn Fn(u64),
) -> Result<Summary, FleetError> {
    let started = std::time::Instant::now();
    let hubs = Hubs::new();
    // Catalogue hubs first, in catalogue order (new policy, then any only the baseline knows).
    let new_ids: Vec<u32> = setup.policy.hubs.iter().map(|h| hubs.id(&h.host)).collect();
    let base_ids: Vec<u32> = setup
        .baseline
        .iter()
        .flat_map(|b| b.hubs.iter())
        .map(|h| hubs.id(&h.host))
        .collect();
    let catalogues = Catalogues {
        new_ids,
        base_ids,
        names: hubs.names(),
    };
    let waves = setup.policy.rules.iter().any(|r| r.rebalance_bp > 0);
    let mut tally = Tally::default();
    if let Some(w) = sinks.moves.as_mut() {
        w.write_record(["registration_id", "from_hub", "to_hub"])
            .map_err(csv_error)?;
    }
    if let Some(w) = sinks.decisions.as_mut() {
        w.write_record(["registration_id", "status", "hub", "rule"])
            .map_err(csv_error)?;
    }
    // A fleet file may list a device twice; synthetic devices are distinct by construction.
    let mut seen = fleet.len_hint().is_none().then(SeenIds::default);
    while let Some(chunk) = fleet.next_chunk()? {
        let results: Vec<DeviceResult> = chunk
            .par_iter()
            .map(|device| simulate_one(setup, &catalogues, &hubs, device, waves))
            .collect();
        let names = hubs.names();
        for r in &results {
            if let Some(seen) = seen.as_mut()
                && !r.registration_id.is_empty()
                && !seen.first(&r.registration_id)
            {
                tally.duplicates += 1;
                continue;
            }
            fold(&mut tally, r);
            write_outputs(sinks, setup.policy, &names, r)?;
        }
        progress(tally.devices);
    }
    Ok(report::summarize(
        setup,
        &tally,
        &hubs.names(),
        waves,
        started.elapsed(),
    ))
}

/// Each policy's catalogue: what synthetic and CSV devices are linked to under it (a hub that only the
/// new policy lists did not exist, so was not linked, before), and its hubs' interned ids.
struct Catalogues {
    new_ids: Vec<u32>,
    base_ids: Vec<u32>,
    names: Vec<String>,
}

fn simulate_one(setup: &Setup<'_>, cat: &Catalogues, hubs: &Hubs, device: &Device, waves: bool) -> DeviceResult {
    let synthetic_id;
    // For devices without linkedHubs of their own, the hubs each policy links them to.
    let mut own_links: Option<(Option<&Revision>, &Revision)> = None;
    let mut req = match device {
        Device::Request(line) => match AllocationRequest::parse(line.as_bytes()) {
            Ok(r) => r,
            Err(_) => {
                return DeviceResult {
                    registration_id: String::new(),
                    before: Place::Invalid,
                    after: Place::Invalid,
                    target: None,
                    rule: None,
                    rebalancing: false,
                    unknown_location: false,
                };
            }
        },
        Device::Record {
            registration_id,
            current_hub,
            enrollment_group,
            payload,
        } => {
            own_links = Some((setup.baseline, setup.policy));
            request(
                registration_id,
                current_hub.as_deref(),
                enrollment_group.as_deref(),
                payload.clone(),
            )
        }
        Device::Synthetic(n) => {
            synthetic_id = fleet::synthetic_id(setup.seed, *n);
            own_links = Some((setup.baseline, setup.policy));
            request(&synthetic_id, None, setup.synthetic_group.as_deref(), None)
        }
    };
    let registration_id = req.registration_id.as_str().to_owned();

    let before = match setup.baseline {
        Some(base) => {
            if let Some((Some(links), _)) = own_links {
                link(&mut req, links);
            }
            place(&req, &engine::decide(&req, base, setup.geoip), &cat.base_ids, hubs).0
        }
        None => req
            .current_hub
            .as_ref()
            .map_or(Place::Nowhere, |h| Place::Hub(hubs.id(h.as_str()))),
    };
    // The device re-registers from where it is.
    req.current_hub = match before {
        Place::Hub(id) => Some(Str(cat
            .names
            .get(id as usize)
            .map_or_else(|| Cow::Owned(hub_name(hubs, id)), |n| Cow::Borrowed(n.as_str())))),
        _ => None,
    };
    if let Some((_, links)) = own_links {
        link(&mut req, links);
    }
    let decision = engine::decide(&req, setup.policy, setup.geoip);
    let (after, rule) = place(&req, &decision, &cat.new_ids, hubs);
    let rebalancing = decision.reasons.contains(&Reason::Rebalancing);
    let unknown_location = decision.reasons.iter().any(|r| matches!(r, Reason::LocationUnknown(_)));
    let target = waves.then(|| {
        req.current_hub = None;
        if let Some((_, links)) = own_links {
            link(&mut req, links);
        }
        place(
            &req,
            &engine::decide(&req, setup.policy, setup.geoip),
            &cat.new_ids,
            hubs,
        )
        .0
    });
    DeviceResult {
        registration_id,
        before,
        after,
        target,
        rule,
        rebalancing,
        unknown_location,
    }
}

fn hub_name(hubs: &Hubs, id: u32) -> String {
    hubs.names
        .read()
        .ok()
        .and_then(|n| n.get(id as usize).cloned())
        .unwrap_or_default()
}

/// Links a synthetic or CSV device to a policy's catalogue (borrowing the revision's own host strings,
/// which the engine recognises without comparing bytes), plus its current hub when the catalogue lacks
/// it (DPS links the hub a device is on).
fn link<'a>(req: &mut AllocationRequest<'a>, rev: &'a Revision) {
    req.linked_hubs.clear();
    req.linked_hubs
        .extend(rev.hubs.iter().map(|h| Str(Cow::Borrowed(h.host.as_str()))));
    if let Some(c) = &req.current_hub
        && rev.find_hub(c.as_str()).is_none()
    {
        let c = c.clone();
        req.linked_hubs.push(c);
    }
}

/// A request for a CSV row or synthetic device; [`link`] fills its linked hubs per policy.
fn request<'a>(
    id: &'a str,
    current: Option<&'a str>,
    group: Option<&'a str>,
    payload: Option<Value>,
) -> AllocationRequest<'a> {
    AllocationRequest {
        registration_id: Str(Cow::Borrowed(id)),
        current_hub: current.map(|c| Str(Cow::Borrowed(c))),
        current_device_id: None,
        attestation: None,
        x509: None,
        payload,
        misplaced: Vec::new(),
        linked_hubs: Vec::with_capacity(64),
        enrollment: Enrollment {
            kind: if group.is_some() {
                EnrollmentKind::Group
            } else {
                EnrollmentKind::Individual
            },
            group_id: group.map(|g| Str(Cow::Borrowed(g))),
            device_id: None,
            iot_edge: false,
            update_hub_assignment: true,
            attestation_type: None,
        },
    }
}

/// Where a decision put the device; catalogued hubs map through `ids`, others are interned by name.
fn place(req: &AllocationRequest<'_>, d: &Decision, ids: &[u32], hubs: &Hubs) -> (Place, Option<u32>) {
    let rule = d.rule.map(|r| r as u32);
    let p = match &d.outcome {
        Outcome::Assigned(a) => Place::Hub(match a.hub.and_then(|h| ids.get(h)) {
            Some(&id) => id,
            None => hubs.id(req.linked_hubs[a.linked].as_str()),
        }),
        Outcome::Rejected { .. } => Place::Rejected(rule.unwrap_or(u32::MAX)),
        Outcome::NoEligibleHub | Outcome::TooLarge { .. } => Place::Unplaced,
    };
    (p, rule)
}

fn fold(t: &mut Tally, r: &DeviceResult) {
    t.devices += 1;
    if let Place::Hub(h) = r.before {
        *t.before.entry(h).or_default() += 1;
    }
    match r.after {
        Place::Hub(h) => {
            *t.after.entry(h).or_default() += 1;
            if let Some(rule) = r.rule {
                *t.assignments_per_rule.entry(rule).or_default() += 1;
            }
        }
        Place::Rejected(rule) => *t.rejections.entry(rule).or_default() += 1,
        Place::Unplaced => t.unplaced += 1,
        Place::Invalid => t.invalid += 1,
        Place::Nowhere => {}
    }
    match (r.before, r.after) {
        (Place::Hub(a), Place::Hub(b)) if a != b => {
            t.moved += 1;
            *t.moves.entry((a, b)).or_default() += 1;
            if let Some(rule) = r.rule {
                *t.moves_per_rule.entry(rule).or_default() += 1;
            }
            if r.rebalancing {
                t.wave += 1;
            }
        }
        (Place::Hub(_), Place::Rejected(_) | Place::Unplaced) => t.lost += 1,
        (Place::Nowhere, _) => t.new_devices += 1,
        _ => {}
    }
    if let Some(target) = r.target {
        if let Place::Hub(h) = target {
            *t.target.entry(h).or_default() += 1;
        }
        if matches!(r.after, Place::Hub(_)) && target != r.after {
            t.pending += 1;
        }
    }
    if r.unknown_location {
        t.unknown_location += 1;
    }
}

fn write_outputs(
    sinks: &mut Sinks<'_>,
    policy: &Revision,
    names: &[String],
    r: &DeviceResult,
) -> Result<(), FleetError> {
    let name = |id: u32| names.get(id as usize).map_or("", String::as_str);
    if let (Some(w), Place::Hub(a), Place::Hub(b)) = (sinks.moves.as_mut(), r.before, r.after)
        && a != b
    {
        w.write_record([r.registration_id.as_str(), name(a), name(b)])
            .map_err(csv_error)?;
    }
    if let Some(w) = sinks.decisions.as_mut() {
        let rule = r
            .rule
            .and_then(|i| policy.rules.get(i as usize))
            .map_or("", |x| x.name.as_str());
        let (status, hub) = match r.after {
            Place::Hub(h) => ("assigned", name(h)),
            Place::Rejected(_) => ("rejected", ""),
            Place::Unplaced => ("no_eligible_hub", ""),
            Place::Invalid => ("bad_request", ""),
            Place::Nowhere => ("", ""),
        };
        w.write_record([r.registration_id.as_str(), status, hub, rule])
            .map_err(csv_error)?;
    }
    Ok(())
}

fn csv_error(e: csv::Error) -> FleetError {
    FleetError(format!("writing output: {e}"))
}
