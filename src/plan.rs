//! The reprovisioning planner: a move list (`simulate --moves`) into waves under DPS and IoT Hub limits.
//!
//! DPS's guidance on reprovisioning a fleet is prose (phased rollout, the registration quota, 429 with
//! Retry-After, 5xx back-off from 5 s, status lookups counting as registrations); this makes it numbers.
//! The effective rate is the smallest of:
//! - the DPS quota left: `dps_rate × units × (1 − headroom) − background` per minute, halved when every
//!   mover first looks its registration status up (a lookup costs a registration);
//! - the trigger limit: each source hub triggers only its own movers at `trigger_rate` per second; with
//!   movers interleaved in proportion, hub h allows `trigger_rate × N / n_h` devices per second in all (the
//!   sum of the hubs' rates when they hold equal shares);
//! - the connect limit: the same for each destination hub's arrivals at `connect_rate`.
//!
//! The schedule places movers on a timeline in an order fixed by a pinned hash of the registration id
//! (bucketed, then in input order within a bucket, so two passes over the file and a fixed table of
//! counters suffice: flat memory for any fleet). Re-planning with other limits stretches or compresses the
//! timeline and moves wave boundaries; it never reorders devices. Each minute starts at most the effective
//! rate's whole number of devices.
//!
//! [`all_at_once`] simulates the alternative: every mover triggered at once, DPS admitting at the same
//! rate and answering the rest 429 with Retry-After, devices retrying after it with jitter, as DPS's
//! guidance says they must.

pub mod html;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::Serialize;

use crate::hashing::{SeenIds, caseless_xxh3, unit_interval};

/// The limits a plan respects.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// DPS registrations per minute per unit.
    pub dps_rate_per_min: f64,
    /// DPS units.
    pub dps_units: u32,
    /// Share of the DPS rate kept free for other registrations.
    pub headroom: f64,
    /// Each mover looks its registration status up first (a lookup costs a registration).
    pub lookups: bool,
    /// Trigger calls per second per source hub.
    pub trigger_rate_per_s: f64,
    /// New device connections per second per destination hub.
    pub connect_rate_per_s: f64,
    /// Devices that re-provision on every restart: (devices, restart interval in seconds).
    pub background: Option<(u64, f64)>,
    /// Length of one wave, in minutes.
    pub wave_minutes: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            dps_rate_per_min: 1000.0,
            dps_units: 1,
            headroom: 0.2,
            lookups: false,
            trigger_rate_per_s: 10.0,
            connect_rate_per_s: 100.0,
            background: None,
            wave_minutes: 60.0,
        }
    }
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The move file is unreadable or malformed.
    #[error("{0}")]
    Input(String),
    /// A limit is out of range.
    #[error("{0}")]
    Limits(String),
    /// Devices re-provisioning on restart use up the DPS quota on their own.
    #[error(
        "the background load alone ({background:.0} registrations/min from devices that re-provision on every restart) uses up the DPS quota left for moves ({quota:.0}/min after headroom): reprovisioning on every boot is what DPS's guidance warns against; fix that first"
    )]
    BackgroundExceedsQuota {
        /// Background registrations per minute.
        background: f64,
        /// The quota after headroom, per minute.
        quota: f64,
    },
}

/// The movers of a move file, counted (pass 1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Census {
    /// Movers.
    pub movers: u64,
    /// Rows that listed a registration id already listed (planned once, at its first row).
    pub duplicates: u64,
    /// Movers per source hub.
    pub from: BTreeMap<String, u64>,
    /// Movers per destination hub.
    pub to: BTreeMap<String, u64>,
    /// Movers per hash bucket: the timeline's order.
    buckets: Vec<u64>,
}

/// Buckets of the pinned hash that orders the timeline.
const BUCKETS: usize = 1 << 16;

/// The pinned hash seed of the timeline order (never change it: schedules would reorder).
const ORDER_SEED: u64 = 0x7e1e_6a7e_0dd5_eed5;

