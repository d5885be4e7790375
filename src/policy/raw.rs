//! The policy files as written: serde types that mirror the TOML, with spans for error locations.
//!
//! The loader deserializes each `[settings]`, `[[hub]]`, `[[tenant]]` and `[[rule]]` on its own, so one bad
//! element does not hide the errors of the next. Unknown keys are errors (`deny_unknown_fields`). The
//! compiler (`compile.rs`) turns these into the typed [`Revision`](super::Revision); `dps-allocator schema`
//! prints the JSON Schema of [`RawFile`], generated from these same types.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// One policy file. Every table is optional; `[settings]` may appear once in the whole directory.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "dps-allocator policy file")]
pub struct RawFile {
    /// Settings for the whole directory.
    pub settings: Option<RawSettings>,
    /// The hub catalogue.
    #[serde(default)]
    pub hub: Vec<RawHub>,
    /// Tenants: the first whose `when` holds is the device's tenant.
    #[serde(default)]
    pub tenant: Vec<RawTenant>,
    /// Rules, tried in order: the first whose `when` holds decides.
    #[serde(default)]
    pub rule: Vec<RawRule>,
}

/// `[settings]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// Seed of every hash; changing it re-hashes every device (a migration).
    #[schemars(with = "Option<String>")]
    pub hash_seed: Option<Spanned<String>>,
    /// Default `sticky` for rules (default true).
    pub sticky: Option<bool>,
    /// Rule used when no rule matches; without it such devices get 422 `no_eligible_hub`.
    #[schemars(with = "Option<String>")]
    pub default_rule: Option<Spanned<String>>,
    /// What to do with linked hubs that are missing from the catalogue (default `include`).
    pub unknown_linked_hubs: Option<UnknownLinkedHubs>,
    /// Defaults for geo-latency rules.
    pub geo: Option<RawGeo>,
}

/// `settings.unknown_linked_hubs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnknownLinkedHubs {
    /// Candidates with weight 1, no location, no tags.
    #[default]
    Include,
    /// Never candidates.
    Ignore,
}

/// `[settings.geo]` and a rule's `geo` table.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGeo {
    /// Candidates this close to the nearest count as equally near (default 50).
    #[schemars(with = "Option<f64>")]
    pub tie_band_km: Option<Spanned<f64>>,
    /// A re-registering device moves only to a hub nearer by more than this (default 200).
    #[schemars(with = "Option<f64>")]
    pub hysteresis_km: Option<Spanned<f64>>,
    /// GeoIP records less accurate than this count as unknown (default 1000).
    #[schemars(with = "Option<f64>")]
    pub max_accuracy_km: Option<Spanned<f64>>,
    /// Dotted path of the latitude in the device payload (default `location.lat`).
    #[schemars(with = "Option<String>")]
    pub lat_path: Option<Spanned<String>>,
    /// Dotted path of the longitude in the device payload (default `location.lon`).
    #[schemars(with = "Option<String>")]
    pub lon_path: Option<Spanned<String>>,
    /// Dotted path of an IP address in the device payload (default `ip`).
    #[schemars(with = "Option<String>")]
    pub ip_path: Option<Spanned<String>>,
    /// Dotted path of an Azure region name in the device payload (default `region`).
    #[schemars(with = "Option<String>")]
    pub region_path: Option<Spanned<String>>,
    /// Dotted path of an ISO 3166-1 alpha-2 country code in the device payload (default `country`).
    #[schemars(with = "Option<String>")]
    pub country_path: Option<Spanned<String>>,
    /// Dotted path of a two-letter continent code in the device payload (default `continent`).
    #[schemars(with = "Option<String>")]
    pub continent_path: Option<Spanned<String>>,
}

