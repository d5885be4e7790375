//! Geo-fences: GeoJSON areas (RFC 7946: Polygon, MultiPolygon, or a Feature or FeatureCollection of them,
//! positions in longitude, latitude order) a device's coordinates are tested against.
//!
//! A fence is validated when the policy loads (every ring closed, at least four positions, coordinates in
//! range; a mistake names the file and the feature, polygon and ring) and prepared once per revision: the
//! `geo` crate's polygons, oriented so that holes wind against their shells, a bounding box checked first,
//! and an interval tree over the edges (`geo::indexed::IntervalTreeMultiPolygon`), so a point is tested
//! against the few edges at its latitude instead of every vertex: microseconds for a fence of 100,000
//! vertices (docs/benchmarks.md). A point on a border counts as outside.

use geo::orient::{Direction, Orient};
use geo::{BoundingRect, Contains, Coord, LineString, MultiPolygon, Point, Polygon, Rect};
use geojson::{GeoJson, Geometry, GeometryValue, Position};

use super::LatLon;

/// A prepared fence.
pub struct Fence {
    /// Its path, relative to the policy directory, as the policy names it.
    pub name: String,
    /// How many positions its rings hold.
    pub vertices: usize,
    /// How many polygons.
    pub polygons: usize,
    bbox: Option<Rect<f64>>,
    index: geo::indexed::IntervalTreeMultiPolygon<f64>,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("name", &self.name)
            .field("polygons", &self.polygons)
            .field("vertices", &self.vertices)
            .finish()
    }
}

/// Why a fence file was refused: the message, and the line and column in the file when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceError {
    /// What is wrong.
    pub message: String,
    /// 1-based line and column, for JSON syntax errors.
    pub position: Option<(usize, usize)>,
}

impl FenceError {
    fn at(message: impl Into<String>) -> Self {
        FenceError {
            message: message.into(),
            position: None,
        }
    }
}

impl Fence {
    /// Parses, validates and prepares a fence file's text.
    pub fn parse(name: &str, text: &str) -> Result<Fence, FenceError> {
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| FenceError {
            message: format!("not valid JSON: {}", strip_position(&e.to_string())),
            position: Some((e.line(), e.column())),
        })?;
        let doc: GeoJson = serde_json::from_value(json).map_err(|e| FenceError::at(format!("not GeoJSON: {e}")))?;
        let mut polygons = Vec::new();
        match doc {
            GeoJson::Geometry(g) => collect(&g, "the geometry", &mut polygons)?,
            GeoJson::Feature(f) => match &f.geometry {
                Some(g) => collect(g, "the feature", &mut polygons)?,
                None => return Err(FenceError::at("the feature has no geometry")),
            },
            GeoJson::FeatureCollection(fc) => {
                for (i, f) in fc.features.iter().enumerate() {
                    match &f.geometry {
                        Some(g) => collect(g, &format!("feature {i}"), &mut polygons)?,
                        None => return Err(FenceError::at(format!("feature {i} has no geometry"))),
                    }
                }
            }
        }
        if polygons.is_empty() {
            return Err(FenceError::at("no polygon in the file"));
        }
        let vertices = polygons
            .iter()
            .map(|p: &Polygon<f64>| p.exterior().0.len() + p.interiors().iter().map(|r| r.0.len()).sum::<usize>())
            .sum();
        // Holes must wind against their shells for the interval tree's winding count.
        let shape = MultiPolygon(polygons).orient(Direction::Default);
        Ok(Fence {
            name: name.to_owned(),
            vertices,
            polygons: shape.0.len(),
            bbox: shape.bounding_rect(),
            index: geo::indexed::IntervalTreeMultiPolygon::new(&shape),
        })
    }

    /// Whether the point lies inside (a point on a border does not).
    pub fn contains(&self, at: LatLon) -> bool {
        let c = Coord { x: at.lon, y: at.lat };
        match self.bbox {
            Some(b) if c.x < b.min().x || c.x > b.max().x || c.y < b.min().y || c.y > b.max().y => false,
            Some(_) => self.index.contains(&Point(c)),
            None => false,
        }
    }
}

/// The polygons of a geometry (Polygon or MultiPolygon; anything else is refused).
fn collect(g: &Geometry, what: &str, out: &mut Vec<Polygon<f64>>) -> Result<(), FenceError> {
    match &g.value {
        GeometryValue::Polygon { coordinates } => out.push(polygon(coordinates, what)?),
        GeometryValue::MultiPolygon { coordinates } => {
            for (i, p) in coordinates.iter().enumerate() {
                out.push(polygon(p, &format!("{what}, polygon {i}"))?);
            }
        }
        other => {
            return Err(FenceError::at(format!(
                "{what} is a {}: a fence is a Polygon or MultiPolygon",
                other.type_name()
            )));
        }
    }
    Ok(())
}

