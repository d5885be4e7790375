//! The policy compiler: raw files in, one validated [`Revision`] out, or every error at once.
//!
//! Stage one parses each file (syntax errors, recovering to find more) and deserializes every table element
//! on its own. Stage two checks each element (regions, weights, regexes, templates, selectors). Stage three
//! checks the directory as a whole (duplicates, `default_rule`, rules hidden behind a catch-all), and runs
//! only when every element parsed, so a typo in one file does not cascade into false alarms elsewhere.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;
use toml::de::{DeTable, ValueDeserializer};

use super::condition::{Cond, JsonPath, REGEX_SIZE_LIMIT, StrCond, StrOp, ValueCond, When};
use super::raw::{
    HubState, RawGeo, RawHub, RawReject, RawRule, RawSelector, RawSettings, RawStrOps, RawTenant, RawTwin, RawWhen,
    RawWhere, StrCondRaw, StrategyName, ValueCondRaw,
};
use super::template::{StrTemplate, ValueTemplate, Var, any_var};
use super::{
    Action, Fallback, GeoSettings, Hub, Location, PolicyError, PolicyErrors, Rejection, Revision, Rule, Selector,
    Settings, Source, Strategy, Tenant, TwinTemplate,
};
use crate::geo::{Fence, LatLon, regions};
use crate::hashing::SeedKey;

/// The seed used when `settings.hash_seed` is not given.
pub const DEFAULT_HASH_SEED: &str = "dps-allocator";

/// One table element with the file it came from.
struct Item<T> {
    src: usize,
    span: Range<usize>,
    raw: T,
}

struct Ctx<'s> {
    sources: &'s [Source],
    errors: Vec<PolicyError>,
    fence_files: &'s dyn FenceFiles,
    /// Fences read so far, by path; their texts go into the revision id.
    fences: Vec<(String, String, Arc<Fence>)>,
}

/// Where `within` fence files come from: the policy directory, or nowhere (a policy compiled from
/// sources alone can name no fence).
pub trait FenceFiles {
    /// The text of the file at this path relative to the policy directory; the error says why not.
    fn read(&self, path: &str) -> Result<String, String>;
}

/// No fence files.
pub struct NoFences;

impl FenceFiles for NoFences {
    fn read(&self, _: &str) -> Result<String, String> {
        Err("fence files are read from a policy directory; this policy has none".to_owned())
    }
}

impl Ctx<'_> {
    fn at(&self, src: usize, offset: usize) -> Location {
        self.sources[src].location(offset)
    }

    fn error(&mut self, src: usize, offset: usize, message: impl Into<String>) {
        let location = Some(self.at(src, offset));
        self.errors.push(PolicyError {
            location,
            message: message.into(),
        });
    }

    fn error_at(&mut self, location: Location, message: impl Into<String>) {
        self.errors.push(PolicyError {
            location: Some(location),
            message: message.into(),
        });
    }

    fn snippet(&self, src: usize, span: &Range<usize>) -> &str {
        self.sources[src].snippet(span)
    }
}

#[derive(Default)]
struct Parsed {
    settings: Vec<Item<RawSettings>>,
    hubs: Vec<Item<RawHub>>,
    tenants: Vec<Item<RawTenant>>,
    rules: Vec<Item<RawRule>>,
    complete: bool,
}

/// Compiles policy files (in the order given) into a revision.
///
/// A panic inside the compiler (a bug, or a library's on some input) is caught here and reported as a
/// policy error: no policy file can take `check`, `serve` or the reloader down.
pub fn compile(sources: Vec<Source>) -> Result<Revision, PolicyErrors> {
    compile_with(sources, &NoFences)
}

/// [`compile`], reading the fence files rules name through `fences`.
pub fn compile_with(sources: Vec<Source>, fences: &dyn FenceFiles) -> Result<Revision, PolicyErrors> {
    let names: Vec<String> = sources.iter().map(|s| s.name.to_string()).collect();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compile_unguarded(sources, fences))).unwrap_or_else(
        |panic| {
            let why = panic_message(&*panic, 200);
            Err(PolicyErrors::single(format!(
                "{}: internal error while compiling the policy ({why}); please report it",
                names.join(", ")
            )))
        },
    )
}

/// A panic's message (a `&str` or `String` payload), at most `max` characters: for the one line that
/// reports a caught panic, here and in the binary's panic hook.
pub fn panic_message(payload: &(dyn std::any::Any + Send), max: usize) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
        .chars()
        .take(max)
        .collect()
}

