//! A MaxMind GeoIP2 / GeoLite2 City database: opened and fully checked at start-up (missing, unreadable,
//! corrupt or wrong-type files are refused with one clear message), then looked up through a moka cache
//! owned by this database instance.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use maxminddb::Reader;
use serde::Deserialize;

/// Entries in the lookup cache.
pub const CACHE_CAPACITY: u64 = 65_536;

/// An open, verified City database.
pub struct GeoIp {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
    cache: moka::sync::Cache<IpAddr, IpLookup>,
    cached: bool,
    counts: [AtomicU64; 5],
}

/// Lookup counters since the database was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeoIpStats {
    /// Lookups that found a location.
    pub found: u64,
    /// Lookups that found none.
    pub not_found: u64,
    /// Lookups whose record could not be decoded.
    pub errors: u64,
    /// Lookups answered from the cache.
    pub cache_hits: u64,
    /// Lookups that went to the database.
    pub cache_misses: u64,
}

const FOUND: usize = 0;
const NOT_FOUND: usize = 1;
const ERRORS: usize = 2;
const HITS: usize = 3;
const MISSES: usize = 4;

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("path", &self.path)
            .field("type", &self.database_type())
            .finish()
    }
}

/// A two-letter code (ISO 3166-1 alpha-2 country, or MaxMind's continent code), upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code([u8; 2]);

