//! Compiled `when` conditions and the string operators, evaluated against one request's [`Facts`].
//!
//! The compiler builds these once per revision (lowercasing patterns of case-insensitive fields, compiling
//! globs and size-limited regexes); the engine gathers the request's facts once and asks each condition
//! whether it holds. Nothing here allocates on the request path except rendering a non-string payload
//! value for a string operator.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::dps::{Attestation, EnrollmentKind};
use crate::geo::{Fence, LatLon};

/// Compiled regexes may not grow beyond this, so a hostile pattern cannot exhaust memory. The regex crate
/// already guarantees matching in linear time.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled string condition: every operator must hold.
#[derive(Debug, Clone)]
pub struct StrCond {
    ops: Vec<StrOp>,
}

/// One string operator.
#[derive(Debug, Clone)]
pub enum StrOp {
    /// Equal.
    Equals(Box<str>),
    /// Starts with.
    Prefix(Box<str>),
    /// Ends with.
    Suffix(Box<str>),
    /// Contains.
    Contains(Box<str>),
    /// Whole-value glob.
    Glob(globset::GlobMatcher),
    /// Unanchored regex.
    Regex(regex::Regex),
    /// Equal to one of.
    AnyOf(Box<[Box<str>]>),
    /// Present or absent.
    Exists(bool),
    /// Negation.
    Not(StrCond),
}

impl StrCond {
    /// A condition from its operators.
    pub fn new(ops: Vec<StrOp>) -> Self {
        StrCond { ops }
    }

    /// Values one of which the string must equal for the condition to hold (`equals`, `any_of`), if any:
    /// what the rule index files a rule under.
    pub fn required_values(&self) -> Option<Vec<&str>> {
        self.ops.iter().find_map(|op| match op {
            StrOp::Equals(s) => Some(vec![&**s]),
            StrOp::AnyOf(list) => Some(list.iter().map(|s| &**s).collect()),
            _ => None,
        })
    }

    /// A prefix the string must start with for the condition to hold (`prefix`, or `equals`), if any.
    pub fn required_prefix(&self) -> Option<&str> {
        self.ops.iter().find_map(|op| match op {
            StrOp::Prefix(p) | StrOp::Equals(p) => Some(&**p),
            _ => None,
        })
    }

    /// Whether the condition holds for a value (`None`: the value is absent). Only `exists = false` and
    /// `not` can hold for an absent value.
    pub fn matches(&self, value: Option<&str>) -> bool {
        self.ops.iter().all(|op| op.matches(value))
    }
}

impl StrOp {
    fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (StrOp::Exists(want), v) => *want == v.is_some(),
            (StrOp::Not(inner), v) => !inner.matches(v),
            (_, None) => false,
            (StrOp::Equals(p), Some(v)) => v == &**p,
            (StrOp::Prefix(p), Some(v)) => v.starts_with(&**p),
            (StrOp::Suffix(p), Some(v)) => v.ends_with(&**p),
            (StrOp::Contains(p), Some(v)) => v.contains(&**p),
            (StrOp::Glob(g), Some(v)) => g.is_match(v),
            (StrOp::Regex(r), Some(v)) => r.is_match(v),
            (StrOp::AnyOf(list), Some(v)) => list.iter().any(|p| v == &**p),
        }
    }
}

/// A payload or x509 condition.
#[derive(Debug, Clone)]
pub enum ValueCond {
    /// Equal to this JSON scalar (numbers compare by value).
    Literal(Value),
    /// String operators over the value's text (a string's contents, other scalars' JSON text).
    Str(StrCond),
}

impl ValueCond {
    /// Whether the condition holds for the value at its path (`None` or JSON null: absent).
    pub fn matches(&self, value: Option<&Value>) -> bool {
        let value = value.filter(|v| !v.is_null());
        match self {
            ValueCond::Literal(want) => match (want, value) {
                (Value::Number(a), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
                (want, Some(v)) => want == v,
                (_, None) => false,
            },
            ValueCond::Str(cond) => match value {
                None => cond.matches(None),
                Some(Value::String(s)) => cond.matches(Some(s)),
                Some(other) => cond.matches(Some(&other.to_string())),
            },
        }
    }
}

/// A dotted path into a JSON value: `location.lat`, `sensors.0.id` (numeric segments also index arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: Box<str>,
    segments: Box<[Box<str>]>,
}

