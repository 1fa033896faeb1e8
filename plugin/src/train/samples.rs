//! What a run shows while it trains: PNG grids of input | output | target and a loss-curve PNG
//! drawn with plain polylines (no plotting crate, no text: the colours are the legend).
//!
//! Loss curve: top panel λ·L1 (black); bottom panel G_GAN (red), D_real (green), D_fake (blue).
//! Each panel scales to its own range; the x axis is the step, from the first logged to the last,
//! and each pixel column shows the mean of the steps that fall in it (pale), with a moving
//! average over about 1/25 of the run on top (full colour) for the trend.

use std::path::Path;

use candle_core::Tensor;
use image::{Rgb, RgbImage};

use super::Progress;
use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use crate::filter::image_tensor::tensor_to_rgb;

/// Encodes a PNG and writes it atomically (a viewer never sees half a file).
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| Error::Image { path: path.into(), msg: e.to_string() })?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(path, &bytes)
}

/// Image `i` of a (N, 3, H, W) batch in [-1, 1].
pub fn to_image(batch: &Tensor, i: usize) -> Result<RgbImage> {
    let (rgb, w, h) = tensor_to_rgb(&batch.narrow(0, i, 1)?)?;
    RgbImage::from_raw(w as u32, h as u32, rgb).ok_or_else(|| Error::invalid("image", "buffer smaller than its size"))
}

/// Places images side by side in rows (all of one size).
pub fn grid(rows: &[Vec<RgbImage>]) -> RgbImage {
    let (w, h) = rows.first().and_then(|r| r.first()).map(|i| i.dimensions()).unwrap_or((1, 1));
    let cols = rows.iter().map(Vec::len).max().unwrap_or(1) as u32;
    let mut out = RgbImage::new(w * cols, h * rows.len().max(1) as u32);
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            image::imageops::replace(&mut out, img, (c as u32 * w) as i64, (r as u32 * h) as i64);
        }
    }
    out
}

/// The first `max_rows` items of a batch as input | output | target rows.
pub fn save_grid(path: &Path, input: &Tensor, output: &Tensor, target: &Tensor, max_rows: usize) -> Result<()> {
    let n = input.dim(0)?.min(max_rows).max(1);
    let rows = (0..n)
        .map(|i| Ok(vec![to_image(input, i)?, to_image(output, i)?, to_image(target, i)?]))
        .collect::<Result<Vec<_>>>()?;
    write_png(path, &grid(&rows))
}

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
    // Bresenham.
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, c);
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

fn rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    line(img, (x0, y0), (x1, y0), c);
    line(img, (x1, y0), (x1, y1), c);
    line(img, (x1, y1), (x0, y1), c);
    line(img, (x0, y1), (x0, y0), c);
}

/// Per-pixel-column means of one series (columns without a finite value are `None`).
fn to_columns(steps: &[u64], values: &[f32], w: i64) -> Vec<Option<f64>> {
    let (Some(&first), Some(&last)) = (steps.first(), steps.last()) else { return Vec::new() };
    let span = (last - first).max(1) as f64;
    let mut sum = vec![0f64; w as usize + 1];
    let mut count = vec![0u32; w as usize + 1];
    for (s, v) in steps.iter().zip(values) {
        if v.is_finite() {
            let c = ((((s - first) as f64 / span) * w as f64).round() as usize).min(w as usize);
            sum[c] += *v as f64;
            count[c] += 1;
        }
    }
    sum.iter().zip(&count).map(|(s, &n)| (n > 0).then(|| s / n as f64)).collect()
}

/// Centred moving average over `2·half + 1` steps (finite values only).
fn smooth(values: &[f32], half: usize) -> Vec<f32> {
    (0..values.len())
        .map(|i| {
            let w = values[i.saturating_sub(half)..(i + half + 1).min(values.len())].iter().filter(|v| v.is_finite());
            let (s, n) = w.fold((0f64, 0usize), |(s, n), v| (s + *v as f64, n + 1));
            if n > 0 { (s / n as f64) as f32 } else { f32::NAN }
        })
        .collect()
}

/// Draws series (each a value per step) into the panel (x0, y0, w, h): the raw per-column
/// means pale, a centred moving average over 2·max(2, n/50) + 1 of the n steps in full colour.
fn panel(img: &mut RgbImage, (x0, y0, w, h): (i64, i64, i64, i64), steps: &[u64], series: &[(&[f32], Rgb<u8>)]) {
    rect(img, x0, y0, x0 + w, y0 + h, Rgb([160, 160, 160]));
    let half = (steps.len() / 50).max(2);
    let raw: Vec<Vec<Option<f64>>> = series.iter().map(|(v, _)| to_columns(steps, v, w)).collect();
    let smoothed: Vec<Vec<Option<f64>>> = series.iter().map(|(v, _)| to_columns(steps, &smooth(v, half), w)).collect();
    let (lo, hi) = raw.iter().flatten().flatten().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return;
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    let (lo, hi) = (lo - pad, hi + pad);
    let to_y = |v: f64| y0 + h - ((v - lo) / (hi - lo) * h as f64).round() as i64;
    let polyline = |img: &mut RgbImage, col: &[Option<f64>], colour: Rgb<u8>| {
        let mut prev: Option<(i64, i64)> = None;
        for (c, v) in col.iter().enumerate() {
            let Some(v) = v else { continue };
            let p = (x0 + c as i64, to_y(*v));
            line(img, prev.unwrap_or(p), p, colour);
            prev = Some(p);
        }
    };
    let pale = |c: Rgb<u8>| Rgb(c.0.map(|v| ((v as u16 + 2 * 255) / 3) as u8));
    for (col, (_, colour)) in raw.iter().zip(series) {
        polyline(img, col, pale(*colour));
    }
    for (col, (_, colour)) in smoothed.iter().zip(series) {
        polyline(img, col, *colour);
    }
}

/// Redraws the loss curve of a run's history.
pub fn save_loss_curve(path: &Path, history: &[Progress]) -> Result<()> {
    let (w, h) = (800u32, 420u32);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let steps: Vec<u64> = history.iter().map(|p| p.step).collect();
    let pick = |f: fn(&Progress) -> f32| history.iter().map(f).collect::<Vec<f32>>();
    let (l1, g_gan, d_real, d_fake) = (pick(|p| p.g_l1), pick(|p| p.g_gan), pick(|p| p.d_real), pick(|p| p.d_fake));
    let (pw, ph) = (w as i64 - 20, 190);
    panel(&mut img, (10, 10, pw, ph), &steps, &[(&l1, Rgb([0, 0, 0]))]);
    panel(
        &mut img,
        (10, 220, pw, ph),
        &steps,
        &[(&g_gan, Rgb([220, 30, 30])), (&d_real, Rgb([20, 150, 20])), (&d_fake, Rgb([30, 60, 220]))],
    );
    write_png(path, &img)
}
