//! The size policies (the contract's [`SizePolicy`]) that fit the image to the network: each
//! takes the network as a function on images whose sides suit it. The tile policy lives in
//! [`super::tiling`]; the model picks which one runs.

use crate::error::Result;
use crate::filter::image_tensor::ImageF32;
use crate::filter::pixels::{crop, reflect_pad, resize};

/// How sizes that are not multiples of the network stride are handled.
pub use pix2pix_ffi::SizePolicy;

/// The network on a batch of images of one size it takes as it is (the model's input channels
/// in, its output channels out, same size, same order).
pub(crate) type ImageForward<'a> = dyn Fn(&[ImageF32]) -> Result<Vec<ImageF32>> + 'a;

/// [`SizePolicy::Resize`]: bicubic resize of each image to `native`×`native`, translate them
/// together, resize each back.
pub(crate) fn resized(
    net: &ImageForward,
    native: usize,
    imgs: &[ImageF32],
) -> Result<Vec<ImageF32>> {
    let small = imgs.iter().map(|i| resize(i, native, native)).collect::<Result<Vec<_>>>()?;
    let out = net(&small)?;
    out.iter().zip(imgs).map(|(o, i)| resize(o, i.width, i.height)).collect()
}

/// [`SizePolicy::Pad`]: reflect-pad each image (of one size) to multiples of `stride`
/// (centred), translate them together, crop.
pub(crate) fn padded(
    net: &ImageForward,
    stride: usize,
    imgs: &[ImageF32],
) -> Result<Vec<ImageF32>> {
    let Some(first) = imgs.first() else { return Ok(Vec::new()) };
    let (w, h) = (first.width, first.height);
    let (pw, ph) = (w.div_ceil(stride) * stride, h.div_ceil(stride) * stride);
    let (left, top) = ((pw - w) / 2, (ph - h) / 2);
    let padded: Vec<ImageF32> = imgs.iter().map(|i| reflect_pad(i, left, top, pw, ph)).collect();
    let out = net(&padded)?;
    Ok(out.iter().map(|o| crop(o, left, top, w, h)).collect())
}
