//! The size policies (the contract's [`SizePolicy`]) that fit the image to the network: each
//! takes the network as a function on packed RGB8 whose sides suit it. The tile policy lives in
//! [`super::tiling`]; the model picks which one runs.

use crate::error::Result;
use crate::filter::pixels::{crop, reflect_pad, resize};

/// How sizes that are not multiples of the network stride are handled.
pub use pix2pix_ffi::SizePolicy;

/// The network on packed RGB8 of a size it takes as it is: `(rgb, width, height)` → RGB8.
pub(crate) type RgbForward<'a> = dyn Fn(&[u8], usize, usize) -> Result<Vec<u8>> + 'a;

/// [`SizePolicy::Resize`]: bicubic resize to `native`×`native`, translate, resize back.
pub(crate) fn resized(
    net: &RgbForward,
    native: usize,
    rgb: &[u8],
    w: usize,
    h: usize,
) -> Result<Vec<u8>> {
    let small = resize(rgb, w, h, native, native)?;
    let out = net(&small, native, native)?;
    resize(&out, native, native, w, h)
}

/// [`SizePolicy::Pad`]: reflect-pad to multiples of `stride` (centred), translate, crop.
pub(crate) fn padded(
    net: &RgbForward,
    stride: usize,
    rgb: &[u8],
    w: usize,
    h: usize,
) -> Result<Vec<u8>> {
    let (pw, ph) = (w.div_ceil(stride) * stride, h.div_ceil(stride) * stride);
    let (left, top) = ((pw - w) / 2, (ph - h) / 2);
    let padded = reflect_pad(rgb, w, h, left, top, pw, ph);
    let out = net(&padded, pw, ph)?;
    Ok(crop(&out, pw, left, top, w, h))
}
