//! The real binary, on loopback: a server started with flags and environment, its log captured to a
//! file, and a small HTTP/1.1 client. Used by the smoke and operations tests that need a process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::repo;

/// This build's binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_dps-allocator");

/// The binary the live servers run: this build's, or `DPS_ALLOCATOR_TEST_BIN` (CI points it at the release build
/// for the long fleet runs).
pub fn bin() -> String {
    std::env::var("DPS_ALLOCATOR_TEST_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin listener, when `--admin-listen` was given.
    pub admin: Option<SocketAddr>,
    pub log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Server {
    /// Starts `dps-allocator serve ARGS` in the repository with extra environment, and waits for its
    /// listening line. `--listen 127.0.0.1:0` is added unless `args` or `env` choose the address.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_binary(&bin(), args, env)
    }

    /// [`start`](Self::start) with a given binary.
    pub fn start_binary(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = std::env::temp_dir().join(format!("dps-live-{}-{}.log", std::process::id(), unique()));
        let mut cmd = Command::new(binary);
        cmd.arg("serve");
        let chooses = args.contains(&"--listen") || env.iter().any(|(k, _)| k.starts_with("FUNCTIONS_"));
        if !chooses {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .current_dir(repo())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let mut child = cmd.spawn().expect("binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (addr, admin) = read_addresses(stdout, &log, args.contains(&"--admin-listen"));
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!(
                "no listening event; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Server {
            child,
            addr,
            admin,
            log,
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM, waits for the exit, and returns the exit code and the whole log.
    pub fn terminate(self) -> (Option<i32>, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_exit()
    }

    /// Waits up to ten seconds for the process to exit; the exit code and the whole log.
    pub fn wait_exit(mut self) -> (Option<i32>, String) {
        let mut code = None;
        for _ in 0..400 {
            if let Ok(Some(status)) = self.child.try_wait() {
                code = status.code();
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        (code, self.log())
    }
}

/// Runs the binary to its end in the repository: exit code, standard output, standard error.
pub fn run_bin(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo())
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The address in a `listening` (or `admin listening`) log event: `{"message":"listening","addr":"…"}`.
pub fn event_addr(line: &str, message: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["message"] == message).then(|| v["addr"].as_str()?.parse().ok())?
}

/// Reads a server's standard output (its log, JSON lines) up to its `listening` event (and `admin
/// listening` when `admin`), appending every line to `log`; a thread goes on copying the rest there.
pub fn read_addresses(
    stdout: std::process::ChildStdout,
    log: &Path,
    admin: bool,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut lines = BufReader::new(stdout);
    let (mut public, mut admin_addr) = (None, None);
    let mut line = String::new();
    while public.is_none() || (admin && admin_addr.is_none()) {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let _ = out.write_all(line.as_bytes());
        public = public.or_else(|| event_addr(line.trim(), "listening"));
        admin_addr = admin_addr.or_else(|| event_addr(line.trim(), "admin listening"));
    }
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut lines, &mut out);
    });
    (public, admin_addr)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A fresh temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dps-live-{}-{}-{name}", std::process::id(), unique()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A response: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 exchange over a fresh connection.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(request).expect("writes");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// GET a path.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// POST a body with extra header lines.
pub fn post(addr: SocketAddr, path: &str, body: &str, extra_headers: &str) -> Response {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, req.as_bytes())
}

/// The request of a fixture file.
pub fn fixture_request(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("fixture");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["request"].to_string()
}
