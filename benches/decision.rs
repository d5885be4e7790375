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
use dps_allocator::geo::regions::REGIONS;
use dps_allocator::policy::{Revision, Source, compile};

fn policy(text: String) -> Revision {
    compile(vec![Source::new("bench.toml", text)]).expect("bench policy compiles")
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
                continent: String::new(),
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
            black_box(decide(&parsed[i], &rev, Some(&cold)))
        })
    });
    let warm = geo_db(65_536);
    for r in &parsed {
        decide(r, &rev, Some(&warm));
    }
    group.bench_function("GeoIP cache warm", |b| {
        b.iter(|| {
            i = (i + 1) % parsed.len();
            black_box(decide(&parsed[i], &rev, Some(&warm)))
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
            black_box(decide(&coords[i], &rev, None))
        })
    });
    group.finish();
}

/// A policy of `hubs` hubs and `rules` rules that discriminate on the enrollment group (even rules) and
/// the registration-id prefix (odd rules), then a catch-all: the shape of large multi-tenant policies.
pub fn rules_policy(hubs: usize, rules: usize) -> String {
    let mut text = String::from("[settings]\nhash_seed = \"bench\"\n");
    for h in 0..hubs {
        text.push_str(&format!(
            "[[hub]]\nhost = \"hub-{h:02}.azure-devices.net\"\nweight = {}\n",
            1 + h % 5
        ));
    }
    for r in 0..rules.saturating_sub(1) {
        let when = if r % 2 == 0 {
            format!("enrollment_group = \"group-{r:05}\"")
        } else {
            format!("registration_id = {{ prefix = \"p{r:05}-\" }}")
        };
        text.push_str(&format!(
            "[[rule]]\nname = \"r{r:05}\"\nwhen = {{ {when} }}\nstrategy = \"weighted-hash\"\n"
        ));
    }
    text.push_str("[[rule]]\nname = \"spread\"\n");
    text
}