fn compile_unguarded(sources: Vec<Source>, fence_files: &dyn FenceFiles) -> Result<Revision, PolicyErrors> {
    let mut cx = Ctx {
        sources: &sources,
        errors: Vec::new(),
        fence_files,
        fences: Vec::new(),
    };
    let parsed = parse_all(&mut cx);

    let settings = compile_settings(&mut cx, &parsed.settings);
    let hubs = compile_hubs(&mut cx, &parsed.hubs, settings.seed);
    let lookup = Revision::build_lookup(&hubs);
    let find_hub = |host: &str| hubs.iter().position(|h| h.host.eq_ignore_ascii_case(host));

    let tenants: Vec<Tenant> = parsed
        .tenants
        .iter()
        .filter_map(|t| compile_tenant(&mut cx, t))
        .collect();
    let rules: Vec<Rule> = parsed
        .rules
        .iter()
        .filter_map(|r| compile_rule(&mut cx, r, &settings, &find_hub))
        .collect();

    if parsed.complete {
        check_directory(&mut cx, &parsed);
    }
    let default_rule = parsed
        .settings
        .first()
        .and_then(|s| s.raw.default_rule.as_ref())
        .and_then(|d| rules.iter().position(|r| r.name == *d.get_ref()));

    if !cx.errors.is_empty() {
        return Err(PolicyErrors(cx.errors));
    }
    let id = revision_id(&sources, &cx.fences);
    Ok(Revision {
        id,
        settings,
        hubs,
        hub_lookup: lookup,
        tenants,
        rule_index: super::RuleIndex::build(&rules),
        rules,
        default_rule,
        files: sources.iter().map(|s| s.name.clone()).collect(),
        fences: cx.fences.into_iter().map(|(_, _, f)| f).collect(),
    })
}