fn bucket(registration_id: &str) -> usize {
    let u = unit_interval(caseless_xxh3(registration_id, ORDER_SEED));
    ((u * BUCKETS as f64) as usize).min(BUCKETS - 1)
}

/// One row of a move file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// Registration id.
    pub registration_id: String,
    /// The hub it leaves.
    pub from_hub: String,
    /// The hub it goes to.
    pub to_hub: String,
}

/// Reads a move file (`registration_id,from_hub,to_hub`, header required), row by row.
pub fn read_moves<R: Read>(input: R, mut each: impl FnMut(Move) -> Result<(), PlanError>) -> Result<(), PlanError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| PlanError::Input(format!("the move file: {e}")))?
        .clone();
    let want = ["registration_id", "from_hub", "to_hub"];
    if headers.len() < 3 || headers.iter().take(3).ne(want) {
        return Err(PlanError::Input(format!(
            "the move file needs the header `registration_id,from_hub,to_hub` (simulate --moves writes it), not `{}`",
            headers.iter().collect::<Vec<_>>().join(",")
        )));
    }
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(PlanError::Input(format!("the move file: {e}"))),
        }
        let line = record.position().map_or(0, csv::Position::line);
        let field = |i: usize| record.get(i).map(str::trim).filter(|s| !s.is_empty());
        let (Some(id), Some(from), Some(to)) = (field(0), field(1), field(2)) else {
            return Err(PlanError::Input(format!(
                "the move file, line {line}: every row needs registration_id, from_hub and to_hub"
            )));
        };
        each(Move {
            registration_id: id.to_owned(),
            from_hub: from.to_ascii_lowercase(),
            to_hub: to.to_ascii_lowercase(),
        })?;
    }
}

/// Counts a move file (pass 1), each registration id once: its first row counts, the rows that list it
/// again are [`Census::duplicates`]. The ids go on to [`write_schedule`] (pass 2), which takes the same
/// rows. `tick` is told after each row.
pub fn count<R: Read>(input: R, mut tick: impl FnMut(&Census)) -> Result<(Census, SeenIds), PlanError> {
    let mut census = Census::default();
    let mut seen = SeenIds::default();
    read_moves(input, |m| {
        if seen.first(&m.registration_id) {
            census.add(&m);
        } else {
            census.duplicates += 1;
        }
        tick(&census);
        Ok(())
    })?;
    Ok((census, seen))
}

impl Census {
    /// Counts a move.
    pub fn add(&mut self, m: &Move) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS];
        }
        self.movers += 1;
        *self.from.entry(m.from_hub.clone()).or_default() += 1;
        *self.to.entry(m.to_hub.clone()).or_default() += 1;
        self.buckets[bucket(&m.registration_id)] += 1;
    }
}

/// The limit that sets the pace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Binding {
    /// `dps`, `dps-lookups`, `trigger:HUB` or `connect:HUB`.
    pub name: String,
    /// Devices per minute it allows.
    pub per_min: f64,
}

/// A wave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wave {
    /// 1-based.
    pub wave: u32,
    /// Devices in it.
    pub devices: u64,
    /// Its first device's not-before time, seconds from the start.
    pub start_s: u64,
    /// When its last device has been triggered, seconds from the start.
    pub end_s: u64,
}

/// One hub's part in the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HubPart {
    /// Host.
    pub hub: String,
    /// Movers leaving it.
    pub leaving: u64,
    /// Movers arriving.
    pub arriving: u64,
    /// Devices per minute its trigger rate allows the whole plan (for a source hub).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_limit_per_min: Option<f64>,
    /// Devices per minute its connect rate allows the whole plan (for a destination hub).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_limit_per_min: Option<f64>,
}

