//! Engine tests: reprovisioning semantics, candidates, strategies, templates, limits.

use serde_json::{Value, json};

use super::*;
use crate::policy::{Source, compile};

fn policy(text: &str) -> Revision {
    match compile(vec![Source::new("t.toml", text)]) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn request(id: &str, linked: &[&str], current: Option<&str>, extra: Value) -> Vec<u8> {
    let mut ctx = json!({ "registrationId": id, "symmetricKey": {} });
    if let Some(c) = current {
        ctx["currentIotHubHostName"] = json!(c);
    }
    let mut body =
        json!({ "deviceRuntimeContext": ctx, "linkedHubs": linked, "enrollmentGroup": { "enrollmentGroupId": "g" } });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            match k.as_str() {
                "payload" => body["deviceRuntimeContext"]["payload"] = v,
                _ => body["enrollmentGroup"][k] = v,
            }
        }
    }
    serde_json::to_vec(&body).expect("serializes")
}

fn run(rev: &Revision, body: &[u8]) -> (Decision, Option<String>) {
    let req = AllocationRequest::parse(body).expect("valid request");
    let d = decide(&req, rev, None);
    let host = match &d.outcome {
        Outcome::Assigned(a) => Some(req.linked_hubs[a.linked].as_str().to_owned()),
        _ => None,
    };
    (d, host)
}

fn hub_of(rev: &Revision, id: &str, linked: &[&str], current: Option<&str>) -> String {
    run(rev, &request(id, linked, current, json!({}))).1.expect("assigned")
}

const FIVE: &str = r#"
[settings]
hash_seed = "engine-tests"
[[hub]]
host = "h1"
weight = 1
[[hub]]
host = "h2"
weight = 1
[[hub]]
host = "h3"
weight = 2
[[hub]]
host = "h4"
weight = 4
[[hub]]
host = "h5"
weight = 2
[[hub]]
host = "h6"
weight = 2
[[rule]]
name = "spread"
"#;

#[test]
fn twenty_thousand_devices_follow_the_weights_and_a_new_hub_takes_exactly_its_share() {
    let rev = policy(FIVE);
    let five = ["h1", "h2", "h3", "h4", "h5"];
    let six = ["h1", "h2", "h3", "h4", "h5", "h6"];
    let n = 20_000;
    let mut counts = std::collections::HashMap::new();
    let mut moved = 0;
    for i in 0..n {
        let id = format!("synthetic-{i:06}");
        let before = hub_of(&rev, &id, &five, None);
        let after = hub_of(&rev, &id, &six, None);
        if before != after {
            assert_eq!(after, "h6", "{id} moved between two old hubs");
            moved += 1;
        }
        *counts.entry(before).or_insert(0) += 1;
    }
    for (hub, weight) in [("h1", 1.0), ("h2", 1.0), ("h3", 2.0), ("h4", 4.0), ("h5", 2.0)] {
        let share = f64::from(counts[hub]) / f64::from(n);
        assert!((share - weight / 10.0).abs() < 0.015, "{hub}: {share:.4}");
    }
    let frac = f64::from(moved) / f64::from(n);
    assert!((frac - 2.0 / 12.0).abs() < 0.015, "moved {frac:.4}");
}

const TWO: &str = r#"
[settings]
hash_seed = "engine-tests"
[[hub]]
host = "a"
[[hub]]
host = "b"
[[rule]]
name = "r"
"#;

#[test]
fn a_sticky_rule_keeps_the_current_hub_and_records_it() {
    let rev = policy(TWO);
    for i in 0..50 {
        let id = format!("d{i}");
        let (d, host) = run(&rev, &request(&id, &["a", "b"], Some("B"), json!({})));
        assert_eq!(host.as_deref(), Some("b"));
        assert!(matches!(d.outcome, Outcome::Assigned(Assignment { sticky: true, .. })));
        assert!(d.reasons.contains(&Reason::Sticky));
    }
}

#[test]
fn a_non_sticky_rule_rehashes_re_registering_devices() {
    let rev = policy(&TWO.replace("name = \"r\"", "name = \"r\"\nsticky = false"));
    let stayed = (0..200)
        .filter(|i| {
            let id = format!("d{i}");
            let fresh = hub_of(&rev, &id, &["a", "b"], None);
            let again = hub_of(&rev, &id, &["a", "b"], Some("a"));
            assert_eq!(fresh, again, "a non-sticky decision ignores the current hub");
            again == "a"
        })
        .count();
    assert!((70..130).contains(&stayed), "{stayed}");
}

