//! The Azure Functions custom-handler envelope (`enableForwardingHttpRequest: false`): the host POSTs
//! `{"Data": {"req": {"Body": "<raw body>", "Query": ..., "Headers": ...}}, "Metadata": {...}}` to
//! `/allocate` and expects HTTP 200 with `{"Outputs": {"res": {"statusCode": N, "headers": {...},
//! "body": "<json>"}}, "Logs": [...], "ReturnValue": null}`. The DPS status goes inside
//! `Outputs.res.statusCode`; the outer status is always 200, because the host turns any non-2xx from the
//! handler into a 5xx for DPS (which would then retry for minutes).
//!
//! Read against the host's code (Azure/azure-functions-host v4: `HttpRequestExtensions.GetRequestAsJObject`,
//! `HttpScriptInvocationContext`, `DefaultHttpWorkerService`): `Data.req.Body` is the raw body as a string,
//! absent when the request had no Content-Length; `Data.req.Headers` maps names to arrays of strings;
//! `Data.req.Query` is an object since PR #6621 (September 2020) and JSON *text* (`"{\"code\":\"…\"}"`,
//! the docs' example still shows `"Query": "{}"`) before it; `Metadata` repeats the query and each top-level
//! object of a JSON body, so the envelope is about twice the DPS body. The contract's 128 KiB limit
//! therefore applies to the DPS body inside ([`DPS_BODY_LIMIT`]), the envelope itself may be up to
//! [`ENVELOPE_LIMIT`].

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::answer::ApiError;

/// The largest DPS body inside an envelope: the contract's limit, as on `/api/allocate`.
pub const DPS_BODY_LIMIT: usize = super::BODY_LIMIT;

/// The largest envelope (512 KiB): a DPS body at the limit escaped as a JSON string (at most twice its
/// size: JSON text holds no raw control characters, so only `"` and `\\` grow, by one byte each; the host's
/// serialiser leaves other characters as they are), plus `Metadata` repeating its top-level objects (at
/// most the body again), plus the query and headers (a few KiB). A larger envelope is 413 before it is
/// read; an anonymous one on a keyed server is never expanded ([`open`]).
pub const ENVELOPE_LIMIT: usize = 4 * DPS_BODY_LIMIT;
use crate::server::keys::{ApiKeys, KEY_HEADER, query_code};

/// The invocation envelope the Functions host POSTs to `/allocate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EnvelopeRequest {
    /// The trigger's input bindings.
    #[serde(rename = "Data")]
    pub data: EnvelopeData,
    /// Invocation metadata (not read).
    #[serde(rename = "Metadata", default)]
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// The input bindings: the HTTP trigger, named `req` in the shipped `function.json`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EnvelopeData {
    /// The HTTP request DPS sent.
    pub req: EnvelopeHttpRequest,
}

/// The HTTP request as the host describes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EnvelopeHttpRequest {
    /// The original URL (not read; it carries the key).
    #[serde(rename = "Url", default)]
    pub url: Option<String>,
    /// The method.
    #[serde(rename = "Method", default)]
    pub method: Option<String>,
    /// Query parameters: an object, or a query string in older hosts.
    #[serde(rename = "Query", default)]
    #[schema(value_type = Object)]
    pub query: Option<Value>,
    /// Headers: names to arrays of values.
    #[serde(rename = "Headers", default)]
    #[schema(value_type = Object)]
    pub headers: Option<Map<String, Value>>,
    /// The raw body: the DPS AllocationRequest as a string.
    #[serde(rename = "Body", default)]
    #[schema(value_type = String)]
    pub body: Option<Value>,
}

/// The envelope as [`parse`] reads it: borrowed, and nothing built that the service does not read.
/// `Metadata`, `Url`, `Method`, `Params`, `Identities` and any other field are skipped by serde without
/// building a value (unknown fields are visited with `IgnoredAny`); `Body` and `Query` stay raw text until
/// the key has been checked; of `Headers` only `x-functions-key` is kept.
#[derive(Deserialize)]
struct Lean<'a> {
    #[serde(rename = "Data", borrow)]
    data: LeanData<'a>,
}

#[derive(Deserialize)]
struct LeanData<'a> {
    #[serde(borrow)]
    req: LeanRequest<'a>,
}

