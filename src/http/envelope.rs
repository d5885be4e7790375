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

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::answer::ApiError;

/// The largest DPS body inside an envelope: the contract's limit, as on `/api/allocate`.
pub const DPS_BODY_LIMIT: usize = super::BODY_LIMIT;

/// The largest envelope: a DPS body at the limit, escaped as a JSON string (a byte can take up to six),
/// plus `Metadata` repeating its top-level objects, plus headers.
pub const ENVELOPE_LIMIT: usize = 16 * DPS_BODY_LIMIT;
use crate::server::keys::{ApiKeys, KEY_HEADER, query_code};

/// The parts of the incoming envelope the service reads.
#[derive(Debug, Default)]
pub struct Incoming {
    /// The DPS request body.
    pub body: Vec<u8>,
    /// A key found in the envelope's query (`code`) or headers (`x-functions-key`).
    pub keys: Vec<String>,
}

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

/// Reads an envelope; the message says what is wrong with a malformed one.
pub fn parse(bytes: &[u8]) -> Result<Incoming, ApiError> {
    let env: EnvelopeRequest = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("not a Functions invocation envelope: {e}")))?;
    let req = env.data.req;
    let body = match req.body {
        Some(Value::String(s)) => s.into_bytes(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => serde_json::to_vec(&other).unwrap_or_default(),
    };
    if body.len() > DPS_BODY_LIMIT {
        return Err(ApiError::payload_too_large(DPS_BODY_LIMIT));
    }
    let mut keys = Vec::new();
    let code_of = |q: &Map<String, Value>| q.get("code").and_then(Value::as_str).map(str::to_owned);
    match req.query {
        Some(Value::Object(q)) => keys.extend(code_of(&q)),
        // Hosts before September 2020 send the query object as JSON text; a URL query string is read too.
        Some(Value::String(q)) => match serde_json::from_str::<Value>(&q) {
            Ok(Value::Object(parsed)) => keys.extend(code_of(&parsed)),
            _ => keys.extend(query_code(q.trim_start_matches('?'))),
        },
        _ => {}
    }
    for (name, v) in req.headers.iter().flatten() {
        if name.eq_ignore_ascii_case(KEY_HEADER) {
            match v {
                Value::Array(items) => keys.extend(items.iter().filter_map(Value::as_str).map(str::to_owned)),
                Value::String(s) => keys.push(s.clone()),
                _ => {}
            }
        }
    }
    Ok(Incoming { body, keys })
}

impl Incoming {
    /// Whether a key in the envelope is accepted.
    pub fn has_key(&self, keys: &ApiKeys) -> bool {
        self.keys.iter().fold(false, |ok, k| ok | keys.accepts(k))
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
        let i = parse(env.to_string().as_bytes()).expect("parses");
        assert_eq!(i.body, br#"{"a":1}"#);
        assert_eq!(i.keys, vec!["k1".to_owned(), "k2".to_owned()]);
        let env = json!({"Data": {"req": {"Query": "?code=a%2Bb", "Body": {"a": 1}}}});
        let i = parse(env.to_string().as_bytes()).expect("parses");
        assert_eq!((i.body, i.keys), (br#"{"a":1}"#.to_vec(), vec!["a+b".to_owned()]));
        // Hosts before PR #6621 (and the docs' example): the query object as JSON text.
        let env = json!({"Data": {"req": {"Query": "{\"code\":\"k+3\"}", "Body": "{}"}}});
        assert_eq!(
            parse(env.to_string().as_bytes()).expect("parses").keys,
            vec!["k+3".to_owned()]
        );
        let env = json!({"Data": {"req": {"Query": "{}", "Body": "{}"}}});
        assert!(parse(env.to_string().as_bytes()).expect("parses").keys.is_empty());
        let keyless = parse(br#"{"Data":{"req":{"Body":"{}"}}}"#).expect("parses");
        assert!(keyless.keys.is_empty() && !keyless.has_key(&ApiKeys::new(["k"])));
    }

    #[test]
    fn malformed_envelopes_are_bad_requests() {
        for bad in [&b"[]"[..], b"{", br#"{"Data":{}}"#, br#"{"Data":{"req":1}}"#] {
            assert_eq!(
                parse(bad).map(|_| ()).map_err(|e| e.status()),
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
