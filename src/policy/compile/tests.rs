//! Compiler tests: every mistake found at once, each at its file:line:col.

use super::*;
use crate::geo::LatLon;

fn src(name: &str, text: &str) -> Source {
    Source::new(name, text)
}

fn errors(sources: Vec<Source>) -> Vec<String> {
    match compile(sources) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn ok(sources: Vec<Source>) -> Revision {
    match compile(sources) {
        Ok(r) => r,
        Err(e) => panic!("expected the policy to load:\n{e}"),
    }
}

#[test]
fn every_mistake_in_a_directory_is_reported_with_file_line_and_column() {
    let hubs = src(
        "p/10-hubs.toml",
        r#"[[hub]]
host = "a.azure-devices.net"
region = "westeurop"

[[hub]]
host = "b.azure-devices.net"
weight = 5000

[[hub]]
host = "A.azure-devices.net"
colour = "blue"
"#,
    );
    let rules = src(
        "p/30-rules.toml",
        r#"[[rule]]
name = "eu"
hubs = { regions = ["westeurope", "northeurop"] }
twin.tags = { owner = "${tennant}" }

[[rule]]
name = "bad-regex"
when = { registration_id = { regex = "(unclosed" } }
strategy = "nearest"
"#,
    );
    let got = errors(vec![hubs, rules]);
    let want = [
        "p/10-hubs.toml:11:1: hub `A.azure-devices.net`: unknown field `colour`, expected one of `host`, `region`, `location`, `weight`, `state`, `tags`, `capacity`",
        "p/30-rules.toml:9:12: rule `bad-regex`: unknown variant `nearest`, expected one of `static`, `weighted-hash`, `geo-latency`",
        "p/10-hubs.toml:3:10: hub `a.azure-devices.net`: unknown region `westeurop` (did you mean `westeurope`?)",
        "p/10-hubs.toml:7:10: hub `b.azure-devices.net`: weight 5000 is out of range 1..=1000",
        "p/30-rules.toml:3:36: rule `eu`: unknown region `northeurop` (did you mean `northeurope`?)",
        "p/30-rules.toml:4:24: rule `eu`: `twin.tags`: unknown variable `${tennant}`",
    ];
    assert_eq!(got, want);
}

#[test]
fn semantic_errors_in_parsed_elements_are_all_reported() {
    let hubs = src(
        "p/10-hubs.toml",
        "[[hub]]\nhost = \"a.azure-devices.net\"\nregion = \"westeurope\"\n",
    );
    let rules = src(
        "p/30-rules.toml",
        r#"[[rule]]
name = "eu"
hubs = { regions = ["westeurope", "northeurop"] }
twin.tags = { owner = "${tennant}" }

[[rule]]
name = "bad-regex"
when = { registration_id = { regex = "(unclosed" } }

[[rule]]
name = "listed"
hubs = ["a.azure-devices.net", "missing.azure-devices.net"]
rebalance_percent = 150
"#,
    );
    let got = errors(vec![hubs, rules]);
    let want = [
        "p/30-rules.toml:3:36: rule `eu`: unknown region `northeurop` (did you mean `northeurope`?)",
        "p/30-rules.toml:4:24: rule `eu`: `twin.tags`: unknown variable `${tennant}`",
        "p/30-rules.toml:8:28: rule `bad-regex`: `registration_id`: invalid regex `(unclosed`: unclosed group",
        "p/30-rules.toml:12:33: rule `listed`: hub `missing.azure-devices.net` is not in the catalogue",
        "p/30-rules.toml:13:21: rule `listed`: rebalance_percent 150 is out of range 0..=100",
        // `eu` has no `when`: it takes every device, so both rules after it are dead.
        "p/30-rules.toml:7:8: rule `bad-regex` can never match: rule `eu` at p/30-rules.toml:2:8 matches every device first",
        "p/30-rules.toml:11:8: rule `listed` can never match: rule `eu` at p/30-rules.toml:2:8 matches every device first",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in\n{}",
            got.join("\n")
        );
    }
    assert_eq!(got.len(), want.len(), "{}", got.join("\n"));
}