/// First 12 hex digits of SHA-256 over each file's base name and contents, so the id does not depend on
/// where the directory is mounted.
fn revision_id(sources: &[Source], fences: &[(String, String, Arc<Fence>)]) -> String {
    let mut h = Sha256::new();
    for s in sources {
        let base = s.name.rsplit(['/', '\\']).next().unwrap_or(&s.name);
        h.update(base.as_bytes());
        h.update([0]);
        h.update(s.text.as_bytes());
        h.update([0]);
    }
    // Fence files are part of the revision: their paths (relative to the directory) and contents.
    for (path, text, _) in fences {
        h.update(b"fence\0");
        h.update(path.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn parse_all(cx: &mut Ctx<'_>) -> Parsed {
    let mut parsed = Parsed {
        complete: true,
        ..Parsed::default()
    };
    for src in 0..cx.sources.len() {
        let text = &cx.sources[src].text;
        let (doc, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            parsed.complete = false;
            for e in syntax {
                let at = e.span().map_or(0, |s| s.start);
                cx.error(src, at, format!("syntax: {}", e.message().trim()));
            }
            continue;
        }
        for (key, value) in doc.get_ref().iter() {
            let kind = key.get_ref().as_ref();
            match kind {
                "settings" => parsed.complete &= element(cx, src, value, "settings", &mut parsed.settings),
                "hub" | "tenant" | "rule" => {
                    let Some(items) = value.get_ref().as_array() else {
                        cx.error(
                            src,
                            key.span().start,
                            format!("`{kind}` must be an array of tables: write `[[{kind}]]`"),
                        );
                        parsed.complete = false;
                        continue;
                    };
                    for item in items.iter() {
                        parsed.complete &= match kind {
                            "hub" => element(cx, src, item, kind, &mut parsed.hubs),
                            "tenant" => element(cx, src, item, kind, &mut parsed.tenants),
                            _ => element(cx, src, item, kind, &mut parsed.rules),
                        };
                    }
                }
                other => {
                    cx.error(
                        src,
                        key.span().start,
                        format!("unknown table `{other}`: expected `settings`, `hub`, `tenant` or `rule`"),
                    );
                    parsed.complete = false;
                }
            }
        }
    }
    parsed
}

fn element<'de, T: Deserialize<'de>>(
    cx: &mut Ctx<'_>,
    src: usize,
    value: &Spanned<toml::de::DeValue<'de>>,
    kind: &str,
    out: &mut Vec<Item<T>>,
) -> bool {
    let span = value.span();
    match T::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(raw) => {
            out.push(Item { src, span, raw });
            true
        }
        Err(e) => {
            let at = e.span().map_or(span.start, |s| s.start);
            let message = e.message().trim();
            // A matcher's fields in the error: a condition's key was read as a table, most often a dotted
            // payload path TOML split at its dots.
            let hint = if message.starts_with("unknown field") && message.contains("`equals`") {
                "; a dotted payload path is one key: quote it (`\"fw.version\" = …`), else TOML reads `fw.version` as a table `fw` holding `version`"
            } else {
                ""
            };
            match element_name(value) {
                Some(name) => cx.error(src, at, format!("{kind} `{name}`: {message}{hint}")),
                None => cx.error(src, at, format!("{kind}: {message}{hint}")),
            }
            false
        }
    }
}

/// The name an element goes by, for an error message: a rule's `name`, a tenant's `id`, a hub's `host`.
fn element_name<'v>(value: &'v Spanned<toml::de::DeValue<'_>>) -> Option<&'v str> {
    let table = value.get_ref().as_table()?;
    ["name", "id", "host"].iter().find_map(|key| {
        table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .and_then(|(_, v)| v.get_ref().as_str())
    })
}

fn compile_settings(cx: &mut Ctx<'_>, items: &[Item<RawSettings>]) -> Settings {
    if let (Some(first), Some(second)) = (items.first(), items.get(1)) {
        let loc = cx.at(first.src, first.span.start);
        cx.error(
            second.src,
            second.span.start,
            format!("`[settings]` may appear only once (first at {loc})"),
        );
    }
    let raw = items.first();
    let src = raw.map_or(0, |i| i.src);
    let raw = raw.map(|i| &i.raw);
    let hash_seed = raw
        .and_then(|r| r.hash_seed.as_ref())
        .map_or(DEFAULT_HASH_SEED, |s| s.get_ref())
        .to_owned();
    let geo = compile_geo(cx, src, raw.and_then(|r| r.geo.as_ref()), &default_geo());
    Settings {
        seed: SeedKey::new(&hash_seed),
        hash_seed,
        sticky: raw.and_then(|r| r.sticky).unwrap_or(true),
        unknown_linked_hubs: raw.and_then(|r| r.unknown_linked_hubs).unwrap_or_default(),
        geo,
    }
}

fn default_geo() -> GeoSettings {
    let path = JsonPath::builtin;
    GeoSettings {
        tie_band_km: 50.0,
        hysteresis_km: 200.0,
        max_accuracy_km: 1000.0,
        lat_path: path("location.lat"),
        lon_path: path("location.lon"),
        ip_path: path("ip"),
        region_path: path("region"),
        country_path: path("country"),
        continent_path: path("continent"),
    }
}

fn compile_geo(cx: &mut Ctx<'_>, src: usize, raw: Option<&RawGeo>, base: &GeoSettings) -> GeoSettings {
    let mut geo = base.clone();
    let Some(raw) = raw else { return geo };
    let mut km = |v: &Option<Spanned<f64>>, name: &str, min_exclusive: bool, out: &mut f64| {
        if let Some(v) = v {
            let x = *v.get_ref();
            let ok = x.is_finite() && if min_exclusive { x > 0.0 } else { x >= 0.0 };
            if ok {
                *out = x;
            } else {
                let bound = if min_exclusive { "above 0" } else { "0 or more" };
                cx.error(
                    src,
                    v.span().start,
                    format!("`{name}` must be a finite number {bound}, not {x}"),
                );
            }
        }
    };
    km(&raw.tie_band_km, "tie_band_km", false, &mut geo.tie_band_km);
    km(&raw.hysteresis_km, "hysteresis_km", false, &mut geo.hysteresis_km);
    km(&raw.max_accuracy_km, "max_accuracy_km", true, &mut geo.max_accuracy_km);
    for (v, out) in [
        (&raw.lat_path, &mut geo.lat_path),
        (&raw.lon_path, &mut geo.lon_path),
        (&raw.ip_path, &mut geo.ip_path),
        (&raw.region_path, &mut geo.region_path),
        (&raw.country_path, &mut geo.country_path),
        (&raw.continent_path, &mut geo.continent_path),
    ] {
        if let Some(v) = v {
            match JsonPath::parse(v.get_ref()) {
                Ok(p) => *out = p,
                Err(e) => cx.error(src, v.span().start, e),
            }
        }
    }
    geo
}

fn compile_hubs(cx: &mut Ctx<'_>, items: &[Item<RawHub>], seed: SeedKey) -> Vec<Hub> {
    let mut hubs = Vec::with_capacity(items.len());
    for Item { src, raw, .. } in items {
        let src = *src;
        let host = raw.host.get_ref().trim();
        let origin = cx.at(src, raw.host.span().start);
        let before = cx.errors.len();
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            cx.error_at(origin.clone(), format!("hub host `{host}` is not a host name"));
        }
        let region = raw.region.as_ref().and_then(|r| {
            let found = regions::find(r.get_ref());
            if found.is_none() {
                let hint = regions::suggest(r.get_ref())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                cx.error(
                    src,
                    r.span().start,
                    format!("hub `{host}`: unknown region `{}`{hint}", r.get_ref()),
                );
            }
            found
        });
        let location = match &raw.location {
            Some(l) => {
                let (lat, lon) = (l.get_ref().lat, l.get_ref().lon);
                if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                    cx.error(
                        src,
                        l.span().start,
                        format!("hub `{host}`: location ({lat}, {lon}) is not a valid latitude and longitude"),
                    );
                }
                Some(LatLon { lat, lon })
            }
            None => region.map(|r| LatLon { lat: r.lat, lon: r.lon }),
        };
        let weight = match &raw.weight {
            Some(w) if (1..=1000).contains(w.get_ref()) => *w.get_ref() as u32,
            Some(w) => {
                cx.error(
                    src,
                    w.span().start,
                    format!("hub `{host}`: weight {} is out of range 1..=1000", w.get_ref()),
                );
                1
            }
            None => 1,
        };
        let capacity = match &raw.capacity {
            Some(c) if *c.get_ref() >= 0 => Some(*c.get_ref() as u64),
            Some(c) => {
                cx.error(
                    src,
                    c.span().start,
                    format!("hub `{host}`: capacity must not be negative"),
                );
                None
            }
            None => None,
        };
        if cx.errors.len() == before {
            hubs.push(Hub {
                host: host.to_owned(),
                host_lower: host.to_ascii_lowercase(),
                key: seed.host_key(host),
                region,
                location,
                weight,
                state: raw.state.unwrap_or(HubState::Active),
                tags: raw.tags.clone(),
                capacity,
                origin,
            });
        }
    }
    hubs
}

