//! The simulator's only source of randomness: one seeded generator per run
//! (`rand_xorshift`, whose output for a seed is fixed by its specification, so a seed replays
//! the same run on any machine and version of this crate's dependencies).

use rand_core::{Rng as _, SeedableRng};
use rand_xorshift::XorShiftRng;

/// A seeded generator with the few distributions the models need.
#[derive(Debug, Clone)]
pub struct Rng(XorShiftRng);

impl Rng {
    /// The generator of `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(XorShiftRng::seed_from_u64(seed))
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        // 53 random bits: every f64 in [0, 1) with that spacing.
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Exponentially distributed with this mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        if mean <= 0.0 {
            return 0.0;
        }
        -mean * (1.0 - self.unit()).ln()
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_and_two_seeds_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(5).0.next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = Rng::new(5);
        let mut y = Rng::new(6);
        assert_ne!(x.unit(), y.unit());
    }

    #[test]
    fn distributions_stay_in_range() {
        let mut r = Rng::new(1);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(7) < 7);
            sum += r.exp(2.0);
        }
        let mean = sum / 10_000.0;
        assert!((1.8..2.2).contains(&mean), "mean {mean}");
    }
}
