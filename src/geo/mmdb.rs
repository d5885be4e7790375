//! A small writer of MaxMind DB files in the GeoIP2 City layout, for the project's tests, benchmarks and
//! demos: they build their own databases from data in the repository (`testdata/geoip/networks.json`)
//! instead of depending on MaxMind's files.
//!
//! It writes an IPv6 search tree (IPv4 networks live under `::/96`, where readers look them up) with
//! 32-bit records, a data section holding one City-shaped map per network, and the metadata map. Only the
//! types a City record needs are encoded: maps, UTF-8 strings, doubles, unsigned integers, arrays.

use std::net::IpAddr;

use serde::Deserialize;

/// One network and where it is.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkRecord {
    /// CIDR: `81.2.69.0/24`, `2001:db8::/32`.
    pub network: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Accuracy radius in kilometres.
    pub accuracy_km: u16,
    /// City name (English).
    #[serde(default)]
    pub city: String,
    /// ISO country code.
    #[serde(default)]
    pub country: String,
    /// Continent code (`EU`, `NA`, `AS`, …).
    #[serde(default)]
    pub continent: String,
}

/// Why a database could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WriteError(pub String);

/// Writes a City database holding `records`, of type `database_type`, built at `build_epoch` (seconds).
pub fn write_city_db(records: &[NetworkRecord], database_type: &str, build_epoch: u64) -> Result<Vec<u8>, WriteError> {
    let mut data = Vec::new();
    let mut tree = Tree::new();
    for r in records {
        let (bits, len) = parse_network(&r.network)?;
        let offset = data.len() as u32;
        encode_record(&mut data, r);
        tree.insert(bits, len, offset)
            .map_err(|e| WriteError(format!("{}: {e}", r.network)))?;
    }
    let node_count = tree.nodes.len() as u32;
    let mut out = Vec::with_capacity(tree.nodes.len() * 8 + 16 + data.len() + 256);
    for node in &tree.nodes {
        for rec in node {
            let v = match *rec {
                Rec::Empty => node_count,
                Rec::Node(n) => n,
                Rec::Data(off) => node_count + 16 + off,
            };
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let mut meta = Vec::new();
    map_header(&mut meta, 9);
    entry_u(&mut meta, "binary_format_major_version", 2, 5);
    entry_u(&mut meta, "binary_format_minor_version", 0, 5);
    entry_u(&mut meta, "build_epoch", build_epoch, 9);
    key(&mut meta, "database_type");
    string(&mut meta, database_type);
    key(&mut meta, "description");
    map_header(&mut meta, 1);
    key(&mut meta, "en");
    string(&mut meta, "dps-allocator test database (generated)");
    entry_u(&mut meta, "ip_version", 6, 5);
    key(&mut meta, "languages");
    control(&mut meta, 11, 1);
    string(&mut meta, "en");
    entry_u(&mut meta, "node_count", u64::from(node_count), 6);
    entry_u(&mut meta, "record_size", 32, 5);
    out.extend_from_slice(&meta);
    Ok(out)
}

/// Parses `addr/len` into a 128-bit address (IPv4 mapped under `::/96`) and a prefix length.
fn parse_network(s: &str) -> Result<(u128, u8), WriteError> {
    let err = || WriteError(format!("`{s}` is not a network in CIDR form"));
    let (addr, len) = s.split_once('/').ok_or_else(err)?;
    let addr: IpAddr = addr.parse().map_err(|_| err())?;
    let len: u8 = len.parse().map_err(|_| err())?;
    match addr {
        IpAddr::V4(a) if len <= 32 => Ok((u128::from(u32::from(a)), 96 + len)),
        IpAddr::V6(a) if len <= 128 => Ok((u128::from(a), len)),
        _ => Err(err()),
    }
}

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(u32),
    Data(u32),
}

struct Tree {
    nodes: Vec<[Rec; 2]>,
}

impl Tree {
    fn new() -> Self {
        Tree {
            nodes: vec![[Rec::Empty, Rec::Empty]],
        }
    }

    fn insert(&mut self, bits: u128, len: u8, data: u32) -> Result<(), String> {
        if len == 0 {
            return Err("a /0 network is not supported".to_owned());
        }
        let mut node = 0usize;
        for depth in 0..len {
            let bit = ((bits >> (127 - u32::from(depth))) & 1) as usize;
            if depth + 1 == len {
                if !matches!(self.nodes[node][bit], Rec::Empty) {
                    return Err("overlaps another network".to_owned());
                }
                self.nodes[node][bit] = Rec::Data(data);
                return Ok(());
            }
            node = match self.nodes[node][bit] {
                Rec::Node(n) => n as usize,
                Rec::Empty => {
                    self.nodes.push([Rec::Empty, Rec::Empty]);
                    let n = self.nodes.len() - 1;
                    self.nodes[node][bit] = Rec::Node(n as u32);
                    n
                }
                Rec::Data(_) => return Err("lies inside another network".to_owned()),
            };
        }
        Ok(())
    }
}

/// A control byte (and extended type byte, and size bytes) for a value of `kind` with `size`.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, Vec::new()),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if kind <= 7 {
        out.push((kind << 5) | size_bits);
    } else {
        out.push(size_bits);
        out.push(kind - 7);
    }
    out.extend_from_slice(&extra);
}

