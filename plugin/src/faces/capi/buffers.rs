//! Image buffers the C API receives as raw pointers and sizes: checked before any memory is
//! touched or allocated, and strided copies into the caller's buffers.

use crate::faces::api::error::{ApiError, ApiResult, ErrorKind};
use crate::filter::image_tensor::{has_alpha, Image, MAX_PIXELS};

/// No image buffer is larger than this (1 TiB): a larger extent is a garbage size or stride.
pub const MAX_EXTENT: usize = 1 << 40;

/// Checks an image description before any memory is touched or allocated, and returns the
/// number of bytes its buffer must hold: `stride · (height − 1) + width · channels · bytes`
/// (`bytes` per sample).
pub fn image_extent(
    width: usize,
    height: usize,
    stride: usize,
    channels: usize,
    bytes: usize,
) -> ApiResult<usize> {
    if !(1..=4).contains(&channels) {
        return Err(ApiError::invalid(format!(
            "invalid image channels: {channels} (1, 2, 3 or 4 expected)"
        )));
    }
    if width == 0 || height == 0 {
        return Err(ApiError::invalid(format!(
            "invalid image size: {width}x{height} (both sides must be positive)"
        )));
    }
    if width.checked_mul(height).is_none_or(|p| p > MAX_PIXELS) {
        return Err(ApiError::invalid(format!(
            "invalid image size: {width}x{height} exceeds the limit of {MAX_PIXELS} pixels"
        )));
    }
    let row = width * channels * bytes;
    if stride < row {
        return Err(ApiError::invalid(format!(
            "invalid image stride: {stride} bytes is less than a row ({width} × {channels} × {bytes} = {row} bytes)"
        )));
    }
    stride
        .checked_mul(height - 1)
        .and_then(|n| n.checked_add(row))
        .filter(|&n| n <= MAX_EXTENT)
        .ok_or_else(|| ApiError::invalid(format!("invalid image stride: {stride} bytes × {height} rows exceeds the limit of {MAX_EXTENT} bytes")))
}

/// Channels of the translation of an image with `in_channels` by a model with `model_out`
/// output channels: the model's, plus one for alpha if the input has it.
pub fn output_channels(in_channels: usize, model_out: usize) -> usize {
    model_out + has_alpha(in_channels) as usize
}

/// Checks that a caller's buffer of `buf_height` rows `buf_stride` bytes apart can take a
/// `width`×`height` image of `channels` samples of `bytes`, and returns the bytes the library
/// will write into: `buf_stride · (height − 1) + width · channels · bytes` from its start.
pub fn output_extent(
    width: usize,
    height: usize,
    channels: usize,
    bytes: usize,
    buf_stride: usize,
    buf_height: usize,
) -> ApiResult<usize> {
    let row = width * channels * bytes;
    if buf_stride < row || buf_height < height {
        return Err(ApiError::new(
            ErrorKind::BufferTooSmall,
            format!(
                "output buffer too small: {width}x{height} with {channels} channels of {bytes} byte(s) needs stride ≥ {row} and height ≥ {height}, \
                 the buffer has stride {buf_stride} and height {buf_height}"
            ),
        ));
    }
    buf_stride
        .checked_mul(height - 1)
        .and_then(|n| n.checked_add(row))
        .filter(|&n| n <= MAX_EXTENT)
        .ok_or_else(|| ApiError::invalid(format!("invalid output stride: {buf_stride} bytes × {height} rows exceeds the limit of {MAX_EXTENT} bytes")))
}

/// Copies a packed image into a buffer with rows `stride` bytes apart; the bytes between the
/// end of one row and the start of the next are left as they are.
pub fn copy_to_strided(image: &Image, dst: &mut [u8], stride: usize) -> ApiResult<()> {
    let bytes = image.format.bytes();
    let row = image.width * image.channels * bytes;
    let need =
        output_extent(image.width, image.height, image.channels, bytes, stride, image.height)?;
    if dst.len() < need || image.data.len() < row * image.height {
        return Err(ApiError::new(
            ErrorKind::Internal,
            "internal error: output buffer smaller than its checked extent",
        ));
    }
    for (y, src) in image.data.chunks_exact(row).take(image.height).enumerate() {
        dst[y * stride..y * stride + row].copy_from_slice(src);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn image_extent_rules() {
        assert_eq!(image_extent(4, 3, 12, 3, 1), Ok(36));
        assert_eq!(image_extent(4, 3, 20, 3, 1), Ok(52));
        assert_eq!(image_extent(1, 1, 1, 1, 1), Ok(1));
        assert_eq!(image_extent(4, 3, 8, 2, 1), Ok(24));
        assert_eq!(image_extent(4, 3, 24, 3, 2), Ok(72));
        assert_eq!(image_extent(4, 3, 64, 4, 4), Ok(192));
        for (w, h, s, c, b) in [
            (0, 3, 12, 3, 1),
            (4, 0, 12, 3, 1),
            (4, 3, 11, 3, 1),
            (4, 3, 12, 5, 1),
            (4, 3, 12, 0, 1),
            (4, 3, 23, 3, 2),
            (100_000, 100_000, 300_000, 3, 1),
            (1, 1 << 27, u32::MAX as usize, 1, 1),
        ] {
            let e = image_extent(w, h, s, c, b).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{w}x{h} stride {s} channels {c}");
        }
        assert_eq!(
            image_extent(usize::MAX, usize::MAX, usize::MAX, 4, 1).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn output_extent_rules() {
        assert_eq!(output_extent(4, 3, 3, 1, 12, 3), Ok(36));
        assert_eq!(output_extent(4, 3, 4, 1, 20, 5), Ok(56));
        assert_eq!(output_extent(4, 3, 1, 4, 16, 3), Ok(48));
        assert_eq!(output_extent(4, 3, 3, 1, 11, 3).unwrap_err().kind, ErrorKind::BufferTooSmall);
        assert_eq!(output_extent(4, 3, 3, 1, 12, 2).unwrap_err().kind, ErrorKind::BufferTooSmall);
        assert_eq!(output_extent(4, 3, 3, 2, 23, 3).unwrap_err().kind, ErrorKind::BufferTooSmall);
        let img = Image {
            width: 2,
            height: 2,
            channels: 3,
            format: crate::filter::image_tensor::SampleFormat::U8,
            data: (0..12).collect(),
        };
        let mut buf = vec![0xEEu8; 8 * 2];
        copy_to_strided(&img, &mut buf, 8).unwrap();
        assert_eq!(buf, [0, 1, 2, 3, 4, 5, 0xEE, 0xEE, 6, 7, 8, 9, 10, 11, 0xEE, 0xEE]);
        assert!(copy_to_strided(&img, &mut buf[..13], 8).is_err());
        assert_eq!(
            (output_channels(1, 3), output_channels(3, 3), output_channels(4, 3)),
            (3, 3, 4)
        );
        assert_eq!(
            (output_channels(1, 1), output_channels(2, 1), output_channels(4, 1)),
            (1, 2, 2)
        );
    }
}
