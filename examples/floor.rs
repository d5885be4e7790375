//! The floor of the HTTP benchmark (scripts/bench.sh): a minimal actix-web server that reads the same
//! AllocationRequest type as dps-allocator and answers `linkedHubs[0]`, with no policy, no metrics, no
//! logging. dps-allocator's throughput and latency are reported as ratios to this.
//!
//! Usage: `cargo run --release --example floor -- [ADDR] [WORKERS]` (default 127.0.0.1:0, 1 worker).

use actix_web::{App, HttpResponse, HttpServer, web};
use dps_allocator::dps::{AllocationRequest, AllocationResponse};

async fn allocate(body: web::Bytes) -> HttpResponse {
    match AllocationRequest::parse(&body) {
        Ok(req) => {
            let response = AllocationResponse {
                iot_hub_host_name: req.linked_hubs[0].as_str(),
                initial_twin: None,
                payload: None,
            };
            match serde_json::to_vec(&response) {
                Ok(json) => HttpResponse::Ok().content_type("application/json").body(json),
                Err(_) => HttpResponse::InternalServerError().finish(),
            }
        }
        Err(e) => HttpResponse::BadRequest().content_type("application/json").body(e.0),
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
