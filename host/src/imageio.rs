//! Decoding inputs, encoding outputs (format from the extension), and converting images to
//! and from the plugin's `ImageRef` / `ImageBuf`.

use std::io::Cursor;
use std::path::Path;

use abi_stable::std_types::RSlice;
use anyhow::{anyhow, bail, Context, Result};
use image::codecs::pnm::{PnmEncoder, PnmSubtype, SampleEncoding};
use image::{DynamicImage, ImageBuffer, ImageFormat, ImageReader};
use pix2pix_ffi::{ImageBuf, ImageBufEx, ImageRef, ImageRefEx, SampleFormat};

/// The extensions of the formats this host is built with (inputs and outputs).
pub const EXTENSIONS: &[&str] =
    &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "ppm", "pgm", "pnm"];

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

/// Encodes `img` in the format of `path`'s extension, keeping its sample depth where the format
/// can hold it: PNG and PNM 8 or 16 bits (float images become 16-bit), TIFF 8, 16 or 32-bit
/// float; JPEG, WebP and BMP are 8-bit. Formats without alpha (JPEG, PPM, PGM) drop it; PPM is
/// RGB and PGM gray.
pub fn encode(img: &DynamicImage, path: &Path) -> Result<Vec<u8>> {
    let format = format_for(path)?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let img = fit(img, format, &ext);
    let mut out = Cursor::new(Vec::new());
    let written = match format {
        ImageFormat::Pnm => {
            let subtype = match img.color().channel_count() {
                1 => PnmSubtype::Graymap(SampleEncoding::Binary),
                _ => PnmSubtype::Pixmap(SampleEncoding::Binary),
            };
            img.write_with_encoder(PnmEncoder::new(&mut out).with_subtype(subtype))
        }
        _ => img.write_to(&mut out, format),
    };
    written.with_context(|| format!("cannot encode {}", path.display()))?;
    Ok(out.into_inner())
}

/// `img` in a layout `format` (with extension `ext`) can encode, at the deepest depth it takes.
fn fit(img: &DynamicImage, format: ImageFormat, ext: &str) -> DynamicImage {
    use DynamicImage as D;
    let alpha = img.color().has_alpha();
    let gray = img.color().channel_count() <= 2;
    let deep = img.color().bytes_per_pixel() / img.color().channel_count() > 1;
    let float = matches!(img, D::ImageRgb32F(_) | D::ImageRgba32F(_));
    match format {
        ImageFormat::Png => match (deep, gray, alpha) {
            (false, _, _) => img.clone(),
            (true, true, false) => D::ImageLuma16(img.to_luma16()),
            (true, true, true) => D::ImageLumaA16(img.to_luma_alpha16()),
            (true, false, false) => D::ImageRgb16(img.to_rgb16()),
            (true, false, true) => D::ImageRgba16(img.to_rgba16()),
        },
        ImageFormat::Tiff => match (float, deep, gray, alpha) {
            (true, _, _, false) => D::ImageRgb32F(img.to_rgb32f()),
            (true, _, _, true) => D::ImageRgba32F(img.to_rgba32f()),
            (_, false, true, false) => D::ImageLuma8(img.to_luma8()),
            (_, false, false, false) => D::ImageRgb8(img.to_rgb8()),
            (_, false, _, true) => D::ImageRgba8(img.to_rgba8()),
            (_, true, true, false) => D::ImageLuma16(img.to_luma16()),
            (_, true, false, false) => D::ImageRgb16(img.to_rgb16()),
            (_, true, _, true) => D::ImageRgba16(img.to_rgba16()),
        },
        ImageFormat::Pnm => match (deep, gray && ext != "ppm" || ext == "pgm") {
            (false, true) => D::ImageLuma8(img.to_luma8()),
            (false, false) => D::ImageRgb8(img.to_rgb8()),
            (true, true) => D::ImageLuma16(img.to_luma16()),
            (true, false) => D::ImageRgb16(img.to_rgb16()),
        },
        ImageFormat::Jpeg if gray => D::ImageLuma8(img.to_luma8()),
        ImageFormat::Jpeg => D::ImageRgb8(img.to_rgb8()),
        ImageFormat::WebP if alpha => D::ImageRgba8(img.to_rgba8()),
        _ => match img {
            D::ImageLuma8(_) | D::ImageRgb8(_) | D::ImageRgba8(_) | D::ImageLumaA8(_) => {
                img.clone()
            }
            _ if gray && !alpha => D::ImageLuma8(img.to_luma8()),
            _ if alpha => D::ImageRgba8(img.to_rgba8()),
            _ => D::ImageRgb8(img.to_rgb8()),
        },
    }
}

/// Pixels in a layout the plugin takes: gray, gray + alpha, RGB or RGBA, of 8-bit, 16-bit or
/// float samples (native byte order).
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub format: SampleFormat,
    pub data: Vec<u8>,
}