impl JsonPath {
    /// Parses a dotted path; empty segments are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a path must not be empty".to_owned());
        }
        let segments: Vec<Box<str>> = text.split('.').map(Box::from).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(format!("path `{text}` has an empty segment"));
        }
        Ok(JsonPath {
            text: text.into(),
            segments: segments.into(),
        })
    }

    /// A path from a constant of the program (no empty segments by construction).
    pub(crate) fn builtin(text: &'static str) -> Self {
        JsonPath {
            text: text.into(),
            segments: text.split('.').map(Box::from).collect(),
        }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path, if any.
    pub fn lookup<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.segments.iter().try_fold(root, |v, seg| match v {
            Value::Object(map) => map.get(&**seg),
            Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }
}

/// What a request offers to conditions, gathered once per request by the engine.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'f> {
    /// The registration id, ASCII-lowercased.
    pub registration_id: &'f str,
    /// The device id.
    pub device_id: &'f str,
    /// The enrollment group id.
    pub enrollment_group: Option<&'f str>,
    /// Group or individual.
    pub enrollment_kind: EnrollmentKind,
    /// The attestation kind.
    pub attestation: Option<Attestation>,
    /// `capabilities.iotEdge`.
    pub iot_edge: bool,
    /// The current hub, ASCII-lowercased.
    pub current_hub: Option<&'f str>,
    /// The tenant id, once resolved.
    pub tenant: Option<&'f str>,
    /// The device payload.
    pub payload: Option<&'f Value>,
    /// `deviceRuntimeContext.x509`.
    pub x509: Option<&'f Value>,
    /// Where the device is, worked out on first use.
    pub whereabouts: Option<&'f dyn Whereabouts>,
}

impl<'f> Facts<'f> {
    fn where_(&self) -> Option<&'f dyn Whereabouts> {
        self.whereabouts
    }
}

/// One condition of a `when` table.
#[derive(Debug, Clone)]
pub enum Cond {
    /// `registration_id` (compiled lowercase).
    RegistrationId(StrCond),
    /// `device_id`.
    DeviceId(StrCond),
    /// `enrollment_group`.
    EnrollmentGroup(StrCond),
    /// `enrollment_kind`.
    EnrollmentKind(EnrollmentKind),
    /// `attestation`.
    Attestation(Attestation),
    /// `iot_edge`.
    IotEdge(bool),
    /// `reprovisioning`.
    Reprovisioning(bool),
    /// `current_hub` (compiled lowercase).
    CurrentHub(StrCond),
    /// `tenant`.
    Tenant(StrCond),
    /// `payload."a.b"`.
    Payload(JsonPath, ValueCond),
    /// `x509."a.b"`.
    X509(JsonPath, ValueCond),
    /// `location.country` (compiled lowercase).
    Country(StrCond),
    /// `location.continent` (compiled lowercase).
    Continent(StrCond),
    /// `location.within`: inside any of these fences.
    Within(Vec<Arc<Fence>>),
    /// `location.known`.
    Known(bool),
}

/// Where a device is, as far as conditions need it. The engine computes it on first use (a GeoIP lookup
/// at most), so requests no location condition looks at pay nothing.
pub trait Whereabouts: fmt::Debug {
    /// The ISO 3166-1 alpha-2 country code, lower case.
    fn country(&self) -> Option<&str>;
    /// The two-letter continent code, lower case.
    fn continent(&self) -> Option<&str>;
    /// The coordinates.
    fn point(&self) -> Option<LatLon>;
}

impl Cond {
    /// Whether the condition holds for these facts.
    pub fn holds(&self, f: &Facts<'_>) -> bool {
        match self {
            Cond::RegistrationId(c) => c.matches(Some(f.registration_id)),
            Cond::DeviceId(c) => c.matches(Some(f.device_id)),
            Cond::EnrollmentGroup(c) => c.matches(f.enrollment_group),
            Cond::EnrollmentKind(k) => f.enrollment_kind == *k,
            Cond::Attestation(a) => f.attestation == Some(*a),
            Cond::IotEdge(b) => f.iot_edge == *b,
            Cond::Reprovisioning(b) => f.current_hub.is_some() == *b,
            Cond::CurrentHub(c) => c.matches(f.current_hub),
            Cond::Tenant(c) => c.matches(f.tenant),
            Cond::Payload(path, c) => c.matches(f.payload.and_then(|p| path.lookup(p))),
            Cond::X509(path, c) => c.matches(f.x509.and_then(|p| path.lookup(p))),
            // An unknown fact never satisfies a condition on it, `not` included: a later rule decides.
            Cond::Country(c) => f.where_().and_then(|w| w.country()).is_some_and(|v| c.matches(Some(v))),
            Cond::Continent(c) => f
                .where_()
                .and_then(|w| w.continent())
                .is_some_and(|v| c.matches(Some(v))),
            Cond::Within(fences) => f
                .where_()
                .and_then(|w| w.point())
                .is_some_and(|p| fences.iter().any(|fence| fence.contains(p))),
            Cond::Known(k) => {
                let known = f.where_().is_some_and(|w| w.point().is_some() || w.country().is_some());
                known == *k
            }
        }
    }
}

