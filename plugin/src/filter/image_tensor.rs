//! Pixels ↔ tensors.
//!
//! Rule for inputs: 8-bit, 16-bit or float samples ([`SampleFormat`]), 1 (gray), 2 (gray +
//! alpha), 3 (RGB) or 4 (RGBA) channels, rows `stride` bytes apart. Inside the filter an image
//! is 32-bit float in [0, 1] ([`ImageF32`]) with the model's channels: gray is replicated to RGB
//! for a 3-channel model, RGB becomes ITU-R 601-2 luma for a 1-channel model (as the reference
//! loads images with PIL's `convert('L')` when `input_nc == 1`), and alpha is left out (callers
//! get it back through [`Image::with_alpha_of`]). Samples map to the network's [-1, 1] as
//! `2 s − 1` (for 8-bit exactly `v / 127.5 − 1`); outputs are clamped to [-1, 1], mapped back to
//! [0, 1], and quantised only when written to an integer format (rounding half away from zero).

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::filter::memory::{try_vec, try_with_capacity};

pub use pix2pix_ffi::SampleFormat;

/// A borrowed image: what a host hands the plugin.
#[derive(Clone, Copy)]
pub struct ImageView<'a> {
    pub width: usize,
    pub height: usize,
    /// Bytes from one row to the next (≥ width · channels · bytes per sample).
    pub stride: usize,
    pub channels: usize,
    pub format: SampleFormat,
    /// Samples in native byte order.
    pub data: &'a [u8],
}

/// An owned, tightly packed 8-bit image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageU8 {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// An owned, tightly packed image of any sample format (native byte order).
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub format: SampleFormat,
    pub data: Vec<u8>,
}

/// The filter's working image: interleaved f32 samples in [0, 1], no alpha.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageF32 {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

/// Larger requests are refused before any allocation (≈ 4 GiB of f32 activations per plane).
pub const MAX_PIXELS: usize = 1 << 28;

/// Colour channels (alpha not counted) of an image with `channels` samples per pixel.
pub fn colour_channels(channels: usize) -> usize {
    if channels <= 2 {
        1
    } else {
        3
    }
}

/// Whether an image with `channels` samples per pixel carries alpha (the last one).
pub fn has_alpha(channels: usize) -> bool {
    channels == 2 || channels == 4
}

impl<'a> ImageView<'a> {
    /// An 8-bit view; checks sizes against the buffer, so no later index can fall outside it.
    pub fn new(
        width: usize,
        height: usize,
        stride: usize,
        channels: usize,
        data: &'a [u8],
    ) -> Result<Self> {
        Self::with_format(width, height, stride, channels, SampleFormat::U8, data)
    }

    /// A view of samples of `format`; checks sizes against the buffer as [`ImageView::new`].
    pub fn with_format(
        width: usize,
        height: usize,
        stride: usize,
        channels: usize,
        format: SampleFormat,
        data: &'a [u8],
    ) -> Result<Self> {
        if !(1..=4).contains(&channels) {
            return Err(Error::invalid(
                "image channels",
                format!("{channels} (1, 2, 3 or 4 expected)"),
            ));
        }
        if width == 0 || height == 0 {
            return Err(Error::invalid(
                "image size",
                format!("{width}x{height} (both sides must be positive)"),
            ));
        }
        if width.checked_mul(height).is_none_or(|p| p > MAX_PIXELS) {
            return Err(Error::invalid(
                "image size",
                format!("{width}x{height} exceeds the limit of {MAX_PIXELS} pixels"),
            ));
        }
        let bytes = format.bytes();
        let row = width * channels * bytes;
        if stride < row {
            return Err(Error::invalid(
                "image stride",
                format!(
                    "{stride} bytes is less than a row ({width} × {channels} × {bytes} = {row} bytes)"
                ),
            ));
        }
        let need = stride.checked_mul(height - 1).and_then(|n| n.checked_add(row));
        if need.is_none_or(|n| data.len() < n) {
            return Err(Error::invalid(
                "image data",
                format!(
                    "{} bytes for a {width}x{height}x{channels} {format} image with stride {stride}",
                    data.len()
                ),
            ));
        }
        Ok(Self { width, height, stride, channels, format, data })
    }