/// `[[hub]]`: one IoT hub of the catalogue.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHub {
    /// Host name, matched case-insensitively against `linkedHubs`.
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    /// Azure region name; its coordinates come from the built-in region table.
    #[schemars(with = "Option<String>")]
    pub region: Option<Spanned<String>>,
    /// Overrides the region's coordinates.
    #[schemars(with = "Option<RawLocation>")]
    pub location: Option<Spanned<RawLocation>>,
    /// 1..=1000, like DPS `allocationWeight` (default 1).
    #[schemars(with = "Option<u32>", range(min = 1, max = 1000))]
    pub weight: Option<Spanned<i64>>,
    /// active (default), draining or disabled.
    pub state: Option<HubState>,
    /// Labels for hub selectors and `${hub.tags.KEY}`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Devices the hub should hold; `simulate` flags hubs over it.
    #[schemars(with = "Option<u64>")]
    pub capacity: Option<Spanned<i64>>,
}

/// Coordinates in degrees.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLocation {
    /// Latitude, -90..=90.
    pub lat: f64,
    /// Longitude, -180..=180.
    pub lon: f64,
}

/// A hub's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HubState {
    /// Takes new devices.
    #[default]
    Active,
    /// Takes no new devices; devices already on it stay.
    Draining,
    /// Never chosen; its devices move when they re-register.
    Disabled,
}

/// `[[tenant]]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    /// The tenant's id, `${tenant}` in templates.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// Conditions that make a device this tenant's (all must hold).
    #[schemars(with = "Option<RawWhen>")]
    pub when: Option<Spanned<RawWhen>>,
    /// Twin parts merged under every rule's twin.
    pub twin: Option<RawTwin>,
}

/// `[[rule]]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique name, recorded on every decision.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Conditions (all must hold); absent matches every device.
    #[schemars(with = "Option<RawWhen>")]
    pub when: Option<Spanned<RawWhen>>,
    /// Which hubs are candidates (always intersected with `linkedHubs`); absent: every hub.
    #[schemars(with = "Option<RawSelector>")]
    pub hubs: Option<Spanned<RawSelector>>,
    /// static, weighted-hash (default) or geo-latency.
    #[schemars(with = "Option<StrategyName>")]
    pub strategy: Option<Spanned<StrategyName>>,
    /// What geo-latency falls back to when the location is unknown (default weighted-hash).
    #[schemars(with = "Option<StrategyName>")]
    pub fallback: Option<Spanned<StrategyName>>,
    /// Geo-latency settings overriding `[settings.geo]`.
    pub geo: Option<RawGeo>,
    /// Keep a re-registering device on its current hub while it is still a candidate.
    pub sticky: Option<bool>,
    /// 0..=100: share of devices (stable buckets) for which stickiness is ignored.
    #[schemars(with = "Option<f64>", range(min = 0, max = 100))]
    pub rebalance_percent: Option<Spanned<f64>>,
    /// Initial twin.
    pub twin: Option<RawTwin>,
    /// Payload returned to the device.
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub payload: Option<Spanned<toml::Table>>,
    /// Reject the device instead of assigning it.
    #[schemars(with = "Option<RawReject>")]
    pub reject: Option<Spanned<RawReject>>,
}

/// A strategy name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    /// The first candidate in the selector's order.
    Static,
    /// Weighted rendezvous hashing.
    WeightedHash,
    /// The nearest candidate by great-circle distance.
    GeoLatency,
}

impl StrategyName {
    /// The name as policies write it.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Static => "static",
            StrategyName::WeightedHash => "weighted-hash",
            StrategyName::GeoLatency => "geo-latency",
        }
    }
}

/// `reject = { ... }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReject {
    /// HTTP status, 400..=499 (default 403). DPS fails the registration at once below 429, retries at 429.
    #[schemars(with = "Option<u16>", range(min = 400, max = 499))]
    pub status: Option<Spanned<i64>>,
    /// snake_case error code in the response (default `rejected`).
    #[schemars(with = "Option<String>")]
    pub reason: Option<Spanned<String>>,
    /// One-line message in the response body and the log.
    pub message: Option<String>,
}

