//! DPS wire types: the AllocationRequest that DPS POSTs to the webhook, and the response it expects.
//!
//! The request side is tolerant (unknown and optional fields may be missing or extra) and strict only about
//! what the contract requires: a non-empty `registrationId`, a non-empty `linkedHubs` of strings, and exactly
//! one enrollment. It parses into [`AllocationRequest`], which the engine reads and never re-checks. Strings
//! borrow from the body where JSON escapes allow. The response side spells `iotHubHostName` exactly and
//! leaves out an empty twin or payload.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A string borrowed from the request body when it has no escapes, owned otherwise.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Str<'a>(pub Cow<'a, str>);

impl<'a> Str<'a> {
    /// The string itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl utoipa::PartialSchema for Str<'_> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        String::schema()
    }
}

impl utoipa::ToSchema for Str<'_> {}

impl fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// How the device proved its identity, from the member present in `deviceRuntimeContext`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Attestation {
    /// Symmetric key (the key itself never reaches the webhook).
    #[serde(rename = "symmetricKey")]
    SymmetricKey,
    /// X.509 certificate.
    #[serde(rename = "x509")]
    X509,
    /// TPM endorsement key.
    #[serde(rename = "tpm")]
    Tpm,
}

impl Attestation {
    /// The name used on the wire and in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Attestation::SymmetricKey => "symmetricKey",
            Attestation::X509 => "x509",
            Attestation::Tpm => "tpm",
        }
    }
}

/// Which kind of enrollment the device registered through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EnrollmentKind {
    /// An enrollment group (`enrollmentGroup`).
    Group,
    /// An individual enrollment (`individualEnrollment`).
    Individual,
}

/// The enrollment fields a policy can read.
#[derive(Debug, Clone)]
pub struct Enrollment<'a> {
    /// Group or individual.
    pub kind: EnrollmentKind,
    /// `enrollmentGroupId` of a group enrollment.
    pub group_id: Option<Str<'a>>,
    /// `deviceId` of an individual enrollment.
    pub device_id: Option<Str<'a>>,
    /// `capabilities.iotEdge`, false when absent.
    pub iot_edge: bool,
    /// `reprovisionPolicy.updateHubAssignment`, true when absent (DPS's default).
    pub update_hub_assignment: bool,
    /// `attestation.type` of the enrollment.
    pub attestation_type: Option<Str<'a>>,
}

/// A validated AllocationRequest.
#[derive(Debug, Clone)]
pub struct AllocationRequest<'a> {
    /// `deviceRuntimeContext.registrationId`, never empty.
    pub registration_id: Str<'a>,
    /// The hub the device is on now (either spelling of the field), when it re-registers.
    pub current_hub: Option<Str<'a>>,
    /// `deviceRuntimeContext.currentDeviceId`.
    pub current_device_id: Option<Str<'a>>,
    /// The attestation member present in `deviceRuntimeContext`, if any.
    pub attestation: Option<Attestation>,
    /// `deviceRuntimeContext.x509`, opaque.
    pub x509: Option<Value>,
    /// `deviceRuntimeContext.payload`, opaque.
    pub payload: Option<Value>,
    /// `linkedHubs`, never empty, spelled as DPS sent them.
    pub linked_hubs: Vec<Str<'a>>,
    /// The enrollment the device registered through.
    pub enrollment: Enrollment<'a>,
    /// Known DPS fields found at the wrong level (not read; the decision's reasons name them).
    pub misplaced: Vec<Misplaced>,
}

impl AllocationRequest<'_> {
    /// The device id IoT Hub will use: the individual enrollment's `deviceId`, else the current device id,
    /// else the registration id (DPS's default).
    pub fn device_id(&self) -> &str {
        self.enrollment
            .device_id
            .as_ref()
            .or(self.current_device_id.as_ref())
            .unwrap_or(&self.registration_id)
            .as_str()
    }

    /// The attestation kind: the runtime context's member, else the enrollment's `attestation.type`.
    pub fn attestation_kind(&self) -> Option<Attestation> {
        self.attestation
            .or_else(|| match self.enrollment.attestation_type.as_ref()?.as_str() {
                "symmetricKey" => Some(Attestation::SymmetricKey),
                "x509" => Some(Attestation::X509),
                "tpm" => Some(Attestation::Tpm),
                _ => None,
            })
    }
}