#[derive(Deserialize)]
struct LeanRequest<'a> {
    #[serde(rename = "Query", default, borrow)]
    query: Option<&'a RawValue>,
    #[serde(rename = "Headers", default)]
    headers: Option<KeyHeaders>,
    #[serde(rename = "Body", default, borrow)]
    body: Option<&'a RawValue>,
}

/// The values of `x-functions-key` in the envelope's `Headers` (names to arrays of strings, or to a
/// string); every other header is skipped unread.
#[derive(Default)]
struct KeyHeaders(Vec<String>);

impl<'de> Deserialize<'de> for KeyHeaders {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = KeyHeaders;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of header names to values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KeyHeaders, A::Error> {
                let mut keys = Vec::new();
                while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if name.eq_ignore_ascii_case(KEY_HEADER) {
                        match map.next_value::<OneOrMany>()? {
                            OneOrMany::One(k) => keys.push(k),
                            OneOrMany::Many(ks) => keys.extend(ks.into_iter().flatten()),
                            OneOrMany::Other(_) => {}
                        }
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(KeyHeaders(keys))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A header's value: a string, an array (of strings; anything else in it ignored), or anything else.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<Option<String>>),
    Other(IgnoredAny),
}

/// `code` of a query object; the other parameters are skipped unread.
#[derive(Deserialize)]
struct QueryCode {
    #[serde(default)]
    code: Option<Value>,
}

/// The envelope's keys and its raw DPS body, read without decoding the body: [`parse`]'s first half,
/// enough to check the key before anything is expanded.
pub struct Unopened<'a> {
    /// Keys found in the envelope's query (`code`) or headers (`x-functions-key`).
    pub keys: Vec<String>,
    body: Option<&'a RawValue>,
}

/// Reads an envelope's keys and leaves its body raw; the message says what is wrong with a malformed one.
/// Memory: the keys, and serde's bookkeeping; nothing proportional to `Metadata` or the body.
pub fn open(bytes: &[u8]) -> Result<Unopened<'_>, ApiError> {
    let env: Lean<'_> = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("not a Functions invocation envelope: {e}")))?;
    let req = env.data.req;
    let code = |text: &str| match serde_json::from_str::<QueryCode>(text) {
        Ok(QueryCode {
            code: Some(Value::String(k)),
        }) => Some(k),
        _ => None,
    };
    let mut keys: Vec<String> = match req.query.map(RawValue::get) {
        // An object (hosts since September 2020).
        Some(text) if text.starts_with('{') => code(text).into_iter().collect(),
        // Hosts before September 2020 send the query object as JSON text; a URL query string is read too.
        Some(text) => match serde_json::from_str::<String>(text) {
            Ok(q) if q.trim_start().starts_with('{') => code(&q).into_iter().collect(),
            Ok(q) => query_code(q.trim_start_matches('?')).into_iter().collect(),
            Err(_) => Vec::new(),
        },
        None => Vec::new(),
    };
    keys.extend(req.headers.unwrap_or_default().0);
    Ok(Unopened { keys, body: req.body })
}

impl Unopened<'_> {
    /// Whether a key in the envelope is accepted.
    pub fn has_key(&self, keys: &ApiKeys) -> bool {
        self.keys.iter().fold(false, |ok, k| ok | keys.accepts(k))
    }

    /// The DPS body: `Body` as a string (the host's form), an object or array as its JSON, nothing for
    /// null or absent; over [`DPS_BODY_LIMIT`] is 413.
    pub fn body(&self) -> Result<Vec<u8>, ApiError> {
        let body = match self.body.map(RawValue::get) {
            None | Some("null") => Vec::new(),
            Some(raw) if raw.starts_with('"') => serde_json::from_str::<String>(raw)
                .map_err(|e| ApiError::bad_request(format!("not a Functions invocation envelope: {e}")))?
                .into_bytes(),
            Some(raw) => serde_json::from_str::<Value>(raw)
                .and_then(|v| serde_json::to_vec(&v))
                .map_err(|e| ApiError::bad_request(format!("not a Functions invocation envelope: {e}")))?,
        };
        if body.len() > DPS_BODY_LIMIT {
            return Err(ApiError::payload_too_large(DPS_BODY_LIMIT));
        }
        Ok(body)
    }
}