fn compile_tenant(cx: &mut Ctx<'_>, item: &Item<RawTenant>) -> Option<Tenant> {
    let (src, raw) = (item.src, &item.raw);
    let id = raw.id.get_ref().clone();
    let before = cx.errors.len();
    if id.is_empty() {
        cx.error(src, raw.id.span().start, "tenant id must not be empty");
    }
    let what = format!("tenant `{id}`");
    let when = compile_when(cx, src, raw.when.as_ref(), &what, false);
    let twin = compile_twin(cx, src, raw.twin.as_ref(), &what);
    (cx.errors.len() == before).then(|| Tenant {
        id,
        when,
        twin,
        origin: cx.at(src, raw.id.span().start),
    })
}

fn compile_rule(
    cx: &mut Ctx<'_>,
    item: &Item<RawRule>,
    settings: &Settings,
    find_hub: &dyn Fn(&str) -> Option<usize>,
) -> Option<Rule> {
    let (src, raw) = (item.src, &item.raw);
    let name = raw.name.get_ref().clone();
    let before = cx.errors.len();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        cx.error(
            src,
            raw.name.span().start,
            format!("rule name `{name}` must be letters, digits, `.`, `_` or `-` (it appears in headers and metrics)"),
        );
    }
    let what = format!("rule `{name}`");
    let when = compile_when(cx, src, raw.when.as_ref(), &what, true);
    let selector = match &raw.hubs {
        Some(h) => compile_selector(cx, src, h, &what, find_hub),
        None => Selector::All,
    };
    let action = match &raw.reject {
        Some(reject) => {
            let assigning: Vec<&str> = [
                ("hubs", raw.hubs.is_some()),
                ("strategy", raw.strategy.is_some()),
                ("fallback", raw.fallback.is_some()),
                ("geo", raw.geo.is_some()),
                ("sticky", raw.sticky.is_some()),
                ("rebalance_percent", raw.rebalance_percent.is_some()),
                ("twin", raw.twin.is_some()),
                ("payload", raw.payload.is_some()),
            ]
            .into_iter()
            .filter_map(|(k, present)| present.then_some(k))
            .collect();
            if !assigning.is_empty() {
                cx.error(
                    src,
                    reject.span().start,
                    format!(
                        "{what}: a rejecting rule assigns no hub, so it takes no `{}`",
                        assigning.join("`, `")
                    ),
                );
            }
            Action::Reject(compile_reject(cx, src, reject, &name))
        }
        None => Action::Assign(compile_strategy(cx, src, raw, settings, &what)),
    };
    let rebalance_bp = match &raw.rebalance_percent {
        Some(p) if (0.0..=100.0).contains(p.get_ref()) => (p.get_ref() * 100.0).round() as u32,
        Some(p) => {
            cx.error(
                src,
                p.span().start,
                format!("{what}: rebalance_percent {} is out of range 0..=100", p.get_ref()),
            );
            0
        }
        None => 0,
    };
    let twin = compile_twin(cx, src, raw.twin.as_ref(), &what);
    let payload = raw.payload.as_ref().and_then(|p| {
        let t = template_table(cx, src, p, &what, "payload")?;
        (!t.is_empty_object()).then_some(t)
    });
    (cx.errors.len() == before).then(|| Rule {
        name,
        when,
        selector,
        action,
        sticky: raw.sticky.unwrap_or(settings.sticky),
        rebalance_bp,
        twin,
        payload,
        origin: cx.at(src, raw.name.span().start),
    })
}

