//! How images whose sides are not multiples of the network stride are translated.

use image::{imageops, ImageBuffer, Rgb};

use crate::error::{Error, Result};
use crate::model::Model;

/// The size policies a host can choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SizePolicy {
    /// Bicubic resize to the network's native size, translate, resize back: fast, loses detail.
    Resize,
    /// Reflect-pad to the next multiple of the network stride and translate the whole image at
    /// once: full detail and one set of batch statistics for the whole image. The default for
    /// images up to a few megapixels.
    #[default]
    Pad,
    /// Overlapping native-size tiles blended with a feathered window: bounded memory for very
    /// large images.
    Tile,
}

impl SizePolicy {
    pub fn name(self) -> &'static str {
        match self {
            SizePolicy::Resize => "resize",
            SizePolicy::Pad => "pad",
            SizePolicy::Tile => "tile",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "resize" => Some(SizePolicy::Resize),
            "pad" => Some(SizePolicy::Pad),
            "tile" => Some(SizePolicy::Tile),
            _ => None,
        }
    }

    /// Translates packed RGB8 of any size into packed RGB8 of the same size.
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the MSRV (1.85)
    pub(crate) fn translate(self, model: &Model, rgb: &[u8], w: usize, h: usize) -> Result<Vec<u8>> {
        let stride = model.config().stride();
        // Tile keeps its bounded memory even for stride-multiple sizes.
        if self != SizePolicy::Tile && w % stride == 0 && h % stride == 0 {
            return model.translate_rgb(rgb, w, h);
        }
        match self {
            SizePolicy::Resize => {
                let n = model.config().native_size() as u32;
                let img = rgb_image(rgb, w, h)?;
                let small = imageops::resize(&img, n, n, imageops::FilterType::CatmullRom);
                let out = model.translate_rgb(small.as_raw(), n as usize, n as usize)?;
                let out = rgb_image(&out, n as usize, n as usize)?;
                Ok(imageops::resize(&out, w as u32, h as u32, imageops::FilterType::CatmullRom).into_raw())
            }
            SizePolicy::Pad => {
                let (pw, ph) = (w.div_ceil(stride) * stride, h.div_ceil(stride) * stride);
                let (left, top) = ((pw - w) / 2, (ph - h) / 2);
                let padded = reflect_pad(rgb, w, h, left, top, pw, ph);
                let out = model.translate_rgb(&padded, pw, ph)?;
                Ok(crop(&out, pw, left, top, w, h))
            }
            SizePolicy::Tile => crate::tiling::translate_tiled(model, rgb, w, h),
        }
    }
}

fn rgb_image(rgb: &[u8], w: usize, h: usize) -> Result<ImageBuffer<Rgb<u8>, Vec<u8>>> {
    ImageBuffer::from_raw(w as u32, h as u32, rgb.to_vec()).ok_or_else(|| Error::invalid("image", "buffer smaller than its size"))
}

/// Mirror index without repeating the edge, folding as often as needed for pads wider than
/// the image (small inputs to large networks).
pub(crate) fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Places a `w`×`h` RGB image at (`left`, `top`) of a `pw`×`ph` canvas filled by reflection.
pub(crate) fn reflect_pad(rgb: &[u8], w: usize, h: usize, left: usize, top: usize, pw: usize, ph: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(pw * ph * 3);
    for y in 0..ph {
        let sy = reflect(y as isize - top as isize, h);
        for x in 0..pw {
            let sx = reflect(x as isize - left as isize, w);
            let i = (sy * w + sx) * 3;
            out.extend_from_slice(&rgb[i..i + 3]);
        }
    }
    out
}

/// The `w`×`h` window at (`left`, `top`) of a packed RGB image `pw` pixels wide.
pub(crate) fn crop(rgb: &[u8], pw: usize, left: usize, top: usize, w: usize, h: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(w * h * 3);
    for y in top..top + h {
        out.extend_from_slice(&rgb[(y * pw + left) * 3..(y * pw + left + w) * 3]);
    }
    out
}
