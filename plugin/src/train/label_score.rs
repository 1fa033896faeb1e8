//! The label-consistency score of generated photos (the reference's `label_score.py`, the
//! pix2pix paper's FCN-score idea): a photo → label-map generator (the "segmenter", a pix2pix
//! unet_128 read with batch statistics) reads each photo at 128×128, and the score is the mean
//! absolute error (0–255) between what it reads and the label map the photo was made from,
//! resized to 128×128 with nearest neighbours. Lower is better; unlike pixel metrics against the
//! target photo it does not reward blur.
//!
//! The photo is 8-bit (the generated one is quantised as a saved PNG would be) and resized with
//! [`resize`], the image crate's Catmull-Rom: PIL's `BICUBIC` kernel (a = −0.5, widened when
//! shrinking, weights renormalised at the borders). It differs from PIL in arithmetic only: PIL
//! resamples rows first into an 8-bit intermediate with 22-bit fixed-point weights, the image
//! crate columns first in f32, so a few pixels differ by one level.

use std::path::Path;

use image::RgbImage;

use super::preprocess::resize;
use crate::error::{Error, Result};
use crate::filter::image_tensor::rgb_to_tensor;
use crate::filter::model::{Model, Options};

/// The side the segmenter reads at (`label_score.py`'s `S`).
pub const SIDE: u32 = 128;

/// A photo → label-map generator opened for scoring.
pub struct Segmenter {
    model: Model,
}

impl Segmenter {
    /// Opens `path` (`.pth` or `.safetensors`) with batch statistics and dropout off (the
    /// contract's default options), as `label_score.py` runs it (`g.train()`, no dropout layers).
    pub fn open(path: &Path) -> Result<Self> {
        let model = Model::open(path, Options::default())
            .map_err(|e| Error::invalid("segmenter", format!("{}: {e}", path.display())))?;
        Self::new(model)
    }

    /// A model that reads RGB at [`SIDE`] into 3 label channels.
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the MSRV (1.85)
    pub fn new(model: Model) -> Result<Self> {
        let config = model.config();
        let bad = |msg: String| Error::invalid("segmenter", format!("{}: {msg}", model.source()));
        if config.channels() != (3, 3) {
            let (i, o) = config.channels();
            return Err(bad(format!("maps {i} → {o} channels; a segmenter maps RGB → RGB labels")));
        }
        if SIDE as usize % config.stride() != 0 {
            return Err(bad(format!(
                "{} cannot read {SIDE}×{SIDE} images (sides must be multiples of {})",
                config.net_g(),
                config.stride()
            )));
        }
        Ok(Self { model })
    }

    /// Mean absolute difference, on 0–255, between what the segmenter reads from `photo` and
    /// `labels`, both brought to [`SIDE`]: `label_score.py`'s `label_mae`.
    pub fn label_mae(&self, photo: &RgbImage, labels: &RgbImage) -> Result<f64> {
        let photo = resize(photo, SIDE, SIDE);
        let labels = resize_nearest(labels, SIDE, SIDE);
        let s = SIDE as usize;
        let x = rgb_to_tensor(photo.as_raw(), s, s)?;
        let y = self.model.forward(&x)?;
        let v: Vec<f32> = y.flatten_all()?.to_vec1()?;
        let plane = s * s;
        let mut total = 0f64;
        for (i, px) in labels.as_raw().chunks_exact(3).enumerate() {
            for (c, &l) in px.iter().enumerate() {
                let read = (v[c * plane + i].clamp(-1.0, 1.0) as f64 + 1.0) * 127.5;
                total += (read - l as f64).abs();
            }
        }
        Ok(total / (3 * plane) as f64)
    }
}

/// PIL's `NEAREST` resize: output pixel x takes input pixel ⌊(x + ½) · in / out⌋.
pub fn resize_nearest(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (iw, ih) = img.dimensions();
    if (iw, ih) == (w, h) {
        return img.clone();
    }
    let pick = |o: u32, n_in: u32, n_out: u32| {
        (((o as f64 + 0.5) * n_in as f64 / n_out as f64) as u32).min(n_in - 1)
    };
    RgbImage::from_fn(w, h, |x, y| *img.get_pixel(pick(x, iw, w), pick(y, ih, h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_halving_takes_the_odd_pixels_as_pil() {
        let img = RgbImage::from_fn(8, 4, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let out = resize_nearest(&img, 4, 2);
        let xs: Vec<u8> = (0..4).map(|x| out.get_pixel(x, 0).0[0]).collect();
        let ys: Vec<u8> = (0..2).map(|y| out.get_pixel(0, y).0[1]).collect();
        // PIL: Image.fromarray(a).resize((4, 2), Image.NEAREST) picks columns 1 3 5 7, rows 1 3.
        assert_eq!(xs, [1, 3, 5, 7]);
        assert_eq!(ys, [1, 3]);
        // Not a whole factor: 7 × 5 → 3 × 4 picks columns 1 3 5, rows 0 1 3 4 in PIL.
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let out = resize_nearest(&img, 3, 4);
        assert_eq!((0..3).map(|x| out.get_pixel(x, 0).0[0]).collect::<Vec<_>>(), [1, 3, 5]);
        assert_eq!((0..4).map(|y| out.get_pixel(0, y).0[1]).collect::<Vec<_>>(), [0, 1, 3, 4]);
    }
}
