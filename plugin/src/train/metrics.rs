//! Image metrics on packed RGB8, as the reference protocol computes them with scikit-image:
//! MAE on 0–255, PSNR with data range 255, and SSIM with `structural_similarity`'s defaults
//! (data_range 255, channel_axis 2: the mean over channels; 7×7 uniform window; K1 0.01,
//! K2 0.03; sample covariance, N − 1 normalisation; the mean over the region whose windows lie
//! inside the image, as skimage crops (win_size − 1) / 2 pixels off every border).

use crate::error::{Error, Result};

/// Mean absolute difference.
pub fn mae(a: &[u8], b: &[u8]) -> f64 {
    let s: u64 = a.iter().zip(b).map(|(&x, &y)| (x as i32 - y as i32).unsigned_abs() as u64).sum();
    s as f64 / a.len().max(1) as f64
}

/// Peak signal-to-noise ratio in dB (infinite for identical images, as skimage).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let s: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    let mse = s / a.len().max(1) as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

const WIN: usize = 7;

/// Summed-area table of an h × w plane, (h + 1) × (w + 1).
fn integral(v: &[f64], w: usize, h: usize) -> Vec<f64> {
    let mut s = vec![0f64; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0f64;
        for x in 0..w {
            row += v[y * w + x];
            s[(y + 1) * (w + 1) + x + 1] = s[y * (w + 1) + x + 1] + row;
        }
    }
    s
}

fn window_sum(s: &[f64], w: usize, x: usize, y: usize) -> f64 {
    let w1 = w + 1;
    s[(y + WIN) * w1 + x + WIN] - s[y * w1 + x + WIN] - s[(y + WIN) * w1 + x] + s[y * w1 + x]
}

/// SSIM of one channel (planes of f64).
fn ssim_plane(x: &[f64], y: &[f64], w: usize, h: usize) -> f64 {
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let np = (WIN * WIN) as f64;
    let cov_norm = np / (np - 1.0);
    let prod = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).collect::<Vec<f64>>();
    let (sx, sy) = (integral(x, w, h), integral(y, w, h));
    let (sxx, syy, sxy) =
        (integral(&prod(x, x), w, h), integral(&prod(y, y), w, h), integral(&prod(x, y), w, h));
    let mut total = 0f64;
    for r in 0..=h - WIN {
        for c in 0..=w - WIN {
            let ux = window_sum(&sx, w, c, r) / np;
            let uy = window_sum(&sy, w, c, r) / np;
            let uxx = window_sum(&sxx, w, c, r) / np;
            let uyy = window_sum(&syy, w, c, r) / np;
            let uxy = window_sum(&sxy, w, c, r) / np;
            let vx = cov_norm * (uxx - ux * ux);
            let vy = cov_norm * (uyy - uy * uy);
            let vxy = cov_norm * (uxy - ux * uy);
            let (a1, a2) = (2.0 * ux * uy + c1, 2.0 * vxy + c2);
            let (b1, b2) = (ux * ux + uy * uy + c1, vx + vy + c2);
            total += a1 * a2 / (b1 * b2);
        }
    }
    total / ((h - WIN + 1) * (w - WIN + 1)) as f64
}

/// Mean SSIM over the three channels of two packed RGB8 images of `w` × `h`.
pub fn ssim(a: &[u8], b: &[u8], w: usize, h: usize) -> Result<f64> {
    if w < WIN || h < WIN {
        return Err(Error::invalid(
            "image size",
            format!("{w}x{h}: SSIM needs both sides ≥ {WIN}"),
        ));
    }
    if a.len() != w * h * 3 || b.len() != w * h * 3 {
        return Err(Error::invalid(
            "image data",
            format!("{} and {} bytes for {w}x{h} RGB", a.len(), b.len()),
        ));
    }
    let plane =
        |img: &[u8], c: usize| img.chunks_exact(3).map(|p| p[c] as f64).collect::<Vec<f64>>();
    Ok((0..3).map(|c| ssim_plane(&plane(a, c), &plane(b, c), w, h)).sum::<f64>() / 3.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images() {
        let a: Vec<u8> = (0..16 * 12 * 3).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(mae(&a, &a), 0.0);
        assert!(psnr(&a, &a).is_infinite());
        assert!((ssim(&a, &a, 16, 12).unwrap() - 1.0).abs() < 1e-12);
    }
}