fn compile_strategy(cx: &mut Ctx<'_>, src: usize, raw: &RawRule, settings: &Settings, what: &str) -> Strategy {
    let name = raw
        .strategy
        .as_ref()
        .map_or(StrategyName::WeightedHash, |s| *s.get_ref());
    if name != StrategyName::GeoLatency {
        if let Some(f) = &raw.fallback {
            cx.error(
                src,
                f.span().start,
                format!("{what}: `fallback` applies only to the geo-latency strategy"),
            );
        }
        if raw.geo.is_some() {
            let at = raw.strategy.as_ref().map_or(raw.name.span().start, |s| s.span().start);
            cx.error(
                src,
                at,
                format!("{what}: a `geo` table applies only to the geo-latency strategy"),
            );
        }
    }
    match name {
        StrategyName::Static => Strategy::Static,
        StrategyName::WeightedHash => Strategy::WeightedHash,
        StrategyName::GeoLatency => {
            let fallback = match raw.fallback.as_ref().map(|f| (*f.get_ref(), f.span())) {
                None | Some((StrategyName::WeightedHash, _)) => Fallback::WeightedHash,
                Some((StrategyName::Static, _)) => Fallback::Static,
                Some((StrategyName::GeoLatency, span)) => {
                    cx.error(
                        src,
                        span.start,
                        format!("{what}: geo-latency cannot fall back to itself"),
                    );
                    Fallback::WeightedHash
                }
            };
            let geo = compile_geo(cx, src, raw.geo.as_ref(), &settings.geo);
            Strategy::GeoLatency {
                geo: Box::new(geo),
                fallback,
            }
        }
    }
}

fn compile_reject(cx: &mut Ctx<'_>, src: usize, reject: &Spanned<RawReject>, rule: &str) -> Rejection {
    let r = reject.get_ref();
    let status = match &r.status {
        Some(s) if (400..=499).contains(s.get_ref()) => *s.get_ref() as u16,
        Some(s) => {
            cx.error(
                src,
                s.span().start,
                format!("rule `{rule}`: reject status {} is not a 4xx status", s.get_ref()),
            );
            403
        }
        None => 403,
    };
    let reason = match &r.reason {
        Some(reason) => {
            let ok = !reason.get_ref().is_empty()
                && reason
                    .get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                cx.error(
                    src,
                    reason.span().start,
                    format!("rule `{rule}`: reject reason `{}` must be snake_case", reason.get_ref()),
                );
            }
            reason.get_ref().clone()
        }
        None => "rejected".to_owned(),
    };
    let message = r
        .message
        .clone()
        .unwrap_or_else(|| format!("rejected by rule `{rule}`"));
    if message.contains(['\n', '\r']) {
        cx.error(
            src,
            reject.span().start,
            format!("rule `{rule}`: reject message must be one line"),
        );
    }
    Rejection {
        status,
        reason,
        message,
    }
}

/// `location = { country, continent, within, known }`: one condition each, so `explain` names the part
/// that failed. Codes compare case-insensitively; fences are read, validated and shared per path.
fn compile_location(
    cx: &mut Ctx<'_>,
    src: usize,
    loc: &Spanned<RawWhere>,
    what: &str,
    conds: &mut Vec<(Cond, Box<str>)>,
) {
    let raw = loc.get_ref();
    for (field, c, make) in [
        ("country", &raw.country, Cond::Country as fn(StrCond) -> Cond),
        ("continent", &raw.continent, Cond::Continent),
    ] {
        if let Some(c) = c {
            let text = format!("location.{field} = {}", cx.snippet(src, &c.span()));
            match compile_str_cond(c.get_ref(), true) {
                Ok(sc) => conds.push((make(sc), text.into())),
                Err(e) => cx.error(src, c.span().start, format!("{what}: `location.{field}`: {e}")),
            }
        }
    }
    if let Some(within) = &raw.within {
        let text = format!("location.within = {}", cx.snippet(src, &within.span()));
        let mut fences = Vec::new();
        for path in within.get_ref().items() {
            match load_fence(cx, path) {
                Ok(f) => fences.push(f),
                Err(e) => cx.error(src, within.span().start, format!("{what}: `location.within`: {e}")),
            }
        }
        if fences.is_empty() && within.get_ref().items().is_empty() {
            cx.error(
                src,
                within.span().start,
                format!("{what}: `location.within` names no fence"),
            );
        }
        conds.push((Cond::Within(fences), text.into()));
    }
    if let Some(k) = raw.known {
        conds.push((Cond::Known(k), format!("location.known = {k}").into()));
    }
    if raw.country.is_none() && raw.continent.is_none() && raw.within.is_none() && raw.known.is_none() {
        cx.error(
            src,
            loc.span().start,
            format!("{what}: `location` needs `country`, `continent`, `within` or `known`"),
        );
    }
}

