//! Builds a small MaxMind City database from a JSON list of networks (see `testdata/geoip/`), for tests,
//! benchmarks and demos.
//!
//! Usage: `cargo run --example geoip-testdb -- NETWORKS.json OUT.mmdb`

use std::process::ExitCode;

use dps_allocator::geo::mmdb::{NetworkRecord, write_city_db};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: geoip-testdb NETWORKS.json OUT.mmdb");
        return ExitCode::from(2);
    };
    let result = std::fs::read_to_string(input)
        .map_err(|e| format!("{input}: {e}"))
        .and_then(|text| serde_json::from_str::<Vec<NetworkRecord>>(&text).map_err(|e| format!("{input}: {e}")))
        .and_then(|records| {
            write_city_db(&records, "DPS-Allocator-Test-City", 1_767_225_600).map_err(|e| e.to_string())
        })
        .and_then(|db| std::fs::write(output, db).map_err(|e| format!("{output}: {e}")));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
