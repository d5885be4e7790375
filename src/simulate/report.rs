//! The simulation's result: the [`Summary`] (printed as a table, or as JSON with `--format json`).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::{Setup, Tally};
use crate::policy::{HubState, Revision};

/// Everything a simulation found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Devices simulated.
    pub devices: u64,
    /// Devices whose hub changes.
    pub moved: u64,
    /// Devices a rule rejects under the new policy.
    pub rejected: u64,
    /// Devices with no eligible hub under the new policy.
    pub no_eligible_hub: u64,
    /// Requests that are not valid AllocationRequests.
    pub invalid: u64,
    /// Devices placed before and not placed after (rejected or no hub).
    pub lost: u64,
    /// Rows of the fleet file that listed a registration id already listed (simulated once, at its first
    /// row; left out of the JSON when there are none).
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicates: u64,
    /// Devices with no hub before (first registrations).
    pub new_devices: u64,
    /// geo-latency decisions that found no usable location.
    pub unknown_location: u64,
    /// Devices per hub.
    pub hubs: Vec<HubRow>,
    /// Moves between hubs, most first.
    pub moves: Vec<MoveRow>,
    /// Moves by the rule that decided.
    pub moves_per_rule: Vec<RuleCount>,
    /// Assignments by the rule that decided.
    pub assignments_per_rule: Vec<RuleCount>,
    /// Rejections by rule and reason.
    pub rejections: Vec<Rejection>,
    /// How long re-registering the movers takes.
    pub reprovisioning: Reprovisioning,
    /// With `rebalance_percent` in the new policy: this wave and what is left for later ones.
    pub wave: Option<Wave>,
    /// The new policy.
    pub policy: PolicyRef,
    /// The baseline.
    pub baseline: Option<PolicyRef>,
    /// Wall time of the run, in seconds.
    pub elapsed_seconds: f64,
    /// Devices per second.
    pub devices_per_second: f64,
}

/// One hub's load.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HubRow {
    /// Host.
    pub host: String,
    /// Devices before.
    pub devices_before: u64,
    /// Devices after.
    pub devices: u64,
    /// Share of placed devices after.
    pub share: f64,
    /// Its weight's share of the active catalogue (0 for draining, disabled and uncatalogued hubs).
    pub target_share: f64,
    /// Devices once every rebalance wave has run (only with `rebalance_percent`).
    pub devices_target: Option<u64>,
    /// Weight in the new policy.
    pub weight: Option<u32>,
    /// State in the new policy (`uncatalogued` when absent).
    pub state: String,
    /// Capacity, when set.
    pub capacity: Option<u64>,
    /// Whether `devices` exceeds `capacity`.
    pub over_capacity: bool,
}

/// Devices moving from one hub to another.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MoveRow {
    /// From.
    pub from: String,
    /// To.
    pub to: String,
    /// How many.
    pub devices: u64,
}

/// A count per rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleCount {
    /// Rule.
    pub rule: String,
    /// Devices.
    pub devices: u64,
}

/// Rejections of one rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejection {
    /// Rule.
    pub rule: String,
    /// Reason code.
    pub reason: String,
    /// Devices.
    pub devices: u64,
}

/// Time to re-register the movers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reprovisioning {
    /// Registrations per minute per DPS unit.
    pub rate_per_minute: f64,
    /// DPS units.
    pub units: u32,
    /// Minutes for the moved devices.
    pub minutes: f64,
}

/// A rebalance wave.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Wave {
    /// Rules with `rebalance_percent`, and their percentages.
    pub rules: Vec<(String, f64)>,
    /// Devices that move in this wave (stickiness lifted by `rebalance_percent`).
    pub moving_now: u64,
    /// Devices not yet where the new policy would put them from scratch: later waves move them.
    pub pending: u64,
}

/// A policy and its revision.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyRef {
    /// Where it was loaded from.
    pub source: String,
    /// Revision id.
    pub revision: String,
}

/// The rate and units reprovisioning runs at (`--dps-rate`, `--dps-units`).
pub struct Rate {
    /// Registrations per minute per unit.
    pub per_minute: f64,
    /// Units.
    pub units: u32,
}