    /// Row `y`'s bytes.
    pub fn row(&self, y: usize) -> &'a [u8] {
        let row = self.width * self.channels * self.format.bytes();
        &self.data[y * self.stride..y * self.stride + row]
    }

    /// Row `y`'s samples in [0, 1] (floats clamped, NaN read as 0), appended to `out`.
    fn row_unit(&self, y: usize, out: &mut Vec<f32>) {
        let row = self.row(y);
        match self.format {
            SampleFormat::U8 => out.extend(row.iter().map(|&v| v as f32 / 255.0)),
            SampleFormat::U16 => out.extend(
                row.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]]) as f32 / 65535.0),
            ),
            SampleFormat::F32 => out.extend(row.chunks_exact(4).map(|b| {
                let v = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                if v.is_nan() {
                    0.0
                } else {
                    v.clamp(0.0, 1.0)
                }
            })),
        }
    }

    /// The colour samples converted to `channels` (1 or 3) in [0, 1], alpha left out: what a
    /// model with `channels` inputs takes.
    pub fn to_channels(&self, channels: usize) -> Result<ImageF32> {
        let from = colour_channels(self.channels);
        if !matches!(channels, 1 | 3) {
            return Err(Error::invalid(
                "model input channels",
                format!("{channels} (images give 1 (gray) or 3 (RGB); the model cannot take them)"),
            ));
        }
        let (w, h) = (self.width, self.height);
        let mut out = try_with_capacity(w * h * channels, "the input image in f32")?;
        let mut row = Vec::with_capacity(w * self.channels);
        for y in 0..h {
            row.clear();
            self.row_unit(y, &mut row);
            for px in row.chunks_exact(self.channels) {
                match (from, channels) {
                    (1, 1) => out.push(px[0]),
                    (1, _) => out.extend_from_slice(&[px[0]; 3]),
                    (_, 3) => out.extend_from_slice(&px[..3]),
                    _ => out.push(self.luma(px)),
                }
            }
        }
        Ok(ImageF32 { width: w, height: h, channels, data: out })
    }

    /// ITU-R 601-2 luma of an RGB pixel in [0, 1]. 8-bit images get exactly PIL's
    /// `convert('L')` (integer weights 19595, 38470, 7471 over 2^16, rounded), which the
    /// reference applies to the 8-bit files it reads.
    fn luma(&self, rgb: &[f32]) -> f32 {
        match self.format {
            SampleFormat::U8 => {
                let v = |x: f32| (x * 255.0).round() as u32;
                let l = (v(rgb[0]) * 19595 + v(rgb[1]) * 38470 + v(rgb[2]) * 7471 + 0x8000) >> 16;
                l as f32 / 255.0
            }
            _ => rgb[0] * 0.299 + rgb[1] * 0.587 + rgb[2] * 0.114,
        }
    }

    /// The RGB pixels of an 8-bit view, packed (gray replicated, alpha dropped).
    pub fn to_rgb(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.width * self.height * 3);
        for y in 0..self.height {
            let mut row = Vec::with_capacity(self.width * self.channels);
            self.row_unit(y, &mut row);
            for px in row.chunks_exact(self.channels) {
                let q = |v: f32| (v * 255.0).round() as u8;
                match colour_channels(self.channels) {
                    1 => out.extend_from_slice(&[q(px[0]); 3]),
                    _ => out.extend_from_slice(&[q(px[0]), q(px[1]), q(px[2])]),
                }
            }
        }
        out
    }
}

impl ImageU8 {
    pub fn view(&self) -> ImageView<'_> {
        ImageView {
            width: self.width,
            height: self.height,
            stride: self.width * self.channels,
            channels: self.channels,
            format: SampleFormat::U8,
            data: &self.data,
        }
    }
}

impl Image {
    /// `colour` written as `format`, with `alpha_of`'s alpha appended when it has one (copied
    /// as it is when the formats agree, else rescaled).
    pub fn with_alpha_of(
        colour: &ImageF32,
        alpha_of: &ImageView,
        format: SampleFormat,
    ) -> Result<Self> {
        let (w, h, c) = (colour.width, colour.height, colour.channels);
        if (alpha_of.width, alpha_of.height) != (w, h) || colour.data.len() < w * h * c {
            return Err(Error::invalid("image", "output and input sizes differ"));
        }
        let alpha = has_alpha(alpha_of.channels);
        let channels = c + alpha as usize;
        let bytes = format.bytes();
        let mut data = try_with_capacity(w * h * channels * bytes, "the output image")?;
        let push = |data: &mut Vec<u8>, v: f32| match format {
            SampleFormat::U8 => data.push((v.clamp(0.0, 1.0) * 255.0).round() as u8),
            SampleFormat::U16 => data
                .extend_from_slice(&((v.clamp(0.0, 1.0) * 65535.0).round() as u16).to_ne_bytes()),
            SampleFormat::F32 => data.extend_from_slice(&v.clamp(0.0, 1.0).to_ne_bytes()),
        };
        let in_bytes = alpha_of.format.bytes();
        let mut unit = Vec::with_capacity(w * alpha_of.channels);
        for y in 0..h {
            let src = alpha_of.row(y);
            if alpha && alpha_of.format != format {
                unit.clear();
                alpha_of.row_unit(y, &mut unit);
            }
            for x in 0..w {
                for &v in &colour.data[(y * w + x) * c..(y * w + x + 1) * c] {
                    push(&mut data, v);
                }
                if alpha {
                    let i = x * alpha_of.channels + alpha_of.channels - 1;
                    if alpha_of.format == format {
                        data.extend_from_slice(&src[i * in_bytes..(i + 1) * in_bytes]);
                    } else {
                        push(&mut data, unit[i]);
                    }
                }
            }
        }
        Ok(Self { width: w, height: h, channels, format, data })
    }

