//! Decoding inputs, encoding outputs (format from the extension), and converting images to
//! and from the plugin's `ImageRef` / `ImageBuf`.

use std::io::Cursor;
use std::path::Path;

use abi_stable::std_types::RSlice;
use anyhow::{anyhow, bail, Context, Result};
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage, RgbaImage};
use pix2pix_ffi::{ImageBuf, ImageRef};

/// The extensions of the formats this host is built with (inputs and outputs).
pub const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp"];

pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Reads an image, trusting its contents over its extension.
pub fn read(path: &Path) -> Result<DynamicImage> {
    // A named pipe or a device found in an input folder would block or never end.
    crate::file_check::regular_file(path).map_err(|why| anyhow!("{why}"))?;
    let reader =
        ImageReader::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader =
        reader.with_guessed_format().with_context(|| format!("cannot read {}", path.display()))?;
    if reader.format().is_none() {
        bail!("not an image (unknown format)");
    }
    if reader.format() == Some(ImageFormat::Jpeg) {
        // The decoder would fill a cut-short file with gray and succeed.
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        crate::jpeg_check::complete(&data).map_err(|e| anyhow!(e))?;
    }
    reader.decode().map_err(|e| anyhow!("cannot decode image: {e}"))
}

/// The output format named by a path's extension.
pub fn format_for(path: &Path) -> Result<ImageFormat> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ImageFormat::from_extension(ext) {
        Some(f) if EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) => Ok(f),
        _ => bail!(
            "{}: cannot tell the output format from the extension {ext:?} (use one of: {})",
            path.display(),
            EXTENSIONS.join(", ")
        ),
    }
}

/// Encodes `img` in the format of `path`'s extension. Formats without alpha (JPEG) get RGB;
/// everything is 8-bit, which every encoder here takes.
pub fn encode(img: &DynamicImage, path: &Path) -> Result<Vec<u8>> {
    let format = format_for(path)?;
    let img = match (format, img) {
        (ImageFormat::Jpeg, DynamicImage::ImageLuma8(_)) => img.clone(),
        (ImageFormat::Jpeg, _) => DynamicImage::ImageRgb8(img.to_rgb8()),
        (
            _,
            DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_),
        ) => img.clone(),
        (ImageFormat::WebP, DynamicImage::ImageLumaA8(_)) => {
            DynamicImage::ImageRgba8(img.to_rgba8())
        }
        (_, DynamicImage::ImageLumaA8(_)) => img.clone(),
        _ if img.color().has_alpha() => DynamicImage::ImageRgba8(img.to_rgba8()),
        _ => DynamicImage::ImageRgb8(img.to_rgb8()),
    };
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).with_context(|| format!("cannot encode {}", path.display()))?;
    Ok(out.into_inner())
}

/// Pixels in a layout the plugin takes: gray, RGB or RGBA, 8-bit.
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub data: Vec<u8>,
}

impl Pixels {
    pub fn from_image(img: &DynamicImage) -> Self {
        let (width, height) = (img.width(), img.height());
        let (channels, data) = match img {
            DynamicImage::ImageLuma8(g) => (1, g.as_raw().clone()),
            DynamicImage::ImageRgb8(c) => (3, c.as_raw().clone()),
            DynamicImage::ImageRgba8(c) => (4, c.as_raw().clone()),
            // Gray with alpha, 16-bit and float images: RGBA if they carry alpha, else RGB.
            _ if img.color().has_alpha() => (4, img.to_rgba8().into_raw()),
            _ => (3, img.to_rgb8().into_raw()),
        };
        Self { width, height, channels, data }
    }

    pub fn as_ref(&self) -> ImageRef<'_> {
        ImageRef {
            width: self.width,
            height: self.height,
            stride: self.width * self.channels,
            channels: self.channels,
            data: RSlice::from_slice(&self.data),
        }
    }
}

/// The plugin's output (3 or 4 channels) as an image.
pub fn from_buf(buf: ImageBuf) -> Result<DynamicImage> {
    let (w, h) = (buf.width, buf.height);
    let data = buf.data.into_vec();
    let img = match buf.channels {
        3 => RgbImage::from_raw(w, h, data).map(DynamicImage::ImageRgb8),
        4 => RgbaImage::from_raw(w, h, data).map(DynamicImage::ImageRgba8),
        c => bail!("plugin returned a {c}-channel image"),
    };
    img.ok_or_else(|| anyhow!("plugin returned a buffer too small for {w}x{h}"))
}