pub(crate) fn summarize(setup: &Setup<'_>, t: &Tally, names: &[String], waves: bool, elapsed: Duration) -> Summary {
    let rev = setup.policy;
    let name = |id: u32| names.get(id as usize).cloned().unwrap_or_default();
    let rule = |i: u32| {
        rev.rules
            .get(i as usize)
            .map_or_else(|| "(none)".to_owned(), |r| r.name.clone())
    };
    let placed: u64 = t.after.values().sum();
    let active_weight: u64 = rev
        .hubs
        .iter()
        .filter(|h| h.state == HubState::Active)
        .map(|h| u64::from(h.weight))
        .sum();
    let hubs = names
        .iter()
        .enumerate()
        .filter_map(|(i, host)| {
            let id = i as u32;
            let (before, after) = (
                t.before.get(&id).copied().unwrap_or(0),
                t.after.get(&id).copied().unwrap_or(0),
            );
            let hub = rev.find_hub(host).map(|h| &rev.hubs[h]);
            if before == 0 && after == 0 && hub.is_none() {
                return None;
            }
            let target_share = match hub {
                Some(h) if h.state == HubState::Active && active_weight > 0 => {
                    f64::from(h.weight) / active_weight as f64
                }
                _ => 0.0,
            };
            Some(HubRow {
                host: host.clone(),
                devices_before: before,
                devices: after,
                share: if placed > 0 { after as f64 / placed as f64 } else { 0.0 },
                target_share,
                devices_target: waves.then(|| t.target.get(&id).copied().unwrap_or(0)),
                weight: hub.map(|h| h.weight),
                state: hub.map_or_else(
                    || "uncatalogued".to_owned(),
                    |h| format!("{:?}", h.state).to_lowercase(),
                ),
                capacity: hub.and_then(|h| h.capacity),
                over_capacity: hub.and_then(|h| h.capacity).is_some_and(|c| after > c),
            })
        })
        .collect();
    let mut moves: Vec<MoveRow> = t
        .moves
        .iter()
        .map(|(&(a, b), &n)| MoveRow {
            from: name(a),
            to: name(b),
            devices: n,
        })
        .collect();
    moves.sort_by(|x, y| {
        y.devices
            .cmp(&x.devices)
            .then_with(|| (&x.from, &x.to).cmp(&(&y.from, &y.to)))
    });
    let counts = |m: &std::collections::BTreeMap<u32, u64>| {
        m.iter()
            .map(|(&r, &n)| RuleCount {
                rule: rule(r),
                devices: n,
            })
            .collect::<Vec<_>>()
    };
    let rejections = t
        .rejections
        .iter()
        .map(|(&r, &n)| Rejection {
            rule: rule(r),
            reason: reject_reason(rev, r),
            devices: n,
        })
        .collect::<Vec<_>>();
    let rejected = t.rejections.values().sum();
    let secs = elapsed.as_secs_f64();
    Summary {
        devices: t.devices,
        moved: t.moved,
        rejected,
        no_eligible_hub: t.unplaced,
        invalid: t.invalid,
        lost: t.lost,
        duplicates: t.duplicates,
        new_devices: t.new_devices,
        unknown_location: t.unknown_location,
        hubs,
        moves,
        moves_per_rule: counts(&t.moves_per_rule),
        assignments_per_rule: counts(&t.assignments_per_rule),
        rejections,
        reprovisioning: Reprovisioning {
            rate_per_minute: 0.0,
            units: 0,
            minutes: 0.0,
        },
        wave: waves.then(|| Wave {
            rules: rev
                .rules
                .iter()
                .filter(|r| r.rebalance_bp > 0)
                .map(|r| (r.name.clone(), f64::from(r.rebalance_bp) / 100.0))
                .collect(),
            moving_now: t.wave,
            pending: t.pending,
        }),
        policy: PolicyRef {
            source: String::new(),
            revision: rev.id.clone(),
        },
        baseline: setup.baseline.map(|b| PolicyRef {
            source: String::new(),
            revision: b.id.clone(),
        }),
        elapsed_seconds: secs,
        devices_per_second: if secs > 0.0 { t.devices as f64 / secs } else { 0.0 },
    }
}

fn reject_reason(rev: &Revision, rule: u32) -> String {
    match rev.rules.get(rule as usize).map(|r| &r.action) {
        Some(crate::policy::Action::Reject(r)) => r.reason.clone(),
        _ => String::new(),
    }
}

impl Summary {
    /// Sets the reprovisioning rate and computes the time the movers take.
    pub fn with_rate(mut self, rate: &Rate) -> Self {
        let per_minute = rate.per_minute * f64::from(rate.units.max(1));
        self.reprovisioning = Reprovisioning {
            rate_per_minute: rate.per_minute,
            units: rate.units,
            minutes: if per_minute > 0.0 {
                self.moved as f64 / per_minute
            } else {
                0.0
            },
        };
        self
    }

