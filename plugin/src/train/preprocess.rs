//! Augmentation as the reference's `get_params` / `get_transform`: resize (bicubic), crop at a
//! random position, random horizontal flip, with one set of random parameters for both images
//! of a pair so they stay aligned.
//!
//! Bicubic is the image crate's Catmull-Rom filter (a = −0.5, support widened when shrinking),
//! the same kernel as PIL's `BICUBIC` that the reference uses.

use image::{imageops, RgbImage};
use rand::Rng;

use super::config::{DataConfig, Preprocess};

/// Resizes with the bicubic filter of the reference.
pub fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.dimensions() == (w, h) {
        return img.clone();
    }
    imageops::resize(img, w.max(1), h.max(1), imageops::FilterType::CatmullRom)
}

/// The random choices for one pair (the reference's `get_params`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub x: u32,
    pub y: u32,
    pub flip: bool,
}

#[derive(Clone, Debug)]
pub struct Preprocessor {
    pub kind: Preprocess,
    pub load_size: u32,
    pub crop_size: u32,
    pub flip: bool,
}

impl Preprocessor {
    pub fn new(data: &DataConfig) -> Self {
        Self {
            kind: data.preprocess,
            load_size: data.load_size as u32,
            crop_size: data.crop_size as u32,
            flip: data.flip,
        }
    }

    /// Draws the crop position and flip for an image of `size` (always three draws, so the
    /// stream's use does not depend on the image).
    pub fn params(&self, (w, h): (u32, u32), rng: &mut impl Rng) -> Params {
        let (new_w, new_h) = match self.kind {
            Preprocess::ResizeAndCrop => (self.load_size, self.load_size),
            Preprocess::ScaleWidthAndCrop => {
                (self.load_size, (self.load_size as u64 * h as u64 / w.max(1) as u64) as u32)
            }
            _ => (w, h),
        };
        let x = rng.gen_range(0..=new_w.saturating_sub(self.crop_size));
        let y = rng.gen_range(0..=new_h.saturating_sub(self.crop_size));
        let flip = rng.gen::<f64>() > 0.5;
        Params { x, y, flip }
    }

    /// The reference's `get_transform` on one image, with the pair's parameters.
    pub fn apply(&self, img: &RgbImage, p: Params) -> RgbImage {
        let mut img = match self.kind {
            Preprocess::ResizeAndCrop => resize(img, self.load_size, self.load_size),
            Preprocess::ScaleWidth | Preprocess::ScaleWidthAndCrop => self.scale_width(img),
            Preprocess::Crop => img.clone(),
            Preprocess::None => make_power_2(img, 4),
        };
        if self.kind.crops() {
            let (w, h) = img.dimensions();
            let c = self.crop_size;
            if w > c || h > c {
                img = imageops::crop_imm(
                    &img,
                    p.x,
                    p.y,
                    c.min(w - p.x.min(w)),
                    c.min(h - p.y.min(h)),
                )
                .to_image();
            }
        }
        if self.flip && p.flip {
            img = imageops::flip_horizontal(&img);
        }
        img
    }

    /// Both images of a pair, the parameters drawn from the first one's size.
    pub fn apply_pair(
        &self,
        a: &RgbImage,
        b: &RgbImage,
        rng: &mut impl Rng,
    ) -> (RgbImage, RgbImage) {
        let p = self.params(a.dimensions(), rng);
        (self.apply(a, p), self.apply(b, p))
    }

    /// `__scale_width`: width to `load_size`, height in proportion but at least `crop_size`.
    fn scale_width(&self, img: &RgbImage) -> RgbImage {
        let (ow, oh) = img.dimensions();
        if ow == self.load_size && oh >= self.crop_size {
            return img.clone();
        }
        let w = self.load_size;
        let h = ((w as f64 * oh as f64 / ow as f64) as u32).max(self.crop_size);
        resize(img, w, h)
    }
}

/// `__make_power_2`: sides rounded to the nearest multiple of `base` (preprocess `none`).
fn make_power_2(img: &RgbImage, base: u32) -> RgbImage {
    let (ow, oh) = img.dimensions();
    let round = |v: u32| (((v as f64 / base as f64).round_ties_even() as u32) * base).max(base);
    resize(img, round(ow), round(oh))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn resize_and_crop_gives_crop_size() {
        let pre = Preprocessor {
            kind: Preprocess::ResizeAndCrop,
            load_size: 143,
            crop_size: 128,
            flip: true,
        };
        let img = RgbImage::from_fn(256, 256, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..20 {
            let (a, b) = pre.apply_pair(&img, &img, &mut rng);
            assert_eq!(a.dimensions(), (128, 128));
            assert_eq!(a, b);
        }
    }
}