/// A compiled `when` table: all conditions must hold; each keeps the text the operator wrote, for traces.
#[derive(Debug, Clone, Default)]
pub struct When {
    conds: Vec<(Cond, Box<str>)>,
}

impl When {
    /// A `when` from conditions and their source text.
    pub fn new(conds: Vec<(Cond, Box<str>)>) -> Self {
        When { conds }
    }

    /// True when there are no conditions: the rule matches every device.
    pub fn is_catch_all(&self) -> bool {
        self.conds.is_empty()
    }

    /// The conditions with their source text.
    pub fn conditions(&self) -> impl Iterator<Item = (&Cond, &str)> {
        self.conds.iter().map(|(c, t)| (c, &**t))
    }

    /// The first condition that does not hold, or `None` when all hold.
    pub fn first_failing(&self, f: &Facts<'_>) -> Option<&str> {
        self.conds.iter().find(|(c, _)| !c.holds(f)).map(|(_, t)| &**t)
    }

    /// Whether every condition holds.
    pub fn holds(&self, f: &Facts<'_>) -> bool {
        self.conds.iter().all(|(c, _)| c.holds(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(ops: Vec<StrOp>) -> StrCond {
        StrCond::new(ops)
    }

    #[test]
    fn string_operators_match_as_named() {
        let v = Some("breakroom499-contoso-tstrsd-007");
        assert!(cond(vec![StrOp::Contains("-contoso-tstrsd-".into())]).matches(v));
        assert!(cond(vec![StrOp::Prefix("breakroom".into()), StrOp::Suffix("-007".into())]).matches(v));
        assert!(!cond(vec![StrOp::Prefix("breakroom".into()), StrOp::Suffix("-008".into())]).matches(v));
        assert!(
            cond(vec![StrOp::AnyOf(
                vec!["x".into(), "breakroom499-contoso-tstrsd-007".into()].into()
            )])
            .matches(v)
        );
        let glob = globset::Glob::new("*-contoso-*").expect("glob").compile_matcher();
        assert!(cond(vec![StrOp::Glob(glob)]).matches(v));
        let re = regex::Regex::new(r"room\d+-").expect("regex");
        assert!(cond(vec![StrOp::Regex(re)]).matches(v));
    }

    #[test]
    fn absent_values_only_satisfy_exists_false_and_not() {
        assert!(cond(vec![StrOp::Exists(false)]).matches(None));
        assert!(!cond(vec![StrOp::Exists(true)]).matches(None));
        assert!(!cond(vec![StrOp::Equals("".into())]).matches(None));
        assert!(cond(vec![StrOp::Not(cond(vec![StrOp::Equals("x".into())]))]).matches(None));
        assert!(!cond(vec![StrOp::Not(cond(vec![StrOp::Equals("x".into())]))]).matches(Some("x")));
    }

    #[test]
    fn payload_values_compare_by_type() {
        let p = json!({"fw": {"channel": "revoked", "build": 12, "beta": true, "n": null}, "list": [{"id": "a"}]});
        let at = |path: &str| JsonPath::parse(path).expect("path").lookup(&p).cloned();
        assert!(ValueCond::Literal(json!("revoked")).matches(at("fw.channel").as_ref()));
        assert!(ValueCond::Literal(json!(12.0)).matches(at("fw.build").as_ref()));
        assert!(!ValueCond::Literal(json!("12")).matches(at("fw.build").as_ref()));
        assert!(ValueCond::Literal(json!(true)).matches(at("fw.beta").as_ref()));
        assert!(ValueCond::Str(cond(vec![StrOp::Prefix("1".into())])).matches(at("fw.build").as_ref()));
        assert!(ValueCond::Str(cond(vec![StrOp::Exists(false)])).matches(at("fw.n").as_ref()));
        assert!(ValueCond::Literal(json!("a")).matches(at("list.0.id").as_ref()));
        assert!(at("list.x").is_none() && at("fw.channel.deeper").is_none());
    }

    #[test]
    fn paths_refuse_empty_segments() {
        assert!(JsonPath::parse("").is_err());
        assert!(JsonPath::parse("a..b").is_err());
        assert!(JsonPath::parse(".a").is_err());
        assert_eq!(JsonPath::parse("a.b").expect("ok").as_str(), "a.b");
    }
}
