//! Where a device is, from what it reports in its registration payload. DPS never tells the webhook the
//! device's IP, so the device must send one of: coordinates, an IP address (looked up in the GeoIP
//! database), or an Azure region name. The first that yields wins; anything invalid counts as unknown
//! (never an error), and the reasons are kept for the decision and `explain`.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::geo::geoip::Code;
use crate::geo::{GeoIp, IpLookup, LatLon, regions};
use crate::policy::GeoSettings;
use crate::policy::condition::Whereabouts;

/// Where a location came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocationSource {
    /// Coordinates in the payload.
    Coordinates,
    /// An IP address in the payload, through GeoIP.
    Ip,
    /// An Azure region name in the payload.
    Region,
}

impl LocationSource {
    /// The name used in reasons and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LocationSource::Coordinates => "coordinates",
            LocationSource::Ip => "ip",
            LocationSource::Region => "region",
        }
    }
}

/// A device's location.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceLocation {
    /// Where it came from.
    pub source: LocationSource,
    /// The point.
    pub point: LatLon,
    /// GeoIP's accuracy radius, for IP locations.
    pub accuracy_km: Option<u16>,
}

/// Why a source did not yield a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unknown {
    /// The device sent no payload, or none of the configured paths.
    NotReported,
    /// Coordinates present but not numbers within range (or only one of the two).
    InvalidCoordinates,
    /// The IP path holds no valid IP address.
    InvalidIp,
    /// An IP was sent but no GeoIP database is configured.
    NoGeoIpDatabase,
    /// The GeoIP database has no location for the IP.
    IpNotFound,
    /// The GeoIP record is less accurate than `max_accuracy_km`.
    LowAccuracy,
    /// The GeoIP record could not be decoded.
    GeoIpError,
    /// The region path holds no known Azure region name.
    UnknownRegion,
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unknown::NotReported => "the payload reports no location",
            Unknown::InvalidCoordinates => "payload coordinates are invalid",
            Unknown::InvalidIp => "payload IP address is invalid",
            Unknown::NoGeoIpDatabase => "an IP was reported but no GeoIP database is configured",
            Unknown::IpNotFound => "the GeoIP database has no location for the IP",
            Unknown::LowAccuracy => "the GeoIP location is less accurate than max_accuracy_km",
            Unknown::GeoIpError => "the GeoIP record could not be read",
            Unknown::UnknownRegion => "payload region is not a known Azure region",
        })
    }
}

/// The outcome of locating a device: the location, and why earlier sources did not yield.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Located {
    /// The location, when any source yielded.
    pub location: Option<DeviceLocation>,
    /// In source order, why each source that was present did not yield.
    pub misses: Vec<Unknown>,
}

impl Located {
    /// The reason a location is unknown: the first present source's failure, else "not reported".
    pub fn why_unknown(&self) -> Unknown {
        self.misses.first().copied().unwrap_or(Unknown::NotReported)
    }
}

/// Locates a device from its payload with the rule's geo settings.
pub fn locate(payload: Option<&Value>, geo: &GeoSettings, geoip: Option<&GeoIp>) -> Located {
    let mut out = Located::default();
    let Some(payload) = payload else { return out };

    let lat = geo.lat_path.lookup(payload);
    let lon = geo.lon_path.lookup(payload);
    if lat.is_some() || lon.is_some() {
        match (lat.and_then(number), lon.and_then(number)) {
            (Some(lat), Some(lon)) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => {
                out.location = Some(DeviceLocation {
                    source: LocationSource::Coordinates,
                    point: LatLon { lat, lon },
                    accuracy_km: None,
                });
                return out;
            }
            _ => out.misses.push(Unknown::InvalidCoordinates),
        }
    }

    if let Some(v) = geo.ip_path.lookup(payload) {
        match v.as_str().and_then(|s| s.trim().parse::<IpAddr>().ok()) {
            None => out.misses.push(Unknown::InvalidIp),
            Some(ip) => match geoip.map(|db| db.lookup(ip)) {
                None => out.misses.push(Unknown::NoGeoIpDatabase),
                Some(IpLookup::NotFound) => out.misses.push(Unknown::IpNotFound),
                Some(IpLookup::Error) => out.misses.push(Unknown::GeoIpError),
                Some(IpLookup::Found {
                    lat, lon, accuracy_km, ..
                }) => {
                    if accuracy_km.is_some_and(|a| f64::from(a) > geo.max_accuracy_km) {
                        out.misses.push(Unknown::LowAccuracy);
                    } else {
                        out.location = Some(DeviceLocation {
                            source: LocationSource::Ip,
                            point: LatLon { lat, lon },
                            accuracy_km,
                        });
                        return out;
                    }
                }
            },
        }
    }

    if let Some(v) = geo.region_path.lookup(payload) {
        match v.as_str().and_then(regions::find) {
            Some(r) => {
                out.location = Some(DeviceLocation {
                    source: LocationSource::Region,
                    point: LatLon { lat: r.lat, lon: r.lon },
                    accuracy_km: None,
                });
                return out;
            }
            None => out.misses.push(Unknown::UnknownRegion),
        }
    }
    out
}

