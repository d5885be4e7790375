//! Policy fixtures: `<policy dir>/tests/*.json`, one case per file or an array of cases, each a full
//! AllocationRequest and the expected answer. `dps-allocator test` runs them through the same answer path
//! as the server; the integration tests run them through the HTTP layer. Keys absent from `expect` are not
//! checked; `"initialTwin": null` or `"payload": null` expects the key to be absent.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::answer::Answer;

/// One fixture case.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The file it came from.
    pub file: PathBuf,
    /// Its index in the file (0 for single-case files).
    pub index: usize,
    /// What it shows.
    pub description: String,
    /// The AllocationRequest, as JSON.
    pub request: Value,
    /// What must come back.
    pub expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixture {
    description: String,
    request: Value,
    expect: Expect,
}

/// The expected answer. Absent keys are not checked.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// HTTP status.
    pub status: Option<u16>,
    /// The assigned hub.
    #[serde(rename = "iotHubHostName")]
    pub iot_hub_host_name: Option<String>,
    /// The deciding rule.
    pub rule: Option<String>,
    /// The strategy.
    pub strategy: Option<String>,
    /// Whether the device stayed on its current hub.
    pub sticky: Option<bool>,
    /// The initial twin (`null`: absent).
    #[serde(default, rename = "initialTwin", deserialize_with = "present")]
    pub initial_twin: Option<Option<Value>>,
    /// The payload (`null`: absent).
    #[serde(default, deserialize_with = "present")]
    pub payload: Option<Option<Value>>,
    /// The error's `code` and/or `message`.
    pub error: Option<ExpectError>,
}

/// Expected error fields.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectError {
    /// The code.
    pub code: Option<String>,
    /// The message.
    pub message: Option<String>,
}

/// Distinguishes an explicit `null` (expect absent) from a missing key (not checked).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Value>>, D::Error> {
    Option::<Value>::deserialize(d).map(Some)
}

/// What one request produced, however it was run.
#[derive(Debug, Clone)]
pub struct Observed {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
    /// Deciding rule.
    pub rule: Option<String>,
    /// Strategy of an assignment.
    pub strategy: Option<String>,
    /// Stickiness, when a decision was made.
    pub sticky: Option<bool>,
}

impl Observed {
    /// The observation of an answer: its status and body, and the decision's summary.
    pub fn from_answer(a: &Answer) -> Self {
        let s = a.summary.as_ref();
        Observed {
            status: a.status,
            body: parse_body(&a.body),
            rule: s.and_then(|s| s.rule.clone()),
            strategy: s.and_then(|s| s.strategy).map(str::to_owned),
            sticky: s.map(|s| s.sticky),
        }
    }

    /// An observation of a status and body seen on the wire, with the decision's fields as the caller read
    /// them (the HTTP tests read them from the `x-dps-allocator-decision` header).
    pub fn from_wire(
        status: u16,
        body: &[u8],
        rule: Option<String>,
        strategy: Option<String>,
        sticky: Option<bool>,
    ) -> Self {
        Observed {
            status,
            body: parse_body(body),
            rule,
            strategy,
            sticky,
        }
    }
}

fn parse_body(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}

/// Why fixtures could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FixtureError {
    /// The file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// The fixtures of a directory: those that read, and the files or cases that did not (each with its
/// file and, for JSON errors, line and column), so one typo fails one fixture and the rest still run.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The fixtures that read.
    pub fixtures: Vec<Fixture>,
    /// What could not be read: `file:line:col: message` (or `file: message`).
    pub broken: Vec<FixtureError>,
}

/// Reads every fixture under `dir` (`*.json`, lexical order). A missing directory has no fixtures; a
/// directory that cannot be listed is an error; a file or case that cannot be read is [`Loaded::broken`].
pub fn load(dir: &Path) -> Result<Loaded, FixtureError> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => {
            return Err(FixtureError {
                file: dir.display().to_string(),
                message: e.to_string(),
            });
        }
    };
    files.sort();
    let mut out = Loaded::default();
    for file in files {
        match load_file(&file) {
            Ok(cases) => out.fixtures.extend(cases),
            Err(e) => out.broken.push(e),
        }
    }
    Ok(out)
}

