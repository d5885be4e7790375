//! `healthcheck`: asks the local server's `/healthz` and exits 0 when it answers 200. For container
//! health checks in images without a shell or curl (distroless). It finds the port the way `serve` does
//! (`DPS_ALLOCATOR_LISTEN`, else the Azure Functions port, else 8080) and always connects to loopback.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use clap::Args;

use super::Status;
use super::serve::listen_address;

/// Arguments of `healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The address `serve` listens on (only its port is used; the check connects to 127.0.0.1).
    #[arg(long, env = "DPS_ALLOCATOR_LISTEN", value_parser = super::serve::parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

/// Runs the check.
pub fn run(args: HealthcheckArgs) -> Status {
    let port = listen_address(args.listen, &|name| std::env::var(name).ok()).port();
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let timeout = Duration::from_secs(args.timeout.max(1));
    // With TLS the service speaks no plain HTTP: an accepted connection is the check.
    let tls = std::env::var_os("DPS_ALLOCATOR_TLS_CERT").is_some();
    match probe(addr, timeout, tls) {
        Ok(()) => Status::Ok,
        Err(e) => {
            eprintln!("unhealthy: {addr}: {e}");
            Status::Failed
        }
    }
}

fn probe(addr: SocketAddr, timeout: Duration, tls: bool) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    if tls {
        return Ok(());
    }
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 16];
    let n = s.read(&mut head)?;
    if head[..n].starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "answered {:?}",
            String::from_utf8_lossy(&head[..n])
        )))
    }
}
