//! A local STAND-IN of the IoT Hub and DPS service REST APIs, for the rollout and verify tests; not the
//! real services. It checks what they check: the SAS token (resource = the host, lower case; HMAC-SHA256
//! over the URL-encoded resource, a newline and the expiry, with the policy's base64 key; not expired)
//! and the api-version, answering 401 otherwise; and it answers what they answer, by the device id's prefix:
//! `ok-` 200, `offline-` 404 with errorCode 404103 inside `Message` (as IoT Hub does), `ghost-` 404
//! (404001), `busy-` 429 with `Retry-After: 2` on the first call, `flaky-` 500 on the first call,
//! `broken-` 503 always, `bad-` 400. Every call is recorded with its time, so the tests assert rate,
//! not-before, retry and resume rules from the outside.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use dps_allocator::rollout::sas;

/// One call the stand-in received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Seconds since the stand-in started.
    pub at: f64,
    /// The host the token was for.
    pub host: String,
    /// `POST`, `PATCH`, `GET`.
    pub method: String,
    /// The device or registration id.
    pub id: String,
    /// What it answered.
    pub status: u16,
    /// The body it received.
    pub body: String,
}

#[derive(Default)]
struct Shared {
    seen: Vec<Seen>,
    tries: HashMap<String, u32>,
}

/// A running stand-in.
pub struct StandIn {
    pub addr: SocketAddr,
    started: Instant,
    shared: Arc<Mutex<Shared>>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let h = self.handle.clone();
        std::thread::spawn(move || actix_web::rt::System::new().block_on(h.stop(false)));
    }
}

/// Hosts and their keys (base64); DPS registrations and the hub each reports as assigned.
#[derive(Clone, Default)]
pub struct Config {
    pub keys: HashMap<String, String>,
    pub assigned: HashMap<String, String>,
}

struct Ctx {
    config: Config,
    started: Instant,
    shared: Arc<Mutex<Shared>>,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn handle(ctx: web::Data<Ctx>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let sr = token
        .split(['&', ' '])
        .find_map(|kv| kv.strip_prefix("sr="))
        .unwrap_or("")
        .to_owned();
    let host = percent_encoding::percent_decode_str(&sr)
        .decode_utf8_lossy()
        .into_owned();
    let path = req.path().to_owned();
    let (id, kind) = if let Some(rest) = path.strip_prefix("/twins/") {
        let id = rest.trim_end_matches("/methods");
        (
            id.to_owned(),
            if rest.ends_with("/methods") { "method" } else { "twin" },
        )
    } else if let Some(id) = path.strip_prefix("/registrations/") {
        (id.to_owned(), "registration")
    } else {
        (String::new(), "")
    };
    let id = percent_encoding::percent_decode_str(&id)
        .decode_utf8_lossy()
        .into_owned();
    let want_version = if kind == "registration" {
        "2021-10-01"
    } else {
        "2021-04-12"
    };
    let authorized = ctx
        .config
        .keys
        .get(&host)
        .is_some_and(|key| sas::verify(token, &host, key, now_unix()).is_ok());
    let version_ok = req.query_string() == format!("api-version={want_version}");
    let tries = {
        let mut s = ctx.shared.lock().expect("lock");
        let t = s.tries.entry(format!("{host}/{id}")).or_default();
        *t += 1;
        *t
    };
    let mut res = if !authorized {
        HttpResponse::Unauthorized().body(r#"{"Message":"ErrorCode:IotHubUnauthorizedAccess;Unauthorized"}"#)
    } else if !version_ok || kind.is_empty() {
        HttpResponse::BadRequest().body(r#"{"Message":"ErrorCode:InvalidProtocolVersion"}"#)
    } else if kind == "registration" {
        match ctx.config.assigned.get(&id) {
            Some(hub) => HttpResponse::Ok().json(serde_json::json!({
                "registrationId": id, "assignedHub": hub, "deviceId": id, "status": "assigned", "substatus": "reprovisionedToNewHub"
            })),
            None => HttpResponse::NotFound().body(r#"{"errorCode":404201,"message":"Registration not found."}"#),
        }
    } else if id.starts_with("offline-") {
        HttpResponse::NotFound().body(
            r#"{"Message":"{\"errorCode\":404103,\"trackingId\":\"x\",\"message\":\"The operation failed because the requested device isn't online or hasn't registered the direct method callback. To learn more, see https://aka.ms/iothub404103\"}","ExceptionMessage":""}"#,
        )
    } else if id.starts_with("ghost-") {
        HttpResponse::NotFound().body(r#"{"Message":"{\"errorCode\":404001,\"message\":\"Device not found\"}"}"#)
    } else if id.starts_with("busy-") && tries == 1 {
        HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", "2"))
            .body(r#"{"Message":"{\"errorCode\":429001}"}"#)
    } else if id.starts_with("flaky-") && tries == 1 {
        HttpResponse::InternalServerError().finish()
    } else if id.starts_with("broken-") {
        HttpResponse::ServiceUnavailable().finish()
    } else if id.starts_with("bad-") {
        HttpResponse::BadRequest().body(r#"{"Message":"{\"errorCode\":400004}"}"#)
    } else if kind == "method" {
        HttpResponse::Ok().json(serde_json::json!({"status": 200, "payload": {"accepted": true}}))
    } else {
        HttpResponse::Ok().json(serde_json::json!({"deviceId": id, "etag": "AAAA", "properties": {}}))
    };
    let status = res.status().as_u16();
    res.headers_mut().insert(
        actix_web::http::header::CONTENT_TYPE,
        actix_web::http::header::HeaderValue::from_static("application/json"),
    );
    ctx.shared.lock().expect("lock").seen.push(Seen {
        at: ctx.started.elapsed().as_secs_f64(),
        host,
        method: req.method().to_string(),
        id,
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    res
}

impl StandIn {
    /// Starts the stand-in on 127.0.0.1 and a free port.
    pub fn start(config: Config) -> StandIn {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        let for_server = shared.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::new(Ctx {
                    config,
                    started,
                    shared: for_server,
                });
                let server =
                    HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(handle)))
                        .workers(1)
                        .bind("127.0.0.1:0")
                        .expect("binds");
                let addr = server.addrs()[0];
                let running = server.run();
                tx.send((addr, running.handle())).expect("sends");
                let _ = running.await;
            });
        });
        let (addr, handle) = rx.recv().expect("stand-in starts");
        StandIn {
            addr,
            started,
            shared,
            handle,
        }
    }

    /// Every call so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().expect("lock").seen.clone()
    }

    /// Seconds since the stand-in started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
