//! The learning-rate policies of the reference's `get_scheduler`, as a function of the 0-based
//! epoch (the reference steps its scheduler once per epoch).

use super::config::{LrPolicy, TrainConfig};

/// The learning rate during epoch `epoch` (0-based).
///
/// - `linear` (the reference's `lambda_rule`): `lr` for the first `n_epochs` epochs, then
///   `lr · (1 − (epoch + 1 − n_epochs) / (n_epochs_decay + 1))`, falling linearly towards zero
///   over `n_epochs_decay` epochs.
/// - `step`: ×0.1 every `lr_decay_iters` epochs (`StepLR`).
/// - `cosine`: `lr · (1 + cos(π · epoch / n_epochs)) / 2` (`CosineAnnealingLR`, `T_max = n_epochs`,
///   `eta_min = 0`, in closed form).
pub fn lr_at(t: &TrainConfig, epoch: u64) -> f64 {
    match t.lr_policy {
        LrPolicy::Linear => {
            let over = (epoch + 1).saturating_sub(t.n_epochs) as f64;
            t.lr * (1.0 - over / (t.n_epochs_decay as f64 + 1.0))
        }
        LrPolicy::Step => t.lr * 0.1f64.powi((epoch / t.lr_decay_iters.max(1)) as i32),
        LrPolicy::Cosine => {
            t.lr * (1.0 + (std::f64::consts::PI * epoch as f64 / t.n_epochs.max(1) as f64).cos())
                / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_lambda_rule() {
        let t = TrainConfig { n_epochs: 3, n_epochs_decay: 3, ..Default::default() };
        let lrs: Vec<f64> = (0..6).map(|e| lr_at(&t, e) / t.lr).collect();
        let want = [1.0, 1.0, 1.0, 0.75, 0.5, 0.25];
        for (a, b) in lrs.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{lrs:?}");
        }
    }
}
