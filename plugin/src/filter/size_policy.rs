//! The size policies (the contract's [`SizePolicy`]) that fit the image to the network: each
//! takes the network as a function on images whose sides suit it. The tile policy lives in
//! [`super::tiling`]; the model picks which one runs.

use crate::error::Result;
use crate::filter::image_tensor::ImageF32;
use crate::filter::pixels::{crop, reflect_pad, resize};

/// How sizes that are not multiples of the network stride are handled.
pub use pix2pix_ffi::SizePolicy;

/// The network on an image of a size it takes as it is (the model's input channels in, its
/// output channels out, same size).
pub(crate) type ImageForward<'a> = dyn Fn(&ImageF32) -> Result<ImageF32> + 'a;

/// [`SizePolicy::Resize`]: bicubic resize to `native`×`native`, translate, resize back.
pub(crate) fn resized(net: &ImageForward, native: usize, img: &ImageF32) -> Result<ImageF32> {
    let small = resize(img, native, native)?;
    let out = net(&small)?;
    resize(&out, img.width, img.height)
}

/// [`SizePolicy::Pad`]: reflect-pad to multiples of `stride` (centred), translate, crop.
pub(crate) fn padded(net: &ImageForward, stride: usize, img: &ImageF32) -> Result<ImageF32> {
    let (w, h) = (img.width, img.height);
    let (pw, ph) = (w.div_ceil(stride) * stride, h.div_ceil(stride) * stride);
    let (left, top) = ((pw - w) / 2, (ph - h) / 2);
    let padded = reflect_pad(img, left, top, pw, ph);
    let out = net(&padded)?;
    Ok(crop(&out, left, top, w, h))
}