/// Why a request body is not an acceptable AllocationRequest. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

// The raw request as serde reads it: every field optional so that `validate` can name what is missing.
// These same types generate the OpenAPI schema (`http::openapi`), so the document cannot drift from the
// parser; `required` there states what `validate` enforces.

/// The AllocationRequest DPS POSTs. Unknown fields are ignored everywhere.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AllocationRequest)]
pub struct RawRequest<'a> {
    /// The device and its registration.
    #[serde(borrow)]
    #[schema(required = true)]
    pub(crate) device_runtime_context: Option<RawRuntimeContext<'a>>,
    /// The hubs the enrollment may use; the answer is one of them, spelled exactly.
    #[serde(borrow)]
    #[schema(required = true, min_items = 1, max_items = 256)]
    pub(crate) linked_hubs: Option<Vec<Str<'a>>>,
    /// A group enrollment (exactly one of the two enrollments).
    #[serde(borrow)]
    pub(crate) enrollment_group: Option<RawEnrollment<'a>>,
    /// An individual enrollment (exactly one of the two enrollments).
    #[serde(borrow)]
    pub(crate) individual_enrollment: Option<RawEnrollment<'a>>,
    /// `deviceRuntimeContext`'s fields where a hand-written test request often puts them: at the top
    /// level. Only noted ([`Misplaced`]): DPS never sends them there, and reading them would decide on a
    /// request DPS cannot send. Skipped unbuilt (`IgnoredAny`); not in the OpenAPI document.
    #[serde(rename = "currentIotHubHostName", alias = "currentIoTHubHostName", default)]
    #[schema(ignore)]
    pub(crate) top_current_hub: Option<serde::de::IgnoredAny>,
    #[serde(rename = "currentDeviceId", default)]
    #[schema(ignore)]
    pub(crate) top_current_device_id: Option<serde::de::IgnoredAny>,
    #[serde(rename = "registrationId", default)]
    #[schema(ignore)]
    pub(crate) top_registration_id: Option<serde::de::IgnoredAny>,
    #[serde(rename = "payload", default)]
    #[schema(ignore)]
    pub(crate) top_payload: Option<serde::de::IgnoredAny>,
}

/// A known DPS field found at the wrong level of a request: noted in the decision's reasons and logged
/// as a warning, never read (the request is decided as DPS would have sent it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Misplaced {
    /// `currentIotHubHostName` at the top level: the request is a first registration.
    CurrentHub,
    /// `currentDeviceId` at the top level.
    CurrentDeviceId,
    /// `registrationId` at the top level.
    RegistrationId,
    /// `payload` at the top level: the device sent no payload.
    Payload,
}

impl Misplaced {
    /// The field's name and where it belongs.
    pub fn as_str(self) -> &'static str {
        match self {
            Misplaced::CurrentHub => {
                "`currentIotHubHostName` is at the top level, not in `deviceRuntimeContext`: not read (decided as a first registration)"
            }
            Misplaced::CurrentDeviceId => {
                "`currentDeviceId` is at the top level, not in `deviceRuntimeContext`: not read"
            }
            Misplaced::RegistrationId => {
                "`registrationId` is at the top level as well as in `deviceRuntimeContext`: the top-level one is not read"
            }
            Misplaced::Payload => {
                "`payload` is at the top level, not in `deviceRuntimeContext`: not read (decided without a payload)"
            }
        }
    }
}

