//! What every checkpoint target checks of a file that loads.

use pix2pix::checkpoint::ReadLimits;
use pix2pix::Checkpoint;

/// Limits for fuzzing: a tensor total of 256 MiB keeps libFuzzer's RSS limit out of reach
/// (the data must be in the input anyway; this bounds f16→f32 growth and shared storages).
pub fn limits() -> ReadLimits {
    ReadLimits { max_tensor_bytes: 256 << 20, ..ReadLimits::default() }
}

/// A loaded checkpoint holds at least one tensor, every value finite.
pub fn check(c: &Checkpoint) {
    assert!(c.tensors().len() > 0);
    for (name, t) in c.tensors() {
        let v = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect(name);
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
    }
}