/// `twin.tags` and `twin.desired`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTwin {
    /// Twin tags (templates allowed in string values).
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub tags: Option<Spanned<toml::Table>>,
    /// Desired properties (templates allowed in string values).
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub desired: Option<Spanned<toml::Table>>,
}

/// `when = { ... }`: every condition present must hold.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWhen {
    /// The registration id (case-insensitive).
    #[schemars(with = "Option<StrCondRaw>")]
    pub registration_id: Option<Spanned<StrCondRaw>>,
    /// The device id (individual enrollment's, else current, else the registration id).
    #[schemars(with = "Option<StrCondRaw>")]
    pub device_id: Option<Spanned<StrCondRaw>>,
    /// The enrollment group id (absent for individual enrollments).
    #[schemars(with = "Option<StrCondRaw>")]
    pub enrollment_group: Option<Spanned<StrCondRaw>>,
    /// group or individual.
    pub enrollment_kind: Option<crate::dps::EnrollmentKind>,
    /// symmetricKey, x509 or tpm.
    pub attestation: Option<crate::dps::Attestation>,
    /// The enrollment's `capabilities.iotEdge`.
    pub iot_edge: Option<bool>,
    /// Whether the request carries a current hub.
    pub reprovisioning: Option<bool>,
    /// The device's current hub (case-insensitive).
    #[schemars(with = "Option<StrCondRaw>")]
    pub current_hub: Option<Spanned<StrCondRaw>>,
    /// The device's tenant id.
    #[schemars(with = "Option<StrCondRaw>")]
    pub tenant: Option<Spanned<StrCondRaw>>,
    /// Dotted paths inside the device payload.
    #[schemars(with = "Option<BTreeMap<String, ValueCondRaw>>")]
    pub payload: Option<Entries<Spanned<ValueCondRaw>>>,
    /// Dotted paths inside `deviceRuntimeContext.x509`.
    #[schemars(with = "Option<BTreeMap<String, StrCondRaw>>")]
    pub x509: Option<Entries<Spanned<StrCondRaw>>>,
    /// Where the device is: its country, continent, a GeoJSON fence, or whether it is known at all.
    #[schemars(with = "Option<RawWhere>")]
    pub location: Option<Spanned<RawWhere>>,
}

/// `location = { ... }`: every key given must hold. A condition on a fact the device's location does not
/// give (no country, no coordinates) does not hold.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWhere {
    /// ISO 3166-1 alpha-2 country code (case-insensitive): from the payload's `country_path`, else the
    /// GeoIP record of the payload's IP.
    #[schemars(with = "Option<StrCondRaw>")]
    pub country: Option<Spanned<StrCondRaw>>,
    /// Two-letter continent code (`EU`, `NA`, `AS`, `AF`, `OC`, `SA`, `AN`): from the payload's
    /// `continent_path`, else the GeoIP record.
    #[schemars(with = "Option<StrCondRaw>")]
    pub continent: Option<Spanned<StrCondRaw>>,
    /// GeoJSON file(s), relative to the policy directory: holds when the device's coordinates lie inside
    /// any of them.
    #[schemars(with = "Option<OneOrMany>")]
    pub within: Option<Spanned<OneOrMany>>,
    /// Whether the device's location (coordinates or country) is known at all.
    pub known: Option<bool>,
}

/// One string, or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings.
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A string condition: a plain string (exact match) or a table of operators that must all hold.
#[derive(Debug, Clone)]
pub enum StrCondRaw {
    /// Exact match.
    Exact(String),
    /// Operators.
    Ops(Box<RawStrOps>),
}

/// The string operators.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStrOps {
    /// Exactly this string.
    pub equals: Option<String>,
    /// Starts with.
    pub prefix: Option<String>,
    /// Ends with.
    pub suffix: Option<String>,
    /// Contains.
    pub contains: Option<String>,
    /// Shell-style glob (`*`, `?`, `[...]`) over the whole value.
    pub glob: Option<String>,
    /// Regular expression (unanchored; linear time, no backreferences).
    pub regex: Option<String>,
    /// Equal to one of these.
    pub any_of: Option<Vec<String>>,
    /// The value is present (true) or absent (false).
    pub exists: Option<bool>,
    /// Holds when the inner condition does not.
    pub not: Option<Box<StrCondRaw>>,
}

