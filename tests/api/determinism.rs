//! Determinism across replicas: two server processes (the shipped policy, the test GeoIP database) answer
//! the same fleet (100,000 devices in CI) with byte-identical bodies and decision headers. The fleet mixes every
//! kind of device the shipped policy knows: tutorial devices, sensors, vehicles located by coordinates,
//! IP and region, gateways, lab TPM devices, re-registrations, rejections and unknown enrollments.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::repo;
use crate::live::Server;

/// The fleet size: 10,000 by default (a debug build answers about a thousand a second);
/// `DPS_DETERMINISM_DEVICES` changes it, and `.ci/run` runs 100,000 against the release binary.
fn devices() -> usize {
    std::env::var("DPS_DETERMINISM_DEVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

const WEU: &str = "fabrikam-weu-1.azure-devices.net";
const NEU: &str = "fabrikam-neu-1.azure-devices.net";
const EUS: &str = "fabrikam-eus-1.azure-devices.net";
const SEA: &str = "fabrikam-sea-1.azure-devices.net";
const GW: &str = "fabrikam-gateways-weu.azure-devices.net";
const CONTOSO: [&str; 2] = [
    "contoso-toasters.azure-devices.net",
    "contoso-heatpumps.azure-devices.net",
];

/// Device `i` of the fleet.
pub fn device(i: usize) -> Value {
    let id = format!("dev-{i:06}");
    let fab = [WEU, NEU, EUS, SEA];
    let region = ["westeurope", "eastus", "southeastasia", "japaneast"][i % 4];
    let ip = format!(
        "{}.{}",
        ["192.0.2", "198.51.100", "203.0.113", "100.64.3"][i % 4],
        i % 250 + 1
    );
    let unknown_payload = if i % 20 == 9 {
        json!({ "firmware": { "channel": "revoked" } })
    } else {
        json!({})
    };
    let group = |g: &str| json!({ "enrollmentGroupId": g, "attestation": { "type": "symmetricKey" } });
    let (ctx, hubs, enrollment) = match i % 10 {
        0 => (
            json!({ "registrationId": format!("{id}-contoso-tstrsd-007"), "symmetricKey": {} }),
            CONTOSO.to_vec(),
            ("enrollmentGroup", group("contoso-devices")),
        ),
        1 => (
            json!({ "registrationId": format!("{id}-contoso-hpsd-088"), "symmetricKey": {} }),
            CONTOSO.to_vec(),
            ("enrollmentGroup", group("contoso-devices")),
        ),
        2 => (
            json!({ "registrationId": id, "symmetricKey": {}, "payload": { "model": format!("m{}", i % 7) } }),
            fab.to_vec(),
            ("enrollmentGroup", group("fabrikam-sensors")),
        ),
        3 => (
            json!({ "registrationId": id, "symmetricKey": {}, "payload": { "location": { "lat": (i % 140) as f64 - 70.0, "lon": (i % 360) as f64 - 180.0 } } }),
            fab.to_vec(),
            ("enrollmentGroup", group("fabrikam-vehicles")),
        ),
        4 => (
            json!({ "registrationId": id, "symmetricKey": {}, "payload": { "ip": ip } }),
            fab.to_vec(),
            ("enrollmentGroup", group("fabrikam-vehicles")),
        ),
        5 => (
            json!({ "registrationId": id, "symmetricKey": {}, "payload": { "region": region } }),
            fab.to_vec(),
            ("enrollmentGroup", group("fabrikam-vehicles")),
        ),
        6 => (
            json!({ "registrationId": id, "x509": { "subjectName": id }, "payload": { "certificateName": format!("cn-{i}") } }),
            vec![GW, WEU],
            (
                "enrollmentGroup",
                json!({ "enrollmentGroupId": "fabrikam-gateways", "capabilities": { "iotEdge": true }, "attestation": { "type": "x509" } }),
            ),
        ),
        7 => (
            json!({ "registrationId": format!("lab-{id}"), "tpm": { "endorsementKey": "ek" } }),
            CONTOSO.to_vec(),
            (
                "individualEnrollment",
                json!({ "registrationId": format!("lab-{id}"), "attestation": { "type": "tpm" } }),
            ),
        ),
        8 => (
            json!({ "registrationId": id, "symmetricKey": {}, "currentIotHubHostName": fab[i % 4], "currentDeviceId": id }),
            fab.to_vec(),
            ("enrollmentGroup", group("fabrikam-sensors")),
        ),
        _ => (
            json!({ "registrationId": id, "symmetricKey": {}, "payload": unknown_payload }),
            vec![
                "x-1.azure-devices.net",
                "x-2.azure-devices.net",
                "x-3.azure-devices.net",
            ],
            ("enrollmentGroup", group("unknown-group")),
        ),
    };
    let mut req = json!({ "deviceRuntimeContext": ctx, "linkedHubs": hubs });
    req[enrollment.0] = enrollment.1;
    req
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connects");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        Conn {
            reader: BufReader::new(s.try_clone().expect("clone")),
            writer: s,
        }
    }

    /// POSTs a body; the status, the decision header and the body.
    fn post(&mut self, body: &[u8]) -> (u16, String, Vec<u8>) {
        let head = format!(
            "POST /api/allocate HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.writer
            .write_all(&[head.as_bytes(), body].concat())
            .expect("writes");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let (mut length, mut decision) = (0usize, String::new());
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().expect("length"),
                    "x-dps-allocator-decision" => decision = v.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut out = vec![0; length];
        self.reader.read_exact(&mut out).expect("body");
        (status, decision, out)
    }
}

/// Answers the whole fleet on one connection: per device, a digest of status, header and body.
fn answer_fleet(addr: SocketAddr) -> (Vec<u64>, Vec<(u16, Vec<u8>)>) {
    let mut conn = Conn::open(addr);
    let mut digests = Vec::with_capacity(devices());
    let mut samples = Vec::new();
    for i in 0..devices() {
        let body = serde_json::to_vec(&device(i)).expect("serializes");
        let (status, decision, out) = conn.post(&body);
        let mut all = status.to_be_bytes().to_vec();
        all.extend_from_slice(decision.as_bytes());
        all.push(0);
        all.extend_from_slice(&out);
        digests.push(xxhash_rust::xxh3::xxh3_64(&all));
        if i < 20 || i % 9_973 == 0 {
            samples.push((status, out));
        }
    }
    (digests, samples)
}

#[test]
fn two_replicas_answer_a_whole_fleet_with_identical_bytes() {
    let db = std::env::temp_dir().join(format!("dps-determinism-{}.mmdb", std::process::id()));
    let geoip = crate::helpers::test_geoip_bytes();
    std::fs::write(&db, geoip).expect("writes the database");
    let db_arg = db.to_str().expect("utf-8 path");
    let policies = repo().join("policies");
    let args = ["--policies", policies.to_str().expect("utf-8"), "--geoip", db_arg];
    let a = Server::start(&args, &[]);
    // DPS_ALLOCATOR_TEST_BIN_B runs the second replica from another build: a change that must not alter a
    // single answer (docs/performance.md) is checked by answering the fleet with the builds before and after.
    let b = match std::env::var("DPS_ALLOCATOR_TEST_BIN_B") {
        Ok(other) => Server::start_binary(&other, &args, &[]),
        Err(_) => Server::start(&args, &[]),
    };
    let (addr_a, addr_b) = (a.addr, b.addr);
    let ta = std::thread::spawn(move || answer_fleet(addr_a));
    let tb = std::thread::spawn(move || answer_fleet(addr_b));
    let (da, sa) = ta.join().expect("replica a");
    let (db_, sb) = tb.join().expect("replica b");
    let _ = std::fs::remove_file(&db);
    assert_eq!(da.len(), devices());
    let differing: Vec<usize> = (0..devices()).filter(|&i| da[i] != db_[i]).take(5).collect();
    assert!(differing.is_empty(), "devices answered differently: {differing:?}");
    assert_eq!(sa, sb);
    // The fleet exercises assignments, rejections and refusals, not one path.
    let statuses: std::collections::BTreeSet<u16> = sa.iter().map(|(s, _)| *s).collect();
    assert!(statuses.contains(&200) && statuses.len() >= 2, "{statuses:?}");
    let hubs: std::collections::BTreeSet<String> = sa
        .iter()
        .filter_map(|(_, body)| serde_json::from_slice::<Value>(body).ok())
        .filter_map(|v| v["iotHubHostName"].as_str().map(str::to_owned))
        .collect();
    assert!(hubs.len() >= 4, "{hubs:?}");
}