impl Pixels {
    /// The image's own layout and depth (float gray has no layout of its own: RGB float).
    pub fn from_image(img: &DynamicImage) -> Self {
        use DynamicImage as D;
        let (width, height) = (img.width(), img.height());
        let ne16 = |v: &[u16]| v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>();
        let nef = |v: &[f32]| v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>();
        let (channels, format, data) = match img {
            D::ImageLuma8(g) => (1, SampleFormat::U8, g.as_raw().clone()),
            D::ImageLumaA8(g) => (2, SampleFormat::U8, g.as_raw().clone()),
            D::ImageRgb8(c) => (3, SampleFormat::U8, c.as_raw().clone()),
            D::ImageRgba8(c) => (4, SampleFormat::U8, c.as_raw().clone()),
            D::ImageLuma16(g) => (1, SampleFormat::U16, ne16(g.as_raw())),
            D::ImageLumaA16(g) => (2, SampleFormat::U16, ne16(g.as_raw())),
            D::ImageRgb16(c) => (3, SampleFormat::U16, ne16(c.as_raw())),
            D::ImageRgba16(c) => (4, SampleFormat::U16, ne16(c.as_raw())),
            D::ImageRgb32F(c) => (3, SampleFormat::F32, nef(c.as_raw())),
            D::ImageRgba32F(c) => (4, SampleFormat::F32, nef(c.as_raw())),
            _ if img.color().has_alpha() => (4, SampleFormat::U8, img.to_rgba8().into_raw()),
            _ => (3, SampleFormat::U8, img.to_rgb8().into_raw()),
        };
        Self { width, height, channels, format, data }
    }

    /// As 8-bit pixels (for plugins without `translate_ex`).
    pub fn to_u8(&self, img: &DynamicImage) -> Self {
        match self.format {
            SampleFormat::U8 => Self { data: self.data.clone(), ..*self },
            _ => Self::from_image(&match self.channels {
                1 => DynamicImage::ImageLuma8(img.to_luma8()),
                2 => DynamicImage::ImageLumaA8(img.to_luma_alpha8()),
                3 => DynamicImage::ImageRgb8(img.to_rgb8()),
                _ => DynamicImage::ImageRgba8(img.to_rgba8()),
            }),
        }
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

    pub fn as_ref_ex(&self) -> ImageRefEx<'_> {
        ImageRefEx {
            width: self.width,
            height: self.height,
            stride: self.width * self.channels * self.format.bytes() as u32,
            channels: self.channels,
            format: self.format,
            data: RSlice::from_slice(&self.data),
        }
    }
}

/// The plugin's 8-bit output (1 to 4 channels) as an image.
pub fn from_buf(buf: ImageBuf) -> Result<DynamicImage> {
    from_samples(buf.width, buf.height, buf.channels, SampleFormat::U8, buf.data.into_vec())
}

/// The plugin's output of any sample format as an image (gray float becomes RGB float).
pub fn from_buf_ex(buf: ImageBufEx) -> Result<DynamicImage> {
    from_samples(buf.width, buf.height, buf.channels, buf.format, buf.data.into_vec())
}

fn from_samples(
    w: u32,
    h: u32,
    channels: u32,
    format: SampleFormat,
    data: Vec<u8>,
) -> Result<DynamicImage> {
    use DynamicImage as D;
    let u16s = |d: &[u8]| d.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])).collect();
    let f32s = |d: &[u8]| -> Vec<f32> {
        d.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    let img = match (format, channels) {
        (SampleFormat::U8, 1) => ImageBuffer::from_raw(w, h, data).map(D::ImageLuma8),
        (SampleFormat::U8, 2) => ImageBuffer::from_raw(w, h, data).map(D::ImageLumaA8),
        (SampleFormat::U8, 3) => ImageBuffer::from_raw(w, h, data).map(D::ImageRgb8),
        (SampleFormat::U8, 4) => ImageBuffer::from_raw(w, h, data).map(D::ImageRgba8),
        (SampleFormat::U16, 1) => ImageBuffer::from_raw(w, h, u16s(&data)).map(D::ImageLuma16),
        (SampleFormat::U16, 2) => ImageBuffer::from_raw(w, h, u16s(&data)).map(D::ImageLumaA16),
        (SampleFormat::U16, 3) => ImageBuffer::from_raw(w, h, u16s(&data)).map(D::ImageRgb16),
        (SampleFormat::U16, 4) => ImageBuffer::from_raw(w, h, u16s(&data)).map(D::ImageRgba16),
        (SampleFormat::F32, 1 | 2) => {
            let v = f32s(&data);
            let rgba: Vec<f32> = v
                .chunks_exact(channels as usize)
                .flat_map(|p| [p[0], p[0], p[0], if channels == 2 { p[1] } else { 1.0 }])
                .collect();
            let img = ImageBuffer::from_raw(w, h, rgba).map(D::ImageRgba32F);
            if channels == 1 {
                img.map(|i| D::ImageRgb32F(i.to_rgb32f()))
            } else {
                img
            }
        }
        (SampleFormat::F32, 3) => ImageBuffer::from_raw(w, h, f32s(&data)).map(D::ImageRgb32F),
        (SampleFormat::F32, 4) => ImageBuffer::from_raw(w, h, f32s(&data)).map(D::ImageRgba32F),
        (_, c) => bail!("plugin returned a {c}-channel image"),
    };
    img.ok_or_else(|| anyhow!("plugin returned a buffer too small for {w}x{h}"))
}
