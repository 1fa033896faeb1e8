//! Stopping a run that has diverged. A learning rate far too high (or bad data) makes the
//! losses and then the weights infinite or NaN; training on would only save checkpoints that
//! translate every image to black. The run stops at the first non-finite loss with an error
//! naming the step and the loss, and no checkpoint is saved from non-finite weights, so
//! `latest/` keeps the last finite state.

use candle_core::Tensor;

use super::trainer::{Losses, Trainer};
use crate::error::{Error, Result};

fn diverged(msg: String) -> Error {
    // A compute failure (`P2P_ERR_COMPUTE`), with the message as it is.
    Error::Candle(candle_core::Error::Msg(msg))
}

/// What the run has to fall back on, for the messages.
fn fallback(saved: Option<(u64, String)>) -> String {
    match saved {
        Some((step, dir)) => format!("the last finite checkpoint is {dir} (step {step})"),
        None => "no checkpoint was saved".into(),
    }
}

/// Fails if a loss of step `step` is not finite.
pub fn check_losses(step: u64, l: &Losses, saved: Option<(u64, String)>) -> Result<()> {
    let named = [("G_GAN", l.g_gan), ("G_L1", l.g_l1), ("D_real", l.d_real), ("D_fake", l.d_fake)];
    match named.iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((name, v)) => Err(diverged(format!(
            "training diverged at step {step}: loss {name} is {v}; stopped, {} (lower [train] lr?)",
            fallback(saved)
        ))),
    }
}

/// Whether every element of `t` is finite: `t - t` is 0 exactly there and NaN elsewhere.
fn finite(t: &Tensor) -> Result<bool> {
    #[allow(clippy::eq_op)] // the point: x - x is NaN for x = ±inf or NaN
    let s = (t - t)?.sum_all()?.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
    Ok(s == 0.0)
}

/// Fails, before a save after step `step`, if a weight or an optimiser moment is not finite.
pub fn check_weights(step: u64, trainer: &Trainer, saved: Option<(u64, String)>) -> Result<()> {
    let params = trainer.generator_params().iter().chain(trainer.discriminator_params());
    let mut bad = None;
    for (name, var) in params {
        if !finite(var.as_tensor())? {
            bad = Some(name.clone());
            break;
        }
    }
    if bad.is_none() {
        for (name, t) in trainer.optimizer_tensors()? {
            if !finite(&t)? {
                bad = Some(name);
                break;
            }
        }
    }
    match bad {
        None => Ok(()),
        Some(name) => Err(diverged(format!(
            "training diverged by step {step}: `{name}` holds non-finite values; stopped without saving them, {} (lower [train] lr?)",
            fallback(saved)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_found() {
        let dev = candle_core::Device::Cpu;
        assert!(finite(&Tensor::new(&[1.0f32, -3e38, 0.0], &dev).unwrap()).unwrap());
        assert!(!finite(&Tensor::new(&[1.0f32, f32::NAN], &dev).unwrap()).unwrap());
        assert!(!finite(&Tensor::new(&[f32::NEG_INFINITY, 2.0], &dev).unwrap()).unwrap());
        let l = Losses { g_gan: 1.0, g_l1: f32::NAN, d_real: 0.5, d_fake: 0.5 };
        let e = check_losses(4, &l, Some((2, "out/latest".into()))).unwrap_err().to_string();
        assert_eq!(e, "training diverged at step 4: loss G_L1 is NaN; stopped, the last finite checkpoint is out/latest (step 2) (lower [train] lr?)");
        assert!(check_losses(4, &Losses::default(), None).is_ok());
    }
}
