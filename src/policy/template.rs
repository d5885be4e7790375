//! Twin and payload templates: TOML values whose strings may hold `${variable}`s.
//!
//! Parsed once when the policy loads (an unknown variable is a load error); rendered per decision into
//! JSON. `$$` writes a literal `$`. A missing payload path renders as an empty string; every string
//! stays a string (a template never turns into a number).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

use super::condition::JsonPath;
use crate::dps::write_json_str;

/// A template variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `${registration_id}`, as the device sent it.
    RegistrationId,
    /// `${device_id}`.
    DeviceId,
    /// `${enrollment_group}`.
    EnrollmentGroup,
    /// `${tenant}`.
    Tenant,
    /// `${rule}`.
    Rule,
    /// `${hub}`: the chosen hub as spelled in `linkedHubs`.
    Hub,
    /// `${hub.region}`.
    HubRegion,
    /// `${hub.tags.KEY}`.
    HubTag(Box<str>),
    /// `${revision}`.
    Revision,
    /// `${payload.PATH}`.
    Payload(JsonPath),
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        Some(match name {
            "registration_id" => Var::RegistrationId,
            "device_id" => Var::DeviceId,
            "enrollment_group" => Var::EnrollmentGroup,
            "tenant" => Var::Tenant,
            "rule" => Var::Rule,
            "hub" => Var::Hub,
            "hub.region" => Var::HubRegion,
            "revision" => Var::Revision,
            _ => {
                if let Some(key) = name.strip_prefix("hub.tags.") {
                    if key.is_empty() {
                        return None;
                    }
                    Var::HubTag(key.into())
                } else {
                    Var::Payload(JsonPath::parse(name.strip_prefix("payload.")?).ok()?)
                }
            }
        })
    }
}

/// The values a template can draw on for one decision.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'v> {
    /// Registration id as sent.
    pub registration_id: &'v str,
    /// Device id.
    pub device_id: &'v str,
    /// Enrollment group id.
    pub enrollment_group: Option<&'v str>,
    /// Tenant id.
    pub tenant: Option<&'v str>,
    /// Rule name.
    pub rule: &'v str,
    /// Chosen hub, as spelled in `linkedHubs`.
    pub hub: &'v str,
    /// The hub's region.
    pub hub_region: Option<&'v str>,
    /// The hub's tags.
    pub hub_tags: Option<&'v BTreeMap<String, String>>,
    /// Revision id.
    pub revision: &'v str,
    /// Device payload.
    pub payload: Option<&'v Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<str>),
    Var(Var),
}

/// A string with variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrTemplate {
    parts: Vec<Part>,
}

/// A template problem: the message and the text to point the error at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
    /// The offending text, for the error location.
    pub needle: String,
}

impl StrTemplate {
    /// Parses `${...}` variables; `allowed` says which variables this place may use.
    pub fn parse(s: &str, allowed: &dyn Fn(&Var) -> bool) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                lit.push('$');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('{') {
                let Some(end) = inner.find('}') else {
                    let needle = format!("${{{}", inner.chars().take(20).collect::<String>());
                    return Err(TemplateError {
                        message: "unterminated `${` in template".to_owned(),
                        needle,
                    });
                };
                let name = &inner[..end];
                let needle = format!("${{{name}}}");
                let var = match Var::parse(name) {
                    Some(v) if allowed(&v) => v,
                    Some(_) => {
                        return Err(TemplateError {
                            message: format!("variable `{needle}` is not available here"),
                            needle,
                        });
                    }
                    None => {
                        return Err(TemplateError {
                            message: format!("unknown variable `{needle}`"),
                            needle,
                        });
                    }
                };
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit).into()));
                }
                parts.push(Part::Var(var));
                rest = &inner[end + 1..];
            } else {
                lit.push('$');
                rest = after;
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into()));
        }
        Ok(StrTemplate { parts })
    }

    /// The literal text when there are no variables.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// Whether any part is the given variable kind (by predicate).
    pub fn uses(&self, pred: &dyn Fn(&Var) -> bool) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Var(v) if pred(v)))
    }

    /// Renders with these values.
    pub fn render(&self, v: &Vars<'_>) -> String {
        self.render_within(v, &mut Budget::unlimited()).unwrap_or_default()
    }

    /// Renders with these values, within a budget: stops as soon as the text would pass it, before it is
    /// built, so a large payload value referenced many times costs no more memory than the budget.
    pub fn render_within(&self, v: &Vars<'_>, budget: &mut Budget) -> Result<String, Exhausted> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => {
                    budget.take(s.len())?;
                    out.push_str(s);
                }
                Part::Var(var) => render_var(var, v, budget, &mut out)?,
            }
        }
        Ok(out)
    }
}

