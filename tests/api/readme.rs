//! The README's HTTP examples are executable documentation too: every `curl … /api/allocate -d '…'`
//! example's request goes through the service (the shipped policy, the test GeoIP database) and must get
//! exactly the answer the README shows, byte for byte; the decision log example has the keys, in the
//! order, that the service writes. The command-line examples are run by `tests/readme.rs` (trycmd).

use actix_web::test::TestRequest;
use serde_json::Value;

use crate::helpers::{app, repo, send, shipped};
use crate::live::{Server, post};

/// A fenced code block: its info string and its lines.
struct Block {
    lang: String,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for line in markdown.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match current.take() {
                None => {
                    current = Some(Block {
                        lang: info.trim().to_owned(),
                        text: String::new(),
                    })
                }
                Some(b) => out.push(b),
            }
        } else if let Some(b) = current.as_mut() {
            b.text.push_str(line);
            b.text.push('\n');
        }
    }
    out
}

/// A `curl` example: the body it sends, and what the README says comes back.
struct Example {
    body: String,
    status: u16,
    answer: String,
}

fn curl_examples(markdown: &str) -> Vec<Example> {
    let all = blocks(markdown);
    let mut out = Vec::new();
    for (i, b) in all.iter().enumerate() {
        let Some(at) = b.text.find("curl -s") else { continue };
        let rest = &b.text[at..];
        if b.lang != "sh" || !rest.contains("http://127.0.0.1:8080/api/allocate ") {
            continue;
        }
        let Some(start) = rest.find("-d '") else { continue };
        let body_and_after = &rest[start + 4..];
        let Some(end) = body_and_after.find('\'') else { continue };
        let body = body_and_after[..end].to_owned();
        if rest.starts_with("curl -si") {
            // The answer is shown as comments: `# HTTP/1.1 400 Bad Request` then `# {...}`.
            let comments: Vec<&str> = body_and_after[end..]
                .lines()
                .filter_map(|l| l.strip_prefix("# "))
                .collect();
            let status = comments
                .first()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .expect("a status line");
            out.push(Example {
                body,
                status,
                answer: comments.get(1).expect("a body line").to_string(),
            });
        } else {
            let shown = all
                .get(i + 1)
                .filter(|n| n.lang == "json")
                .expect("a json block after the curl");
            out.push(Example {
                body,
                status: 200,
                answer: shown.text.trim().to_owned(),
            });
        }
    }
    out
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

#[actix_web::test]
async fn every_curl_example_gets_exactly_the_answer_the_readme_shows() {
    let examples = curl_examples(&readme());
    assert!(examples.len() >= 3, "only {} curl examples found", examples.len());
    let app = app(shipped()).await;
    for ex in &examples {
        let reply = send(
            &app,
            TestRequest::post().uri("/api/allocate").set_payload(ex.body.clone()),
        )
        .await;
        let got = String::from_utf8_lossy(&reply.body).into_owned();
        assert_eq!(
            (reply.status, got.as_str()),
            (ex.status, ex.answer.as_str()),
            "the README shows another answer for:\n{}",
            ex.body
        );
    }
}

#[test]
fn the_decision_log_example_has_the_keys_the_service_writes_in_their_order() {
    let text = readme();
    let example = blocks(&text)
        .into_iter()
        .filter(|b| b.lang == "json")
        .find_map(|b| {
            let v: Value = serde_json::from_str(b.text.trim()).ok()?;
            (v["message"] == "decision").then_some(b.text.trim().to_owned())
        })
        .expect("a decision log example");
    let server = Server::start(&["--policies", "policies"], &[]);
    let toaster = std::fs::read_to_string(repo().join("policies/tests/tutorial-toaster.json")).expect("fixture");
    let request: Value = serde_json::from_str(&toaster).expect("json");
    assert_eq!(
        post(server.addr, "/api/allocate", &request["request"].to_string(), "").status,
        200
    );
    let (_, log) = server.terminate();
    let line = log
        .lines()
        .find(|l| l.contains("\"message\":\"decision\""))
        .expect("a decision line");
    let keys = |s: &str| -> Vec<String> {
        let v: serde_json::Map<String, Value> = serde_json::from_str(s).expect("a JSON object");
        v.keys().cloned().collect()
    };
    assert_eq!(
        keys(&example),
        keys(line),
        "README example:\n{example}\nthe service:\n{line}"
    );
    let (shown, actual): (Value, Value) = (
        serde_json::from_str(&example).expect("json"),
        serde_json::from_str(line).expect("json"),
    );
    for field in [
        "registration_id",
        "enrollment",
        "status",
        "outcome",
        "rule",
        "strategy",
        "hub",
        "reasons",
    ] {
        assert_eq!(shown[field], actual[field], "{field}");
    }
}
