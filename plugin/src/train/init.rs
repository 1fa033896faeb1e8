//! Weight initialisation as the reference's `init_weights`: convolution weights by `init_type`
//! (normal(0, gain), xavier_normal(gain), kaiming_normal(fan_in), orthogonal(gain)), their
//! biases 0, BatchNorm weights N(1, gain) and biases 0; running statistics keep their defaults.
//!
//! One seeded generator walks the tensors in sorted-name order, so an initialisation depends
//! on the seed and the architecture only. (PyTorch's generator is different, so the values are
//! not PyTorch's; the distributions are.)

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rand::rngs::StdRng;

use super::config::InitType;
use super::rng::normal;
use crate::error::{Error, Result};

pub use crate::nets::parameters::is_running_stat;

/// The variables of a map, sorted by name.
pub fn sorted_vars(vars: &VarMap) -> BTreeMap<String, Var> {
    let data = vars.data().lock().unwrap_or_else(|e| e.into_inner());
    data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// PyTorch's `_calculate_fan_in_and_fan_out`: dim 1 and dim 0 times the receptive field.
fn fans(dims: &[usize]) -> (f64, f64) {
    let receptive: usize = dims.iter().skip(2).product();
    let fan_in = dims.get(1).copied().unwrap_or(1) * receptive;
    let fan_out = dims.first().copied().unwrap_or(1) * receptive;
    (fan_in as f64, fan_out as f64)
}

fn normal_vec(n: usize, mean: f64, std: f64, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| (mean + std * normal(rng)) as f32).collect()
}

/// `nn.init.orthogonal_`: the weight flattened to (dim 0, rest), filled with the Q of a
/// Gaussian matrix's QR taken in its tall orientation, signs fixed so R's diagonal is positive.
fn orthogonal(dims: &[usize], gain: f64, rng: &mut StdRng) -> Vec<f32> {
    let rows = dims.first().copied().unwrap_or(1);
    let cols: usize = dims.iter().skip(1).product::<usize>().max(1);
    // A (rows × cols) Gaussian; torch transposes when rows < cols so QR runs on a tall matrix.
    let flat: Vec<f64> = (0..rows * cols).map(|_| normal(rng)).collect();
    let (m, n, tall): (usize, usize, Vec<f64>) = if rows < cols {
        let mut t = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = flat[r * cols + c];
            }
        }
        (cols, rows, t)
    } else {
        (rows, cols, flat)
    };
    // Modified Gram–Schmidt on the n columns of the m × n matrix (row-major); R's diagonal is
    // positive by construction, which is what torch's sign fix-up produces.
    let mut q: Vec<Vec<f64>> = (0..n).map(|j| (0..m).map(|i| tall[i * n + j]).collect()).collect();
    for j in 0..n {
        let (done, rest) = q.split_at_mut(j);
        let col = &mut rest[0];
        for prev in done.iter() {
            let dot: f64 = prev.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
            col.iter_mut().zip(prev).for_each(|(c, p)| *c -= dot * p);
        }
        let norm = col.iter().map(|v| v * v).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
        col.iter_mut().for_each(|v| *v /= norm);
    }
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            // q is m × n column-major; undo the transpose for wide weights.
            let v = if rows < cols { q[r][c] } else { q[c][r] };
            out[r * cols + c] = (gain * v) as f32;
        }
    }
    out
}

/// Re-initialises every learnable tensor of `vars` per `init_type`.
pub fn init_weights(vars: &VarMap, init: InitType, gain: f64, rng: &mut StdRng) -> Result<()> {
    let all = sorted_vars(vars);
    for (name, var) in &all {
        if is_running_stat(name) {
            continue;
        }
        let t = var.as_tensor();
        let dims = t.dims().to_vec();
        let n = t.elem_count();
        let module = name.rsplit_once('.').map(|(m, _)| m).unwrap_or("");
        let batch_norm = all.contains_key(&format!("{module}.running_mean"));
        let values = if name.ends_with(".bias") {
            vec![0f32; n]
        } else if batch_norm {
            normal_vec(n, 1.0, gain, rng)
        } else if name.ends_with(".weight") && dims.len() >= 2 {
            let (fan_in, fan_out) = fans(&dims);
            match init {
                InitType::Normal => normal_vec(n, 0.0, gain, rng),
                InitType::Xavier => {
                    normal_vec(n, 0.0, gain * (2.0 / (fan_in + fan_out)).sqrt(), rng)
                }
                InitType::Kaiming => normal_vec(n, 0.0, (2.0f64).sqrt() / fan_in.sqrt(), rng),
                InitType::Orthogonal => orthogonal(&dims, gain, rng),
            }
        } else {
            return Err(Error::invalid(
                "init",
                format!("do not know how to initialise `{name}` {dims:?}"),
            ));
        };
        var.set(&Tensor::from_vec(values, t.shape(), t.device())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn orthogonal_rows_are_orthonormal() {
        let mut rng = StdRng::seed_from_u64(3);
        for dims in [[4usize, 2, 2, 2], [16, 2, 1, 1]] {
            let w = orthogonal(&dims, 1.0, &mut rng);
            let (rows, cols) = (dims[0], dims[1] * dims[2] * dims[3]);
            // The smaller side is orthonormal.
            let (a, b, stride_a, stride_b) =
                if rows <= cols { (rows, cols, cols, 1) } else { (cols, rows, 1, cols) };
            for i in 0..a {
                for j in 0..a {
                    let d: f32 = (0..b)
                        .map(|k| w[i * stride_a + k * stride_b] * w[j * stride_a + k * stride_b])
                        .sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((d - want).abs() < 1e-5, "{dims:?} {i} {j} {d}");
                }
            }
        }
    }
}