fn polygon(rings: &[Vec<Position>], what: &str) -> Result<Polygon<f64>, FenceError> {
    let mut rings = rings
        .iter()
        .enumerate()
        .map(|(i, r)| ring(r, &format!("{what}, ring {i}")));
    let exterior = rings
        .next()
        .ok_or_else(|| FenceError::at(format!("{what} has no ring")))??;
    let interiors = rings.collect::<Result<Vec<_>, _>>()?;
    Ok(Polygon::new(exterior, interiors))
}

fn ring(positions: &[Position], what: &str) -> Result<LineString<f64>, FenceError> {
    if positions.len() < 4 {
        return Err(FenceError::at(format!(
            "{what} has {} positions: a ring needs at least four (RFC 7946 3.1.6)",
            positions.len()
        )));
    }
    let mut coords = Vec::with_capacity(positions.len());
    for (i, p) in positions.iter().enumerate() {
        let &[lon, lat, ..] = p.as_slice() else {
            return Err(FenceError::at(format!(
                "{what}, position {i}: needs longitude and latitude"
            )));
        };
        if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
            return Err(FenceError::at(format!(
                "{what}, position {i}: [{lon}, {lat}] is out of range (longitude first, -180..180; latitude -90..90)"
            )));
        }
        coords.push(Coord { x: lon, y: lat });
    }
    if coords.first() != coords.last() {
        return Err(FenceError::at(format!(
            "{what} is not closed: its last position must repeat its first"
        )));
    }
    Ok(LineString(coords))
}

/// serde_json appends " at line L column C"; the position is reported on its own.
fn strip_position(msg: &str) -> &str {
    msg.rfind(" at line ").map_or(msg, |i| &msg[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARE_WITH_HOLE: &str = r#"{"type": "Polygon", "coordinates": [
        [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
        [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
    ]}"#;

    fn at(lat: f64, lon: f64) -> LatLon {
        LatLon { lat, lon }
    }

    #[test]
    fn points_inside_outside_and_in_a_hole() {
        let f = Fence::parse("square.geojson", SQUARE_WITH_HOLE).expect("valid");
        assert_eq!((f.polygons, f.vertices), (1, 10));
        assert!(f.contains(at(1.0, 1.0)));
        assert!(!f.contains(at(5.0, 5.0)), "inside the hole");
        assert!(!f.contains(at(11.0, 5.0)));
        assert!(!f.contains(at(-1.0, 5.0)));
    }

    #[test]
    fn a_hole_wound_like_its_shell_is_still_a_hole() {
        // Both rings counter-clockwise: the interval tree's winding count needs the orientation fixed.
        let same = r#"{"type": "Polygon", "coordinates": [
            [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
            [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
        ]}"#;
        let reversed = r#"{"type": "Polygon", "coordinates": [
            [[0, 0], [0, 10], [10, 10], [10, 0], [0, 0]],
            [[4, 4], [4, 6], [6, 6], [6, 4], [4, 4]]
        ]}"#;
        for text in [same, reversed] {
            let f = Fence::parse("f", text).expect("valid");
            assert!(!f.contains(at(5.0, 5.0)));
            assert!(f.contains(at(2.0, 2.0)));
        }
    }

    #[test]
    fn features_and_collections_of_polygons_are_fences() {
        let fc = format!(
            r#"{{"type": "FeatureCollection", "features": [
                {{"type": "Feature", "properties": {{"A3": "SQR"}}, "geometry": {SQUARE_WITH_HOLE}}},
                {{"type": "Feature", "properties": null, "geometry": {{"type": "MultiPolygon", "coordinates": [
                    [[[20, 20], [30, 20], [30, 30], [20, 20]]]]}}}}
            ]}}"#
        );
        let f = Fence::parse("fc", &fc).expect("valid");
        assert_eq!(f.polygons, 2);
        assert!(f.contains(at(22.0, 28.0)));
        assert!(!f.contains(at(28.0, 22.0)));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("{\"type\": \"Polygon\",\n \"coordinates\": [}", "not valid JSON"),
            (
                r#"{"type": "Point", "coordinates": [1, 2]}"#,
                "a Point: a fence is a Polygon or MultiPolygon",
            ),
            (
                r#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}"#,
                "ring 0 has 3 positions",
            ),
            (
                r#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}"#,
                "ring 0 is not closed",
            ),
            (
                r#"{"type": "Polygon", "coordinates": [[[0, 0], [1, 95], [1, 1], [0, 0]]]}"#,
                "position 1: [1, 95] is out of range",
            ),
            (
                r#"{"type": "Feature", "properties": {}, "geometry": null}"#,
                "the feature has no geometry",
            ),
        ];
        for (text, want) in cases {
            let e = Fence::parse("f", text).expect_err(text);
            assert!(e.message.contains(want), "{text}: {}", e.message);
        }
        let e = Fence::parse("f", "{\"type\": \"Polygon\",\n \"coordinates\": [}").expect_err("syntax");
        assert_eq!(e.position, Some((2, 18)));
    }
}
