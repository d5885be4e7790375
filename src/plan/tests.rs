//! Closed-form answers: N movers at rate R take N/R; lookups halve R; a slow trigger rate binds; background
//! load reduces the rate; K units multiply it; the schedule's invariants; all at once is never faster than
//! the plan and throttles past one minute's quota.

use super::*;

fn moves(n: u64, from: &[&str], to: &[&str]) -> String {
    let mut s = String::from("registration_id,from_hub,to_hub\n");
    for i in 0..n {
        let f = from[(i as usize) % from.len()];
        let t = to[(i as usize) % to.len()];
        s.push_str(&format!("dev-{i:07},{f},{t}\n"));
    }
    s
}

fn census(text: &str) -> Census {
    count(text.as_bytes(), |_| {}).expect("reads").0
}

fn noted(text: &str) -> SeenIds {
    count(text.as_bytes(), |_| {}).expect("reads").1
}

const FROM: [&str; 4] = ["a", "b", "c", "d"];
const TO: [&str; 2] = ["x", "y"];

fn planned(n: u64, limits: &Limits) -> Plan {
    plan(&census(&moves(n, &FROM, &TO)), limits).expect("plans")
}

#[test]
fn n_movers_at_rate_r_take_n_over_r() {
    // 1000/min × (1 − 0.2) = 800/min binds (trigger: 4 hubs × 10/s = 2,400/min; connect 2 × 100/s).
    let p = planned(8_000, &Limits::default());
    assert_eq!(p.binding_limit, "dps");
    assert_eq!(p.rate_per_min, 800.0);
    assert_eq!(p.duration_s, 600.0);
    assert_eq!(p.per_minute, 800);
}

#[test]
fn lookups_halve_the_rate_and_units_multiply_it() {
    let lookups = planned(
        8_000,
        &Limits {
            lookups: true,
            ..Limits::default()
        },
    );
    assert_eq!(
        (lookups.rate_per_min, lookups.binding_limit.as_str()),
        (400.0, "dps-lookups")
    );
    assert_eq!(lookups.duration_s, 1_200.0);
    let units = planned(
        8_000,
        &Limits {
            dps_units: 2,
            ..Limits::default()
        },
    );
    assert_eq!(units.rate_per_min, 1_600.0);
}

#[test]
fn a_slow_trigger_rate_binds_per_hub() {
    // Hub a holds every mover: 1/s from a alone is 60/min for the whole plan.
    let c = census(&moves(600, &["a"], &TO));
    let p = plan(
        &c,
        &Limits {
            trigger_rate_per_s: 1.0,
            ..Limits::default()
        },
    )
    .expect("plans");
    assert_eq!(p.binding_limit, "trigger:a");
    assert_eq!(p.rate_per_min, 60.0);
    assert_eq!(p.duration_s, 600.0);
    // Four hubs with equal shares: the sum of their rates, 4/s.
    let spread = planned(
        2_400,
        &Limits {
            trigger_rate_per_s: 1.0,
            ..Limits::default()
        },
    );
    assert_eq!(spread.rate_per_min, 240.0);
    assert!(spread.binding_limit.starts_with("trigger:"));
}

#[test]
fn a_slow_connect_rate_binds() {
    let p = planned(
        1_000,
        &Limits {
            connect_rate_per_s: 0.5,
            ..Limits::default()
        },
    );
    // Two destinations with equal shares: 2 × 0.5/s = 60/min.
    assert_eq!(p.rate_per_min, 60.0);
    assert!(p.binding_limit.starts_with("connect:"));
}

#[test]
fn background_load_reduces_the_rate_and_can_leave_nothing() {
    // 100,000 devices restarting once a day: 69.4/min of the 800.
    let p = planned(
        8_000,
        &Limits {
            background: Some((100_000, 86_400.0)),
            ..Limits::default()
        },
    );
    assert!(
        (p.rate_per_min - (800.0 - 100_000.0 / 1_440.0)).abs() < 1e-9,
        "{}",
        p.rate_per_min
    );
    assert!((p.background_per_min - 69.444).abs() < 0.001);
    let e = plan(
        &census(&moves(10, &FROM, &TO)),
        &Limits {
            background: Some((1_000_000, 3_600.0)),
            ..Limits::default()
        },
    )
    .expect_err("background over the quota");
    assert!(matches!(e, PlanError::BackgroundExceedsQuota { .. }));
    assert!(e.to_string().contains("every boot"), "{e}");
}

/// A schedule row: registration id, from hub, to hub, wave, not_before_s.
type Row = (String, String, String, u32, u64);

fn schedule(text: &str, limits: &Limits) -> (Plan, Vec<Row>) {
    let c = census(text);
    let p = plan(&c, limits).expect("plans");
    let mut out = Vec::new();
    write_schedule(text.as_bytes(), &c, &p, limits, noted(text), &mut out).expect("writes");
    let text = String::from_utf8(out).expect("utf-8");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("registration_id,from_hub,to_hub,wave,not_before_s"));
    let rows = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_owned(),
                f[1].to_owned(),
                f[2].to_owned(),
                f[3].parse().expect("wave"),
                f[4].parse().expect("not_before_s"),
            )
        })
        .collect();
    (p, rows)
}

