//! Graceful shutdown under load: SIGTERM while clients send. Requests already on the wire, including two
//! whose bodies are only half sent when the signal arrives, complete with 200; the server logs exactly
//! the decisions the clients received; it exits 0 well within the shutdown timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::corpus::GOOD;
use crate::live::Server;

/// What one client saw.
#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    other_status: Vec<u16>,
    /// Connected, but the server closed before answering (a request it never read).
    closed_unanswered: u64,
    refused: u64,
    partial: u64,
}

/// One request on a fresh connection; `pause` splits the body around a wait.
fn one(addr: SocketAddr, body: &[u8], pause: Option<Duration>, tally: &mut Tally) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        tally.refused += 1;
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let head = format!(
        "POST /api/allocate HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let half = body.len() / 2;
    let sent = match pause {
        Some(wait) => {
            let first = s.write_all(head.as_bytes()).and_then(|_| s.write_all(&body[..half]));
            std::thread::sleep(wait);
            first.and_then(|_| s.write_all(&body[half..]))
        }
        None => s.write_all(&[head.as_bytes(), body].concat()),
    };
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw); // a reset after a partial answer still leaves what arrived in `raw`
    if sent.is_err() || raw.is_empty() {
        tally.closed_unanswered += 1;
        return;
    }
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
        head.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse::<usize>().ok())
            == Some(body.len())
    });
    if !complete {
        tally.partial += 1;
    } else if status == 200 {
        tally.ok += 1;
    } else {
        tally.other_status.push(status);
    }
}

#[test]
fn sigterm_under_load_finishes_every_accepted_request_and_exits_0() {
    let server = Server::start(&["--log-format", "json", "--shutdown-timeout", "10"], &[]);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let body = GOOD.as_bytes().to_vec();

    let busy: Vec<_> = (0..6)
        .map(|_| {
            let (stop, body) = (stop.clone(), body.clone());
            std::thread::spawn(move || {
                let mut t = Tally::default();
                while !stop.load(Ordering::Relaxed) && t.refused == 0 {
                    one(addr, &body, None, &mut t);
                }
                t
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    // Two requests whose bodies are half on the wire when SIGTERM arrives.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut t = Tally::default();
                one(addr, &body, Some(Duration::from_millis(800)), &mut t);
                t
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let slow: Vec<Tally> = slow.into_iter().map(|h| h.join().expect("slow client")).collect();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let busy: Vec<Tally> = busy.into_iter().map(|h| h.join().expect("client")).collect();
    let (code, log) = server.wait_exit();
    let took = signalled.elapsed();

    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    for t in &slow {
        assert_eq!(t.ok, 1, "a half-sent request at SIGTERM completes: {t:?}");
    }
    let all: Vec<&Tally> = busy.iter().chain(&slow).collect();
    let ok: u64 = all.iter().map(|t| t.ok).sum();
    assert!(
        all.iter().all(|t| t.other_status.is_empty() && t.partial == 0),
        "{all:?}"
    );
    let decisions = log.lines().filter(|l| l.contains(r#""message":"decision""#)).count() as u64;
    assert_eq!(
        decisions, ok,
        "every request the server took was answered to its client: {all:?}"
    );
    eprintln!("shutdown under load: {ok} answered, {decisions} logged, {took:?} from SIGTERM to exit; {all:?}");
    assert!(ok > 50, "load ran: {ok} answers");
    assert!(log.contains("stopped: in-flight requests finished"), "{log}");
}