/// What rendering may still produce, in bytes of keys and string contents: a lower bound of the JSON
/// size, so running out means the JSON is over the limit for certain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    left: usize,
}

/// Rendering stopped: the budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

impl Budget {
    /// This many bytes.
    pub fn new(bytes: usize) -> Self {
        Budget { left: bytes }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Budget { left: usize::MAX }
    }

    /// Spends `n` bytes, or says the budget cannot pay them.
    pub fn take(&mut self, n: usize) -> Result<(), Exhausted> {
        self.left = self.left.checked_sub(n).ok_or(Exhausted)?;
        Ok(())
    }
}

fn render_var(var: &Var, v: &Vars<'_>, budget: &mut Budget, out: &mut String) -> Result<(), Exhausted> {
    let s = match var {
        Var::RegistrationId => v.registration_id,
        Var::DeviceId => v.device_id,
        Var::EnrollmentGroup => v.enrollment_group.unwrap_or(""),
        Var::Tenant => v.tenant.unwrap_or(""),
        Var::Rule => v.rule,
        Var::Hub => v.hub,
        Var::HubRegion => v.hub_region.unwrap_or(""),
        Var::Revision => v.revision,
        Var::HubTag(key) => v.hub_tags.and_then(|t| t.get(&**key)).map_or("", String::as_str),
        Var::Payload(path) => {
            match v.payload.and_then(|p| path.lookup(p)) {
                Some(Value::String(s)) => {
                    budget.take(s.len())?;
                    out.push_str(s);
                }
                Some(Value::Null) | None => {}
                Some(other) => {
                    // A number, a boolean, an array or an object, as JSON text: no bigger than the request.
                    let mut text = String::new();
                    let _ = write!(text, "{other}");
                    budget.take(text.len())?;
                    out.push_str(&text);
                }
            }
            return Ok(());
        }
    };
    budget.take(s.len())?;
    out.push_str(s);
    Ok(())
}

/// A JSON value with templated strings.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTemplate {
    /// No variables anywhere below: the value, and its compact JSON text rendered once when the policy
    /// loads (the bytes `serde_json` writes for it).
    Const(Value, Box<str>),
    /// A templated string.
    Str(StrTemplate),
    /// An array with templates inside.
    Array(Vec<ValueTemplate>),
    /// An object with templates inside, in the order written.
    Object(Vec<(String, ValueTemplate)>),
}

impl ValueTemplate {
    /// Converts a TOML value, parsing every string as a template.
    pub fn from_toml(value: &toml::Value, allowed: &dyn Fn(&Var) -> bool) -> Result<Self, TemplateError> {
        Ok(match value {
            toml::Value::String(s) => {
                let t = StrTemplate::parse(s, allowed)?;
                match t.as_literal() {
                    Some(lit) => Self::constant(Value::String(lit.to_owned())),
                    None => ValueTemplate::Str(t),
                }
            }
            toml::Value::Integer(i) => Self::constant(Value::from(*i)),
            toml::Value::Float(f) => match Number::from_f64(*f) {
                Some(n) => Self::constant(Value::Number(n)),
                None => {
                    return Err(TemplateError {
                        message: "twin and payload numbers must be finite".to_owned(),
                        needle: String::new(),
                    });
                }
            },
            toml::Value::Boolean(b) => Self::constant(Value::Bool(*b)),
            toml::Value::Datetime(d) => Self::constant(Value::String(d.to_string())),
            toml::Value::Array(items) => {
                let items = items
                    .iter()
                    .map(|i| Self::from_toml(i, allowed))
                    .collect::<Result<Vec<_>, _>>()?;
                Self::array(items)
            }
            toml::Value::Table(t) => Self::from_table(t, allowed)?,
        })
    }

    /// Converts a TOML table.
    pub fn from_table(t: &toml::Table, allowed: &dyn Fn(&Var) -> bool) -> Result<Self, TemplateError> {
        let entries = t
            .iter()
            .map(|(k, v)| Ok((k.clone(), Self::from_toml(v, allowed)?)))
            .collect::<Result<Vec<_>, TemplateError>>()?;
        Ok(Self::object(entries))
    }

    /// A constant, with its JSON text.
    fn constant(value: Value) -> Self {
        let json = value.to_string().into_boxed_str();
        ValueTemplate::Const(value, json)
    }

    fn array(items: Vec<ValueTemplate>) -> Self {
        if items.iter().all(|i| matches!(i, ValueTemplate::Const(..))) {
            let values = items.into_iter().filter_map(|i| {
                if let ValueTemplate::Const(v, _) = i {
                    Some(v)
                } else {
                    None
                }
            });
            Self::constant(Value::Array(values.collect()))
        } else {
            ValueTemplate::Array(items)
        }
    }

