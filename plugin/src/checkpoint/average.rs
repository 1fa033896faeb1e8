//! Uniform checkpoint averaging (Izmailov et al., *Averaging Weights Leads to Wider Optima and
//! Better Generalization*, 2018): the weight-by-weight mean of several checkpoints of one run.
//! A GAN generator's single checkpoints wander; the mean of neighbouring ones sits near the best
//! of them (how the shipped default model is made, `models/README.md`).

use std::path::PathBuf;

use candle_core::{DType, Tensor};

use super::Checkpoint;
use crate::error::{Error, Result};

/// The mean of `checkpoints` (at least two, the same names and shapes), summed in f64 so the
/// order of the inputs hardly matters before the final f32 rounding. Batch-norm
/// running statistics are averaged like weights; `num_batches_tracked` is the last input's.
pub fn average(checkpoints: &[Checkpoint], name: impl Into<PathBuf>) -> Result<Checkpoint> {
    let name = name.into();
    let [first, rest @ ..] = checkpoints else { return Err(too_few(&name, 0)) };
    if rest.is_empty() {
        return Err(too_few(&name, 1));
    }
    let mut sums = Vec::with_capacity(first.tensors.len());
    for (key, t) in &first.tensors {
        sums.push((key.clone(), t.to_dtype(DType::F64)?));
    }
    for ckpt in rest {
        if ckpt.tensors.len() != first.tensors.len() {
            return Err(Error::checkpoint(
                &ckpt.path,
                format!(
                    "holds {} tensors where {} holds {}: not checkpoints of one architecture",
                    ckpt.tensors.len(),
                    first.path.display(),
                    first.tensors.len()
                ),
            ));
        }
        for (key, sum) in &mut sums {
            let Some(t) = ckpt.tensors.get(key.as_str()) else {
                return Err(Error::checkpoint(
                    &ckpt.path,
                    format!("has no tensor `{key}` (it is in {})", first.path.display()),
                ));
            };
            if t.dims() != sum.dims() {
                return Err(Error::checkpoint(
                    &ckpt.path,
                    format!(
                        "tensor `{key}` is {:?} where {} has {:?}",
                        t.dims(),
                        first.path.display(),
                        sum.dims()
                    ),
                ));
            }
            *sum = if key.ends_with("num_batches_tracked") {
                t.to_dtype(DType::F64)?
            } else {
                (&*sum + t.to_dtype(DType::F64)?)?
            };
        }
    }
    let n = checkpoints.len() as f64;
    let mean = sums.into_iter().map(|(key, sum)| {
        let mean = if key.ends_with("num_batches_tracked") { Ok(sum) } else { sum / n };
        mean.and_then(|t| t.to_dtype(DType::F32)).map(|t| (key, t))
    });
    let mean = mean.collect::<candle_core::Result<Vec<(String, Tensor)>>>()?;
    Checkpoint::from_tensors(name, mean)
}

fn too_few(name: &std::path::Path, got: usize) -> Error {
    Error::checkpoint(name, format!("averaging needs at least two checkpoints, got {got}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ckpt(name: &str, tensors: &[(&str, &[f32], &[usize])]) -> Checkpoint {
        let tensors = tensors.iter().map(|(key, values, dims)| {
            let t = Tensor::from_slice(values, *dims, &Device::Cpu).expect("test tensor");
            (key.to_string(), t)
        });
        Checkpoint::from_tensors(name, tensors).expect("test checkpoint")
    }

    #[test]
    fn mean_of_three_is_the_elementwise_mean() {
        let a = ckpt(
            "a",
            &[("w", &[1.0, 2.0, 3.0, 4.0], &[2, 2]), ("bn.num_batches_tracked", &[5.0], &[1])],
        );
        let b = ckpt(
            "b",
            &[("w", &[3.0, -2.0, 0.5, 4.0], &[2, 2]), ("bn.num_batches_tracked", &[6.0], &[1])],
        );
        let c = ckpt(
            "c",
            &[("w", &[0.1, 0.0, 1e-8, 7.0], &[2, 2]), ("bn.num_batches_tracked", &[7.0], &[1])],
        );
        let mean = average(&[a, b, c], "mean").expect("average");
        let w = mean
            .get("w")
            .expect("w")
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("w values");
        let expected = [(1.0 + 3.0 + 0.1) / 3.0, 0.0, (3.0 + 0.5 + 1e-8) / 3.0, 5.0f64];
        for (got, want) in w.iter().zip(expected) {
            assert_eq!(*got, want as f32, "mean {w:?}, expected {expected:?}");
        }
        let tracked =
            mean.get("bn.num_batches_tracked").expect("tracked").to_vec1::<f32>().expect("values");
        assert_eq!(tracked, [7.0], "num_batches_tracked is the last input's, not a mean");
    }

    fn refusal(checkpoints: &[Checkpoint]) -> String {
        match average(checkpoints, "out") {
            Ok(_) => panic!("averaging mismatched checkpoints succeeded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn mismatched_checkpoints_are_refused_with_the_file_and_tensor() {
        let a = || ckpt("a.safetensors", &[("w", &[1.0, 2.0], &[2])]);
        let err = refusal(&[a(), ckpt("b.safetensors", &[("w", &[1.0, 2.0], &[1, 2])])]);
        assert!(err.contains("b.safetensors") && err.contains("`w`"), "{err}");
        let err = refusal(&[a(), ckpt("c.safetensors", &[("v", &[1.0, 2.0], &[2])])]);
        assert!(err.contains("c.safetensors") && err.contains("`w`"), "{err}");
        let err = refusal(&[a()]);
        assert!(err.contains("at least two"), "{err}");
    }
}