#[test]
fn directory_level_mistakes_are_reported_when_every_file_parses() {
    let text = r#"[settings]
default_rule = "nowhere"

[[hub]]
host = "a.azure-devices.net"

[[hub]]
host = "A.AZURE-DEVICES.NET"

[[tenant]]
id = "t"

[[tenant]]
id = "t"

[[rule]]
name = "all"

[[rule]]
name = "all"
when = { iot_edge = true }
"#;
    let got = errors(vec![src("d.toml", text)]);
    let want = [
        "d.toml:8:8: duplicate hub `A.AZURE-DEVICES.NET` (first at d.toml:5:8)",
        "d.toml:14:6: duplicate tenant `t` (first at d.toml:11:6)",
        "d.toml:14:6: tenant `t` can never match: tenant `t` at d.toml:11:6 takes every device first",
        "d.toml:20:8: duplicate rule `all` (first at d.toml:17:8)",
        "d.toml:20:8: rule `all` can never match: rule `all` at d.toml:17:8 matches every device first",
        "d.toml:2:16: `default_rule` names unknown rule `nowhere`",
    ];
    for w in want {
        assert!(got.iter().any(|g| g == w), "missing {w:?} in\n{}", got.join("\n"));
    }
    assert_eq!(got.len(), want.len(), "{}", got.join("\n"));
}

#[test]
fn syntax_errors_are_located_and_other_files_still_checked() {
    let broken = src("a.toml", "[[rule]]\nname = \"x\"\nwhen = { iot_edge = }\n");
    let bad_region = src("b.toml", "[[hub]]\nhost = \"h\"\nregion = \"mars\"\n");
    let got = errors(vec![broken, bad_region]);
    assert!(got.iter().any(|g| g.starts_with("a.toml:3:")), "{got:?}");
    assert!(
        got.iter().any(|g| g == "b.toml:3:10: hub `h`: unknown region `mars`"),
        "{got:?}"
    );
}

#[test]
fn unknown_tables_keys_and_single_brackets_are_errors() {
    let got = errors(vec![src("x.toml", "[hub]\nhost = \"h\"\n[rules]\n")]);
    assert!(
        got.iter()
            .any(|g| g.starts_with("x.toml:1:2: `hub` must be an array of tables")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|g| g.starts_with("x.toml:3:2: unknown table `rules`")),
        "{got:?}"
    );
    let got = errors(vec![src(
        "y.toml",
        "[[rule]]\nname = \"r\"\nwhen = { registration = \"x\" }\n",
    )]);
    assert!(
        got.iter()
            .any(|g| g.starts_with("y.toml:3:10: rule `r`: unknown field `registration`")),
        "{got:?}"
    );
    let got = errors(vec![src(
        "z.toml",
        "[[rule]]\nname = \"r\"\nwhen = { registration_id = { prefx = \"x\" } }\n",
    )]);
    assert!(got.iter().any(|g| g.contains("unknown field `prefx`")), "{got:?}");
}

#[test]
fn rejecting_rules_take_no_assignment_keys_and_need_a_4xx() {
    let got = errors(vec![src(
        "r.toml",
        "[[rule]]\nname = \"r\"\nstrategy = \"static\"\nreject = { status = 500, reason = \"No Way\" }\n",
    )]);
    assert!(
        got.iter()
            .any(|g| g.contains("a rejecting rule assigns no hub, so it takes no `strategy`")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|g| g.contains("reject status 500 is not a 4xx status")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|g| g.contains("reject reason `No Way` must be snake_case")),
        "{got:?}"
    );
}

#[test]
fn geo_keys_are_refused_outside_geo_latency() {
    let got = errors(vec![src(
        "g.toml",
        "[[rule]]\nname = \"r\"\nstrategy = \"weighted-hash\"\nfallback = \"static\"\ngeo = { tie_band_km = 10 }\n",
    )]);
    assert_eq!(got.len(), 2, "{got:?}");
    let got = errors(vec![src(
        "g.toml",
        "[[rule]]\nname = \"r\"\nstrategy = \"geo-latency\"\nfallback = \"geo-latency\"\ngeo = { tie_band_km = -1, lat_path = \"a..b\" }\n",
    )]);
    assert_eq!(got.len(), 3, "{got:?}");
}

#[test]
fn selector_tags_may_use_only_the_tenant() {
    let got = errors(vec![src(
        "s.toml",
        "[[rule]]\nname = \"r\"\nhubs = { tags = { t = \"${hub}\" } }\n",
    )]);
    assert!(
        got.iter()
            .any(|g| g.contains("variable `${hub}` is not available here")),
        "{got:?}"
    );
}