/// `deviceRuntimeContext`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeviceRuntimeContext)]
pub struct RawRuntimeContext<'a> {
    /// Case-insensitive in DPS: 1 to 128 letters, digits and `- . _ :`.
    #[serde(borrow)]
    #[schema(required = true, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$")]
    pub(crate) registration_id: Option<Str<'a>>,
    /// The hub the device is on, when it re-registers (also accepted as `currentIoTHubHostName`).
    #[serde(borrow)]
    pub(crate) current_iot_hub_host_name: Option<Str<'a>>,
    /// The documented alternative spelling of `currentIotHubHostName`.
    #[serde(borrow, rename = "currentIoTHubHostName")]
    pub(crate) current_iot_hub_host_name_alt: Option<Str<'a>>,
    /// The device id, when the device was assigned before.
    #[serde(borrow)]
    pub(crate) current_device_id: Option<Str<'a>>,
    /// Present (as `{}`) for symmetric-key devices.
    #[schema(value_type = Option<Object>)]
    pub(crate) symmetric_key: Option<IgnoredAny>,
    /// Present for TPM devices.
    #[schema(value_type = Option<Object>)]
    pub(crate) tpm: Option<IgnoredAny>,
    /// Present for X.509 devices; opaque, policies may read paths inside it.
    #[schema(value_type = Option<Object>)]
    pub(crate) x509: Option<Value>,
    /// The device's registration payload, when it sent one (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub(crate) payload: Option<Value>,
}

/// `enrollmentGroup` or `individualEnrollment`: the fields the policy reads.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Enrollment)]
pub struct RawEnrollment<'a> {
    /// The group id (group enrollments).
    #[serde(borrow)]
    pub(crate) enrollment_group_id: Option<Str<'a>>,
    /// The device id (individual enrollments).
    #[serde(borrow)]
    pub(crate) device_id: Option<Str<'a>>,
    /// `iotEdge`.
    pub(crate) capabilities: Option<RawCapabilities>,
    /// `updateHubAssignment` (absent: true).
    pub(crate) reprovision_policy: Option<RawReprovisionPolicy>,
    /// `type`.
    #[serde(borrow)]
    pub(crate) attestation: Option<RawAttestation<'a>>,
}

/// `capabilities`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Capabilities)]
pub struct RawCapabilities {
    /// Whether the device is an IoT Edge device.
    pub(crate) iot_edge: Option<bool>,
}

/// `reprovisionPolicy`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ReprovisionPolicy)]
pub struct RawReprovisionPolicy {
    /// False: "never reprovision", the device keeps its hub.
    pub(crate) update_hub_assignment: Option<bool>,
}

/// `attestation`.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = EnrollmentAttestation)]
pub struct RawAttestation<'a> {
    /// `symmetricKey`, `x509` or `tpm`.
    #[serde(borrow, rename = "type")]
    pub(crate) kind: Option<Str<'a>>,
}

impl<'a> AllocationRequest<'a> {
    /// Parses and validates a request body, whatever its Content-Type.
    pub fn parse(body: &'a [u8]) -> Result<Self, RequestError> {
        let raw: RawRequest<'a> = match serde_json::from_slice(body) {
            Ok(raw) => raw,
            Err(e) => return Err(describe_json_error(body, e)),
        };
        raw.validate()
    }
}

/// Turns a serde failure into a one-line message naming the field (the path is only tracked on this
/// error path, so well-formed requests pay nothing for it).
fn describe_json_error(body: &[u8], err: serde_json::Error) -> RequestError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            return RequestError(format!("request body is not valid JSON: {err}"));
        }
        Category::Data => {}
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return RequestError("request body must be a JSON object".to_owned());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let path_err = serde_path_to_error::deserialize::<_, RawRequest<'_>>(&mut de).err();
    match path_err {
        Some(e) if e.path().iter().next().is_some() => {
            RequestError(format!("`{}`: {}", e.path(), plain(&e.inner().to_string())))
        }
        _ => RequestError(format!("invalid AllocationRequest: {}", plain(&err.to_string()))),
    }
}

/// serde's message without its position suffix and without the names of this crate's internal types.
fn plain(msg: &str) -> String {
    let msg = strip_position(msg);
    match msg.find("expected struct ") {
        Some(i) => format!("{}expected a JSON object", &msg[..i]),
        None => msg.to_owned(),
    }
}