    /// An object from entries (keys unique, as in a TOML table), folded into a constant when nothing
    /// below is templated.
    pub fn object(entries: Vec<(String, ValueTemplate)>) -> Self {
        if entries.iter().all(|(_, v)| matches!(v, ValueTemplate::Const(..))) {
            let map: Map<String, Value> = entries
                .into_iter()
                .filter_map(|(k, v)| {
                    if let ValueTemplate::Const(v, _) = v {
                        Some((k, v))
                    } else {
                        None
                    }
                })
                .collect();
            Self::constant(Value::Object(map))
        } else {
            ValueTemplate::Object(entries)
        }
    }

    /// The object's entries (a constant object's too), for merging tenant and rule twins.
    pub fn entries(&self) -> Vec<(String, ValueTemplate)> {
        match self {
            ValueTemplate::Object(e) => e.clone(),
            ValueTemplate::Const(Value::Object(m), _) => {
                m.iter().map(|(k, v)| (k.clone(), Self::constant(v.clone()))).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Whether the template is an empty object.
    pub fn is_empty_object(&self) -> bool {
        match self {
            ValueTemplate::Object(e) => e.is_empty(),
            ValueTemplate::Const(Value::Object(m), _) => m.is_empty(),
            _ => false,
        }
    }

    /// Renders into JSON.
    pub fn render(&self, v: &Vars<'_>) -> Value {
        self.render_within(v, &mut Budget::unlimited()).unwrap_or(Value::Null)
    }

    /// Renders into JSON within a budget (see [`StrTemplate::render_within`]). Constants are the policy's
    /// own and cost nothing; keys and rendered strings are counted.
    pub fn render_within(&self, v: &Vars<'_>, budget: &mut Budget) -> Result<Value, Exhausted> {
        Ok(match self {
            ValueTemplate::Const(c, _) => c.clone(),
            ValueTemplate::Str(t) => Value::String(t.render_within(v, budget)?),
            ValueTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.render_within(v, budget))
                    .collect::<Result<_, _>>()?,
            ),
            ValueTemplate::Object(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (k, t) in entries {
                    budget.take(k.len())?;
                    map.insert(k.clone(), t.render_within(v, budget)?);
                }
                Value::Object(map)
            }
        })
    }

    /// Writes the compact JSON text [`render_within`](Self::render_within) would produce, byte for byte
    /// what `serde_json` writes for that value, without building it: constants are copied from their
    /// text, strings escaped as `serde_json` escapes them. The budget is spent exactly as there, so
    /// both stop at the same point.
    pub fn write_json_within(&self, v: &Vars<'_>, budget: &mut Budget, out: &mut Vec<u8>) -> Result<(), Exhausted> {
        match self {
            ValueTemplate::Const(_, json) => out.extend_from_slice(json.as_bytes()),
            ValueTemplate::Str(t) => write_json_str(out, &t.render_within(v, budget)?),
            ValueTemplate::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_json_within(v, budget, out)?;
                }
                out.push(b']');
            }
            ValueTemplate::Object(entries) => {
                write_json_object(entries.iter().map(|(k, t)| (k.as_str(), t)), v, budget, out)?;
            }
        }
        Ok(())
    }

    /// Whether any string below uses a variable matching the predicate.
    pub fn uses(&self, pred: &dyn Fn(&Var) -> bool) -> bool {
        match self {
            ValueTemplate::Const(..) => false,
            ValueTemplate::Str(t) => t.uses(pred),
            ValueTemplate::Array(items) => items.iter().any(|i| i.uses(pred)),
            ValueTemplate::Object(entries) => entries.iter().any(|(_, t)| t.uses(pred)),
        }
    }
}