/// The cases of one fixture file (one object, or an array of them).
fn load_file(file: &Path) -> Result<Vec<Fixture>, FixtureError> {
    let located = |e: &serde_json::Error, what: &str| FixtureError {
        file: format!("{}:{}:{}", file.display(), e.line(), e.column()),
        message: format!("{what}{}", strip_position(&e.to_string())),
    };
    let text = std::fs::read_to_string(file).map_err(|e| FixtureError {
        file: file.display().to_string(),
        message: e.to_string(),
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|e| located(&e, "not valid JSON: "))?;
    let cases = match value {
        Value::Array(items) => items,
        one => vec![one],
    };
    let mut out = Vec::with_capacity(cases.len());
    for (index, case) in cases.into_iter().enumerate() {
        let raw: RawFixture = serde_json::from_value(case).map_err(|e| {
            // Read again from the text, for the line and column of the mistake.
            let again = match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(_)) => serde_json::from_str::<Vec<RawFixture>>(&text).err(),
                _ => serde_json::from_str::<RawFixture>(&text).err(),
            };
            match again {
                Some(at) if at.line() > 0 => located(&at, &format!("case {index}: ")),
                _ => FixtureError {
                    file: file.display().to_string(),
                    message: format!("case {index}: {e}"),
                },
            }
        })?;
        out.push(Fixture {
            file: file.to_owned(),
            index,
            description: raw.description,
            request: raw.request,
            expect: raw.expect,
        });
    }
    Ok(out)
}

/// serde_json's message without its " at line L column C" suffix (the location is given before it).
fn strip_position(message: &str) -> &str {
    message.rfind(" at line ").map_or(message, |i| &message[..i])
}

impl Fixture {
    /// The request body as bytes.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.request).unwrap_or_default()
    }

    /// A short name: file and case index.
    pub fn name(&self) -> String {
        let file = self
            .file
            .file_name()
            .map_or_else(|| self.file.display().to_string(), |f| f.to_string_lossy().into_owned());
        if self.index == 0 {
            file
        } else {
            format!("{file}[{}]", self.index)
        }
    }

    /// Every difference between the expectation and the observation; empty when it passes.
    pub fn check(&self, got: &Observed) -> Vec<String> {
        let e = &self.expect;
        let mut diffs = Vec::new();
        let mut cmp = |key: &str, want: Option<Value>, have: Option<Value>| {
            if let Some(want) = want {
                let have = have.unwrap_or(Value::Null);
                if want != have {
                    diffs.push(format!(
                        "{key}:\n    expected {}\n    got      {}",
                        compact(&want),
                        compact(&have)
                    ));
                }
            }
        };
        cmp("status", e.status.map(Value::from), Some(got.status.into()));
        cmp(
            "iotHubHostName",
            e.iot_hub_host_name.clone().map(Value::from),
            got.body.get("iotHubHostName").cloned(),
        );
        cmp(
            "rule",
            e.rule.clone().map(Value::from),
            got.rule.clone().map(Value::from),
        );
        cmp(
            "strategy",
            e.strategy.clone().map(Value::from),
            got.strategy.clone().map(Value::from),
        );
        cmp("sticky", e.sticky.map(Value::from), got.sticky.map(Value::from));
        cmp(
            "initialTwin",
            e.initial_twin.clone().map(|v| v.unwrap_or(Value::Null)),
            got.body.get("initialTwin").cloned(),
        );
        cmp(
            "payload",
            e.payload.clone().map(|v| v.unwrap_or(Value::Null)),
            got.body.get("payload").cloned(),
        );
        if let Some(err) = &e.error {
            let have = got.body.get("error");
            cmp(
                "error.code",
                err.code.clone().map(Value::from),
                have.and_then(|h| h.get("code")).cloned(),
            );
            cmp(
                "error.message",
                err.message.clone().map(Value::from),
                have.and_then(|h| h.get("message")).cloned(),
            );
        }
        diffs
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_are_not_checked_and_null_means_absent() {
        let e: Expect = serde_json::from_str(r#"{"status":200,"initialTwin":null}"#).expect("valid");
        assert_eq!(e.initial_twin, Some(None));
        assert_eq!(e.payload, None);
        let f = Fixture {
            file: "x.json".into(),
            index: 0,
            description: String::new(),
            request: Value::Null,
            expect: e,
        };
        let ok = Observed::from_wire(
            200,
            br#"{"iotHubHostName":"h"}"#,
            Some("r".to_owned()),
            Some("static".to_owned()),
            Some(false),
        );
        assert!(f.check(&ok).is_empty());
        let twin = Observed::from_wire(200, br#"{"iotHubHostName":"h","initialTwin":{}}"#, None, None, None);
        assert_eq!(f.check(&twin).len(), 1);
    }

    #[test]
    fn typos_in_expect_are_errors() {
        assert!(serde_json::from_str::<Expect>(r#"{"iotHubHostname":"h"}"#).is_err());
    }
}