/// serde_json appends " at line L column C"; with the field path given, that position is noise.
fn strip_position(msg: &str) -> &str {
    msg.rfind(" at line ").map_or(msg, |i| &msg[..i])
}

/// Who a refused request was about, as far as the body tells: the registration id (only when it follows
/// DPS's rule, so it is safe in a log line) and the enrollment group id or `individual`. For the log line
/// of a 400: the reason is in the message, these say whose request it was.
pub fn identity_hint(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Hint {
        #[serde(rename = "deviceRuntimeContext")]
        ctx: Option<HintCtx>,
        #[serde(rename = "enrollmentGroup")]
        group: Option<HintGroup>,
        #[serde(rename = "individualEnrollment")]
        individual: Option<serde::de::IgnoredAny>,
    }
    #[derive(Deserialize)]
    struct HintCtx {
        #[serde(rename = "registrationId")]
        registration_id: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct HintGroup {
        #[serde(rename = "enrollmentGroupId")]
        id: Option<serde_json::Value>,
    }
    let safe = |v: &serde_json::Value| {
        v.as_str()
            .filter(|s| !s.is_empty() && s.len() <= REGISTRATION_ID_MAX && s.bytes().all(registration_id_byte))
            .map(str::to_owned)
    };
    let Ok(hint) = serde_json::from_slice::<Hint>(body) else {
        return (None, None);
    };
    let id = hint.ctx.and_then(|c| c.registration_id).as_ref().and_then(safe);
    let enrollment = match (hint.group, hint.individual) {
        (Some(g), _) => g.id.as_ref().and_then(safe),
        (None, Some(_)) => Some("individual".to_owned()),
        (None, None) => None,
    };
    (id, enrollment)
}

/// DPS's limit on a registration id.
pub const REGISTRATION_ID_MAX: usize = 128;
/// Linked hubs accepted in one request (DPS links at most 50; the headroom is for a future raise).
pub const LINKED_HUBS_MAX: usize = 256;
/// The longest DNS name.
pub const HOST_NAME_MAX: usize = 253;

/// A registration id holds ASCII letters, digits and `- . _ :` (DPS's own rule), so it is safe to put in
/// twin tags, log lines and headers.
fn registration_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':')
}