/// Triggering every mover at once, simulated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllAtOnce {
    /// When the last device got through, seconds.
    pub duration_s: f64,
    /// Requests DPS answered 429.
    pub throttled: u64,
    /// The most registration attempts in one minute.
    pub peak_per_min: u64,
    /// Devices through, per minute.
    pub done_per_min: Vec<u64>,
    /// Throttled attempts, per minute.
    pub throttled_per_min: Vec<u64>,
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Movers.
    pub movers: u64,
    /// Rows that listed a registration id already listed (planned once, at its first row; left out of
    /// the JSON when there are none).
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicates: u64,
    /// How long the plan takes, seconds (`movers / rate`).
    pub duration_s: f64,
    /// The effective rate, devices per minute.
    pub rate_per_min: f64,
    /// Whole devices started per minute in the schedule.
    pub per_minute: u64,
    /// The limit that binds.
    pub binding_limit: String,
    /// Every limit, devices per minute.
    pub limits: Vec<Binding>,
    /// DPS registrations per minute from devices re-provisioning on restart.
    pub background_per_min: f64,
    /// The waves.
    pub waves: Vec<Wave>,
    /// Hubs.
    pub hubs: Vec<HubPart>,
    /// Devices moved per minute (the plan's timeline).
    pub plan_per_min: Vec<u64>,
    /// All at once, for comparison.
    pub all_at_once: AllAtOnce,
}

/// Works the plan out from the census.
pub fn plan(census: &Census, limits: &Limits) -> Result<Plan, PlanError> {
    check(limits)?;
    let n = census.movers;
    let background = limits
        .background
        .map_or(0.0, |(fleet, every_s)| fleet as f64 / every_s * 60.0);
    let quota = limits.dps_rate_per_min * f64::from(limits.dps_units) * (1.0 - limits.headroom);
    if background >= quota {
        return Err(PlanError::BackgroundExceedsQuota { background, quota });
    }
    let dps = (quota - background) / if limits.lookups { 2.0 } else { 1.0 };
    let mut all = vec![Binding {
        name: if limits.lookups { "dps-lookups" } else { "dps" }.to_owned(),
        per_min: dps,
    }];
    for (hub, &k) in &census.from {
        all.push(Binding {
            name: format!("trigger:{hub}"),
            per_min: limits.trigger_rate_per_s * 60.0 * n as f64 / k as f64,
        });
    }
    for (hub, &k) in &census.to {
        all.push(Binding {
            name: format!("connect:{hub}"),
            per_min: limits.connect_rate_per_s * 60.0 * n as f64 / k as f64,
        });
    }
    let bind = all
        .iter()
        .min_by(|a, b| a.per_min.total_cmp(&b.per_min))
        .cloned()
        .unwrap_or(Binding {
            name: "dps".to_owned(),
            per_min: dps,
        });
    let rate = bind.per_min;
    if rate < 1.0 {
        return Err(PlanError::Limits(format!(
            "the effective rate is {rate:.3} devices a minute ({}): below one a minute, there is no useful plan; raise the limit that binds",
            bind.name
        )));
    }
    let per_minute = rate.floor() as u64;
    let duration_s = if n == 0 { 0.0 } else { n as f64 / rate * 60.0 };
    let wave_s = (limits.wave_minutes * 60.0).max(60.0);
    let mut waves: Vec<Wave> = Vec::new();
    let mut plan_per_min: Vec<u64> = Vec::new();
    for rank in 0..n {
        let at = not_before(rank, per_minute);
        let w = (at as f64 / wave_s) as u32 + 1;
        match waves.last_mut() {
            Some(last) if last.wave == w => {
                last.devices += 1;
                last.end_s = at;
            }
            _ => waves.push(Wave {
                wave: w,
                devices: 1,
                start_s: at,
                end_s: at,
            }),
        }
        let minute = (at / 60) as usize;
        if plan_per_min.len() <= minute {
            plan_per_min.resize(minute + 1, 0);
        }
        plan_per_min[minute] += 1;
    }
    let mut hubs: BTreeMap<&str, HubPart> = BTreeMap::new();
    for (hub, &k) in &census.from {
        let h = hubs.entry(hub).or_insert_with(|| HubPart::new(hub));
        h.leaving = k;
        h.trigger_limit_per_min = Some(limits.trigger_rate_per_s * 60.0 * n as f64 / k as f64);
    }
    for (hub, &k) in &census.to {
        let h = hubs.entry(hub).or_insert_with(|| HubPart::new(hub));
        h.arriving = k;
        h.connect_limit_per_min = Some(limits.connect_rate_per_s * 60.0 * n as f64 / k as f64);
    }
    Ok(Plan {
        movers: n,
        duplicates: census.duplicates,
        duration_s,
        rate_per_min: rate,
        per_minute,
        binding_limit: bind.name,
        limits: all,
        background_per_min: background,
        waves,
        hubs: hubs.into_values().collect(),
        plan_per_min,
        all_at_once: all_at_once(n, rate),
    })
}

