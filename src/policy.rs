//! The policy: a directory of TOML files compiled into one immutable [`Revision`].
//!
//! `load` reads the directory (lexical order, `*.toml`, dotfiles skipped), `raw` mirrors the files in serde
//! types, `compile` validates everything at once (every error with file:line:col) and builds the typed
//! revision that the engine reads, and `condition` and `template` hold the compiled `when` tables and
//! twin/payload templates. A revision is all-or-nothing: a directory with any error yields no revision.

mod compile;
pub mod condition;
mod error;
pub mod index;
mod load;
pub mod raw;
pub mod template;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use compile::{compile, panic_message};
pub use error::{Location, PolicyError, PolicyErrors, Source};
pub use index::RuleIndex;
pub use load::{EMBEDDED_DEFAULT, embedded_default, load_dir, read_sources};
pub use raw::{HubState, StrategyName, UnknownLinkedHubs};

use crate::geo::LatLon;
use crate::geo::regions::Region;
use crate::hashing::{PrehashedMap, SeedKey, lookup_hash};
use condition::{JsonPath, When};
use template::{StrTemplate, ValueTemplate};

/// One compiled, validated policy directory. Immutable; shared behind an `Arc`.
#[derive(Debug)]
pub struct Revision {
    /// First 12 hex digits of the SHA-256 of the files' names and contents.
    pub id: String,
    /// `[settings]` with defaults applied.
    pub settings: Settings,
    /// The hub catalogue, in file order.
    pub hubs: Vec<Hub>,
    hub_lookup: PrehashedMap<u32>,
    /// Tenants, in file order.
    pub tenants: Vec<Tenant>,
    /// Rules, in file order.
    pub rules: Vec<Rule>,
    /// The rules indexed by what they discriminate on.
    pub rule_index: RuleIndex,
    /// Index of `settings.default_rule`.
    pub default_rule: Option<usize>,
    /// The files the revision was built from.
    pub files: Vec<Arc<str>>,
    /// The fence files its rules name (`location.within`), each once.
    pub fences: Vec<Arc<crate::geo::Fence>>,
}

impl Revision {
    /// The catalogue index of a host, ignoring ASCII case. On the request path for every linked hub
    /// (up to 50 per request), so it hashes cheaply and compares bytes first.
    pub fn find_hub(&self, host: &str) -> Option<usize> {
        let i = *self.hub_lookup.get(&lookup_hash(host))? as usize;
        match self.hubs.get(i) {
            Some(h) if h.host_lower.as_bytes() == host.as_bytes() || h.host.eq_ignore_ascii_case(host) => Some(i),
            // Two different hosts with one lookup hash: fall back to a scan.
            _ => self.hubs.iter().position(|h| h.host.eq_ignore_ascii_case(host)),
        }
    }

    /// Like [`Revision::find_hub`], trying catalogue slot `hint` first (one byte comparison): linked
    /// hubs listed in catalogue order then resolve without hashing.
    pub fn find_hub_from(&self, host: &str, hint: usize) -> Option<usize> {
        match self.hubs.get(hint) {
            // The very string (a simulator borrowing catalogue hosts), else the same bytes.
            Some(h) if std::ptr::eq(h.host.as_str(), host) || h.host_lower.as_bytes() == host.as_bytes() => Some(hint),
            _ => self.find_hub(host),
        }
    }

    /// A rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    fn build_lookup(hubs: &[Hub]) -> PrehashedMap<u32> {
        let mut map: PrehashedMap<u32> = HashMap::default();
        for (i, h) in hubs.iter().enumerate() {
            map.entry(lookup_hash(&h.host)).or_insert(i as u32);
        }
        map
    }
}

/// `[settings]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `hash_seed` as written.
    pub hash_seed: String,
    /// The key derived from it.
    pub seed: SeedKey,
    /// Default stickiness of rules.
    pub sticky: bool,
    /// Treatment of linked hubs missing from the catalogue.
    pub unknown_linked_hubs: UnknownLinkedHubs,
    /// Geo defaults.
    pub geo: GeoSettings,
}