fn string(out: &mut Vec<u8>, s: &str) {
    control(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn key(out: &mut Vec<u8>, k: &str) {
    string(out, k);
}

fn map_header(out: &mut Vec<u8>, pairs: usize) {
    control(out, 7, pairs);
}

fn double(out: &mut Vec<u8>, v: f64) {
    control(out, 3, 8);
    out.extend_from_slice(&v.to_be_bytes());
}

/// An unsigned integer of MaxMind type `kind` (5 uint16, 6 uint32, 9 uint64), minimal big-endian.
fn unsigned(out: &mut Vec<u8>, v: u64, kind: u8) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

fn entry_u(out: &mut Vec<u8>, k: &str, v: u64, kind: u8) {
    key(out, k);
    unsigned(out, v, kind);
}

fn encode_record(out: &mut Vec<u8>, r: &NetworkRecord) {
    map_header(out, if r.continent.is_empty() { 3 } else { 4 });
    key(out, "city");
    map_header(out, 1);
    key(out, "names");
    map_header(out, 1);
    key(out, "en");
    string(out, &r.city);
    if !r.continent.is_empty() {
        key(out, "continent");
        map_header(out, 1);
        key(out, "code");
        string(out, &r.continent);
    }
    key(out, "country");
    map_header(out, 1);
    key(out, "iso_code");
    string(out, &r.country);
    key(out, "location");
    map_header(out, 3);
    entry_u(out, "accuracy_radius", u64::from(r.accuracy_km), 5);
    key(out, "latitude");
    double(out, r.lat);
    key(out, "longitude");
    double(out, r.lon);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(network: &str, lat: f64, lon: f64, accuracy_km: u16) -> NetworkRecord {
        NetworkRecord {
            network: network.into(),
            lat,
            lon,
            accuracy_km,
            city: "c".into(),
            country: "XX".into(),
            continent: String::new(),
        }
    }

    #[test]
    fn a_written_database_reads_back_and_verifies() {
        let db = write_city_db(
            &[
                rec("192.0.2.0/24", 52.37, 4.89, 20),
                rec("2001:db8:1::/48", 35.68, 139.77, 50),
                rec("10.0.0.0/8", 1.0, 2.0, 1000),
            ],
            "DPS-Allocator-Test-City",
            1_700_000_000,
        )
        .expect("writes");
        let reader = maxminddb::Reader::from_source(db).expect("opens");
        reader.verify().expect("verifies");
        assert_eq!(reader.metadata().database_type, "DPS-Allocator-Test-City");
        assert_eq!(reader.metadata().build_epoch, 1_700_000_000);
        let city = |ip: &str| -> Option<(f64, f64, u16)> {
            let r = reader.lookup(ip.parse().expect("ip")).expect("lookup");
            let c: maxminddb::geoip2::City<'_> = r.decode().expect("decodes")?;
            Some((c.location.latitude?, c.location.longitude?, c.location.accuracy_radius?))
        };
        assert_eq!(city("192.0.2.77"), Some((52.37, 4.89, 20)));
        assert_eq!(city("2001:db8:1:ff::1"), Some((35.68, 139.77, 50)));
        assert_eq!(city("10.200.0.1"), Some((1.0, 2.0, 1000)));
        assert_eq!(city("198.51.100.1"), None);
        assert_eq!(city("2001:db8:2::1"), None);
    }

    #[test]
    fn overlapping_and_malformed_networks_are_refused() {
        assert!(
            write_city_db(
                &[rec("10.0.0.0/8", 0.0, 0.0, 1), rec("10.1.0.0/16", 0.0, 0.0, 1)],
                "T-City",
                0
            )
            .is_err()
        );
        assert!(write_city_db(&[rec("10.0.0.0/33", 0.0, 0.0, 1)], "T-City", 0).is_err());
        assert!(write_city_db(&[rec("nonsense", 0.0, 0.0, 1)], "T-City", 0).is_err());
    }

    #[test]
    fn long_strings_use_the_extended_size_forms() {
        let long = "x".repeat(70_000);
        let mut r = rec("192.0.2.0/24", 0.0, 0.0, 1);
        r.city = long.clone();
        let db = write_city_db(&[r], "T-City", 0).expect("writes");
        let reader = maxminddb::Reader::from_source(db).expect("opens");
        let res = reader.lookup("192.0.2.1".parse().expect("ip")).expect("lookup");
        let c: maxminddb::geoip2::City<'_> = res.decode().expect("decodes").expect("found");
        assert_eq!(c.city.names.english, Some(long.as_str()));
    }
}