fn bench_rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("one decision, weighted-hash");
    for (hubs, rules) in [(10usize, 10usize), (50, 1_000), (50, 10_000)] {
        let rev = policy(rules_policy(hubs, rules));
        let linked: Vec<String> = (0..hubs).map(|h| format!("hub-{h:02}.azure-devices.net")).collect();
        let linked = serde_json::to_string(&linked).expect("json");
        let middle = rules / 2 / 2 * 2;
        let matching: Vec<Vec<u8>> = (0..256)
            .map(|i| {
                format!(
                    r#"{{"enrollmentGroup":{{"enrollmentGroupId":"group-{middle:05}"}},"deviceRuntimeContext":{{"registrationId":"dev-{i}"}},"linkedHubs":{linked}}}"#
                )
                .into_bytes()
            })
            .collect();
        let unmatched: Vec<Vec<u8>> = (0..256)
            .map(|i| {
                format!(
                    r#"{{"enrollmentGroup":{{"enrollmentGroupId":"nobody"}},"deviceRuntimeContext":{{"registrationId":"dev-{i}"}},"linkedHubs":{linked}}}"#
                )
                .into_bytes()
            })
            .collect();
        for (label, bodies) in [
            ("a rule in the middle matches", &matching),
            ("only the last rule matches", &unmatched),
        ] {
            let reqs: Vec<AllocationRequest<'_>> = bodies
                .iter()
                .map(|b| AllocationRequest::parse(b).expect("valid"))
                .collect();
            let mut i = 0;
            group.bench_function(format!("{hubs} hubs, {rules} rules, {label}"), |b| {
                b.iter(|| {
                    i = (i + 1) % reqs.len();
                    black_box(decide(&reqs[i], &rev, None))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_rules, bench_geo, bench_cache, bench_fence);
criterion_main!(benches);

/// The whole answer path, request bytes to response bytes, with the shipped policy: without the decision
/// cache, and with it (every request a hit, and every request a miss).
fn bench_cache(c: &mut Criterion) {
    use dps_allocator::server::Service;
    use std::time::Duration;

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let rev = dps_allocator::policy::load_dir(&dir).expect("shipped policy");
    let fabrikam = [
        "fabrikam-weu-1.azure-devices.net",
        "fabrikam-neu-1.azure-devices.net",
        "fabrikam-eus-1.azure-devices.net",
        "fabrikam-sea-1.azure-devices.net",
    ];
    let bodies: Vec<Vec<u8>> = (0..65_536)
        .map(|i| {
            serde_json::to_vec(&serde_json::json!({
                "enrollmentGroup": {
                    "enrollmentGroupId": "fabrikam-sensors", "attestation": { "type": "symmetricKey" },
                    "capabilities": { "iotEdge": false }, "etag": "\"1b00f2e6-0000-0300-0000-65a1c5f40000\"",
                    "provisioningStatus": "enabled", "reprovisionPolicy": { "updateHubAssignment": true, "migrateDeviceData": true },
                    "createdDateTimeUtc": "2026-01-12T15:04:36.2171549Z", "allocationPolicy": "custom",
                    "iotHubs": fabrikam, "customAllocationDefinition": { "webhookUrl": "https://x.azurewebsites.net/api/allocate?****", "apiVersion": "2021-10-01" }
                },
                "deviceRuntimeContext": { "registrationId": format!("fab-sensor-{i:06}"), "symmetricKey": {}, "payload": { "model": "th-200" } },
                "linkedHubs": fabrikam
            }))
            .expect("json")
        })
        .collect();
    let rev2 = dps_allocator::policy::load_dir(&dir).expect("shipped policy");
    let no_cache = Service::for_revision(rev).expect("service");
    let cache = Service::for_revision(rev2).expect("service").with_cache(
        dps_allocator::server::cache::DEFAULT_CAPACITY,
        dps_allocator::server::cache::DEFAULT_MAX_BYTES,
        Duration::from_secs(3600),
    );
    let current = cache.policy.active().expect("active");
    // A body is stored on its second sight: two passes fill the cache with these 4,096.
    for _ in 0..2 {
        for b in &bodies[..4096] {
            cache.answer(&current, b);
        }
    }
    let plain = no_cache.policy.active().expect("active");
    let mut group = c.benchmark_group("answer path, shipped policy, ~900-byte request");
    let mut i = 0;
    group.bench_function("decision cache off", |b| {
        b.iter(|| {
            i = (i + 1) % bodies.len();
            black_box(no_cache.answer(&plain, &bodies[i]))
        })
    });
    group.bench_function("decision cache hit", |b| {
        b.iter(|| {
            i = (i + 1) % 4096;
            black_box(cache.answer(&current, &bodies[i]))
        })
    });
    let with_cache = |capacity| {
        let service = Service::for_revision(dps_allocator::policy::load_dir(&dir).expect("policy"))
            .expect("service")
            .with_cache(
                capacity,
                dps_allocator::server::cache::DEFAULT_MAX_BYTES,
                Duration::from_secs(3600),
            );
        let rev = service.policy.active().expect("active");
        (service, rev)
    };
    // Every body a first sight: a 1,024-entry cache forgets what it saw after 2,048 new bodies, and each
    // body comes back after 65,535 others. Decided, noted, not stored.
    let (first, first_rev) = with_cache(1024);
    group.bench_function("decision cache first sight (decided, noted, not stored)", |b| {
        b.iter(|| {
            i = (i + 1) % bodies.len();
            black_box(first.answer(&first_rev, &bodies[i]))
        })
    });
    // Every body seen before and gone: 24,576 bodies in rotation through a 16,384-entry cache whose
    // doorkeeper remembers 32,768. Decided, then stored (evicting another).
    let (second, second_rev) = with_cache(16_384);
    group.bench_function("decision cache miss (decided, then stored)", |b| {
        b.iter(|| {
            i = (i + 1) % 24_576;
            black_box(second.answer(&second_rev, &bodies[i]))
        })
    });
    group.finish();
    eprintln!("request body size: {} bytes", bodies[0].len());
}

/// A `location.within` test against a fence of over 100,000 vertices: the EU fence of the residency
/// fixtures (real borders), each edge cut into 12, so the shape stays real while the vertex count grows.
fn bench_fence(c: &mut Criterion) {
    use dps_allocator::geo::{Fence, LatLon};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/residency/fences");
    let text = std::fs::read_to_string(dir.join("eu.geojson")).expect("fence");
    let mut fc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let densify = |ring: &mut serde_json::Value| {
        let pts: Vec<(f64, f64)> = ring
            .as_array()
            .expect("ring")
            .iter()
            .map(|p| (p[0].as_f64().expect("lon"), p[1].as_f64().expect("lat")))
            .collect();
        let mut out = Vec::with_capacity(pts.len() * 12);
        for w in pts.windows(2) {
            for k in 0..12 {
                let t = f64::from(k) / 12.0;
                out.push(serde_json::json!([
                    w[0].0 + t * (w[1].0 - w[0].0),
                    w[0].1 + t * (w[1].1 - w[0].1)
                ]));
            }
        }
        out.push(serde_json::json!([pts[0].0, pts[0].1]));
        *ring = serde_json::Value::Array(out);
    };
    for f in fc["features"].as_array_mut().expect("features") {
        let g = &mut f["geometry"];
        let polys: Vec<&mut serde_json::Value> = if g["type"] == "Polygon" {
            vec![&mut g["coordinates"]]
        } else {
            g["coordinates"].as_array_mut().expect("polygons").iter_mut().collect()
        };
        for p in polys {
            for ring in p.as_array_mut().expect("rings") {
                densify(ring);
            }
        }
    }
    let fence = Fence::parse("eu-dense", &fc.to_string()).expect("valid");
    assert!(fence.vertices > 100_000, "{} vertices", fence.vertices);
    let mut state: u64 = 7;
    let points: Vec<LatLon> = (0..4096)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let a = (state >> 33) as f64 / (1u64 << 31) as f64;
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let b = (state >> 33) as f64 / (1u64 << 31) as f64;
            LatLon {
                lat: 35.0 + 35.0 * a,
                lon: -10.0 + 40.0 * b,
            }
        })
        .collect();
    let mut group = c.benchmark_group(format!("fence within, {} vertices (EU, real borders)", fence.vertices));
    let mut i = 0;
    group.bench_function("random point in Europe", |b| {
        b.iter(|| {
            i = (i + 1) % points.len();
            black_box(fence.contains(points[i]))
        })
    });
    let paris = LatLon {
        lat: 48.8566,
        lon: 2.3522,
    };
    group.bench_function("a point inside (Paris)", |b| {
        b.iter(|| black_box(fence.contains(black_box(paris))))
    });
    group.finish();
}