/// A fence file, read once per path and compiled; the error names the file and, for JSON syntax, its line
/// and column.
fn load_fence(cx: &mut Ctx<'_>, path: &str) -> Result<Arc<Fence>, String> {
    if let Some((_, _, f)) = cx.fences.iter().find(|(p, _, _)| p == path) {
        return Ok(f.clone());
    }
    let relative = std::path::Path::new(path);
    let escapes = relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if path.is_empty() || escapes {
        return Err(format!(
            "`{path}`: a fence is a path inside the policy directory, relative to it (like `fences/eu.geojson`)"
        ));
    }
    let text = cx.fence_files.read(path).map_err(|e| format!("`{path}`: {e}"))?;
    let fence = Fence::parse(path, &text).map_err(|e| match e.position {
        Some((line, col)) => format!("`{path}`:{line}:{col}: {}", e.message),
        None => format!("`{path}`: {}", e.message),
    })?;
    let fence = Arc::new(fence);
    cx.fences.push((path.to_owned(), text, fence.clone()));
    Ok(fence)
}

fn compile_when(cx: &mut Ctx<'_>, src: usize, when: Option<&Spanned<RawWhen>>, what: &str, in_rule: bool) -> When {
    let Some(when) = when else {
        return When::default();
    };
    let w: &RawWhen = when.get_ref();
    let mut conds: Vec<(Cond, Box<str>)> = Vec::new();
    let mut string =
        |cx: &mut Ctx<'_>, field: &str, c: &Option<Spanned<StrCondRaw>>, lower: bool, make: fn(StrCond) -> Cond| {
            if let Some(c) = c {
                let text = format!("{field} = {}", cx.snippet(src, &c.span()));
                match compile_str_cond(c.get_ref(), lower) {
                    Ok(sc) => conds.push((make(sc), text.into())),
                    Err(e) => cx.error(src, c.span().start, format!("{what}: `{field}`: {e}")),
                }
            }
        };
    string(cx, "registration_id", &w.registration_id, true, Cond::RegistrationId);
    string(cx, "device_id", &w.device_id, false, Cond::DeviceId);
    string(
        cx,
        "enrollment_group",
        &w.enrollment_group,
        false,
        Cond::EnrollmentGroup,
    );
    string(cx, "current_hub", &w.current_hub, true, Cond::CurrentHub);
    if in_rule {
        string(cx, "tenant", &w.tenant, false, Cond::Tenant);
    } else if let Some(t) = &w.tenant {
        cx.error(
            src,
            t.span().start,
            format!("{what}: a tenant's `when` cannot test `tenant`"),
        );
    }
    if let Some(k) = w.enrollment_kind {
        conds.push((
            Cond::EnrollmentKind(k),
            format!("enrollment_kind = {k:?}").to_lowercase().into(),
        ));
    }
    if let Some(a) = w.attestation {
        conds.push((Cond::Attestation(a), format!("attestation = \"{}\"", a.as_str()).into()));
    }
    if let Some(b) = w.iot_edge {
        conds.push((Cond::IotEdge(b), format!("iot_edge = {b}").into()));
    }
    if let Some(b) = w.reprovisioning {
        conds.push((Cond::Reprovisioning(b), format!("reprovisioning = {b}").into()));
    }
    if let Some(loc) = &w.location {
        compile_location(cx, src, loc, what, &mut conds);
    }
    if let Some(map) = &w.payload {
        for (path, c) in &map.0 {
            let text = format!("payload.\"{path}\" = {}", cx.snippet(src, &c.span()));
            let cond = JsonPath::parse(path).and_then(|p| compile_value_cond(c.get_ref()).map(|v| Cond::Payload(p, v)));
            match cond {
                Ok(cond) => conds.push((cond, text.into())),
                Err(e) => cx.error(src, c.span().start, format!("{what}: `payload.\"{path}\"`: {e}")),
            }
        }
    }
    if let Some(map) = &w.x509 {
        for (path, c) in &map.0 {
            let text = format!("x509.\"{path}\" = {}", cx.snippet(src, &c.span()));
            let cond = JsonPath::parse(path)
                .and_then(|p| compile_str_cond(c.get_ref(), false).map(|s| Cond::X509(p, ValueCond::Str(s))));
            match cond {
                Ok(cond) => conds.push((cond, text.into())),
                Err(e) => cx.error(src, c.span().start, format!("{what}: `x509.\"{path}\"`: {e}")),
            }
        }
    }
    When::new(conds)
}