impl HubPart {
    fn new(hub: &str) -> Self {
        HubPart {
            hub: hub.to_owned(),
            leaving: 0,
            arriving: 0,
            trigger_limit_per_min: None,
            connect_limit_per_min: None,
        }
    }
}

fn check(l: &Limits) -> Result<(), PlanError> {
    let bad = |m: &str| Err(PlanError::Limits(m.to_owned()));
    if !(l.dps_rate_per_min.is_finite() && l.dps_rate_per_min > 0.0) {
        return bad("--dps-rate must be above 0");
    }
    if l.dps_units == 0 {
        return bad("--dps-units must be at least 1");
    }
    if !(0.0..1.0).contains(&l.headroom) {
        return bad("--headroom must be at least 0 and below 1");
    }
    if !(l.trigger_rate_per_s.is_finite() && l.trigger_rate_per_s > 0.0) {
        return bad("--trigger-rate must be above 0");
    }
    if !(l.connect_rate_per_s.is_finite() && l.connect_rate_per_s > 0.0) {
        return bad("--connect-rate must be above 0");
    }
    if !(l.wave_minutes.is_finite() && l.wave_minutes >= 1.0) {
        return bad("--wave-minutes must be at least 1");
    }
    if let Some((_, every)) = l.background
        && !(every.is_finite() && every > 0.0)
    {
        return bad("--restart-interval must be above 0");
    }
    Ok(())
}

/// The not-before time of the device at this place on the timeline: whole minutes of `per_minute`
/// devices, spread evenly within each minute.
fn not_before(rank: u64, per_minute: u64) -> u64 {
    let minute = rank / per_minute;
    let within = rank % per_minute;
    minute * 60 + within * 60 / per_minute
}

/// Writes the schedule: every mover once, `registration_id,from_hub,to_hub,wave,not_before_s`, in the
/// move file's order. `input` is the move file again (pass 2), `seen` what [`count`] noted of it: a row
/// is written when its id is still there (and taken out), so each id is written at its first row.
pub fn write_schedule<R: Read, W: Write>(
    input: R,
    census: &Census,
    plan: &Plan,
    limits: &Limits,
    mut seen_ids: SeenIds,
    out: W,
) -> Result<(), PlanError> {
    let io = |e: csv::Error| PlanError::Input(format!("writing the schedule: {e}"));
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["registration_id", "from_hub", "to_hub", "wave", "not_before_s"])
        .map_err(io)?;
    // The first rank of each bucket, and how many of its movers have been placed so far.
    let mut next: Vec<u64> = Vec::with_capacity(BUCKETS);
    let mut acc = 0;
    for &c in &census.buckets {
        next.push(acc);
        acc += c;
    }
    if next.is_empty() {
        next = vec![0; BUCKETS];
    }
    let wave_s = (limits.wave_minutes * 60.0).max(60.0);
    let mut seen = 0u64;
    read_moves(input, |m| {
        if !seen_ids.take(&m.registration_id) {
            return Ok(());
        }
        let b = bucket(&m.registration_id);
        let rank = next[b];
        next[b] += 1;
        seen += 1;
        let at = not_before(rank, plan.per_minute);
        let wave = (at as f64 / wave_s) as u32 + 1;
        w.write_record([
            m.registration_id.as_str(),
            m.from_hub.as_str(),
            m.to_hub.as_str(),
            itoa::Buffer::new().format(wave),
            itoa::Buffer::new().format(at),
        ])
        .map_err(io)
    })?;
    if seen != census.movers {
        return Err(PlanError::Input(
            "the move file changed while it was being planned".to_owned(),
        ));
    }
    w.flush()
        .map_err(|e| PlanError::Input(format!("writing the schedule: {e}")))
}

