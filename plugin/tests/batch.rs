//! A batch translated in one forward pass equals its images translated one at a time, in f32
//! (no 8-bit rounding to hide behind): each image normalised by its own statistics, through
//! the direct path (stride multiples) and the pad policy, batch-norm and instance-norm fixtures.

mod common;

use common::*;
use pix2pix::filter::image_tensor::{ImageView, SampleFormat};
use pix2pix::{Model, Options};

/// Four f32 RGB images of `w`×`h` with different statistics (contrast and offset differ).
fn images(w: usize, h: usize) -> Vec<Vec<u8>> {
    (0..4)
        .map(|k| {
            (0..w * h * 3)
                .map(|i| {
                    let v = ((i * (7 + 4 * k) + 13 * k) % 97) as f32 / 96.0;
                    0.1 * k as f32 + v * (0.3 + 0.15 * k as f32)
                })
                .flat_map(f32::to_ne_bytes)
                .collect()
        })
        .collect()
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn a_batch_equals_single_translations_in_f32() {
    for name in ["unet256_ngf8_batch", "unet128_ngf8_instance_lsgan"] {
        let model =
            Model::open(&fixture(name).join("generator.safetensors"), Options::default()).unwrap();
        // 256x256: one pass as is; 150x100: the pad policy pads the batch alike.
        for (w, h) in [(256, 256), (150, 100)] {
            let data = images(w, h);
            let views: Vec<ImageView> = data
                .iter()
                .map(|d| ImageView::with_format(w, h, w * 12, 3, SampleFormat::F32, d).unwrap())
                .collect();
            let batch = model.translate_batch(&views, SampleFormat::F32, false).unwrap();
            assert_eq!(batch.len(), 4);
            let mut worst = 0f32;
            for (view, out) in views.iter().zip(&batch) {
                let single = model.translate_as(view, SampleFormat::F32).unwrap();
                let (a, b) = (floats(&single.data), floats(&out.data));
                assert_eq!(a.len(), b.len());
                worst = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
            }
            assert!(worst <= 1e-5, "{name} {w}x{h}: batch differs from single by {worst:e}");
            // The images differ, so equal outputs are not the trivial kind.
            assert_ne!(batch[0].data, batch[1].data, "{name} {w}x{h}");
        }
    }
}
