//! Weighted rendezvous hashing (highest random weight with weights, "logarithmic method").
//!
//! Each candidate scores `-weight / ln(u)` with `u` the pinned hash of (seed, host, registration id) in
//! (0, 1); the highest score wins, ties go to the lexically smaller host. A hub of weight `w` wins a
//! `w / W` share of devices; adding a hub moves only the devices it now wins, and removing one moves
//! only its own devices, because no other candidate's score changes.

use crate::hashing::{pair_hash, unit_interval};

/// One hub in the draw.
#[derive(Debug, Clone, Copy)]
pub struct Entrant<'h> {
    /// The host's rendezvous key under the policy seed.
    pub key: u64,
    /// 1..=1000.
    pub weight: u32,
    /// Host name, for the tie-break.
    pub host: &'h str,
}

/// The score of one hub for one device.
#[inline]
pub fn score(host_key: u64, weight: u32, device_key: u64) -> f64 {
    let u = unit_interval(pair_hash(host_key, device_key));
    -f64::from(weight) / u.ln()
}

/// The index of the winning entrant, or `None` when there are none.
///
/// Exact, with a shortcut: since `-ln(u) >= 1 - u` on (0, 1), a score is at most `weight / (1 - u)`; an
/// entrant whose bound is below the best score so far cannot win, so its logarithm is never taken.
pub fn choose<'h>(entrants: impl IntoIterator<Item = Entrant<'h>>, device_key: u64) -> Option<usize> {
    let mut best: Option<(usize, f64, &'h str)> = None;
    for (i, e) in entrants.into_iter().enumerate() {
        let u = unit_interval(pair_hash(e.key, device_key));
        let w = f64::from(e.weight);
        if let Some((_, bs, _)) = best
            && w / (1.0 - u) < bs
        {
            continue;
        }
        let s = -w / u.ln();
        best = match best {
            None => Some((i, s, e.host)),
            Some((_, bs, bh)) if s > bs || (s == bs && host_before(e.host, bh)) => Some((i, s, e.host)),
            keep => keep,
        };
    }
    best.map(|(i, _, _)| i)
}

fn host_before(a: &str, b: &str) -> bool {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .lt(b.bytes().map(|c| c.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::SeedKey;
    use proptest::prelude::*;

    fn hubs(seed: SeedKey, weights: &[u32]) -> Vec<(String, u64, u32)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let host = format!("hub-{i}.azure-devices.net");
                let key = seed.host_key(&host);
                (host, key, w)
            })
            .collect()
    }

    fn pick(h: &[(String, u64, u32)], device_key: u64) -> usize {
        let entrants: Vec<Entrant<'_>> = h
            .iter()
            .map(|(host, key, w)| Entrant {
                key: *key,
                weight: *w,
                host,
            })
            .collect();
        choose(entrants, device_key).expect("non-empty")
    }

    /// Golden placements: these devices must land on these hubs for ever, whatever the toolchain.
    #[test]
    fn golden_placements_never_change() {
        let seed = SeedKey::new("fleet-2026");
        let h = hubs(seed, &[1, 1, 2, 4, 2]);
        let got: Vec<usize> = (0..16)
            .map(|i| pick(&h, seed.device_key(&format!("device-{i:04}"))))
            .collect();
        assert_eq!(got, vec![4, 1, 4, 1, 2, 2, 1, 4, 0, 3, 0, 3, 2, 1, 0, 2]);
    }

    #[test]
    fn shares_follow_weights_within_one_and_a_half_points() {
        let seed = SeedKey::new("shares");
        let weights = [1, 1, 2, 4, 2];
        let total: u32 = weights.iter().sum();
        let h = hubs(seed, &weights);
        let n = 20_000;
        let mut counts = [0usize; 5];
        for i in 0..n {
            counts[pick(&h, seed.device_key(&format!("sim-device-{i}")))] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let share = counts[i] as f64 / n as f64;
            let want = f64::from(w) / f64::from(total);
            assert!(
                (share - want).abs() < 0.015,
                "hub {i}: share {share:.4}, want {want:.4}"
            );
        }
    }

    #[test]
    fn adding_a_hub_moves_its_share_and_only_onto_it() {
        let seed = SeedKey::new("shares");
        let before = hubs(seed, &[1, 1, 2, 4, 2]);
        let after = hubs(seed, &[1, 1, 2, 4, 2, 2]);
        let n = 20_000;
        let mut moved = 0;
        for i in 0..n {
            let d = seed.device_key(&format!("sim-device-{i}"));
            let (a, b) = (pick(&before, d), pick(&after, d));
            if a != b {
                assert_eq!(b, 5, "a device moved between two old hubs");
                moved += 1;
            }
        }
        let frac = f64::from(moved) / f64::from(n);
        assert!(
            (frac - 2.0 / 12.0).abs() < 0.015,
            "moved {frac:.4}, want {:.4}",
            2.0 / 12.0
        );
    }

    proptest! {
        /// The shortcut never changes the winner: compare with the plain maximum of every score.
        #[test]
        fn the_pruned_choice_equals_the_full_maximum(
            weights in proptest::collection::vec(1u32..=1000, 1..60),
            device in any::<u64>(),
        ) {
            let seed = SeedKey::new("prune");
            let h = hubs(seed, &weights);
            let full = h
                .iter()
                .enumerate()
                .map(|(i, (_, key, w))| (i, score(*key, *w, device)))
                .fold(None::<(usize, f64)>, |best, (i, s)| match best {
                    Some((_, bs)) if bs >= s => best,
                    _ => Some((i, s)),
                })
                .map(|(i, _)| i);
            prop_assert_eq!(choose(h.iter().map(|(host, key, w)| Entrant { key: *key, weight: *w, host }), device), full);
        }
    }

    #[test]
    fn ties_go_to_the_smaller_host() {
        let e = [
            Entrant {
                key: 7,
                weight: 1,
                host: "b",
            },
            Entrant {
                key: 7,
                weight: 1,
                host: "A",
            },
        ];
        assert_eq!(choose(e, 1), Some(1));
        assert_eq!(choose([], 1), None);
    }

    proptest! {
        #[test]
        fn removing_a_hub_moves_only_its_devices(
            weights in proptest::collection::vec(1u32..=1000, 2..12),
            removed in 0usize..12,
            devices in proptest::collection::vec("[a-z0-9-]{1,40}", 1..200),
        ) {
            let seed = SeedKey::new("prop");
            let all = hubs(seed, &weights);
            let removed = removed % all.len();
            let mut fewer = all.clone();
            fewer.remove(removed);
            for d in &devices {
                let k = seed.device_key(d);
                let a = pick(&all, k);
                let b = pick(&fewer, k);
                if a != removed {
                    prop_assert_eq!(&all[a].0, &fewer[b].0);
                }
            }
        }

        #[test]
        fn adding_a_hub_moves_devices_only_onto_it(
            weights in proptest::collection::vec(1u32..=1000, 1..12),
            new_weight in 1u32..=1000,
            devices in proptest::collection::vec("[A-Za-z0-9._:-]{1,64}", 1..200),
        ) {
            let seed = SeedKey::new("prop");
            let old = hubs(seed, &weights);
            let mut more = old.clone();
            let host = "new-hub.azure-devices.net".to_owned();
            more.push((host.clone(), seed.host_key(&host), new_weight));
            for d in &devices {
                let k = seed.device_key(d);
                let (a, b) = (pick(&old, k), pick(&more, k));
                prop_assert!(a == b || b == more.len() - 1);
            }
        }

        #[test]
        fn the_registration_id_hashes_case_insensitively(id in "[A-Za-z0-9._:-]{1,128}") {
            let seed = SeedKey::new("prop");
            let h = hubs(seed, &[3, 1, 4, 1, 5]);
            prop_assert_eq!(pick(&h, seed.device_key(&id)), pick(&h, seed.device_key(&id.to_ascii_uppercase())));
        }
    }
}