/// The Retry-After DPS is assumed to send with a 429, seconds (DPS sends one; its value is not documented).
pub const RETRY_AFTER_S: u64 = 5;

/// Throttled devices retry after Retry-After plus a jitter spread evenly over this many seconds.
pub const RETRY_JITTER_S: u64 = 10;

/// Every mover triggered at time 0. DPS admits registrations at the effective rate, as a token bucket
/// holding at most one second's worth (so it never admits more in any second than the plan starts), and
/// answers the rest 429 with Retry-After; each throttled device retries after it, spread over the next
/// [`RETRY_JITTER_S`] seconds, as DPS's guidance says devices must. Simulated per second with counts, so
/// any fleet costs memory in seconds of backlog, not in devices. It can never finish before the plan:
/// by second t at most `rate × (t + 1)` devices are through.
pub fn all_at_once(n: u64, rate_per_min: f64) -> AllAtOnce {
    let per_s = rate_per_min / 60.0;
    let cap = per_s.max(1.0);
    let mut arriving: BTreeMap<u64, u64> = BTreeMap::new();
    if n > 0 {
        arriving.insert(0, n);
    }
    let (mut done, mut throttled) = (0u64, 0u64);
    let mut done_per_min: Vec<u64> = Vec::new();
    let mut throttled_per_min: Vec<u64> = Vec::new();
    let mut attempts_per_min: Vec<u64> = Vec::new();
    let mut tokens = 0.0f64;
    let mut last_s: Option<u64> = None;
    let mut last_done_s = 0u64;
    while let Some((s, count)) = arriving.pop_first() {
        let gap = last_s.map_or(1, |l| s - l);
        tokens = (tokens + per_s * gap as f64).min(cap);
        last_s = Some(s);
        let m = (s / 60) as usize;
        for v in [&mut done_per_min, &mut throttled_per_min, &mut attempts_per_min] {
            if v.len() <= m {
                v.resize(m + 1, 0);
            }
        }
        attempts_per_min[m] += count;
        let admitted = count.min(tokens.floor() as u64);
        tokens -= admitted as f64;
        done += admitted;
        done_per_min[m] += admitted;
        if admitted > 0 {
            last_done_s = s;
        }
        let rejected = count - admitted;
        if rejected > 0 {
            throttled += rejected;
            throttled_per_min[m] += rejected;
            let per = rejected / RETRY_JITTER_S;
            let extra = rejected % RETRY_JITTER_S;
            for j in 0..RETRY_JITTER_S {
                let k = per + u64::from(j < extra);
                if k > 0 {
                    *arriving.entry(s + RETRY_AFTER_S + j).or_default() += k;
                }
            }
        }
    }
    debug_assert_eq!(done, n);
    AllAtOnce {
        duration_s: if n == 0 { 0.0 } else { (last_done_s + 1) as f64 },
        throttled,
        peak_per_min: attempts_per_min.iter().copied().max().unwrap_or(0),
        done_per_min,
        throttled_per_min,
    }
}

/// `3 h 12 min`, `45 min`, `20 s`.
pub fn duration_words(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", (s + 30) / 60),
        _ => {
            let m = (s + 30) / 60;
            format!("{} h {} min", m / 60, m % 60)
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests;