/// A payload condition: a literal (string, number or bool) compared for equality, or string operators.
#[derive(Debug, Clone)]
pub enum ValueCondRaw {
    /// Equal to this JSON value.
    Literal(serde_json::Value),
    /// String operators.
    Ops(Box<RawStrOps>),
}

/// `hubs = ...`: a list of hosts, or a table of filters that must all hold.
#[derive(Debug, Clone)]
pub enum RawSelector {
    /// These hosts, in this order.
    List(Vec<String>),
    /// Filters.
    Filter(RawSelectorTable),
}

/// The filter form of a hub selector.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSelectorTable {
    /// Hub tags that must all be equal (values may use `${tenant}`).
    pub tags: Option<BTreeMap<String, String>>,
    /// Hosts containing this (case-insensitive).
    pub host_contains: Option<String>,
    /// Hubs in one of these regions.
    pub regions: Option<Vec<String>>,
}

/// A table's entries in the order written (keys are dotted paths, so not struct fields).
#[derive(Debug, Clone)]
pub struct Entries<V>(pub Vec<(String, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of dotted paths")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Vis(std::marker::PhantomData))
    }
}

struct StrCondVisitor;

impl<'de> Visitor<'de> for StrCondVisitor {
    type Value = StrCondRaw;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, or a table of string operators")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(StrCondRaw::Exact(v.to_owned()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        RawStrOps::deserialize(MapAccessDeserializer::new(map)).map(|ops| StrCondRaw::Ops(Box::new(ops)))
    }
}

impl<'de> Deserialize<'de> for StrCondRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrCondVisitor)
    }
}

impl<'de> Deserialize<'de> for ValueCondRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValueCondRaw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean, or a table of string operators")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ValueCondRaw::Literal(v.into()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ValueCondRaw::Literal(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ValueCondRaw::Literal(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ValueCondRaw::Literal(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                serde_json::Number::from_f64(v)
                    .map(|n| ValueCondRaw::Literal(serde_json::Value::Number(n)))
                    .ok_or_else(|| E::custom("a payload condition must be a finite number"))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawStrOps::deserialize(MapAccessDeserializer::new(map)).map(|ops| ValueCondRaw::Ops(Box::new(ops)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSelector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of hub hosts, or a table with `tags`, `host_contains` or `regions`")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<String>::deserialize(SeqAccessDeserializer::new(seq)).map(RawSelector::List)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawSelectorTable::deserialize(MapAccessDeserializer::new(map)).map(RawSelector::Filter)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for StrCondRaw {
    fn schema_name() -> Cow<'static, str> {
        "StringCondition".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let ops = g.subschema_for::<RawStrOps>();
        json_schema!({
            "description": "A plain string (exact match) or a table of operators that must all hold.",
            "oneOf": [{ "type": "string" }, ops]
        })
    }
}

impl JsonSchema for ValueCondRaw {
    fn schema_name() -> Cow<'static, str> {
        "PayloadCondition".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let ops = g.subschema_for::<RawStrOps>();
        json_schema!({
            "description": "A string, number or boolean compared for equality, or a table of string operators.",
            "oneOf": [{ "type": ["string", "number", "boolean"] }, ops]
        })
    }
}

impl JsonSchema for RawSelector {
    fn schema_name() -> Cow<'static, str> {
        "HubSelector".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let table = g.subschema_for::<RawSelectorTable>();
        json_schema!({
            "description": "A list of hub hosts (in order), or a table of filters that must all hold.",
            "oneOf": [{ "type": "array", "items": { "type": "string" } }, table]
        })
    }
}