/// The answer to the host.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnvelopeResponse<'a> {
    /// The output bindings.
    #[serde(rename = "Outputs")]
    pub outputs: EnvelopeOutputs<'a>,
    /// Lines for the Functions log.
    #[serde(rename = "Logs")]
    pub logs: &'a [String],
    /// Always null.
    #[serde(rename = "ReturnValue")]
    #[schema(value_type = Option<Object>)]
    pub return_value: Option<()>,
}

/// The output bindings: the HTTP response, named `res` in the shipped `function.json`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnvelopeOutputs<'a> {
    /// The response to DPS.
    pub res: EnvelopeHttpResponse<'a>,
}

/// The response to DPS, as the host expects it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnvelopeHttpResponse<'a> {
    /// The status DPS sees.
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    /// Response headers.
    #[schema(value_type = Object)]
    pub headers: Map<String, Value>,
    /// The JSON body as a string.
    pub body: &'a str,
}

/// The envelope answer carrying a DPS status and JSON body.
pub fn wrap(status: u16, body: &[u8], logs: &[String]) -> Vec<u8> {
    let mut headers = Map::new();
    headers.insert("Content-Type".to_owned(), Value::from("application/json"));
    let body = String::from_utf8_lossy(body);
    let out = EnvelopeResponse {
        outputs: EnvelopeOutputs {
            res: EnvelopeHttpResponse {
                status_code: status,
                headers,
                body: &body,
            },
        },
        logs,
        return_value: None,
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_body_and_keys_come_out_of_either_query_and_header_shape() {
        let env = json!({"Data": {"req": {"Url": "https://x/api/allocate", "Method": "POST",
            "Query": {"code": "k1"}, "Headers": {"X-Functions-Key": ["k2"], "Content-Type": ["application/json"]},
            "Body": "{\"a\":1}"}}, "Metadata": {}});
        let text = env.to_string();
        let i = open(text.as_bytes()).expect("parses");
        assert_eq!(i.body().expect("body"), br#"{"a":1}"#);
        assert_eq!(i.keys, vec!["k1".to_owned(), "k2".to_owned()]);
        let env = json!({"Data": {"req": {"Query": "?code=a%2Bb", "Body": {"a": 1}}}});
        let text = env.to_string();
        let i = open(text.as_bytes()).expect("parses");
        assert_eq!(
            (i.body().expect("body"), i.keys),
            (br#"{"a":1}"#.to_vec(), vec!["a+b".to_owned()])
        );
        // Hosts before PR #6621 (and the docs' example): the query object as JSON text.
        let env = json!({"Data": {"req": {"Query": "{\"code\":\"k+3\"}", "Body": "{}"}}});
        assert_eq!(
            open(env.to_string().as_bytes()).expect("parses").keys,
            vec!["k+3".to_owned()]
        );
        let env = json!({"Data": {"req": {"Query": "{}", "Body": "{}"}}});
        assert!(open(env.to_string().as_bytes()).expect("parses").keys.is_empty());
        let keyless = open(br#"{"Data":{"req":{"Body":"{}"}}}"#).expect("parses");
        assert!(keyless.keys.is_empty() && !keyless.has_key(&ApiKeys::new(["k"])));
    }

    #[test]
    fn malformed_envelopes_are_bad_requests() {
        for bad in [&b"[]"[..], b"{", br#"{"Data":{}}"#, br#"{"Data":{"req":1}}"#] {
            assert_eq!(
                open(bad).and_then(|e| e.body()).map(|_| ()).map_err(|e| e.status()),
                Err(400),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_answer_carries_the_status_inside() {
        let out: Value = serde_json::from_slice(&wrap(403, br#"{"error":{}}"#, &["line".to_owned()])).expect("json");
        assert_eq!(out["Outputs"]["res"]["statusCode"], 403);
        assert_eq!(out["Outputs"]["res"]["body"], r#"{"error":{}}"#);
        assert_eq!(out["Outputs"]["res"]["headers"]["Content-Type"], "application/json");
        assert_eq!(out["ReturnValue"], Value::Null);
        assert_eq!(out["Logs"][0], "line");
    }
}