#[test]
fn rebalance_percent_moves_a_stable_growing_share() {
    let wave = |pct: u32| {
        let rev = policy(&TWO.replace("name = \"r\"", &format!("name = \"r\"\nrebalance_percent = {pct}")));
        (0..20_000)
            .filter(|i| {
                let (d, _) = run(&rev, &request(&format!("d{i}"), &["a", "b"], Some("a"), json!({})));
                d.reasons.contains(&Reason::Rebalancing)
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (w10, w30) = (wave(10), wave(30));
    assert!((w10.len() as f64 / 20_000.0 - 0.10).abs() < 0.01, "{}", w10.len());
    assert!((w30.len() as f64 / 20_000.0 - 0.30).abs() < 0.01, "{}", w30.len());
    assert!(w10.is_subset(&w30), "a bigger wave must include the smaller one");
    assert_eq!(w10, wave(10), "the wave is stable");
}

#[test]
fn never_reprovision_keeps_the_current_hub_unless_it_is_not_linked() {
    let rev = policy(&TWO.replace("host = \"a\"", "host = \"a\"\nstate = \"disabled\""));
    let no = json!({ "reprovisionPolicy": { "updateHubAssignment": false } });
    let (d, host) = run(&rev, &request("d", &["a", "b"], Some("a"), no.clone()));
    assert_eq!(host.as_deref(), Some("a"));
    assert_eq!(d.reasons.last(), Some(&Reason::NeverReprovision));
    let (d, host) = run(&rev, &request("d", &["b"], Some("a"), no));
    assert_eq!(host.as_deref(), Some("b"));
    assert!(d.reasons.contains(&Reason::NeverReprovisionButCurrentNotLinked));
}

#[test]
fn a_rejection_wins_over_never_reprovision() {
    let rev = policy(
        "[[rule]]\nname = \"no\"\nwhen = { iot_edge = false }\nreject = { status = 451, reason = \"blocked\" }\n",
    );
    let (d, _) = run(
        &rev,
        &request(
            "d",
            &["a"],
            Some("a"),
            json!({ "reprovisionPolicy": { "updateHubAssignment": false } }),
        ),
    );
    assert_eq!(d.outcome, Outcome::Rejected { status: 451 });
}

#[test]
fn unknown_linked_hubs_are_included_or_ignored() {
    let include = policy(TWO);
    assert!(["a", "b", "zz"].contains(&hub_of(&include, "d", &["zz"], None).as_str()));
    let ignore = policy(&format!("{TWO}\n").replace(
        "hash_seed = \"engine-tests\"",
        "hash_seed = \"x\"\nunknown_linked_hubs = \"ignore\"",
    ));
    let (d, _) = run(&ignore, &request("d", &["zz"], None, json!({})));
    assert_eq!(d.outcome, Outcome::NoEligibleHub);
    assert_eq!(d.reasons.last(), Some(&Reason::NoCandidates));
}

#[test]
fn static_takes_the_first_candidate_in_the_selector_order() {
    let rev = policy(&format!("{TWO}strategy = \"static\"\nhubs = [\"b\", \"a\"]\n"));
    assert_eq!(hub_of(&rev, "d", &["a", "b"], None), "b");
    assert_eq!(hub_of(&rev, "d", &["a"], None), "a");
    let rev = policy(&format!("{TWO}strategy = \"static\"\n"));
    assert_eq!(
        hub_of(&rev, "d", &["zz", "b", "a"], None),
        "a",
        "catalogue order, unknown hubs last"
    );
}

#[test]
fn the_answer_spells_the_hub_as_linked_hubs_does() {
    let rev = policy(&format!("{TWO}strategy = \"static\"\nhubs = [\"b\"]\n"));
    assert_eq!(hub_of(&rev, "d", &["A", "B"], None), "B");
}

#[test]
fn no_rule_and_no_default_is_no_eligible_hub() {
    let rev = policy("[[rule]]\nname = \"edge\"\nwhen = { iot_edge = true }\n");
    let (d, _) = run(&rev, &request("d", &["a"], None, json!({})));
    assert_eq!(
        (d.outcome, d.rule, d.reasons),
        (Outcome::NoEligibleHub, None, vec![Reason::NoRuleMatched])
    );
    let rev = policy("[settings]\ndefault_rule = \"edge\"\n[[rule]]\nname = \"edge\"\nwhen = { iot_edge = true }\n");
    let (d, host) = run(&rev, &request("d", &["a"], None, json!({})));
    assert_eq!((host.as_deref(), d.reasons[0]), (Some("a"), Reason::DefaultRule));
}

#[test]
fn tenant_twin_merges_under_the_rule_twin() {
    let rev = policy(
        r#"
[[tenant]]
id = "t"
twin.tags = { tenant = "t", owner = "ops", tier = "bronze" }
[[rule]]
name = "r"
twin.tags = { tier = "${payload.tier}", hub = "${hub}" }
"#,
    );
    let (d, _) = run(
        &rev,
        &request("d", &["h"], None, json!({ "payload": { "tier": "gold" } })),
    );
    let Outcome::Assigned(a) = d.outcome else {
        panic!("assigned")
    };
    assert_eq!(
        String::from_utf8_lossy(a.initial_twin.as_deref().unwrap_or_default()),
        r#"{"tags":{"tenant":"t","owner":"ops","tier":"gold","hub":"h"}}"#
    );
}

#[test]
fn twin_and_payload_texts_are_exact_and_leave_out_empty_parts() {
    let text = |v: &Option<Vec<u8>>| v.as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
    let assigned = |toml: &str| {
        let rev = policy(toml);
        let (d, _) = run(&rev, &request("d", &["h"], None, json!({ "payload": { "n": 2 } })));
        let Outcome::Assigned(a) = d.outcome else {
            panic!("assigned: {:?}", d.outcome)
        };
        (text(&a.initial_twin), text(&a.payload))
    };
    assert_eq!(
        assigned("[[rule]]\nname = \"r\"\ntwin.desired = { s = \"on\", n = \"${payload.n}\" }\n"),
        (
            Some(r#"{"properties":{"desired":{"s":"on","n":"2"}}}"#.to_owned()),
            None
        )
    );
    assert_eq!(
        assigned(
            "[[rule]]\nname = \"r\"\ntwin.tags = { t = 1 }\ntwin.desired = { d = [1.5, {}] }\npayload = { k = \"${registration_id}\" }\n"
        ),
        (
            Some(r#"{"tags":{"t":1},"properties":{"desired":{"d":[1.5,{}]}}}"#.to_owned()),
            Some(r#"{"k":"d"}"#.to_owned())
        )
    );
    assert_eq!(assigned("[[rule]]\nname = \"r\"\n"), (None, None));
}

#[test]
fn desired_properties_and_payload_over_their_limits_report_their_exact_size() {
    // 20,000 quotes: 20,000 bytes of budget, 40,000 of JSON, over the 32 KiB limits.
    let quotes = "\"".repeat(20_000);
    for (part, name) in [("twin.desired", "desired properties"), ("payload", "payload")] {
        let rev = policy(&format!(
            "[[rule]]\nname = \"r\"\n{part} = {{ a = \"${{payload.v}}\" }}\n"
        ));
        let (d, _) = run(&rev, &request("d", &["h"], None, json!({ "payload": { "v": quotes } })));
        assert_eq!(
            d.outcome,
            Outcome::TooLarge {
                part: name,
                size: Some(40_008),
                limit: 32 * 1024
            },
            "{part}"
        );
    }
}

#[test]
fn rendering_stops_as_soon_as_a_twin_or_payload_is_certain_to_be_over_its_limit() {
    // A 120 KB payload value referenced 1,000 times once rendered ~120 MB before the size check.
    let refs: Vec<String> = (0..1000).map(|i| format!("k{i} = \"${{payload.big}}\"")).collect();
    let big = "x".repeat(120_000);
    for part in ["twin.tags", "twin.desired", "payload"] {
        let rev = policy(&format!("[[rule]]\nname = \"r\"\n{part} = {{ {} }}\n", refs.join(", ")));
        let (d, _) = run(&rev, &request("d", &["h"], None, json!({ "payload": { "big": big } })));
        assert!(
            matches!(d.outcome, Outcome::TooLarge { size: None, .. }),
            "{part}: {:?}",
            d.outcome
        );
    }
    // Under the limit, the size is still measured exactly, and a key the rule overrides counts once.
    let rev = policy(
        "[[tenant]]\nid = \"t\"\ntwin.tags = { a = \"${payload.v}\" }\n[[rule]]\nname = \"r\"\ntwin.tags = { a = \"${payload.v}\" }\n",
    );
    let v = "y".repeat(5000);
    let (d, _) = run(&rev, &request("d", &["h"], None, json!({ "payload": { "v": v } })));
    assert!(matches!(d.outcome, Outcome::Assigned(_)), "{:?}", d.outcome);
    // 5,000 quotes are 5,000 bytes to render and 10,000 of JSON: caught by the exact check.
    let quotes = "\"".repeat(5000);
    let (d, _) = run(&rev, &request("d", &["h"], None, json!({ "payload": { "v": quotes } })));
    assert!(
        matches!(
            d.outcome,
            Outcome::TooLarge {
                part: "twin tags",
                size: Some(10_008),
                ..
            }
        ),
        "{:?}",
        d.outcome
    );
}

#[test]
fn twins_over_iot_hub_limits_are_refused() {
    let rev = policy("[[rule]]\nname = \"r\"\ntwin.tags = { blob = \"${payload.blob}\" }\n");
    let blob = "x".repeat(9000);
    let (d, _) = run(
        &rev,
        &request("d", &["h"], None, json!({ "payload": { "blob": blob } })),
    );
    assert!(
        matches!(d.outcome, Outcome::TooLarge { part: "twin tags", .. }),
        "{:?}",
        d.outcome
    );
}

#[test]
fn the_trace_records_rules_candidates_and_scores() {
    let rev = policy(&format!(
        "[[rule]]\nname = \"edge\"\nwhen = {{ iot_edge = true }}\n{}",
        TWO.replace("[settings]", "[settings]\n")
    ));
    let body = request("d", &["a", "b", "zz"], None, json!({}));
    let req = AllocationRequest::parse(&body).expect("valid");
    let (d, t) = decide_traced(&req, &rev, None);
    assert_eq!(d, decide(&req, &rev, None), "tracing never changes the decision");
    assert_eq!(t.rules.len(), 2);
    assert_eq!(t.rules[0].failed.as_deref(), Some("iot_edge = true"));
    assert!(t.rules[1].matched);
    assert_eq!(t.candidates.len(), 3);
    assert!(t.candidates.iter().all(|c| c.score.is_some()));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn catalogue() -> Revision {
        policy(
            r#"
[[hub]]
host = "a.azure-devices.net"
weight = 3
[[hub]]
host = "b.azure-devices.net"
state = "draining"
[[hub]]
host = "c.azure-devices.net"
state = "disabled"
[[hub]]
host = "d.azure-devices.net"
weight = 1000
tags = { t = "x" }
[[rule]]
name = "tagged"
when = { payload = { pick = "tagged" } }
hubs = { tags = { t = "x" } }
strategy = "static"
[[rule]]
name = "listed"
when = { payload = { pick = "listed" } }
hubs = ["c.azure-devices.net", "b.azure-devices.net", "a.azure-devices.net"]
sticky = false
[[rule]]
name = "spread"
rebalance_percent = 50
"#,
        )
    }

    fn host() -> impl proptest::strategy::Strategy<Value = String> {
        prop_oneof![
            Just("a.azure-devices.net".to_owned()),
            Just("B.AZURE-DEVICES.NET".to_owned()),
            Just("c.azure-devices.net".to_owned()),
            Just("d.Azure-Devices.net".to_owned()),
            "[a-z]{1,8}\\.azure-devices\\.net",
        ]
    }

    proptest! {
        #[test]
        fn an_assigned_hub_is_always_one_of_linked_hubs_spelled_as_sent(
            id in "[A-Za-z0-9._:-]{1,128}",
            linked in proptest::collection::vec(host(), 1..8),
            current in proptest::option::of(host()),
            pick in prop_oneof![Just("tagged"), Just("listed"), Just("other")],
            never in any::<bool>(),
        ) {
            let rev = catalogue();
            let mut body = json!({
                "deviceRuntimeContext": { "registrationId": id, "payload": { "pick": pick } },
                "linkedHubs": linked,
                "enrollmentGroup": { "reprovisionPolicy": { "updateHubAssignment": !never } }
            });
            if let Some(c) = &current {
                body["deviceRuntimeContext"]["currentIotHubHostName"] = json!(c);
            }
            let bytes = serde_json::to_vec(&body).expect("serializes");
            let req = AllocationRequest::parse(&bytes).expect("valid");
            let d = decide(&req, &rev, None);
            if let Outcome::Assigned(a) = &d.outcome {
                let chosen = req.linked_hubs[a.linked].as_str();
                prop_assert!(linked.iter().any(|h| h == chosen));
                let hub = rev.find_hub(chosen);
                let is_current = current.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(chosen));
                // Never a disabled hub, and a draining one only for its own device.
                if let Some(h) = hub {
                    match rev.hubs[h].state {
                        HubState::Disabled => prop_assert!(never && is_current),
                        HubState::Draining => prop_assert!(is_current),
                        HubState::Active => {}
                    }
                }
            }
        }
    }
}

mod geo_latency {
    use super::*;
    use crate::geo::GeoIp;
    use crate::geo::mmdb::{NetworkRecord, write_city_db};
    use proptest::prelude::{Just, any, prop_assert, prop_oneof, proptest};
    use proptest::strategy::Strategy as _;

    const GEO: &str = r#"
[settings]
hash_seed = "geo"
[[hub]]
host = "weu-a"
region = "westeurope"
weight = 3
[[hub]]
host = "weu-b"
region = "westeurope"
weight = 1
[[hub]]
host = "jpe"
region = "japaneast"
[[hub]]
host = "far"
location = { lat = -45.0, lon = 170.0 }
[[rule]]
name = "near"
strategy = "geo-latency"
sticky = false
"#;

    fn geoip() -> GeoIp {
        let records = vec![NetworkRecord {
            network: "192.0.2.0/24".into(),
            lat: 52.37,
            lon: 4.89,
            accuracy_km: 5,
            city: "Amsterdam".into(),
            country: "NL".into(),
            continent: "EU".into(),
        }];
        let path = std::env::temp_dir().join(format!("dps-engine-geo-{}.mmdb", std::process::id()));
        std::fs::write(&path, write_city_db(&records, "T-City", 0).expect("db")).expect("write");
        let db = GeoIp::open(&path).expect("opens");
        let _ = std::fs::remove_file(&path);
        db
    }

    fn pick(rev: &Revision, db: Option<&GeoIp>, id: &str, payload: Value, current: Option<&str>) -> Decision {
        let body = request(
            id,
            &["weu-a", "weu-b", "jpe", "far"],
            current,
            json!({ "payload": payload }),
        );
        let req = AllocationRequest::parse(&body).expect("valid");
        decide(&req, rev, db)
    }

    fn host(d: &Decision) -> usize {
        match &d.outcome {
            Outcome::Assigned(a) => a.linked,
            other => panic!("not assigned: {other:?}"),
        }
    }

    #[test]
    fn a_tie_inside_the_band_is_split_by_weight() {
        let rev = policy(GEO);
        let db = geoip();
        let n = 10_000;
        let on_a = (0..n)
            .filter(|i| {
                host(&pick(
                    &rev,
                    Some(&db),
                    &format!("v{i}"),
                    json!({ "ip": "192.0.2.1" }),
                    None,
                )) == 0
            })
            .count();
        let share = on_a as f64 / f64::from(n);
        assert!((share - 0.75).abs() < 0.02, "weu-a share {share}");
    }

    #[test]
    fn without_a_database_an_ip_location_is_unknown_and_the_decision_says_so() {
        let rev = policy(GEO);
        let d = pick(&rev, None, "v", json!({ "ip": "192.0.2.1" }), None);
        assert!(
            d.reasons.contains(&Reason::LocationUnknown(Unknown::NoGeoIpDatabase)),
            "{:?}",
            d.reasons
        );
        assert!(d.reasons.contains(&Reason::Chose(StrategyName::WeightedHash, 4)));
    }

    #[test]
    fn hysteresis_keeps_the_current_hub_until_another_is_nearer_by_more_than_the_margin() {
        let rev = policy(GEO);
        // Tokyo device currently on the far hub: Japan East is thousands of km nearer, so it moves.
        let d = pick(&rev, None, "v", json!({ "region": "japaneast" }), Some("far"));
        assert_eq!(host(&d), 2);
        // A device near Japan East and already on it stays (the margin is measured against the nearest).
        let d = pick(
            &rev,
            None,
            "v",
            json!({ "location": { "lat": 35.0, "lon": 138.5 } }),
            Some("jpe"),
        );
        assert_eq!((host(&d), d.reasons.contains(&Reason::HysteresisKept)), (2, true));
        // Amsterdam device on Japan East: West Europe is far nearer than the 200 km margin.
        let d = pick(
            &rev,
            None,
            "v",
            json!({ "location": { "lat": 52.37, "lon": 4.89 } }),
            Some("jpe"),
        );
        assert!(host(&d) < 2);
    }

    proptest! {
        #[test]
        fn no_payload_ever_breaks_a_geo_decision(
            lat in prop_oneof![any::<f64>().prop_map(|x| json!(x)), ".{0,12}".prop_map(|s| json!(s)), Just(json!(null)), Just(json!([1]))],
            lon in prop_oneof![any::<f64>().prop_map(|x| json!(x)), ".{0,12}".prop_map(|s| json!(s)), Just(json!({}))],
            ip in prop_oneof![".{0,40}".prop_map(|s| json!(s)), any::<[u8; 4]>().prop_map(|b| json!(std::net::Ipv4Addr::from(b).to_string())), any::<u128>().prop_map(|b| json!(std::net::Ipv6Addr::from(b).to_string())), Just(json!(7))],
            region in prop_oneof![".{0,20}".prop_map(|s| json!(s)), Just(json!("westeurope")), Just(json!(false))],
        ) {
            let rev = policy(GEO);
            let db = geoip();
            let payload = json!({ "location": { "lat": lat, "lon": lon }, "ip": ip, "region": region });
            let d = pick(&rev, Some(&db), "v", payload, Some("weu-b"));
            let assigned = matches!(d.outcome, Outcome::Assigned(Assignment { linked: 0..=3, .. }));
            prop_assert!(assigned, "not assigned to a linked hub: {:?}", d.outcome);
        }
    }
}

mod rule_index {
    use super::*;
    use proptest::prelude::{any, prop_assert_eq, prop_oneof, proptest};
    use proptest::strategy::{Just, Strategy as _};

    fn group_cond() -> impl proptest::strategy::Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            (0u8..6).prop_map(|g| format!("enrollment_group = \"g{g}\", ")),
            (0u8..6, 0u8..6).prop_map(|(a, b)| format!("enrollment_group = {{ any_of = [\"g{a}\", \"g{b}\"] }}, ")),
            (0u8..6).prop_map(|g| format!("enrollment_group = {{ prefix = \"g{g}\" }}, ")),
            (0u8..6).prop_map(|g| format!("enrollment_group = {{ not = {{ equals = \"g{g}\" }} }}, ")),
        ]
    }

    fn id_cond() -> impl proptest::strategy::Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-c]{0,3}".prop_map(|p| format!("registration_id = {{ prefix = \"{p}\" }}, ")),
            "[a-c]{1,4}".prop_map(|p| format!("registration_id = \"{p}\", ")),
            "[A-C]{1,2}".prop_map(|p| format!("registration_id = {{ contains = \"{p}\" }}, ")),
        ]
    }

    fn rule() -> impl proptest::strategy::Strategy<Value = (String, String, Option<bool>)> {
        (group_cond(), id_cond(), proptest::option::of(any::<bool>()))
    }

    proptest! {
        #[test]
        fn the_indexed_first_match_is_the_full_scans(
            rules in proptest::collection::vec(rule(), 24..60),
            requests in proptest::collection::vec((0u8..7, "[a-cA-C]{0,5}", any::<bool>()), 1..40),
        ) {
            let mut text = String::from("[settings]\nhash_seed = \"idx\"\n");
            for (i, (g, id, edge)) in rules.iter().enumerate() {
                let edge = edge.map(|e| format!("iot_edge = {e}, ")).unwrap_or_default();
                let when = format!("{g}{id}{edge}");
                let when = when.trim_end_matches(", ");
                if when.is_empty() {
                    // A catch-all would make later rules unreachable (a load error): keep it last.
                    continue;
                }
                text.push_str(&format!("[[rule]]\nname = \"r{i}\"\nwhen = {{ {when} }}\n"));
            }
            let Ok(rev) = compile(vec![Source::new("idx.toml", text)]) else { return Ok(()) };
            for (g, id, edge) in requests {
                let group = if g == 6 { Value::Null } else { json!(format!("g{g}")) };
                let id = if id.is_empty() { "x".to_owned() } else { id };
                let body = json!({
                    "deviceRuntimeContext": { "registrationId": id },
                    "linkedHubs": ["h"],
                    "enrollmentGroup": { "enrollmentGroupId": group, "capabilities": { "iotEdge": edge } }
                });
                let bytes = serde_json::to_vec(&body).expect("json");
                let req = AllocationRequest::parse(&bytes).expect("valid");
                let reg_lower = ascii_lower(req.registration_id.as_str());
                let place = LazyPlace::new(None, &rev.settings.geo, None);
                let (facts, _) = subject(&req, &rev, &reg_lower, None, &place, &mut NoTrace);
                prop_assert_eq!(first_match(&rev, &facts), first_match_scan(&rev, &facts));
                let (traced, _) = decide_traced(&req, &rev, None);
                prop_assert_eq!(decide(&req, &rev, None), traced);
            }
        }
    }
}
