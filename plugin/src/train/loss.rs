//! The pix2pix objective (Isola et al. 2017, eq. 4): a conditional GAN loss on the PatchGAN's
//! logits plus λ·L1 between the output and the target.

use candle_core::{Result, Tensor};

use super::config::GanMode;

/// The GAN loss of predictions `pred` against the label `real` (1) or fake (0), averaged over
/// every patch, as the reference's `GANLoss`.
pub fn gan_loss(pred: &Tensor, real: bool, mode: GanMode) -> Result<Tensor> {
    let t = if real { 1.0 } else { 0.0 };
    match mode {
        // BCEWithLogitsLoss, in its stable form: max(x, 0) − x·t + ln(1 + e^−|x|).
        GanMode::Vanilla => {
            let softplus = (pred.abs()?.neg()?.exp()? + 1.0)?.log()?;
            (pred.relu()? - (pred * t)?)?.add(&softplus)?.mean_all()
        }
        // MSELoss.
        GanMode::Lsgan => (pred - t)?.sqr()?.mean_all(),
    }
}

/// `L1Loss`: mean absolute difference.
pub fn l1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.abs()?.mean_all()
}
