//! Spot-check sampling: which op executions to check, reproducibly from a
//! seed, and how likely a cheating node is to get through.

use std::collections::BTreeSet;

use lockstep_tensor::SplitMix64;

/// How many of `n` leaves a fraction samples: ⌈fraction·n⌉, at least one
/// (of a non-empty trace), at most `n`.
pub fn sample_size(n: u64, fraction: f64) -> u64 {
    if n == 0 {
        return 0;
    }
    let k = (fraction.clamp(0.0, 1.0) * n as f64).ceil() as u64;
    k.clamp(1, n)
}

/// [`sample_size`] distinct leaf indices of `0..n`, sorted, chosen from
/// `seed` with Floyd's algorithm (the same seed gives the same sample on
/// any machine).
pub fn sample(n: u64, fraction: f64, seed: u64) -> Vec<u64> {
    let k = sample_size(n, fraction);
    let mut rng = SplitMix64::new(seed);
    let mut chosen = BTreeSet::new();
    for j in n - k..n {
        let t = rng.below(j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen.into_iter().collect()
}

/// The exact probability that a sample of `k` distinct leaves out of `n`
/// misses all `bad` wrong ones (hypergeometric):
/// C(n−bad, k) / C(n, k) = Π_{i<k} (n−bad−i)/(n−i).
pub fn escape_probability(n: u64, bad: u64, k: u64) -> f64 {
    if bad > n || k > n {
        return 0.0;
    }
    if k > n - bad {
        return 0.0;
    }
    (0..k).fold(1.0, |p, i| p * (n - bad - i) as f64 / (n - i) as f64)
}

/// The bound (1−f)^k, which the exact figure never exceeds: sampling
/// without replacement only helps the checker.
pub fn escape_bound(f: f64, k: u64) -> f64 {
    (1.0 - f.clamp(0.0, 1.0)).powf(k as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_distinct_sorted_sized_and_reproducible() {
        for n in [1u64, 2, 10, 97, 2136] {
            for f in [0.0, 0.01, 0.1, 0.5, 1.0] {
                let s = sample(n, f, 42);
                assert_eq!(s.len() as u64, sample_size(n, f));
                assert!(s.windows(2).all(|w| w[0] < w[1]));
                assert!(s.iter().all(|&i| i < n));
                assert_eq!(s, sample(n, f, 42));
            }
        }
        assert_eq!(sample_size(2136, 0.1), 214);
        assert_ne!(sample(2136, 0.1, 1), sample(2136, 0.1, 2));
    }

    #[test]
    fn escape_probabilities() {
        // One bad op of ten, one sampled: 9/10.
        assert!((escape_probability(10, 1, 1) - 0.9).abs() < 1e-12);
        // Two of four bad, two sampled: C(2,2)/C(4,2) = 1/6.
        assert!((escape_probability(4, 2, 2) - 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(escape_probability(10, 10, 1), 0.0);
        assert_eq!(escape_probability(10, 0, 5), 1.0);
        for (n, bad, k) in [(100u64, 10u64, 10u64), (2136, 214, 214), (2136, 1, 214)] {
            let exact = escape_probability(n, bad, k);
            assert!(exact <= escape_bound(bad as f64 / n as f64, k) + 1e-15);
        }
    }
}