/// Where a country or continent code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactSource {
    /// The device's payload (`country_path`, `continent_path`).
    Payload,
    /// The GeoIP record of the payload's IP.
    Ip,
}

impl FactSource {
    /// The name in traces.
    pub fn as_str(self) -> &'static str {
        match self {
            FactSource::Payload => "payload",
            FactSource::Ip => "ip",
        }
    }
}

/// A two-letter code, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodeFact {
    /// The code, upper case.
    pub code: Code,
    /// The same, lower case (what conditions compare).
    lower: [u8; 2],
    /// Its source.
    pub source: FactSource,
}

impl CodeFact {
    fn new(code: Code, source: FactSource) -> Self {
        let b = code.as_str().as_bytes();
        let lower = match b {
            [x, y] => [x.to_ascii_lowercase(), y.to_ascii_lowercase()],
            _ => [b'?', b'?'],
        };
        CodeFact { code, lower, source }
    }

    fn lower(&self) -> &str {
        std::str::from_utf8(&self.lower).unwrap_or("")
    }
}

/// Where a device is, for `location` conditions: its location (the same chain as geo-latency, with the
/// revision's geo settings), its country and its continent (the payload's own, else the GeoIP record of its
/// IP, whatever the record's accuracy radius: a country is right far more often than a point).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Place {
    /// The location.
    pub located: Located,
    /// The country.
    pub country: Option<CodeFact>,
    /// The continent.
    pub continent: Option<CodeFact>,
}

/// Works out where a device is.
pub fn place(payload: Option<&Value>, geo: &GeoSettings, geoip: Option<&GeoIp>) -> Place {
    let located = locate(payload, geo, geoip);
    let Some(payload) = payload else {
        return Place {
            located,
            ..Place::default()
        };
    };
    let reported = |path: &crate::policy::condition::JsonPath| {
        path.lookup(payload)
            .and_then(Value::as_str)
            .and_then(|s| Code::new(s.trim()))
            .map(|c| CodeFact::new(c, FactSource::Payload))
    };
    let mut country = reported(&geo.country_path);
    let mut continent = reported(&geo.continent_path);
    if country.is_none() || continent.is_none() {
        let ip = geo
            .ip_path
            .lookup(payload)
            .and_then(Value::as_str)
            .and_then(|s| s.trim().parse::<IpAddr>().ok());
        if let (Some(ip), Some(db)) = (ip, geoip)
            && let IpLookup::Found {
                country: c,
                continent: k,
                ..
            } = db.lookup(ip)
        {
            country = country.or(c.map(|c| CodeFact::new(c, FactSource::Ip)));
            continent = continent.or(k.map(|k| CodeFact::new(k, FactSource::Ip)));
        }
    }
    Place {
        located,
        country,
        continent,
    }
}

/// [`place`], worked out the first time a condition asks: requests that no location condition looks at
/// never pay for it.
#[derive(Debug)]
pub struct LazyPlace<'a> {
    payload: Option<&'a Value>,
    geo: &'a GeoSettings,
    geoip: Option<&'a GeoIp>,
    cell: std::cell::OnceCell<Place>,
}

