//! Leaf pixel helpers on the filter's working image ([`ImageF32`]: interleaved f32 in [0, 1],
//! any channel count): bicubic resize, reflect padding, cropping. They know nothing of
//! networks; the size policies and the tiling are built from them.

use image::{imageops, ImageBuffer, Luma};

use crate::error::{Error, Result};
use crate::filter::image_tensor::ImageF32;
use crate::filter::memory::try_vec;

/// Bicubic (Catmull-Rom) resize to `to_w`×`to_h`, channel by channel, in f32 (the `image`
/// crate clamps float results to [0, 1], as it clamps 8-bit ones to [0, 255]).
pub(crate) fn resize(img: &ImageF32, to_w: usize, to_h: usize) -> Result<ImageF32> {
    let (w, h, c) = (img.width, img.height, img.channels);
    if img.data.len() < w * h * c {
        return Err(Error::invalid("image", "buffer smaller than its size"));
    }
    let mut out = try_vec(to_w * to_h * c, 0f32, "the resized image")?;
    for ch in 0..c {
        let plane: Vec<f32> = img.data.iter().skip(ch).step_by(c).copied().collect();
        let plane: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_raw(w as u32, h as u32, plane)
                .ok_or_else(|| Error::invalid("image", "buffer smaller than its size"))?;
        let small =
            imageops::resize(&plane, to_w as u32, to_h as u32, imageops::FilterType::CatmullRom);
        for (i, v) in small.into_raw().into_iter().enumerate() {
            out[i * c + ch] = v;
        }
    }
    Ok(ImageF32 { width: to_w, height: to_h, channels: c, data: out })
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

/// Places the image at (`left`, `top`) of a `pw`×`ph` canvas filled by reflection.
pub(crate) fn reflect_pad(
    img: &ImageF32,
    left: usize,
    top: usize,
    pw: usize,
    ph: usize,
) -> ImageF32 {
    let (w, h, c) = (img.width, img.height, img.channels);
    let mut out = Vec::with_capacity(pw * ph * c);
    for y in 0..ph {
        let sy = reflect(y as isize - top as isize, h);
        for x in 0..pw {
            let sx = reflect(x as isize - left as isize, w);
            let i = (sy * w + sx) * c;
            out.extend_from_slice(&img.data[i..i + c]);
        }
    }
    ImageF32 { width: pw, height: ph, channels: c, data: out }
}

/// The `w`×`h` window at (`left`, `top`).
pub(crate) fn crop(img: &ImageF32, left: usize, top: usize, w: usize, h: usize) -> ImageF32 {
    let (pw, c) = (img.width, img.channels);
    let mut out = Vec::with_capacity(w * h * c);
    for y in top..top + h {
        out.extend_from_slice(&img.data[(y * pw + left) * c..(y * pw + left + w) * c]);
    }
    ImageF32 { width: w, height: h, channels: c, data: out }
}
