//! Geo: where a device is, and how far each hub is from it.
//!
//! [`geoip`] opens and checks a MaxMind City database and looks IPs up through a cache that belongs to
//! that database (so a new database can never be answered from an old one's cache). [`regions`] is the
//! built-in table of Azure regions and their coordinates. [`LatLon`] is a point, and
//! [`distance_km`] is the great-circle distance the geo-latency strategy ranks hubs by. [`fence`] holds the
//! GeoJSON areas `location = { within = ... }` conditions test points against. [`mmdb`] writes
//! small MaxMind databases for tests, benchmarks and demos.

pub mod fence;
pub mod geoip;
pub mod mmdb;
pub mod regions;

pub use fence::{Fence, FenceError};
pub use geoip::{GeoIp, GeoIpError, GeoIpStats, IpLookup};

/// Coordinates in degrees.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatLon {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

/// Great-circle (haversine) distance in kilometres: the `geo` crate's `Haversine`, on a sphere of the
/// Earth's mean radius (IUGG, 6,371.0088 km).
pub fn distance_km(a: LatLon, b: LatLon) -> f64 {
    use geo::{Distance, Haversine, Point};
    Haversine.distance(Point::new(a.lon, a.lat), Point::new(b.lon, b.lat)) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_match_known_great_circles() {
        let london = LatLon {
            lat: 51.5074,
            lon: -0.1278,
        };
        let paris = LatLon {
            lat: 48.8566,
            lon: 2.3522,
        };
        let d = distance_km(london, paris);
        assert!((d - 343.5).abs() < 2.0, "{d}");
        assert!(distance_km(london, london).abs() < 1e-9);
        let antipode = LatLon {
            lat: -51.5074,
            lon: 179.8722,
        };
        assert!((distance_km(london, antipode) - 20_015.0).abs() < 20.0);
    }
}
