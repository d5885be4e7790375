//! `serve`: open the GeoIP database, load the policy, bind, start the reloader, run the server until
//! SIGTERM or SIGINT, then finish in-flight requests and exit 0.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpServer, web};
use clap::Args;

use super::{LogFormat, Status};
use crate::http;
use crate::server::Service;
use crate::server::cache;
use crate::server::keys::ApiKeys;
use crate::server::reload::{self, PolicySource, ReloadResult, Trigger};

/// The port used when neither `--listen` nor an Azure Functions port is given.
pub const DEFAULT_PORT: u16 = 8080;

/// Arguments of `serve`. Every flag has a `DPS_ALLOCATOR_` environment twin.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Policy directory [default: ./policies when present, else the embedded default policy].
    #[arg(long, env = "DPS_ALLOCATOR_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080; under Azure Functions 127.0.0.1 and
    /// FUNCTIONS_CUSTOMHANDLER_PORT].
    #[arg(long, env = "DPS_ALLOCATOR_LISTEN", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// A second listener for `/metrics`, `/status`, `/openapi.json` and the probes; the public listener
    /// then serves only the DPS routes and the probes.
    #[arg(long, env = "DPS_ALLOCATOR_ADMIN_LISTEN", value_parser = parse_listen)]
    pub admin_listen: Option<SocketAddr>,
    /// GeoIP database.
    #[command(flatten)]
    pub geoip: super::GeoIpArg,
    /// An API key that POST requests must carry as `?code=` or `x-functions-key` (repeatable; the
    /// environment variable takes a comma-separated list).
    #[arg(
        long = "api-key",
        env = "DPS_ALLOCATOR_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Serve a non-loopback address without API keys; with --admin-listen, serve the admin listener without
    /// asking for keys (a cluster-internal port that something else protects).
    #[arg(long, env = "DPS_ALLOCATOR_ALLOW_UNAUTHENTICATED", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_unauthenticated: bool,
    /// Log format.
    /// Log format [auto: JSON lines when standard output is not a terminal, readable lines on one].
    #[arg(long, env = "DPS_ALLOCATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Decision cache entries (0 turns the cache off).
    #[arg(long, env = "DPS_ALLOCATOR_CACHE_CAPACITY", default_value_t = cache::DEFAULT_CAPACITY)]
    pub cache_capacity: u64,
    /// Bytes the decision cache may hold (its answers, weighed with their bookkeeping): a hard bound on
    /// its memory whatever the answers weigh.
    #[arg(long, env = "DPS_ALLOCATOR_CACHE_BYTES", default_value_t = cache::DEFAULT_MAX_BYTES)]
    pub cache_bytes: u64,
    /// Seconds a cached decision lives.
    #[arg(long, env = "DPS_ALLOCATOR_CACHE_TTL", default_value_t = cache::DEFAULT_TTL_SECS)]
    pub cache_ttl: u64,
    /// Do not watch the policy directory (SIGHUP still reloads it).
    #[arg(long, env = "DPS_ALLOCATOR_NO_WATCH", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_watch: bool,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, env = "DPS_ALLOCATOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "DPS_ALLOCATOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Worker threads [default: one per CPU].
    #[arg(long, env = "DPS_ALLOCATOR_WORKERS")]
    pub workers: Option<usize>,
    /// Seconds to let in-flight requests finish after SIGTERM or SIGINT.
    #[arg(long, env = "DPS_ALLOCATOR_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
}

/// `--listen`: `IP:PORT` (`127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`), or `HOST:PORT` with a host name
/// that resolves to loopback addresses only (`localhost:8080`). A name that resolves elsewhere is refused:
/// which interface it would bind is up to the resolver, and the public-bind rule needs to know.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let forms = "use IP:PORT (127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080) or a host name that resolves to loopback (localhost:8080)";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("`{s}` has no port: {forms}"));
    };
    let port: u16 = port.parse().map_err(|_| format!("`{port}` is not a port: {forms}"))?;
    let resolved: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}: {forms}"))?
        .collect();
    match resolved.iter().find(|a| a.is_ipv4()).or(resolved.first()) {
        Some(first) if resolved.iter().all(|a| a.ip().is_loopback()) => Ok(*first),
        Some(_) => Err(format!("`{host}` resolves to a non-loopback address: {forms}")),
        None => Err(format!("`{host}` resolves to no address: {forms}")),
    }
}

/// The listen address: `--listen`, else 127.0.0.1 on the Azure Functions custom handler port, else the
/// default.
pub fn listen_address(explicit: Option<SocketAddr>, env: &dyn Fn(&str) -> Option<String>) -> SocketAddr {
    if let Some(a) = explicit {
        return a;
    }
    let functions_port = ["FUNCTIONS_CUSTOMHANDLER_PORT", "FUNCTIONS_HTTPWORKER_PORT"]
        .iter()
        .find_map(|name| env(name).and_then(|v| v.trim().parse::<u16>().ok()));
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), functions_port.unwrap_or(DEFAULT_PORT))
}

