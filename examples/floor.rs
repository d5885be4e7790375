//! The floor of the HTTP benchmark (scripts/bench.sh): a bare actix-web server that deserialises only
//! `deviceRuntimeContext.registrationId` and `linkedHubs` with serde (into owned strings; every other
//! member is skipped) and answers `{"iotHubHostName": linkedHubs[0]}`, with no policy, no metrics, no
//! logging. dps-allocator's throughput and latency are reported as ratios to this (issue 15 defines it).
//!
//! Usage: `cargo run --release --example floor -- [ADDR] [WORKERS]` (default 127.0.0.1:0, 1 worker).

use actix_web::{App, HttpResponse, HttpServer, web};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    #[allow(dead_code)] // read (it is part of the floor's work), never used
    device_runtime_context: Context,
    linked_hubs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Context {
    #[allow(dead_code)]
    registration_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    iot_hub_host_name: &'a str,
}

async fn allocate(body: web::Bytes) -> HttpResponse {
    let req = match serde_json::from_slice::<Request>(&body) {
        Ok(req) => req,
        Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
    };
    let Some(hub) = req.linked_hubs.first() else {
        return HttpResponse::BadRequest().body("linkedHubs is empty");
    };
    match serde_json::to_vec(&Response { iot_hub_host_name: hub }) {
        Ok(json) => HttpResponse::Ok().content_type("application/json").body(json),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(1);
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| {
            App::new()
                .app_data(web::PayloadConfig::new(128 * 1024))
                .route("/api/allocate", web::post().to(allocate))
                .route("/", web::get().to(HttpResponse::Ok))
        })
        .workers(workers)
        .bind(&addr)?;
        for a in server.addrs() {
            println!("floor listening on http://{a}");
        }
        server.run().await
    })
}
