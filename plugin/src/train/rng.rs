//! Counter-based randomness: every random draw of a run comes from a generator derived from
//! (seed, stream, counter) — the epoch for the data order, the sample position for crops and
//! flips, the step for dropout. Nothing carries state from one step to the next, so a resumed
//! run draws exactly what an uninterrupted one would, and the "RNG state" a checkpoint holds
//! is just the seed and the step.

use rand::{rngs::StdRng, SeedableRng};

/// The independent random streams of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    InitGenerator = 1,
    InitDiscriminator = 2,
    /// Shuffle of epoch `e` (counter = e).
    Order = 3,
    /// Crop and flip of the sample at a global position (counter = step · batch + index).
    Augment = 4,
    /// Dropout masks of step `s` (counter = s).
    Dropout = 5,
}

/// SplitMix64's finaliser: a bijective mix, so distinct inputs never collide.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator for `counter` in `stream` of a run seeded with `seed`.
pub fn derive(seed: u64, stream: Stream, counter: u64) -> StdRng {
    let key = mix(mix(mix(seed) ^ stream as u64) ^ counter);
    StdRng::seed_from_u64(key)
}

/// One standard normal draw (Box–Muller on two uniforms), as f64.
pub fn normal(rng: &mut impl rand::Rng) -> f64 {
    loop {
        let u1: f64 = rng.gen();
        let u2: f64 = rng.gen();
        if u1 > f64::MIN_POSITIVE {
            return (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        }
    }
}
