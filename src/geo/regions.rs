//! The built-in Azure region table: region name to datacentre coordinates.
//!
//! Hubs name their `region`; the policy compiler resolves it here (unknown names are load errors with a
//! suggestion), and the geo-latency strategy measures great-circle distances from these coordinates.
//! Generated from the project's reference list of Azure regions; `tests` cross-check it when the reference
//! file is available.

/// One Azure region with the coordinates of its datacentre area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// The programmatic region name, as `az account list-locations` prints it.
    pub name: &'static str,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Where the datacentres are, for people.
    pub physical_location: &'static str,
}

const fn r(name: &'static str, lat: f64, lon: f64, physical_location: &'static str) -> Region {
    Region {
        name,
        lat,
        lon,
        physical_location,
    }
}

/// Every region the project knows, in the reference list's order.
pub static REGIONS: &[Region] = &[
    r("eastus", 37.3719, -79.8164, "Virginia"),
    r("eastus2", 36.6681, -78.3889, "Virginia"),
    r("centralus", 41.5908, -93.6208, "Iowa"),
    r("northcentralus", 41.8819, -87.6278, "Illinois"),
    r("southcentralus", 29.4167, -98.5, "Texas"),
    r("westcentralus", 40.890, -110.234, "Wyoming"),
    r("westus", 37.783, -122.417, "California"),
    r("westus2", 47.233, -119.852, "Washington"),
    r("westus3", 33.448376, -112.074036, "Phoenix"),
    r("canadacentral", 43.653, -79.383, "Toronto"),
    r("canadaeast", 46.817, -71.217, "Quebec City"),
    r("brazilsouth", -23.55, -46.633, "Sao Paulo"),
    r("brazilsoutheast", -22.90278, -43.2075, "Rio de Janeiro"),
    r("northeurope", 53.3478, -6.2597, "Ireland"),
    r("westeurope", 52.3667, 4.9, "Netherlands"),
    r("uksouth", 50.941, -0.799, "London"),
    r("ukwest", 53.427, -3.084, "Cardiff"),
    r("francecentral", 46.3772, 2.373, "Paris"),
    r("francesouth", 43.8345, 2.1972, "Marseille"),
    r("germanywestcentral", 50.110924, 8.682127, "Frankfurt"),
    r("germanynorth", 53.073635, 8.806422, "Berlin"),
    r("switzerlandnorth", 47.451542, 8.564572, "Zurich"),
    r("switzerlandwest", 46.204391, 6.143158, "Geneva"),
    r("norwayeast", 59.913868, 10.752245, "Oslo"),
    r("norwaywest", 58.969975, 5.733107, "Stavanger"),
    r("swedencentral", 60.67488, 17.14127, "Gavle"),
    r("polandcentral", 52.23334, 21.01666, "Warsaw"),
    r("italynorth", 45.46888, 9.18109, "Milan"),
    r("israelcentral", 32.070186, 34.71708, "Israel"),
    r("qatarcentral", 25.551462, 51.439327, "Doha"),
    r("uaenorth", 25.266666, 55.316666, "Dubai"),
    r("uaecentral", 24.466667, 54.366669, "Abu Dhabi"),
    r("southafricanorth", -25.73134, 28.21837, "Johannesburg"),
    r("southafricawest", -34.075691, 18.843266, "Cape Town"),
    r("centralindia", 18.5822, 73.9197, "Pune"),
    r("southindia", 12.9822, 80.1636, "Chennai"),
    r("westindia", 19.088, 72.868, "Mumbai"),
    r("jioindiawest", 22.470701, 70.05773, "Jamnagar"),
    r("jioindiacentral", 21.146633, 79.08886, "Nagpur"),
    r("eastasia", 22.267, 114.188, "Hong Kong"),
    r("southeastasia", 1.283, 103.833, "Singapore"),
    r("japaneast", 35.68, 139.77, "Tokyo"),
    r("japanwest", 34.6939, 135.5022, "Osaka"),
    r("koreacentral", 37.5665, 126.978, "Seoul"),
    r("koreasouth", 35.1796, 129.0756, "Busan"),
    r("australiaeast", -33.86, 151.2094, "New South Wales"),
    r("australiasoutheast", -37.8136, 144.9631, "Victoria"),
    r("australiacentral", -35.3075, 149.1244, "Canberra"),
    r("australiacentral2", -35.3075, 149.1244, "Canberra"),
];

/// Looks a region up by name, ignoring ASCII case.
pub fn find(name: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.name.eq_ignore_ascii_case(name))
}

/// The known region whose name is closest to `name`, for "did you mean" hints.
pub fn suggest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    REGIONS
        .iter()
        .map(|r| (strsim::levenshtein(&lower, r.name), r.name))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_found_ignoring_case() {
        let r = find("WestEurope").expect("westeurope is known");
        assert_eq!(r.name, "westeurope");
        assert!((r.lat - 52.3667).abs() < 1e-9);
        assert!(find("westeurop").is_none());
    }

    #[test]
    fn a_misspelt_region_gets_a_suggestion() {
        assert_eq!(suggest("westeurop"), Some("westeurope"));
        assert_eq!(suggest("uk-south"), Some("uksouth"));
        assert_eq!(suggest("mars"), None);
    }

    #[test]
    fn region_names_are_unique_lowercase_and_coordinates_valid() {
        let mut seen = std::collections::HashSet::new();
        for r in REGIONS {
            assert!(seen.insert(r.name), "duplicate {}", r.name);
            assert_eq!(r.name, r.name.to_ascii_lowercase());
            assert!((-90.0..=90.0).contains(&r.lat) && (-180.0..=180.0).contains(&r.lon));
        }
    }

    /// The table was generated from the shared reference list; when that list is beside the repository,
    /// check nothing drifted. Without it (a clean machine) there is nothing to compare against.
    #[test]
    fn table_matches_the_reference_list_when_present() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/azure-regions.csv");
        let Ok(csv) = std::fs::read_to_string(&path) else {
            return;
        };
        let rows: Vec<&str> = csv.lines().skip(1).filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(rows.len(), REGIONS.len());
        for (row, region) in rows.iter().zip(REGIONS) {
            let f: Vec<&str> = row.split(',').collect();
            assert_eq!(f[0], region.name);
            assert_eq!(f[1].parse::<f64>().ok(), Some(region.lat), "{}", region.name);
            assert_eq!(f[2].parse::<f64>().ok(), Some(region.lon), "{}", region.name);
            assert_eq!(f[3], region.physical_location);
        }
    }
}
