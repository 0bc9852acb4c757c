//! A tiny seeded pseudo-random generator (SplitMix64), so a simulation run is reproducible
//! from its seed without a dependency. Not for anything secret.

/// The SplitMix64 finaliser: a good 64-bit mixing function (Steele, Lea and Flood, 2014).
pub const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64: 8 bytes of state, one addition and one [`mix`] per number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The generator for `seed`; equal seeds give equal sequences.
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// An independent stream for one use (`stream`) of one run (`seed`): hosts and purposes
    /// get their own streams, so one host's draws never shift another's.
    pub const fn stream(seed: u64, stream: u64) -> SplitMix64 {
        SplitMix64::new(mix(seed ^ mix(stream.wrapping_add(0x9E37_79B9_7F4A_7C15))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// A number in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p` (draws nothing when `p` is 0 or less, so a plan without
    /// random failures leaves the stream untouched).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // The first outputs of the reference C implementation for seed 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn equal_seeds_give_equal_sequences_and_streams_differ() {
        let a: Vec<u64> = (0..100).scan(SplitMix64::stream(7, 3), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..100).scan(SplitMix64::stream(7, 3), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..100).scan(SplitMix64::stream(7, 4), |r, _| Some(r.next_u64())).collect();
        let d: Vec<u64> = (0..100).scan(SplitMix64::stream(8, 3), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn floats_stay_in_the_unit_interval_and_chance_follows_p() {
        let mut r = SplitMix64::new(42);
        let mut hits = 0;
        for _ in 0..100_000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x), "{x}");
            hits += r.chance(0.25) as u32;
        }
        assert!((24_000..26_000).contains(&hits), "{hits} hits for p = 0.25");
        let before = r.clone();
        assert!(!r.chance(0.0));
        assert_eq!(r, before, "p = 0 draws nothing");
    }
}