/// Geo-latency parameters (settings defaults, overridable per rule).
#[derive(Debug, Clone, PartialEq)]
pub struct GeoSettings {
    /// Candidates this close to the nearest are equally near.
    pub tie_band_km: f64,
    /// A re-registering device moves only to a hub nearer by more than this.
    pub hysteresis_km: f64,
    /// GeoIP records less accurate than this are unknown.
    pub max_accuracy_km: f64,
    /// Payload path of the latitude.
    pub lat_path: JsonPath,
    /// Payload path of the longitude.
    pub lon_path: JsonPath,
    /// Payload path of an IP address.
    pub ip_path: JsonPath,
    /// Payload path of an Azure region name.
    pub region_path: JsonPath,
    /// Payload path of a country code.
    pub country_path: JsonPath,
    /// Payload path of a continent code.
    pub continent_path: JsonPath,
}

/// One hub of the catalogue.
#[derive(Debug, Clone)]
pub struct Hub {
    /// Host name as written in the catalogue.
    pub host: String,
    /// The same, ASCII-lowercased (what DPS usually sends), for a byte-equality fast path.
    pub host_lower: String,
    /// Rendezvous key of the host under the revision's seed.
    pub key: u64,
    /// The region, when given.
    pub region: Option<&'static Region>,
    /// Coordinates: `location`, else the region's.
    pub location: Option<LatLon>,
    /// 1..=1000.
    pub weight: u32,
    /// active, draining or disabled.
    pub state: HubState,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Capacity for `simulate`.
    pub capacity: Option<u64>,
    /// Where the hub is defined.
    pub origin: Location,
}

/// Twin parts, as ordered entries so tenant and rule twins merge key by key.
#[derive(Debug, Clone, Default)]
pub struct TwinTemplate {
    /// `twin.tags`.
    pub tags: Vec<(String, ValueTemplate)>,
    /// `twin.desired`.
    pub desired: Vec<(String, ValueTemplate)>,
}

impl TwinTemplate {
    /// True when the twin has neither tags nor desired properties.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.desired.is_empty()
    }
}

/// One tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Tenant id.
    pub id: String,
    /// When a device belongs to it.
    pub when: When,
    /// Twin merged under the rule's.
    pub twin: TwinTemplate,
    /// Where it is defined.
    pub origin: Location,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Conditions.
    pub when: When,
    /// Candidate hubs.
    pub selector: Selector,
    /// Assign with a strategy, or reject.
    pub action: Action,
    /// Keep re-registering devices on their current hub.
    pub sticky: bool,
    /// Share of devices (basis points, 0..=10000) for which stickiness is ignored.
    pub rebalance_bp: u32,
    /// Initial twin.
    pub twin: TwinTemplate,
    /// Payload to the device.
    pub payload: Option<ValueTemplate>,
    /// Where it is defined.
    pub origin: Location,
}

/// What a rule does with a matching device.
#[derive(Debug, Clone)]
pub enum Action {
    /// Choose a hub.
    Assign(Strategy),
    /// Refuse the registration.
    Reject(Rejection),
}

/// A rule's rejection.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// 400..=499.
    pub status: u16,
    /// snake_case code.
    pub reason: String,
    /// One-line message.
    pub message: String,
}

/// How a rule picks among candidates.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// The first candidate in the selector's order.
    Static,
    /// Weighted rendezvous hashing.
    WeightedHash,
    /// Nearest hub, with a fallback when the location is unknown.
    GeoLatency {
        /// Effective geo parameters.
        geo: Box<GeoSettings>,
        /// Used when the device's location is unknown or no candidate has coordinates.
        fallback: Fallback,
    },
}

impl Strategy {
    /// The strategy's policy name.
    pub fn name(&self) -> StrategyName {
        match self {
            Strategy::Static => StrategyName::Static,
            Strategy::WeightedHash => StrategyName::WeightedHash,
            Strategy::GeoLatency { .. } => StrategyName::GeoLatency,
        }
    }
}

/// Strategies a geo-latency rule can fall back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// First candidate.
    Static,
    /// Weighted rendezvous hashing.
    WeightedHash,
}

/// Which hubs a rule considers.
#[derive(Debug, Clone)]
pub enum Selector {
    /// Every hub (and included unknown linked hubs).
    All,
    /// These catalogue hubs, in this order.
    List(Vec<usize>),
    /// Hubs passing every filter.
    Filter {
        /// Tags that must be equal (values may use `${tenant}`).
        tags: Vec<(String, StrTemplate)>,
        /// Lowercase substring of the host.
        host_contains: Option<String>,
        /// Allowed regions.
        regions: Option<Vec<&'static str>>,
    },
}