fn compile_value_cond(raw: &ValueCondRaw) -> Result<ValueCond, String> {
    match raw {
        ValueCondRaw::Literal(v) => Ok(ValueCond::Literal(v.clone())),
        ValueCondRaw::Ops(ops) => compile_ops(ops, false).map(ValueCond::Str),
    }
}

fn compile_str_cond(raw: &StrCondRaw, lower: bool) -> Result<StrCond, String> {
    match raw {
        StrCondRaw::Exact(s) => Ok(StrCond::new(vec![StrOp::Equals(fold(s, lower))])),
        StrCondRaw::Ops(ops) => compile_ops(ops, lower),
    }
}

fn fold(s: &str, lower: bool) -> Box<str> {
    if lower { s.to_ascii_lowercase().into() } else { s.into() }
}

fn compile_ops(o: &RawStrOps, lower: bool) -> Result<StrCond, String> {
    let mut ops = Vec::new();
    if let Some(s) = &o.equals {
        ops.push(StrOp::Equals(fold(s, lower)));
    }
    if let Some(s) = &o.prefix {
        ops.push(StrOp::Prefix(fold(s, lower)));
    }
    if let Some(s) = &o.suffix {
        ops.push(StrOp::Suffix(fold(s, lower)));
    }
    if let Some(s) = &o.contains {
        ops.push(StrOp::Contains(fold(s, lower)));
    }
    if let Some(g) = &o.glob {
        let glob = globset::GlobBuilder::new(g)
            .case_insensitive(lower)
            .literal_separator(false)
            .build()
            .map_err(|e| format!("invalid glob `{}`: {}", shorten(g), e.kind()))?;
        // globset compiles a glob to a regex and panics when that regex is over its own size limit: the
        // same regex must first fit the limits every `regex` condition has.
        regex::bytes::RegexBuilder::new(glob.regex())
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("glob `{}` is too large or complex: {}", shorten(g), regex_cause(&e)))?;
        ops.push(StrOp::Glob(glob.compile_matcher()));
    }
    if let Some(r) = &o.regex {
        let re = regex::RegexBuilder::new(r)
            .case_insensitive(lower)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("invalid regex `{}`: {}", shorten(r), regex_cause(&e)))?;
        ops.push(StrOp::Regex(re));
    }
    if let Some(list) = &o.any_of {
        if list.is_empty() {
            return Err("`any_of` must not be empty".to_owned());
        }
        ops.push(StrOp::AnyOf(list.iter().map(|s| fold(s, lower)).collect()));
    }
    if let Some(e) = o.exists {
        ops.push(StrOp::Exists(e));
    }
    if let Some(inner) = &o.not {
        ops.push(StrOp::Not(compile_str_cond(inner, lower)?));
    }
    if ops.is_empty() {
        return Err("an empty condition table matches nothing: give at least one operator".to_owned());
    }
    Ok(StrCond::new(ops))
}

/// The regex crate's syntax errors draw the pattern with a caret over several lines; keep the cause.
/// A pattern as error messages quote it: at most 80 characters.
fn shorten(pattern: &str) -> String {
    match pattern.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &pattern[..at]),
        None => pattern.to_owned(),
    }
}