#[test]
fn the_schedule_holds_every_mover_once_within_the_rate_and_is_deterministic() {
    let text = moves(20_000, &FROM, &TO);
    let limits = Limits {
        wave_minutes: 5.0,
        ..Limits::default()
    };
    let (p, rows) = schedule(&text, &limits);
    assert_eq!(rows.len(), 20_000);
    let ids: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), 20_000, "every mover exactly once");
    let mut per_minute: BTreeMap<u64, u64> = BTreeMap::new();
    for r in &rows {
        *per_minute.entry(r.4 / 60).or_default() += 1;
        assert_eq!(r.3, (r.4 / 300) as u32 + 1, "wave follows not_before_s");
    }
    assert!(per_minute.values().all(|&n| n <= 800), "{per_minute:?}");
    assert_eq!(p.waves.iter().map(|w| w.devices).sum::<u64>(), 20_000);
    assert_eq!(p.waves.len(), 5, "25 minutes of 800/min in 5-minute waves");
    let mut again = Vec::new();
    let c = census(&text);
    write_schedule(text.as_bytes(), &c, &p, &limits, noted(&text), &mut again).expect("writes");
    let mut first = Vec::new();
    write_schedule(text.as_bytes(), &c, &p, &limits, noted(&text), &mut first).expect("writes");
    assert_eq!(first, again, "the same input gives the same bytes");
}

#[test]
fn re_planning_with_other_limits_moves_boundaries_never_reorders_devices() {
    let text = moves(5_000, &FROM, &TO);
    let (_, slow) = schedule(&text, &Limits::default());
    let (_, fast) = schedule(
        &text,
        &Limits {
            dps_units: 3,
            ..Limits::default()
        },
    );
    // A device that starts before another in one plan never starts after it in the other.
    let fast_at: BTreeMap<&str, u64> = fast.iter().map(|r| (r.0.as_str(), r.4)).collect();
    let mut groups: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for r in &slow {
        let f = fast_at[r.0.as_str()];
        let g = groups.entry(r.4).or_insert((u64::MAX, 0));
        *g = (g.0.min(f), g.1.max(f));
    }
    let spans: Vec<(u64, u64)> = groups.into_values().collect();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "reordered: {pair:?}");
    }
    assert!(
        fast.iter().map(|r| r.4).max() < slow.iter().map(|r| r.4).max(),
        "three units are faster"
    );
}

#[test]
fn all_at_once_is_never_faster_than_the_plan_and_throttles_past_the_quota() {
    for (n, rate) in [
        (100u64, 800.0),
        (800, 800.0),
        (5_000, 800.0),
        (12_345, 1_234.5),
        (1, 60.0),
    ] {
        let p = all_at_once(n, rate);
        let plan_s = n as f64 / rate * 60.0;
        assert!(p.duration_s >= plan_s, "{n} at {rate}: {} < {plan_s}", p.duration_s);
        assert_eq!(p.done_per_min.iter().sum::<u64>(), n);
    }
    assert_eq!(
        all_at_once(5, 800.0).throttled,
        0,
        "five devices fit in the first second's quota"
    );
    let busy = all_at_once(5_000, 800.0);
    assert!(busy.throttled > 5_000, "{}", busy.throttled);
    assert!(busy.peak_per_min >= 5_000);
}

#[test]
fn a_rate_below_one_a_minute_is_refused() {
    let e = plan(
        &census(&moves(10, &FROM, &TO)),
        &Limits {
            background: Some((1_000, 75.05)),
            ..Limits::default()
        },
    )
    .expect_err("under 1/min");
    assert!(e.to_string().contains("below one a minute"), "{e}");
}

#[test]
fn move_files_need_their_header_and_full_rows() {
    let e = read_moves("id,from,to\n".as_bytes(), |_| Ok(())).expect_err("header");
    assert!(e.to_string().contains("registration_id,from_hub,to_hub"), "{e}");
    let e = read_moves("registration_id,from_hub,to_hub\nd1,a\n".as_bytes(), |_| Ok(())).expect_err("row");
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn durations_read_as_people_write_them() {
    assert_eq!(duration_words(600.0), "10 min");
    assert_eq!(duration_words(4_320.0), "1 h 12 min");
    assert_eq!(duration_words(20.0), "20 s");
}

#[test]
fn a_device_listed_many_times_is_planned_once() {
    // One id listed 1,000,000 times used to plan 27 hours of waves for one device.
    let mut text = String::from("registration_id,from_hub,to_hub\n");
    text.push_str(&"Dev-1,a,x\n".repeat(10_000));
    text.push_str("dev-1,b,y\ndev-2,a,x\n");
    let c = census(&text);
    assert_eq!(
        (c.movers, c.duplicates),
        (2, 10_000),
        "ids compare as DPS compares them: ignoring case"
    );
    let (p, rows) = schedule(&text, &Limits::default());
    assert_eq!(p.waves.iter().map(|w| w.devices).sum::<u64>(), 2);
    assert_eq!(
        rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect::<Vec<_>>(),
        vec![("Dev-1", "a"), ("dev-2", "a")],
        "each device at its first row"
    );
}
