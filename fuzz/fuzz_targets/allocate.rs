//! The request parser and the decision engine: any bytes as an AllocationRequest body, against the shipped
//! policy and against the geo fixture policy with a GeoIP database. The first byte picks the policy.
#![no_main]

mod common;

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static SHIPPED: LazyLock<dps_allocator::policy::Revision> = LazyLock::new(common::shipped);
static GEO: LazyLock<(dps_allocator::policy::Revision, dps_allocator::geo::geoip::GeoIp)> = LazyLock::new(common::geo);

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    if pick & 1 == 0 {
        common::check(body, &SHIPPED, None);
    } else {
        common::check(body, &GEO.0, Some(&GEO.1));
    }
});