impl<'a> RawRequest<'a> {
    fn validate(self) -> Result<AllocationRequest<'a>, RequestError> {
        let err = |m: &str| Err(RequestError(m.to_owned()));
        let Some(ctx) = self.device_runtime_context else {
            return err("missing field `deviceRuntimeContext`");
        };
        let registration_id = match ctx.registration_id {
            Some(id) if id.as_str().is_empty() => {
                return err("`deviceRuntimeContext.registrationId` must not be empty");
            }
            Some(id) if id.as_str().len() > REGISTRATION_ID_MAX => {
                return err("`deviceRuntimeContext.registrationId` is longer than DPS's 128 characters");
            }
            Some(id) if !id.as_str().bytes().all(registration_id_byte) => {
                return err("`deviceRuntimeContext.registrationId` may hold only letters, digits and `- . _ :`");
            }
            Some(id) => id,
            None => return err("missing field `deviceRuntimeContext.registrationId`"),
        };
        let linked_hubs = match self.linked_hubs {
            Some(hubs) if hubs.is_empty() => return err("`linkedHubs` must not be empty"),
            Some(hubs) if hubs.len() > LINKED_HUBS_MAX => {
                return err("`linkedHubs` holds more than 256 host names");
            }
            Some(hubs) if hubs.iter().any(|h| h.as_str().is_empty()) => {
                return err("`linkedHubs` must not contain an empty host name");
            }
            // Counted in characters, as the OpenAPI document's maxLength is (host names are ASCII in DNS).
            Some(hubs)
                if hubs
                    .iter()
                    .any(|h| h.as_str().len() > HOST_NAME_MAX && h.as_str().chars().count() > HOST_NAME_MAX) =>
            {
                return err("`linkedHubs` holds a host name longer than 253 characters");
            }
            Some(hubs) => hubs,
            None => return err("missing field `linkedHubs`"),
        };
        let (kind, raw) = match (self.enrollment_group, self.individual_enrollment) {
            (Some(g), None) => (EnrollmentKind::Group, g),
            (None, Some(i)) => (EnrollmentKind::Individual, i),
            (Some(_), Some(_)) => {
                return err("exactly one of `enrollmentGroup` and `individualEnrollment` may be present, not both");
            }
            (None, None) => {
                return err("missing field `enrollmentGroup` or `individualEnrollment`");
            }
        };
        let attestation = match (ctx.symmetric_key.is_some(), ctx.x509.is_some(), ctx.tpm.is_some()) {
            (true, false, false) => Some(Attestation::SymmetricKey),
            (false, true, false) => Some(Attestation::X509),
            (false, false, true) => Some(Attestation::Tpm),
            (false, false, false) => None,
            _ => {
                return err("`deviceRuntimeContext` must carry at most one of `symmetricKey`, `x509` and `tpm`");
            }
        };
        let enrollment = Enrollment {
            kind,
            group_id: if kind == EnrollmentKind::Group {
                raw.enrollment_group_id
            } else {
                None
            },
            device_id: if kind == EnrollmentKind::Individual {
                raw.device_id
            } else {
                None
            },
            iot_edge: raw.capabilities.and_then(|c| c.iot_edge).unwrap_or(false),
            update_hub_assignment: raw
                .reprovision_policy
                .and_then(|p| p.update_hub_assignment)
                .unwrap_or(true),
            attestation_type: raw.attestation.and_then(|a| a.kind),
        };
        let current_hub = ctx
            .current_iot_hub_host_name
            .or(ctx.current_iot_hub_host_name_alt)
            .filter(|h| !h.as_str().is_empty());
        let payload = ctx.payload.filter(|p| !p.is_null());
        if payload.as_ref().is_some_and(|p| !p.is_object()) {
            return err("`deviceRuntimeContext.payload` must be a JSON object");
        }
        let misplaced = [
            (self.top_current_hub.is_some(), Misplaced::CurrentHub),
            (self.top_current_device_id.is_some(), Misplaced::CurrentDeviceId),
            (self.top_registration_id.is_some(), Misplaced::RegistrationId),
            (self.top_payload.is_some(), Misplaced::Payload),
        ]
        .into_iter()
        .filter_map(|(found, m)| found.then_some(m))
        .collect();
        Ok(AllocationRequest {
            registration_id,
            current_hub,
            current_device_id: ctx.current_device_id,
            attestation,
            x509: ctx.x509.filter(|x| !x.is_null()),
            payload,
            linked_hubs,
            enrollment,
            misplaced,
        })
    }
}

// The twin and the payload arrive as JSON text the engine rendered, and `to_vec` splices them in: the
// bytes are those `serde_json` writes for the same values (tested), without building them as values.
/// The 200 response DPS reads.
#[derive(Debug, utoipa::ToSchema)]
pub struct AllocationResponse<'a> {
    /// The chosen hub, spelled exactly as in the request's `linkedHubs`.
    #[schema(rename = "iotHubHostName")]
    pub iot_hub_host_name: &'a str,
    /// The device's initial twin (`tags`, `properties.desired`); absent lets DPS use the enrollment's.
    #[schema(rename = "initialTwin", value_type = Option<Object>)]
    pub initial_twin: Option<&'a [u8]>,
    /// A JSON object passed to the device.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<&'a [u8]>,
}