/// Runs the server; returns when it has shut down.
pub fn run(args: ServeArgs) -> Status {
    let _logs = crate::telemetry::init(args.log_format);
    match start(args) {
        Ok(status) => status,
        Err(message) => {
            eprintln!("error: {message}");
            Status::Error
        }
    }
}

fn start(args: ServeArgs) -> Result<Status, String> {
    let geoip = match args.geoip.open() {
        Ok(db) => db,
        // `GeoIpArg::open` has printed its one line already.
        Err(status) => return Ok(status),
    };
    let addr = listen_address(args.listen, &|name| std::env::var(name).ok());
    if args.api_keys.iter().any(|k| k.trim().is_empty()) {
        return Err(
            "--api-key (DPS_ALLOCATOR_API_KEY): an empty or blank key is refused: give real keys, or no --api-key at all"
                .to_owned(),
        );
    }
    let keys = ApiKeys::new(args.api_keys.iter().map(String::as_str));
    if keys.is_empty() && !addr.ip().is_loopback() && !args.allow_unauthenticated {
        return Err(format!(
            "refusing to serve {addr} without API keys: give --api-key, or --allow-unauthenticated when something in front checks keys"
        ));
    }
    if let Some(admin) = args.admin_listen
        && keys.is_empty()
        && !admin.ip().is_loopback()
        && !args.allow_unauthenticated
    {
        return Err(format!(
            "refusing to serve the admin listener on {admin} without API keys: give --api-key, or --allow-unauthenticated when the port is cluster-internal"
        ));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    let source = PolicySource::resolve(args.policies.clone());
    source.check_exists()?;
    if let Some(db) = &geoip {
        tracing::info!(path = %db.path().display(), kind = db.database_type(), built = %db.build_date(), "GeoIP database opened");
    }
    let service = Service::new(
        source.clone(),
        geoip,
        cache::DecisionCache::new(
            args.cache_capacity,
            args.cache_bytes,
            Duration::from_secs(args.cache_ttl),
        ),
        keys,
    )
    .map_err(|e| format!("metrics: {e}"))?;
    let service = web::Data::new(service);
    if service.reload(Trigger::Startup).result == ReloadResult::Failed {
        tracing::warn!(source = %source.describe(), "no valid policy yet: answering 503 not_ready until one loads");
    }
    let for_reloader = service.clone();
    let reloader = reload::spawn(&source, !args.no_watch, move |trigger| {
        for_reloader.reload(trigger);
    })
    .map_err(|e| format!("cannot start the policy reloader: {e}"))?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let admin = match args.admin_listen {
        Some(a) => Some(TcpListener::bind(a).map_err(|e| format!("cannot listen on {a} (--admin-listen): {e}"))?),
        None => None,
    };
    let admin_keyed = !service.keys.is_empty() && !args.allow_unauthenticated;
    tracing::info!(
        api_keys = service.keys.len(),
        cache_capacity = args.cache_capacity,
        cache_bytes = args.cache_bytes,
        tls = tls.is_some(),
        watch = !args.no_watch,
        "starting"
    );
    let listeners = Listeners {
        public: listener,
        admin: admin.map(|l| (l, admin_keyed)),
    };
    run_server(listeners, service, tls, args.workers, args.shutdown_timeout, reloader)
        .map(|()| Status::Ok)
        .map_err(|e| format!("server: {e}"))
}

/// The bound sockets: the public one, and the admin one with whether its routes need a key.
struct Listeners {
    public: TcpListener,
    admin: Option<(TcpListener, bool)>,
}

fn tls_config(cert: &PathBuf, key: &PathBuf) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS certificate `{}`: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate `{}`: no certificate in the file",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key `{}`: {e}", key.display()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| format!("TLS: {e}"))
}

