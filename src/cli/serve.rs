//! `serve`: load the policy, bind, run the actix-web server until a signal stops it.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use actix_web::{App, HttpServer, web};
use clap::Args;

use super::{LogFormat, PolicySource, Status};
use crate::http::{self, AppState};

/// Arguments of `serve`. Every flag has a `DPS_ALLOCATOR_` environment twin.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Policy directory [default: ./policies when present, else the embedded default policy].
    #[arg(long, env = "DPS_ALLOCATOR_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "DPS_ALLOCATOR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// GeoIP database.
    #[command(flatten)]
    pub geoip: super::GeoIpArg,
    /// Log format.
    #[arg(long, env = "DPS_ALLOCATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Worker threads [default: one per CPU].
    #[arg(long, env = "DPS_ALLOCATOR_WORKERS")]
    pub workers: Option<usize>,
}

/// Runs the server; returns when it has shut down.
pub fn run(args: ServeArgs) -> Status {
    crate::telemetry::init(args.log_format);
    let geoip = match args.geoip.open() {
        Ok(db) => db,
        Err(status) => return status,
    };
    if let Some(db) = &geoip {
        tracing::info!(path = %db.path().display(), kind = db.database_type(), built = %db.build_date(), "GeoIP database opened");
    }
    let source = PolicySource::resolve(args.policies.clone());
    let rev = match source.load() {
        Ok(rev) => rev,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(target: "policy", "{e}");
            }
            eprintln!(
                "error: the policy in {} does not load ({} problem(s))",
                source.describe(),
                errors.0.len()
            );
            return Status::Error;
        }
    };
    tracing::info!(revision = %rev.id, source = %source.describe(), hubs = rev.hubs.len(), rules = rev.rules.len(), "policy loaded");
    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return Status::Error;
        }
    };
    let state = AppState::with_revision(rev).with_geoip(geoip);
    match run_server(listener, state, args.workers) {
        Ok(()) => Status::Ok,
        Err(e) => {
            eprintln!("error: server: {e}");
            Status::Error
        }
    }
}

fn run_server(listener: TcpListener, state: AppState, workers: Option<usize>) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let data = web::Data::new(state);
        let mut server =
            HttpServer::new(move || App::new().app_data(data.clone()).configure(http::configure)).listen(listener)?;
        if let Some(n) = workers {
            server = server.workers(n.max(1));
        }
        tracing::info!(%addr, "listening");
        // A stable line for scripts and tests that start the server on port 0.
        println!("dps-allocator listening on http://{addr}");
        server.run().await
    })
}
