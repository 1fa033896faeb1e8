//! What a run shows while it trains: PNG grids of input | output | target (the loss curve is
//! [`super::loss_curve`]).

use std::path::Path;

use candle_core::Tensor;
use image::RgbImage;

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
    RgbImage::from_raw(w as u32, h as u32, rgb)
        .ok_or_else(|| Error::invalid("image", "buffer smaller than its size"))
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
pub fn save_grid(
    path: &Path,
    input: &Tensor,
    output: &Tensor,
    target: &Tensor,
    max_rows: usize,
) -> Result<()> {
    let n = input.dim(0)?.min(max_rows).max(1);
    let rows = (0..n)
        .map(|i| Ok(vec![to_image(input, i)?, to_image(output, i)?, to_image(target, i)?]))
        .collect::<Result<Vec<_>>>()?;
    write_png(path, &grid(&rows))
}
