//! The seeded shuffle behind [`DataLoader::shuffle`](crate::DataLoader::shuffle).
//!
//! The order of an epoch is a pure function of `(seed, epoch, n)`, computed with no global
//! state, so a run can be repeated exactly and a resumed run can jump straight to epoch `e`:
//!
//! 1. the generator is [SplitMix64](https://prng.di.unimi.it/splitmix64.c) (Steele, Lea and
//!    Flood), started at `mix(seed) XOR (epoch * 0xD1B54A32D192ED03)`, where `mix` is the
//!    SplitMix64 output function; the multiplication by an odd constant is a bijection, so
//!    every epoch of a seed starts from a different state;
//! 2. the permutation is a Fisher–Yates shuffle of `0..n`: for `i` from `n-1` down to 1, swap
//!    element `i` with element `j`, where `j` is uniform in `0..=i`;
//! 3. uniform integers come from Lemire's multiply-and-shift method with rejection, so they
//!    carry no modulo bias.
//!
//! The sequence is part of the crate's contract: it does not change between versions.
//!
//! ```
//! use tandem_data::shuffle::permutation;
//! let p = permutation(10, 42, 0);
//! assert_eq!(p, permutation(10, 42, 0));
//! assert_ne!(p, permutation(10, 42, 1));
//! let mut sorted = p.clone();
//! sorted.sort();
//! assert_eq!(sorted, (0..10).collect::<Vec<_>>());
//! ```

/// The increment of SplitMix64's state (the golden ratio in 64-bit fixed point).
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The odd constant that spreads epoch numbers over the state space.
const EPOCH_MULTIPLIER: u64 = 0xD1B5_4A32_D192_ED03;

/// SplitMix64's output function: a bijective mix of 64 bits.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small, fast, seedable generator (SplitMix64). Not for cryptography.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The generator used for one epoch of a seeded shuffle.
    pub fn for_epoch(seed: u64, epoch: u64) -> SplitMix64 {
        SplitMix64::new(mix(seed) ^ epoch.wrapping_mul(EPOCH_MULTIPLIER))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// A uniform integer in `0..n` (0 when `n` is 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut wide = u128::from(self.next_u64()) * u128::from(n);
        if (wide as u64) < n {
            // Reject the few low values that would make some results more likely.
            let threshold = n.wrapping_neg() % n;
            while (wide as u64) < threshold {
                wide = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (wide >> 64) as u64
    }
}

/// Shuffles `items` in place with a Fisher–Yates shuffle driven by `rng`.
pub fn shuffle_in_place<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// The permutation of `0..n` used for epoch `epoch` of a loader shuffled with `seed`.
pub fn permutation(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::for_epoch(seed, epoch as u64);
    shuffle_in_place(&mut order, &mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs of the reference C implementation seeded with 1234567.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut r = SplitMix64::new(3);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            let v = r.below(7) as usize;
            counts[v] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
    }

    #[test]
    fn permutations_cover_and_differ() {
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let p = permutation(n, 9, 4);
            let mut s = p.clone();
            s.sort_unstable();
            assert_eq!(s, (0..n).collect::<Vec<_>>());
        }
        assert_ne!(permutation(100, 1, 0), permutation(100, 1, 1));
        assert_ne!(permutation(100, 1, 0), permutation(100, 2, 0));
        assert_eq!(permutation(100, 1, 5), permutation(100, 1, 5));
    }

    #[test]
    fn every_position_is_reachable() {
        // Each of the 6 orders of 3 elements shows up with about equal frequency.
        let mut seen = std::collections::HashMap::new();
        for epoch in 0..6000 {
            *seen.entry(permutation(3, 11, epoch)).or_insert(0usize) += 1;
        }
        assert_eq!(seen.len(), 6);
        for &c in seen.values() {
            assert!((800..1200).contains(&c), "{seen:?}");
        }
    }
}