#[test]
fn a_tenant_cannot_test_tenant_and_rule_names_are_identifiers() {
    let got = errors(vec![src(
        "t.toml",
        "[[tenant]]\nid = \"a\"\nwhen = { tenant = \"b\" }\n[[rule]]\nname = \"has space\"\n",
    )]);
    assert!(
        got.iter().any(|g| g.contains("a tenant's `when` cannot test `tenant`")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|g| g.contains("rule name `has space` must be letters")),
        "{got:?}"
    );
}

#[test]
fn settings_may_appear_once() {
    let got = errors(vec![
        src("a.toml", "[settings]\nsticky = true\n"),
        src("b.toml", "[settings]\nsticky = false\n"),
    ]);
    assert_eq!(
        got,
        vec!["b.toml:1:1: `[settings]` may appear only once (first at a.toml:1:1)".to_owned()]
    );
}

#[test]
fn defaults_apply_and_the_revision_id_is_a_content_hash() {
    let a = ok(vec![src("/x/a.toml", "[[rule]]\nname = \"r\"\n")]);
    assert_eq!(a.settings.hash_seed, DEFAULT_HASH_SEED);
    assert!(a.settings.sticky);
    assert_eq!(a.settings.geo.tie_band_km, 50.0);
    assert_eq!(a.settings.geo.lat_path.as_str(), "location.lat");
    assert!(matches!(a.rules[0].action, Action::Assign(Strategy::WeightedHash)));
    assert_eq!(a.id.len(), 12);
    // The same files elsewhere give the same id; a changed byte gives another.
    let b = ok(vec![src("/elsewhere/a.toml", "[[rule]]\nname = \"r\"\n")]);
    assert_eq!(a.id, b.id);
    let c = ok(vec![src("/x/a.toml", "[[rule]]\nname = \"r\" \n")]);
    assert_ne!(a.id, c.id);
}

#[test]
fn hubs_resolve_regions_and_are_found_ignoring_case() {
    let r = ok(vec![src(
        "h.toml",
        "[[hub]]\nhost = \"Hub-1.azure-devices.net\"\nregion = \"WestEurope\"\nweight = 7\n[[hub]]\nhost = \"h2\"\nlocation = { lat = 1.5, lon = 2.5 }\n",
    )]);
    assert_eq!(r.find_hub("hub-1.AZURE-devices.net"), Some(0));
    assert_eq!(r.find_hub("H2"), Some(1));
    assert_eq!(r.find_hub("h3"), None);
    assert_eq!(r.hubs[0].region.map(|x| x.name), Some("westeurope"));
    assert_eq!(r.hubs[0].weight, 7);
    assert_eq!(r.hubs[1].location, Some(LatLon { lat: 1.5, lon: 2.5 }));
}

#[test]
fn the_shipped_and_embedded_policies_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let rev = match crate::policy::load_dir(&dir) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert!(rev.rules.iter().any(|r| r.name == "toasters"));
    assert!(crate::policy::embedded_default().is_ok());
}

#[test]
fn a_glob_too_large_for_its_regex_is_a_located_error_not_a_panic() {
    // 100,000 stars made globset's own regex compilation panic; now the glob gets the regex limits.
    let stars = "*".repeat(100_000);
    let text = format!("[[rule]]\nname = \"stars\"\nwhen = {{ registration_id = {{ glob = \"{stars}x\" }} }}\n");
    let errs = errors(vec![src("p/glob.toml", &text)]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("p/glob.toml:3:"), "{}", errs[0]);
    assert!(errs[0].contains("is too large or complex"), "{}", errs[0]);
    assert!(
        errs[0].len() < 400,
        "the message quotes a shortened pattern: {} bytes",
        errs[0].len()
    );
    // An ordinary glob still compiles.
    ok(vec![src(
        "p/glob.toml",
        "[[rule]]\nname = \"g\"\nwhen = { registration_id = { glob = \"*-contoso-*\" } }\n",
    )]);
}

/// A fence file's path and text.
type FenceFile = (&'static str, String);

/// Fence files from memory, for the compiler's tests.
struct MemFences(Vec<FenceFile>);

impl FenceFiles for MemFences {
    fn read(&self, path: &str) -> Result<String, String> {
        self.0
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| "no such file".to_owned())
    }
}

const SQUARE: &str = r#"{"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}"#;