impl Code {
    /// The code, when `s` is two ASCII letters.
    pub fn new(s: &str) -> Option<Code> {
        match s.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Code([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IpLookup {
    /// A location.
    Found {
        /// Latitude.
        lat: f64,
        /// Longitude.
        lon: f64,
        /// MaxMind's accuracy radius in km (67 % confidence), when given.
        accuracy_km: Option<u16>,
        /// The country's ISO code (`country.iso_code`), when given.
        country: Option<Code>,
        /// The continent code (`continent.code`), when given.
        continent: Option<Code>,
    },
    /// The database has no location for this address.
    NotFound,
    /// The record could not be decoded (a damaged database).
    Error,
}

/// Why a database was refused.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    /// The file does not exist or cannot be read.
    #[error("GeoIP database `{0}`: cannot read: {1}")]
    Unreadable(PathBuf, String),
    /// The file is not a valid MaxMind database.
    #[error("GeoIP database `{0}`: corrupt: {1}")]
    Corrupt(PathBuf, String),
    /// A valid database without city locations (Country, ASN, …).
    #[error("GeoIP database `{0}`: type `{1}` has no city locations (use a GeoIP2 or GeoLite2 City database)")]
    WrongType(PathBuf, String),
}

/// The parts of a City record the service reads.
#[derive(Deserialize)]
struct CityRecord<'a> {
    location: Option<Location>,
    #[serde(borrow)]
    country: Option<CountryRecord<'a>>,
    #[serde(borrow)]
    continent: Option<ContinentRecord<'a>>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy_radius: Option<u16>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct ContinentRecord<'a> {
    code: Option<&'a str>,
}

impl GeoIp {
    /// Opens a database, checks that it holds city locations, and verifies the whole file.
    pub fn open(path: &Path) -> Result<GeoIp, GeoIpError> {
        Self::open_with_cache(path, CACHE_CAPACITY)
    }

    /// Like [`GeoIp::open`] with a lookup cache of `capacity` entries (0: every lookup reads the database).
    pub fn open_with_cache(path: &Path, capacity: u64) -> Result<GeoIp, GeoIpError> {
        let owned = path.to_path_buf();
        std::fs::metadata(path).map_err(|e| GeoIpError::Unreadable(owned.clone(), e.to_string()))?;
        // Read into memory rather than memory-mapped: a mapping of a file replaced in place is undefined
        // behaviour, and the crate forbids unsafe code. The cost is RSS of about the file's size.
        let reader = Reader::open_readfile(path).map_err(|e| match e {
            maxminddb::MaxMindDbError::Io(io) => GeoIpError::Unreadable(owned.clone(), io.to_string()),
            other => GeoIpError::Corrupt(owned.clone(), other.to_string()),
        })?;
        let kind = reader.metadata().database_type.clone();
        if !(kind.contains("City") || kind.contains("Enterprise")) {
            return Err(GeoIpError::WrongType(owned, kind));
        }
        reader
            .verify()
            .map_err(|e| GeoIpError::Corrupt(owned.clone(), e.to_string()))?;
        Ok(GeoIp {
            reader,
            path: owned,
            cache: moka::sync::Cache::new(capacity),
            cached: capacity > 0,
            counts: Default::default(),
        })
    }

    /// The file it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `GeoIP2-City`, `GeoLite2-City`, …
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// When MaxMind built the database, in seconds since the Unix epoch.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// The build date as `YYYY-MM-DD`.
    pub fn build_date(&self) -> String {
        let t = UNIX_EPOCH + Duration::from_secs(self.build_epoch());
        humantime_date(t)
    }

    /// Looks an address up (cached).
    pub fn lookup(&self, ip: IpAddr) -> IpLookup {
        let found = if !self.cached {
            self.lookup_uncached(ip)
        } else if let Some(hit) = self.cache.get(&ip) {
            self.count(HITS);
            hit
        } else {
            self.count(MISSES);
            let found = self.lookup_uncached(ip);
            self.cache.insert(ip, found);
            found
        };
        self.count(match found {
            IpLookup::Found { .. } => FOUND,
            IpLookup::NotFound => NOT_FOUND,
            IpLookup::Error => ERRORS,
        });
        found
    }

    fn count(&self, which: usize) {
        self.counts[which].fetch_add(1, Ordering::Relaxed);
    }

    /// The lookup counters.
    pub fn stats(&self) -> GeoIpStats {
        let get = |i: usize| self.counts[i].load(Ordering::Relaxed);
        GeoIpStats {
            found: get(FOUND),
            not_found: get(NOT_FOUND),
            errors: get(ERRORS),
            cache_hits: get(HITS),
            cache_misses: get(MISSES),
        }
    }

    /// Looks an address up in the database itself.
    pub fn lookup_uncached(&self, ip: IpAddr) -> IpLookup {
        let Ok(result) = self.reader.lookup(ip) else {
            return IpLookup::Error;
        };
        match result.decode::<CityRecord<'_>>() {
            Ok(Some(CityRecord {
                location:
                    Some(Location {
                        latitude: Some(lat),
                        longitude: Some(lon),
                        accuracy_radius,
                    }),
                country,
                continent,
            })) => IpLookup::Found {
                lat,
                lon,
                accuracy_km: accuracy_radius,
                country: country.and_then(|c| c.iso_code).and_then(Code::new),
                continent: continent.and_then(|c| c.code).and_then(Code::new),
            },
            Ok(_) => IpLookup::NotFound,
            Err(_) => IpLookup::Error,
        }
    }

    /// Entries in the lookup cache now.
    pub fn cache_entries(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

/// A UTC calendar date, `YYYY-MM-DD`, from `time`.
fn humantime_date(t: std::time::SystemTime) -> String {
    let (y, m, d) = time::OffsetDateTime::from(t).to_calendar_date();
    format!("{y:04}-{:02}-{d:02}", u8::from(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::mmdb::{NetworkRecord, write_city_db};

    fn temp_db(name: &str, bytes: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!("dps-allocator-{}-{name}.mmdb", std::process::id()));
        std::fs::write(&p, bytes).expect("writes");
        p
    }

    fn records() -> Vec<NetworkRecord> {
        vec![NetworkRecord {
            network: "192.0.2.0/24".into(),
            lat: 52.37,
            lon: 4.89,
            accuracy_km: 20,
            city: "Amsterdam".into(),
            country: "NL".into(),
            continent: "EU".into(),
        }]
    }

    #[test]
    fn a_city_database_opens_and_answers_through_its_cache() {
        let p = temp_db(
            "ok",
            &write_city_db(&records(), "DPS-Allocator-Test-City", 1_767_225_600).expect("db"),
        );
        let db = GeoIp::open(&p).expect("opens");
        assert_eq!(db.build_date(), "2026-01-01");
        let ip: IpAddr = "192.0.2.9".parse().expect("ip");
        let want = IpLookup::Found {
            lat: 52.37,
            lon: 4.89,
            accuracy_km: Some(20),
            country: Code::new("NL"),
            continent: Code::new("EU"),
        };
        assert_eq!(db.lookup(ip), want);
        assert_eq!(db.lookup(ip), want);
        assert_eq!(db.cache_entries(), 1);
        assert_eq!(db.lookup("203.0.113.1".parse().expect("ip")), IpLookup::NotFound);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn missing_corrupt_and_wrong_type_databases_are_refused_with_one_line() {
        let missing = GeoIp::open(Path::new("/nonexistent/GeoLite2-City.mmdb")).expect_err("missing");
        assert!(matches!(missing, GeoIpError::Unreadable(..)), "{missing}");
        let good = write_city_db(&records(), "DPS-Allocator-Test-City", 0).expect("db");
        let truncated = temp_db("truncated", &good[..good.len() / 2]);
        assert!(matches!(GeoIp::open(&truncated), Err(GeoIpError::Corrupt(..))));
        let mut damaged = good.clone();
        // Point the first record past the end of the data section.
        damaged[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let damaged = temp_db("damaged", &damaged);
        assert!(matches!(GeoIp::open(&damaged), Err(GeoIpError::Corrupt(..))));
        let country = temp_db("country", &write_city_db(&records(), "GeoIP2-Country", 0).expect("db"));
        let e = GeoIp::open(&country).expect_err("wrong type");
        assert!(matches!(e, GeoIpError::WrongType(..)));
        assert!(!e.to_string().contains('\n'));
        for p in [truncated, damaged, country] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(humantime_date(UNIX_EPOCH), "1970-01-01");
        assert_eq!(
            humantime_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29"
        );
        assert_eq!(
            humantime_date(UNIX_EPOCH + Duration::from_secs(1_770_245_369)),
            "2026-02-04"
        );
    }
}
