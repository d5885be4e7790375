//! Decision micro-benchmarks (criterion): one engine decision, from a parsed request to the assignment,
//! for the policy shapes the issues name. Run with `cargo bench --bench decision`; figures go to
//! docs/benchmarks.md.

// Benchmark set-up fails loudly on purpose.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use dps_allocator::dps::AllocationRequest;
use dps_allocator::engine::decide;
use dps_allocator::geo::GeoIp;
use dps_allocator::geo::mmdb::{NetworkRecord, write_city_db};
use dps_allocator::policy::{Revision, Source, compile};
use dps_allocator::regions::REGIONS;

fn policy(text: String) -> Revision {
    compile(vec![Source {
        name: "bench.toml".into(),
        text,
    }])
    .expect("bench policy compiles")
}

/// 50 hubs: one in each of the 49 built-in regions and one more with its own location.
fn geo_policy() -> (Revision, Vec<String>) {
    let mut text = String::from("[settings]\nhash_seed = \"bench\"\n");
    let mut hosts = Vec::new();
    for (i, r) in REGIONS.iter().enumerate() {
        let host = format!("hub-{i:02}-{}.azure-devices.net", r.name);
        text.push_str(&format!(
            "[[hub]]\nhost = \"{host}\"\nregion = \"{}\"\nweight = {}\n",
            r.name,
            1 + i % 5
        ));
        hosts.push(host);
    }
    text.push_str("[[hub]]\nhost = \"hub-49-edge.azure-devices.net\"\nlocation = { lat = 64.1, lon = -21.9 }\n");
    hosts.push("hub-49-edge.azure-devices.net".to_owned());
    text.push_str("[[rule]]\nname = \"nearest\"\nstrategy = \"geo-latency\"\nsticky = false\n");
    (policy(text), hosts)
}

/// A City database of 65,536 /24 networks spread over the globe, written to a temp file and opened.
fn geo_db(cache: u64) -> GeoIp {
    let records: Vec<NetworkRecord> = (0..65_536u32)
        .map(|i| {
            let net = Ipv4Addr::from((16 << 24) | (i << 8));
            NetworkRecord {
                network: format!("{net}/24"),
                lat: f64::from(i % 170) - 85.0,
                lon: f64::from((i * 7) % 360) - 180.0,
                accuracy_km: 50,
                city: String::new(),
                country: String::new(),
            }
        })
        .collect();
    let db = write_city_db(&records, "Bench-City", 0).expect("writes");
    let path = std::env::temp_dir().join(format!("dps-bench-{}-{cache}.mmdb", std::process::id()));
    std::fs::write(&path, db).expect("writes file");
    let g = GeoIp::open_with_cache(&path, cache).expect("opens");
    let _ = std::fs::remove_file(path);
    g
}

fn bodies(hosts: &[String], n: usize, payload: impl Fn(usize) -> String) -> Vec<Vec<u8>> {
    let linked = serde_json::to_string(hosts).expect("json");
    (0..n)
        .map(|i| {
            format!(
                r#"{{"enrollmentGroup":{{"enrollmentGroupId":"fleet"}},"deviceRuntimeContext":{{"registrationId":"device-{i:06}","payload":{}}},"linkedHubs":{linked}}}"#,
                payload(i)
            )
            .into_bytes()
        })
        .collect()
}

fn bench_geo(c: &mut Criterion) {
    let (rev, hosts) = geo_policy();
    // 1,024 devices, each reporting an IP in a different /24.
    let reqs = bodies(&hosts, 1024, |i| {
        format!(r#"{{"ip":"16.{}.{}.9"}}"#, (i * 61) % 256, (i * 17) % 256)
    });
    let parsed: Vec<AllocationRequest<'_>> = reqs
        .iter()
        .map(|b| AllocationRequest::parse(b).expect("valid"))
        .collect();
    let mut group = c.benchmark_group("geo-latency, 50 hubs, payload IP");
    let cold = geo_db(0);
    let mut i = 0;
    group.bench_function("GeoIP cache cold (every lookup reads the database)", |b| {
        b.iter(|| {
            i = (i + 1) % parsed.len();
            black_box(decide(&parsed[i], &rev, Some(&cold), None))
        })
    });
    let warm = geo_db(65_536);
    for r in &parsed {
        decide(r, &rev, Some(&warm), None);
    }
    group.bench_function("GeoIP cache warm", |b| {
        b.iter(|| {
            i = (i + 1) % parsed.len();
            black_box(decide(&parsed[i], &rev, Some(&warm), None))
        })
    });
    let coords = bodies(&hosts, 1024, |i| {
        format!(
            r#"{{"location":{{"lat":{},"lon":{}}}}}"#,
            (i % 170) as f64 - 85.0,
            (i * 7 % 360) as f64 - 180.0
        )
    });
    let coords: Vec<AllocationRequest<'_>> = coords
        .iter()
        .map(|b| AllocationRequest::parse(b).expect("valid"))
        .collect();
    group.bench_function("payload coordinates (no GeoIP)", |b| {
        b.iter(|| {
            i = (i + 1) % coords.len();
            black_box(decide(&coords[i], &rev, None, None))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_geo);
criterion_main!(benches);