fn fenced(within: &str, files: Vec<FenceFile>) -> Result<Revision, Vec<String>> {
    let rule =
        format!("[[rule]]\nname = \"in\"\nwhen = {{ location = {{ within = {within} }} }}\n[[rule]]\nname = \"out\"\n");
    compile_with(vec![src("p/r.toml", &rule)], &MemFences(files))
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

#[test]
fn fence_files_are_validated_with_the_rule_that_names_them() {
    let ok = fenced("\"fences/sq.geojson\"", vec![("fences/sq.geojson", SQUARE.to_owned())]).expect("loads");
    assert_eq!(ok.fences.len(), 1);
    assert_eq!(ok.fences[0].vertices, 5);
    let cases: Vec<(&str, Vec<FenceFile>, &str)> = vec![
        (
            "\"fences/missing.geojson\"",
            vec![],
            "`fences/missing.geojson`: no such file",
        ),
        ("\"../outside.geojson\"", vec![], "a path inside the policy directory"),
        ("\"/etc/fence.geojson\"", vec![], "a path inside the policy directory"),
        ("[]", vec![], "names no fence"),
        (
            "\"f.geojson\"",
            vec![(
                "f.geojson",
                "{\"type\": \"Polygon\",\n \"coordinates\": [[[0, 0], [1, 0]]]}".to_owned(),
            )],
            "`f.geojson`: the geometry, ring 0 has 2 positions",
        ),
        (
            "\"f.geojson\"",
            vec![("f.geojson", "{\n  \"type\": \n}".to_owned())],
            "`f.geojson`:3:1: not valid JSON",
        ),
        (
            "\"f.geojson\"",
            vec![("f.geojson", SQUARE.replace("[0, 10], [0, 0]]", "[0, 10], [0, 1]]"))],
            "ring 0 is not closed",
        ),
    ];
    for (within, files, want) in cases {
        let errs = fenced(within, files).expect_err(within);
        assert_eq!(errs.len(), 1, "{within}: {errs:?}");
        assert!(errs[0].starts_with("p/r.toml:3:"), "{}", errs[0]);
        assert!(errs[0].contains(want), "{within}: {}", errs[0]);
    }
}

#[test]
fn a_fence_is_part_of_the_revision_id_and_read_once() {
    let a = fenced("[\"f.geojson\", \"f.geojson\"]", vec![("f.geojson", SQUARE.to_owned())]).expect("loads");
    assert_eq!(a.fences.len(), 1, "one fence however often it is named");
    let same = fenced("\"f.geojson\"", vec![("f.geojson", SQUARE.to_owned())]).expect("loads");
    let again = fenced("\"f.geojson\"", vec![("f.geojson", SQUARE.to_owned())]).expect("loads");
    assert_eq!(same.id, again.id);
    let moved = SQUARE.replace("[10, 10]", "[11, 10]");
    let b = fenced("\"f.geojson\"", vec![("f.geojson", moved)]).expect("loads");
    assert_ne!(same.id, b.id, "a changed fence is a new revision");
}

#[test]
fn location_needs_something_to_test() {
    let errs = errors(vec![src(
        "p/r.toml",
        "[[rule]]\nname = \"x\"\nwhen = { location = {} }\n",
    )]);
    assert!(
        errs[0].contains("`location` needs `country`, `continent`, `within` or `known`"),
        "{errs:?}"
    );
    let errs = errors(vec![src(
        "p/r.toml",
        "[[rule]]\nname = \"x\"\nwhen = { location = { within = \"f.geojson\" } }\n",
    )]);
    assert!(errs[0].contains("read from a policy directory"), "{errs:?}");
}

#[test]
fn an_unquoted_dotted_payload_path_gets_a_hint_to_quote_it() {
    let got = errors(vec![src(
        "d.toml",
        "[[rule]]\nname = \"fw\"\nwhen = { payload = { fw.version = \"1.2\" } }\n",
    )]);
    assert!(
        got.iter()
            .any(|g| g.starts_with("d.toml:3:25: rule `fw`: unknown field `version`")
                && g.contains("a dotted payload path is one key: quote it (`\"fw.version\" = …`)")),
        "{got:?}"
    );
    // Quoted, it loads.
    assert!(
        errors(vec![src(
            "d.toml",
            "[[rule]]\nname = \"fw\"\nwhen = { payload = { \"fw.version\" = \"1.2\" } }\n"
        )])
        .is_empty()
    );
}