impl<'a> LazyPlace<'a> {
    /// Nothing worked out yet.
    pub fn new(payload: Option<&'a Value>, geo: &'a GeoSettings, geoip: Option<&'a GeoIp>) -> Self {
        LazyPlace {
            payload,
            geo,
            geoip,
            cell: std::cell::OnceCell::new(),
        }
    }

    /// The place, when a condition asked for it.
    pub fn computed(&self) -> Option<&Place> {
        self.cell.get()
    }

    fn get(&self) -> &Place {
        self.cell.get_or_init(|| place(self.payload, self.geo, self.geoip))
    }
}

impl Whereabouts for LazyPlace<'_> {
    fn country(&self) -> Option<&str> {
        self.get().country.as_ref().map(CodeFact::lower)
    }

    fn continent(&self) -> Option<&str> {
        self.get().continent.as_ref().map(CodeFact::lower)
    }

    fn point(&self) -> Option<LatLon> {
        self.get().located.location.map(|l| l.point)
    }
}

/// A coordinate: a JSON number, or a string holding one.
fn number(v: &Value) -> Option<f64> {
    let x = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    x.is_finite().then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::condition::JsonPath;
    use serde_json::json;

    fn settings() -> GeoSettings {
        GeoSettings {
            tie_band_km: 50.0,
            hysteresis_km: 200.0,
            max_accuracy_km: 1000.0,
            lat_path: JsonPath::builtin("location.lat"),
            lon_path: JsonPath::builtin("location.lon"),
            ip_path: JsonPath::builtin("ip"),
            region_path: JsonPath::builtin("region"),
            country_path: JsonPath::builtin("country"),
            continent_path: JsonPath::builtin("continent"),
        }
    }

    #[test]
    fn coordinates_win_and_may_be_numeric_strings() {
        let l = locate(
            Some(&json!({"location": {"lat": "52.3", "lon": 4.9}, "region": "eastus"})),
            &settings(),
            None,
        );
        let loc = l.location.expect("located");
        assert_eq!(
            (loc.source, loc.point),
            (LocationSource::Coordinates, LatLon { lat: 52.3, lon: 4.9 })
        );
    }

    #[test]
    fn invalid_coordinates_fall_through_to_the_next_source() {
        for bad in [
            json!({"lat": 91, "lon": 0}),
            json!({"lat": "x", "lon": 0}),
            json!({"lat": 1}),
            json!({"lat": null, "lon": []}),
        ] {
            let l = locate(Some(&json!({"location": bad, "region": "uksouth"})), &settings(), None);
            assert_eq!(l.location.map(|x| x.source), Some(LocationSource::Region), "{bad}");
            assert_eq!(l.misses, vec![Unknown::InvalidCoordinates]);
        }
    }

    #[test]
    fn an_ip_without_a_database_is_unknown_and_says_so() {
        let l = locate(Some(&json!({"ip": "192.0.2.1"})), &settings(), None);
        assert_eq!((l.location, l.why_unknown()), (None, Unknown::NoGeoIpDatabase));
        let l = locate(Some(&json!({"ip": "not-an-ip"})), &settings(), None);
        assert_eq!(l.why_unknown(), Unknown::InvalidIp);
        let l = locate(Some(&json!({"ip": 42})), &settings(), None);
        assert_eq!(l.why_unknown(), Unknown::InvalidIp);
    }

    #[test]
    fn regions_resolve_and_nothing_reported_is_unknown() {
        let l = locate(Some(&json!({"region": "JapanEast"})), &settings(), None);
        assert_eq!(l.location.map(|x| x.source), Some(LocationSource::Region));
        let l = locate(Some(&json!({"region": "atlantis"})), &settings(), None);
        assert_eq!(l.why_unknown(), Unknown::UnknownRegion);
        assert_eq!(
            locate(Some(&json!({"model": "x"})), &settings(), None).why_unknown(),
            Unknown::NotReported
        );
        assert_eq!(locate(None, &settings(), None).why_unknown(), Unknown::NotReported);
    }
}