impl AllocationResponse<'_> {
    /// The body: `{"iotHubHostName":..,"initialTwin":..,"payload":..}`, leaving out what is absent.
    pub fn to_vec(&self) -> Vec<u8> {
        let extra = self.initial_twin.map_or(0, <[u8]>::len) + self.payload.map_or(0, <[u8]>::len);
        let mut out = Vec::with_capacity(48 + self.iot_hub_host_name.len() + extra);
        out.extend_from_slice(b"{\"iotHubHostName\":");
        write_json_str(&mut out, self.iot_hub_host_name);
        if let Some(twin) = self.initial_twin {
            out.extend_from_slice(b",\"initialTwin\":");
            out.extend_from_slice(twin);
        }
        if let Some(payload) = self.payload {
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(payload);
        }
        out.push(b'}');
        out
    }
}

/// A JSON string, escaped exactly as `serde_json` escapes it (writing into a `Vec` cannot fail).
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_body_still_says_whose_it_was_when_it_can_safely() {
        let hint = identity_hint(
            br#"{"deviceRuntimeContext":{"registrationId":"d-1","payload":7},"enrollmentGroup":{"enrollmentGroupId":"g"}}"#,
        );
        assert_eq!(hint, (Some("d-1".to_owned()), Some("g".to_owned())));
        let unsafe_id = identity_hint(
            br#"{"deviceRuntimeContext":{"registrationId":"a\n{\"forged\":1}"},"individualEnrollment":{}}"#,
        );
        assert_eq!(unsafe_id, (None, Some("individual".to_owned())));
        assert_eq!(identity_hint(b"not json"), (None, None));
    }

    fn parse(s: &str) -> Result<AllocationRequest<'_>, String> {
        AllocationRequest::parse(s.as_bytes()).map_err(|e| e.0)
    }

    const MINIMAL: &str = r#"{"deviceRuntimeContext":{"registrationId":"dev-1"},"linkedHubs":["a.azure-devices.net"],"enrollmentGroup":{}}"#;

    #[test]
    fn minimal_request_parses_with_dps_defaults() {
        let r = parse(MINIMAL).expect("valid");
        assert_eq!(r.registration_id.as_str(), "dev-1");
        assert_eq!(r.enrollment.kind, EnrollmentKind::Group);
        assert!(r.enrollment.update_hub_assignment);
        assert!(!r.enrollment.iot_edge);
        assert_eq!(r.device_id(), "dev-1");
        assert!(r.current_hub.is_none() && r.payload.is_none() && r.attestation.is_none());
    }

    #[test]
    fn both_spellings_of_the_current_hub_are_accepted() {
        for field in ["currentIotHubHostName", "currentIoTHubHostName"] {
            let body = format!(
                r#"{{"deviceRuntimeContext":{{"registrationId":"d","{field}":"h1"}},"linkedHubs":["h1"],"individualEnrollment":{{"registrationId":"d"}}}}"#
            );
            let r = parse(&body).expect("valid");
            assert_eq!(r.current_hub.as_ref().map(Str::as_str), Some("h1"), "{field}");
        }
    }

    #[test]
    fn unknown_fields_are_tolerated_everywhere() {
        let body = r#"{"x":1,"deviceRuntimeContext":{"registrationId":"d","new":{"a":[1]},"symmetricKey":{}},
            "linkedHubs":["h"],"enrollmentGroup":{"etag":"\"abc\"","future":true,"initialTwin":{"tags":{}}}}"#;
        let r = parse(body).expect("valid");
        assert_eq!(r.attestation, Some(Attestation::SymmetricKey));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let body = r#"{"deviceRuntimeContext":{"registrationId":"d\u0031"},"linkedHubs":["h"],"enrollmentGroup":{}}"#;
        assert_eq!(parse(body).expect("valid").registration_id.as_str(), "d1");
    }

    #[test]
    fn missing_required_fields_are_named() {
        let cases = [
            (r#"{"linkedHubs":["h"],"enrollmentGroup":{}}"#, "`deviceRuntimeContext`"),
            (
                r#"{"deviceRuntimeContext":{},"linkedHubs":["h"],"enrollmentGroup":{}}"#,
                "registrationId",
            ),
            (
                r#"{"deviceRuntimeContext":{"registrationId":""},"linkedHubs":["h"],"enrollmentGroup":{}}"#,
                "must not be empty",
            ),
            (
                r#"{"deviceRuntimeContext":{"registrationId":"d"},"enrollmentGroup":{}}"#,
                "`linkedHubs`",
            ),
            (
                r#"{"deviceRuntimeContext":{"registrationId":"d"},"linkedHubs":[],"enrollmentGroup":{}}"#,
                "`linkedHubs` must not be empty",
            ),
            (
                r#"{"deviceRuntimeContext":{"registrationId":"d"},"linkedHubs":["h"]}"#,
                "enrollmentGroup",
            ),
            (
                r#"{"deviceRuntimeContext":{"registrationId":"d"},"linkedHubs":["h"],"enrollmentGroup":{},"individualEnrollment":{}}"#,
                "not both",
            ),
        ];
        for (body, needle) in cases {
            let e = parse(body).expect_err(body);
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cases = [
            (
                r#"{"deviceRuntimeContext":{"registrationId":5},"linkedHubs":["h"],"enrollmentGroup":{}}"#,
                "`deviceRuntimeContext.registrationId`",
            ),
            (
                r#"{"deviceRuntimeContext":{"registrationId":"d"},"linkedHubs":"h","enrollmentGroup":{}}"#,
                "`linkedHubs`",
            ),
            (
                r#"{"deviceRuntimeContext":{"registrationId":"d"},"linkedHubs":[1],"enrollmentGroup":{}}"#,
                "`linkedHubs[0]`",
            ),
            (
                r#"{"deviceRuntimeContext":{"registrationId":"d"},"linkedHubs":["h"],"enrollmentGroup":{"capabilities":{"iotEdge":"yes"}}}"#,
                "`enrollmentGroup.capabilities.iotEdge`",
            ),
            (
                r#"{"deviceRuntimeContext":{"registrationId":"d","payload":[1]},"linkedHubs":["h"],"enrollmentGroup":{}}"#,
                "payload",
            ),
        ];
        for (body, needle) in cases {
            let e = parse(body).expect_err(body);
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn non_objects_and_broken_json_are_refused() {
        for body in ["", "[]", "1", "\"x\"", "null", "{", r#"{"a":1}}"#, "\u{feff}{}"] {
            assert!(parse(body).is_err(), "{body:?}");
        }
        assert!(AllocationRequest::parse(b"{\"deviceRuntimeContext\":{\"registrationId\":\"\xff\"}}").is_err());
    }

    #[test]
    fn response_leaves_out_what_is_empty() {
        let r = AllocationResponse {
            iot_hub_host_name: "h",
            initial_twin: None,
            payload: None,
        };
        assert_eq!(String::from_utf8_lossy(&r.to_vec()), r#"{"iotHubHostName":"h"}"#);
    }

    #[test]
    fn response_bytes_are_what_serde_json_writes() {
        let twin = serde_json::json!({"tags": {"a": "é\"\n"}, "properties": {"desired": {"n": 1.5}}});
        let payload = serde_json::json!({"k": ["x", null, {"y": "\u{2028}"}]});
        let (twin_text, payload_text) = (twin.to_string(), payload.to_string());
        for hub in ["h.azure-devices.net", "we\"ird\\hub\u{7f}"] {
            for (t, p) in [(true, true), (true, false), (false, true)] {
                let r = AllocationResponse {
                    iot_hub_host_name: hub,
                    initial_twin: t.then_some(twin_text.as_bytes()),
                    payload: p.then_some(payload_text.as_bytes()),
                };
                let mut expected = serde_json::Map::new();
                expected.insert("iotHubHostName".to_owned(), Value::from(hub));
                if t {
                    expected.insert("initialTwin".to_owned(), twin.clone());
                }
                if p {
                    expected.insert("payload".to_owned(), payload.clone());
                }
                assert_eq!(
                    String::from_utf8_lossy(&r.to_vec()),
                    Value::Object(expected).to_string()
                );
            }
        }
    }
}
