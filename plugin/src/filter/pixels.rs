//! Leaf pixel helpers on packed RGB8: bicubic resize, reflect padding, cropping. They know
//! nothing of networks; the size policies and the tiling are built from them.

use image::{imageops, ImageBuffer, Rgb};

use crate::error::{Error, Result};

/// Bicubic (Catmull-Rom) resize of a packed `w`×`h` RGB8 image to `to_w`×`to_h`.
pub(crate) fn resize(rgb: &[u8], w: usize, h: usize, to_w: usize, to_h: usize) -> Result<Vec<u8>> {
    let img: ImageBuffer<Rgb<u8>, Vec<u8>> =
        ImageBuffer::from_raw(w as u32, h as u32, rgb.to_vec())
            .ok_or_else(|| Error::invalid("image", "buffer smaller than its size"))?;
    Ok(imageops::resize(&img, to_w as u32, to_h as u32, imageops::FilterType::CatmullRom)
        .into_raw())
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
pub(crate) fn reflect_pad(
    rgb: &[u8],
    w: usize,
    h: usize,
    left: usize,
    top: usize,
    pw: usize,
    ph: usize,
) -> Vec<u8> {
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