    /// Names the policy sources.
    pub fn with_sources(mut self, policy: String, baseline: Option<String>) -> Self {
        self.policy.source = policy;
        if let (Some(b), Some(src)) = (self.baseline.as_mut(), baseline) {
            b.source = src;
        }
        self
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let pct = |n: u64| {
            if self.devices > 0 {
                100.0 * n as f64 / self.devices as f64
            } else {
                0.0
            }
        };
        let _ = writeln!(
            o,
            "policy    {} (revision {})",
            self.policy.source, self.policy.revision
        );
        if let Some(b) = &self.baseline {
            let _ = writeln!(o, "baseline  {} (revision {})", b.source, b.revision);
        }
        let _ = writeln!(
            o,
            "devices   {} in {:.1} s ({:.0} devices/s)",
            group(self.devices),
            self.elapsed_seconds,
            self.devices_per_second
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<46} {:>12} {:>12} {:>7} {:>7} {:>12}  state",
            "hub", "before", "after", "share", "target", "capacity"
        );
        for h in &self.hubs {
            let cap = h.capacity.map_or_else(|| "-".to_owned(), group);
            let flag = if h.over_capacity { "  OVER CAPACITY" } else { "" };
            let _ = writeln!(
                o,
                "{:<46} {:>12} {:>12} {:>6.2}% {:>6.2}% {:>12}  {}{flag}",
                h.host,
                group(h.devices_before),
                group(h.devices),
                100.0 * h.share,
                100.0 * h.target_share,
                cap,
                h.state
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "moves     {} devices ({:.2}%)", group(self.moved), pct(self.moved));
        for m in self.moves.iter().take(20) {
            let _ = writeln!(o, "  {:>12}  {} -> {}", group(m.devices), m.from, m.to);
        }
        if self.moves.len() > 20 {
            let _ = writeln!(
                o,
                "  ... {} more pairs (see --format json or --report)",
                self.moves.len() - 20
            );
        }
        if !self.moves_per_rule.is_empty() {
            let _ = writeln!(o, "moves per rule");
            for r in &self.moves_per_rule {
                let _ = writeln!(o, "  {:>12}  {}", group(r.devices), r.rule);
            }
        }
        let _ = writeln!(o, "assignments per rule");
        for r in &self.assignments_per_rule {
            let _ = writeln!(o, "  {:>12}  {}", group(r.devices), r.rule);
        }
        if !self.rejections.is_empty() {
            let _ = writeln!(o, "rejections");
            for r in &self.rejections {
                let _ = writeln!(o, "  {:>12}  {} ({})", group(r.devices), r.reason, r.rule);
            }
        }
        for (label, n) in [
            ("no eligible hub", self.no_eligible_hub),
            ("invalid requests", self.invalid),
            ("placed before, not after", self.lost),
            ("unknown location (geo fallback)", self.unknown_location),
            ("new devices (no hub before)", self.new_devices),
        ] {
            if n > 0 {
                let _ = writeln!(o, "{label}: {}", group(n));
            }
        }
        let r = &self.reprovisioning;
        let _ = writeln!(
            o,
            "reprovisioning {} movers at {} registrations/min x {} DPS unit(s): {}",
            group(self.moved),
            group(r.rate_per_minute as u64),
            r.units,
            duration_words(r.minutes)
        );
        if let Some(w) = &self.wave {
            let rules: Vec<String> = w.rules.iter().map(|(n, p)| format!("{n} {p}%")).collect();
            let _ = writeln!(
                o,
                "rebalance wave ({}): {} devices move now; {} more are not yet where the new policy puts them",
                rules.join(", "),
                group(w.moving_now),
                group(w.pending)
            );
        }
        o
    }
}

/// 1234567 -> "1,234,567".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 167.5 minutes -> "2 h 48 min".
pub fn duration_words(minutes: f64) -> String {
    let m = minutes.ceil() as u64;
    match m {
        0 => "none".to_owned(),
        1..=59 => format!("{m} min"),
        60..=1439 => format!("{} h {} min", m / 60, m % 60),
        _ => format!("{} d {} h", m / 1440, (m % 1440) / 60),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(group(0), "0");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(100), "100");
        assert_eq!(duration_words(0.0), "none");
        assert_eq!(duration_words(0.2), "1 min");
        assert_eq!(duration_words(167.5), "2 h 48 min");
        assert_eq!(duration_words(3000.0), "2 d 2 h");
    }
}