    /// This image's samples as 8-bit, when it is 8-bit.
    pub fn into_u8(self) -> Result<ImageU8> {
        if self.format != SampleFormat::U8 {
            return Err(Error::invalid("image format", format!("{} (u8 expected)", self.format)));
        }
        Ok(ImageU8 {
            width: self.width,
            height: self.height,
            channels: self.channels,
            data: self.data,
        })
    }
}

/// (H, W, C) interleaved samples in [0, 1] → (1, C, H, W) f32 in [-1, 1].
pub fn image_to_tensor(img: &ImageF32) -> Result<Tensor> {
    images_to_tensor(std::slice::from_ref(img))
}

/// N images of one size and channel count → (N, C, H, W) f32 in [-1, 1].
pub fn images_to_tensor(imgs: &[ImageF32]) -> Result<Tensor> {
    let Some(first) = imgs.first() else {
        return Err(Error::invalid("batch", "no images"));
    };
    let (w, h, c) = (first.width, first.height, first.channels);
    let plane = w * h;
    let mut v = try_vec(imgs.len() * c * plane, 0f32, "the input tensor")?;
    for (k, img) in imgs.iter().enumerate() {
        if (img.width, img.height, img.channels) != (w, h, c) || img.data.len() < plane * c {
            return Err(Error::invalid(
                format!("batch image {k}"),
                format!(
                    "{}x{}x{} differs from image 0's {w}x{h}x{c} (a batch holds images of one size)",
                    img.width, img.height, img.channels
                ),
            ));
        }
        let v = &mut v[k * c * plane..(k + 1) * c * plane];
        for (i, px) in img.data.chunks_exact(c).enumerate() {
            for ch in 0..c {
                v[ch * plane + i] = px[ch] * 2.0 - 1.0;
            }
        }
    }
    Ok(Tensor::from_vec(v, (imgs.len(), c, h, w), &Device::Cpu)?)
}

/// (1, C, H, W) in [-1, 1] → interleaved samples in [0, 1] (clamped).
pub fn tensor_to_image(t: &Tensor) -> Result<ImageF32> {
    tensor_to_images(t)?.into_iter().next().ok_or_else(|| Error::invalid("tensor", "no images"))
}

/// (N, C, H, W) in [-1, 1] → N images of interleaved samples in [0, 1] (clamped).
pub fn tensor_to_images(t: &Tensor) -> Result<Vec<ImageF32>> {
    let (n, c, h, w) = t.dims4()?;
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let plane = w * h;
    let images = (0..n).map(|k| {
        let v = &v[k * c * plane..(k + 1) * c * plane];
        let mut data = try_with_capacity(plane * c, "the output image in f32")?;
        for i in 0..plane {
            for ch in 0..c {
                data.push(unit(v[ch * plane + i]));
            }
        }
        Ok(ImageF32 { width: w, height: h, channels: c, data })
    });
    images.collect()
}

/// A network output in [-1, 1] as a sample in [0, 1]: `(clamp(x) + 1) / 2`, so that 8-bit
/// quantisation `round(s · 255)` equals `round((clamp(x) + 1) · 127.5)` exactly.
pub fn unit(x: f32) -> f32 {
    (x.clamp(-1.0, 1.0) + 1.0) * 0.5
}

/// Packed 8-bit samples with `channels` per pixel, converted to a model's `model_channels`
/// (1: PIL's luma of RGB; 3: gray replicated), → (1, C, H, W) in [-1, 1]: the trainer's inputs.
pub fn u8_to_tensor_channels(
    data: &[u8],
    channels: usize,
    width: usize,
    height: usize,
    model_channels: usize,
) -> Result<Tensor> {
    let view = ImageView::new(width, height, width * channels, channels, data)?;
    image_to_tensor(&view.to_channels(model_channels)?)
}

/// Packed RGB8 → (1, 3, H, W) f32 in [-1, 1].
pub fn rgb_to_tensor(rgb: &[u8], width: usize, height: usize) -> Result<Tensor> {
    let plane = width * height;
    let mut v = vec![0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            v[c * plane + i] = px[c] as f32 / 127.5 - 1.0;
        }
    }
    Ok(Tensor::from_vec(v, (1, 3, height, width), &Device::Cpu)?)
}

/// (1, C, H, W) in [-1, 1] → packed RGB8 (one channel is replicated).
pub fn tensor_to_rgb(t: &Tensor) -> Result<(Vec<u8>, usize, usize)> {
    let (_, c, h, w) = t.dims4()?;
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let plane = w * h;
    let q = |x: f32| ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
    let mut out = Vec::with_capacity(plane * 3);
    for i in 0..plane {
        for ch in 0..3 {
            out.push(q(v[ch.min(c - 1) * plane + i]));
        }
    }
    Ok((out, w, h))
}