/// Writes a JSON object of these entries, in this order (keys unique), as
/// [`ValueTemplate::write_json_within`] writes an object: each key is paid from the budget before its value.
pub fn write_json_object<'t>(
    entries: impl IntoIterator<Item = (&'t str, &'t ValueTemplate)>,
    v: &Vars<'_>,
    budget: &mut Budget,
    out: &mut Vec<u8>,
) -> Result<(), Exhausted> {
    out.push(b'{');
    for (i, (k, t)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        budget.take(k.len())?;
        write_json_str(out, k);
        out.push(b':');
        t.write_json_within(v, budget, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// Every variable is allowed.
pub fn any_var(_: &Var) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars<'v>(payload: Option<&'v Value>, tags: Option<&'v BTreeMap<String, String>>) -> Vars<'v> {
        Vars {
            registration_id: "Dev-1",
            device_id: "dev-1",
            enrollment_group: Some("g"),
            tenant: None,
            rule: "r",
            hub: "h.azure-devices.net",
            hub_region: Some("westeurope"),
            hub_tags: tags,
            revision: "abc",
            payload,
        }
    }

    #[test]
    fn every_variable_renders() {
        let p = json!({"fw": {"v": "1.2", "n": 3}});
        let tags = BTreeMap::from([("tier".to_owned(), "gold".to_owned())]);
        let t = StrTemplate::parse(
            "${registration_id}|${device_id}|${enrollment_group}|${tenant}|${rule}|${hub}|${hub.region}|${hub.tags.tier}|${hub.tags.none}|${revision}|${payload.fw.v}|${payload.fw.n}|${payload.missing}",
            &any_var,
        )
        .expect("parses");
        assert_eq!(
            t.render(&vars(Some(&p), Some(&tags))),
            "Dev-1|dev-1|g||r|h.azure-devices.net|westeurope|gold||abc|1.2|3|"
        );
    }

    #[test]
    fn dollars_escape_and_stray_dollars_stay() {
        let t = StrTemplate::parse("cost $5, $${tenant} ${rule}$", &any_var).expect("parses");
        assert_eq!(t.render(&vars(None, None)), "cost $5, ${tenant} r$");
        assert_eq!(
            StrTemplate::parse("plain", &any_var).expect("parses").as_literal(),
            Some("plain")
        );
    }

    #[test]
    fn unknown_unterminated_and_forbidden_variables_are_errors() {
        let e = StrTemplate::parse("x ${tennant}", &any_var).expect_err("unknown");
        assert_eq!(e.needle, "${tennant}");
        assert!(e.message.contains("unknown variable"));
        assert!(StrTemplate::parse("${hub.tags.}", &any_var).is_err());
        assert!(StrTemplate::parse("${payload.}", &any_var).is_err());
        assert!(StrTemplate::parse("${rule", &any_var).is_err());
        let only_tenant = |v: &Var| *v == Var::Tenant;
        assert!(StrTemplate::parse("${tenant}", &only_tenant).is_ok());
        assert!(
            StrTemplate::parse("${hub}", &only_tenant)
                .expect_err("forbidden")
                .message
                .contains("not available")
        );
    }

    #[test]
    fn json_text_is_byte_for_byte_what_serde_json_writes_of_the_rendered_value() {
        let toml_src = r#"
            plain = "on"
            quote = "say \"hi\"\n\ttab \u0001 é ✓ ${registration_id}"
            n = -3
            f = 2.5
            big = 1e300
            b = true
            when = 1979-05-27T07:32:00Z
            list = ["a", "${hub}", 1, ["${payload.fw}", {}], []]
            empty = {}
            nested = { x = "${payload.n}", y = { z = "${payload.obj}", w = "${payload.none}" }, k = "const" }
            "key \"with\" quotes" = "${hub.tags.tier}"
        "#;
        let t: toml::Table = toml::from_str(toml_src).expect("toml");
        let tpl = ValueTemplate::from_table(&t, &any_var).expect("template");
        let p = json!({"fw": "1.2\"x", "n": 3.25, "obj": {"a": [1, null, "é"]}});
        let tags = BTreeMap::from([("tier".to_owned(), "gold\u{2028}".to_owned())]);
        let v = vars(Some(&p), Some(&tags));
        let expected = serde_json::to_vec(&tpl.render(&v)).expect("json");
        let mut out = Vec::new();
        tpl.write_json_within(&v, &mut Budget::unlimited(), &mut out)
            .expect("unlimited");
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
        // Every budget stops both at the same point, with the same budget left.
        for limit in 0..200 {
            let (mut a, mut b) = (Budget::new(limit), Budget::new(limit));
            let value = tpl.render_within(&v, &mut a);
            let mut out = Vec::new();
            let text = tpl.write_json_within(&v, &mut b, &mut out);
            assert_eq!(value.is_ok(), text.is_ok(), "limit {limit}");
            assert_eq!(a, b, "limit {limit}");
            if let Ok(value) = value {
                assert_eq!(serde_json::to_vec(&value).expect("json"), out, "limit {limit}");
            }
        }
    }

    #[test]
    fn tables_keep_their_order_and_fold_constants() {
        let t: toml::Table = toml::from_str("state = \"on\"\ntemperatureSetting = \"65\"\nn = 1").expect("toml");
        let v = ValueTemplate::from_table(&t, &any_var).expect("template");
        assert!(matches!(v, ValueTemplate::Const(..)));
        assert_eq!(
            v.render(&vars(None, None)).to_string(),
            r#"{"state":"on","temperatureSetting":"65","n":1}"#
        );
    }
}