fn regex_cause(e: &regex::Error) -> String {
    let text = e.to_string();
    let cause = text.rsplit("error: ").next().unwrap_or(&text);
    cause.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn compile_selector(
    cx: &mut Ctx<'_>,
    src: usize,
    hubs: &Spanned<RawSelector>,
    what: &str,
    find_hub: &dyn Fn(&str) -> Option<usize>,
) -> Selector {
    let span = hubs.span();
    match hubs.get_ref() {
        RawSelector::List(hosts) => {
            if hosts.is_empty() {
                cx.error(src, span.start, format!("{what}: an empty hub list selects nothing"));
            }
            let mut list = Vec::with_capacity(hosts.len());
            for host in hosts {
                match find_hub(host) {
                    Some(i) => list.push(i),
                    None => {
                        let loc = cx.sources[src].location_of(&span, host);
                        cx.error_at(loc, format!("{what}: hub `{host}` is not in the catalogue"));
                    }
                }
            }
            Selector::List(list)
        }
        RawSelector::Filter(t) => {
            let mut tags = Vec::new();
            for (k, v) in t.tags.iter().flatten() {
                match StrTemplate::parse(v, &|var: &Var| *var == Var::Tenant) {
                    Ok(tpl) => tags.push((k.clone(), tpl)),
                    Err(e) => {
                        let loc = cx.sources[src].location_of(&span, &e.needle);
                        cx.error_at(
                            loc,
                            format!("{what}: hub selector tag `{k}`: {} (only `${{tenant}}` is)", e.message),
                        );
                    }
                }
            }
            let regions = t.regions.as_ref().map(|names| {
                names
                    .iter()
                    .filter_map(|n| {
                        let found = regions::find(n).map(|r| r.name);
                        if found.is_none() {
                            let hint = regions::suggest(n)
                                .map(|s| format!(" (did you mean `{s}`?)"))
                                .unwrap_or_default();
                            let loc = cx.sources[src].location_of(&span, n);
                            cx.error_at(loc, format!("{what}: unknown region `{n}`{hint}"));
                        }
                        found
                    })
                    .collect()
            });
            if t.host_contains.as_ref().is_some_and(String::is_empty) {
                cx.error(src, span.start, format!("{what}: `host_contains` must not be empty"));
            }
            Selector::Filter {
                tags,
                host_contains: t.host_contains.as_ref().map(|s| s.to_ascii_lowercase()),
                regions,
            }
        }
    }
}

fn compile_twin(cx: &mut Ctx<'_>, src: usize, twin: Option<&RawTwin>, what: &str) -> TwinTemplate {
    let Some(twin) = twin else {
        return TwinTemplate::default();
    };
    let mut section = |t: &Option<Spanned<toml::Table>>, name: &str| {
        t.as_ref()
            .and_then(|t| template_table(cx, src, t, what, name))
            .map(|v| v.entries())
            .unwrap_or_default()
    };
    let tags = section(&twin.tags, "twin.tags");
    let desired = section(&twin.desired, "twin.desired");
    TwinTemplate { tags, desired }
}

fn template_table(
    cx: &mut Ctx<'_>,
    src: usize,
    table: &Spanned<toml::Table>,
    what: &str,
    name: &str,
) -> Option<ValueTemplate> {
    match ValueTemplate::from_table(table.get_ref(), &any_var) {
        Ok(t) => Some(t),
        Err(e) => {
            let loc = cx.sources[src].location_of(&table.span(), &e.needle);
            cx.error_at(loc, format!("{what}: `{name}`: {}", e.message));
            None
        }
    }
}

/// Checks across elements, on the raw items so that an element with its own errors still counts: names
/// are unique, `default_rule` exists, and nothing hides behind an element that matches every device.
fn check_directory(cx: &mut Ctx<'_>, parsed: &Parsed) {
    let mut hosts: HashMap<String, Location> = HashMap::new();
    for h in &parsed.hubs {
        let host = h.raw.host.get_ref().trim();
        let here = cx.at(h.src, h.raw.host.span().start);
        match hosts.get(&host.to_ascii_lowercase()) {
            Some(first) => {
                let first = first.clone();
                cx.error_at(here, format!("duplicate hub `{host}` (first at {first})"));
            }
            None => {
                hosts.insert(host.to_ascii_lowercase(), here);
            }
        }
    }
    let tenants: Vec<(&str, Location, bool)> = parsed
        .tenants
        .iter()
        .map(|t| {
            (
                t.raw.id.get_ref().as_str(),
                cx.at(t.src, t.raw.id.span().start),
                t.raw.when.is_none(),
            )
        })
        .collect();
    let rules: Vec<(&str, Location, bool)> = parsed
        .rules
        .iter()
        .map(|r| {
            (
                r.raw.name.get_ref().as_str(),
                cx.at(r.src, r.raw.name.span().start),
                r.raw.when.is_none(),
            )
        })
        .collect();
    for (kind, items, verb) in [
        ("tenant", &tenants, "takes every device first"),
        ("rule", &rules, "matches every device first"),
    ] {
        let mut seen: HashMap<&str, &Location> = HashMap::new();
        for (name, at, _) in items.iter() {
            if let Some(first) = seen.insert(name, at) {
                cx.error_at(at.clone(), format!("duplicate {kind} `{name}` (first at {first})"));
            }
        }
        if let Some(c) = items.iter().position(|(_, _, catch_all)| *catch_all) {
            let (first, first_at, _) = &items[c];
            for (name, at, _) in &items[c + 1..] {
                cx.error_at(
                    at.clone(),
                    format!("{kind} `{name}` can never match: {kind} `{first}` at {first_at} {verb}"),
                );
            }
        }
    }
    let default_rule = parsed
        .settings
        .first()
        .and_then(|s| s.raw.default_rule.as_ref().map(|d| (s.src, d)));
    if let Some((src, d)) = default_rule
        && !rules.iter().any(|(name, _, _)| name == d.get_ref())
    {
        cx.error(
            src,
            d.span().start,
            format!("`default_rule` names unknown rule `{}`", d.get_ref()),
        );
    }
}

#[cfg(test)]
mod tests;
