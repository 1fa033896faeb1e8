//! Whether a JPEG file is whole. The `image` crate's JPEG decoder (zune-jpeg, lenient like
//! browsers) fills a file cut short with gray and reports success, so a truncated download
//! would be translated without a word. This walks the file's segments and entropy-coded scans
//! to its end-of-image marker; bytes after that marker (phones append videos there) are
//! allowed.

const SOS: u8 = 0xDA;
const EOI: u8 = 0xD9;

/// `Ok` when the data reaches its end-of-image marker; else why not.
pub fn complete(data: &[u8]) -> Result<(), String> {
    if data.len() < 2 || data[0] != 0xFF || data[1] != 0xD8 {
        return Err("not a JPEG stream (no start-of-image marker)".into());
    }
    let cut = |what: &str| {
        Err(format!("truncated JPEG: the file ends {what}, before its end-of-image marker"))
    };
    let mut i = 2;
    loop {
        // A marker: 0xFF, optional fill bytes 0xFF, the code.
        if data.get(i) != Some(&0xFF) {
            return match data.get(i) {
                None => cut("between segments"),
                Some(b) => Err(format!(
                    "corrupt JPEG: byte {b:#04x} at offset {i} where a marker should be"
                )),
            };
        }
        while data.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let Some(&code) = data.get(i + 1) else {
            return cut("in a marker");
        };
        i += 2;
        match code {
            EOI => return Ok(()),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = data.get(i..i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return cut("in a segment header");
        };
        if len < 2 || i + len > data.len() {
            return cut(&format!("inside the segment of marker {code:#04x} at offset {}", i - 2));
        }
        i += len;
        if code == SOS {
            // Entropy-coded data runs to the next marker that is neither a stuffed 0xFF00 nor
            // a restart marker.
            loop {
                match (data.get(i), data.get(i + 1)) {
                    (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => i += 2,
                    (Some(0xFF), Some(0xFF)) => i += 1,
                    (Some(0xFF), Some(_)) => break,
                    (Some(_), _) => i += 1,
                    (None, _) => return cut("inside the image data"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 256) as u8])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn whole_files_pass_and_every_cut_is_caught() {
        let data = jpeg();
        assert_eq!(complete(&data), Ok(()));
        let mut with_trailer = data.clone();
        with_trailer.extend_from_slice(b"appended video");
        assert_eq!(complete(&with_trailer), Ok(()));
        for n in 2..data.len() {
            let e = complete(&data[..n]).unwrap_err();
            assert!(e.starts_with("truncated JPEG"), "cut at {n}: {e}");
        }
        assert!(complete(b"GIF89a").is_err());
    }
}