fn run_server(
    listeners: Listeners,
    service: web::Data<Service>,
    tls: Option<rustls::ServerConfig>,
    workers: Option<usize>,
    shutdown_timeout: u64,
    reloader: reload::Reloader,
) -> std::io::Result<()> {
    let Listeners {
        public: listener,
        admin,
    } = listeners;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_routes = if admin.is_some() {
        http::Listener::Public
    } else {
        http::Listener::Single
    };
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let workers = workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1);
        let (descriptors, cap) = connection_cap(workers);
        // With an admin listener, a quarter of the connections are its own, so that no flood of the
        // public port can take the probes' and the scraper's share, nor one of the admin port theirs.
        let (connections, admin_connections) = match admin {
            Some(_) => {
                let a = (cap / 4).max(ADMIN_MIN_CONNECTIONS);
                (cap.saturating_sub(a).max(workers), a)
            }
            None => (cap, 0),
        };
        let for_admin = service.clone();
        let server = HttpServer::new(move || http::app_for(service.clone(), public_routes))
            .shutdown_timeout(shutdown_timeout)
            .workers(workers)
            .max_connections(connections / workers);
        tracing::info!(
            workers,
            descriptors,
            max_connections = connections,
            admin_max_connections = admin_connections,
            "connection limits"
        );
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        };
        actix_web::rt::spawn(reload_on_sighup(reloader));
        // The admin listener: plain HTTP, one worker, its own share of the connections, and a connection
        // that has not sent its request head within a second is closed (a probe or a scrape sends it at
        // once), so idle connections cannot hold the probes out.
        let admin = match admin {
            Some((l, keyed)) => {
                let at = l.local_addr()?;
                let admin_server =
                    HttpServer::new(move || http::app_for(for_admin.clone(), http::Listener::Admin { keyed }))
                        .shutdown_timeout(shutdown_timeout)
                        .workers(1)
                        .max_connections(admin_connections)
                        .client_request_timeout(ADMIN_REQUEST_HEAD_TIMEOUT)
                        .backlog(ADMIN_BACKLOG)
                        .listen(l)?;
                Some((admin_server.run(), at, keyed))
            }
            None => None,
        };
        // Scripts and tests that start the server on port 0 read the address from these events.
        tracing::info!(%addr, scheme, "listening");
        match admin {
            Some((admin_server, at, keyed)) => {
                tracing::info!(addr = %at, scheme = "http", keyed, "admin listening");
                tokio::try_join!(server.run(), admin_server)?;
            }
            None => server.run().await?,
        }
        tracing::info!("stopped: in-flight requests finished");
        Ok(())
    })
}

/// The admin listener's connections at least, whatever the descriptor limit (a quarter of the client
/// connections when that is more).
const ADMIN_MIN_CONNECTIONS: usize = 1_024;
/// How long an admin connection may take to send its request head.
const ADMIN_REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections the kernel queues for the admin listener while its worker is busy.
const ADMIN_BACKLOG: u32 = 4_096;

/// File descriptors kept for everything but client connections: the listener, log output, the policy
/// directory and its watcher, the GeoIP database, the runtime's own.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Raises the soft limit on open files to the hard limit where allowed, and returns it with the cap on
/// concurrent connections: three quarters of what is left after the reserve, so that a flood of idle or
/// stalled connections makes new ones wait in the accept backlog instead of failing every `accept` and
/// every file the process opens.
fn connection_cap(workers: usize) -> (u64, usize) {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024);
    let cap = limit.saturating_sub(RESERVED_DESCRIPTORS) / 4 * 3;
    let floor = workers.saturating_mul(16).min(100_000);
    let cap = usize::try_from(cap).unwrap_or(usize::MAX).clamp(floor, 100_000);
    (limit, cap)
}

/// SIGHUP reloads the policy. The task owns the reloader, which keeps the directory watcher alive.
async fn reload_on_sighup(reloader: reload::Reloader) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload by editing the policy directory");
        return std::future::pending().await;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the policy");
        reloader.trigger(Trigger::Signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_address_comes_from_the_flag_then_azure_functions_then_the_default() {
        let none = |_: &str| None;
        assert_eq!(listen_address(None, &none).to_string(), "127.0.0.1:8080");
        let functions = |n: &str| (n == "FUNCTIONS_CUSTOMHANDLER_PORT").then(|| "7071".to_owned());
        assert_eq!(listen_address(None, &functions).to_string(), "127.0.0.1:7071");
        let legacy = |n: &str| (n == "FUNCTIONS_HTTPWORKER_PORT").then(|| "7072".to_owned());
        assert_eq!(listen_address(None, &legacy).to_string(), "127.0.0.1:7072");
        let explicit: SocketAddr = "0.0.0.0:9000".parse().expect("addr");
        assert_eq!(listen_address(Some(explicit), &functions), explicit);
    }

    #[test]
    fn listen_takes_addresses_and_host_names_that_resolve_to_loopback() {
        assert_eq!(parse_listen("127.0.0.1:0").expect("ip").to_string(), "127.0.0.1:0");
        assert_eq!(parse_listen("[::1]:8080").expect("ipv6").to_string(), "[::1]:8080");
        let local = parse_listen("localhost:8081").expect("localhost resolves to loopback");
        assert!(local.ip().is_loopback() && local.port() == 8081, "{local}");
        for bad in ["localhost", "localhost:http", "example.invalid:80"] {
            let e = parse_listen(bad).expect_err(bad);
            assert!(e.contains("IP:PORT"), "{bad}: {e}");
        }
    }
}
