//! Pixels ↔ tensors.
//!
//! Rule for inputs: 8-bit samples, 1 (gray), 3 (RGB) or 4 (RGBA) channels, rows `stride` bytes
//! apart. Gray is replicated to RGB; alpha is dropped on the way in (callers that want it back,
//! like the C API for RGBA, copy it through). Values map to [-1, 1] as `v / 127.5 - 1`; on the
//! way out they are clamped to [-1, 1] and mapped back with rounding half away from zero.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// A borrowed 8-bit image: what a host hands the plugin.
#[derive(Clone, Copy)]
pub struct ImageView<'a> {
    pub width: usize,
    pub height: usize,
    /// Bytes from one row to the next (≥ width · channels).
    pub stride: usize,
    pub channels: usize,
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

/// Larger requests are refused before any allocation (≈ 4 GiB of f32 activations per plane).
pub const MAX_PIXELS: usize = 1 << 28;

impl<'a> ImageView<'a> {
    /// Checks sizes against the buffer, so no later index can fall outside it.
    pub fn new(
        width: usize,
        height: usize,
        stride: usize,
        channels: usize,
        data: &'a [u8],
    ) -> Result<Self> {
        if !matches!(channels, 1 | 3 | 4) {
            return Err(Error::invalid(
                "image channels",
                format!("{channels} (1, 3 or 4 expected)"),
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
        let row = width * channels;
        if stride < row {
            return Err(Error::invalid(
                "image stride",
                format!("{stride} bytes is less than a row ({width} × {channels} = {row} bytes)"),
            ));
        }
        let need = stride.checked_mul(height - 1).and_then(|n| n.checked_add(row));
        if need.is_none_or(|n| data.len() < n) {
            return Err(Error::invalid(
                "image data",
                format!(
                    "{} bytes for a {width}x{height}x{channels} image with stride {stride}",
                    data.len()
                ),
            ));
        }
        Ok(Self { width, height, stride, channels, data })
    }

    pub fn row(&self, y: usize) -> &'a [u8] {
        &self.data[y * self.stride..y * self.stride + self.width * self.channels]
    }

    /// The RGB pixels, packed (gray replicated, alpha dropped).
    pub fn to_rgb(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.width * self.height * 3);
        for y in 0..self.height {
            let row = self.row(y);
            match self.channels {
                1 => row.iter().for_each(|&v| out.extend_from_slice(&[v, v, v])),
                3 => out.extend_from_slice(row),
                _ => row.chunks_exact(4).for_each(|p| out.extend_from_slice(&p[..3])),
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
            data: &self.data,
        }
    }
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
