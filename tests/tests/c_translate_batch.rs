//! `p2p_translate_batch` from a real C program (`tests/c/translate_batch.c`):
//! - a batch of four different images gives each image's single translation to within one
//!   8-bit level (each image normalised by its own statistics), through the pad policy;
//! - with `P2P_OPT_SHARED_BATCH_STATS` the batch is normalised with the statistics of all four
//!   images: different from the per-image result, and equal (to one level) to the generator
//!   run on the stacked images with candle's own ops, batch norm over (N, H, W);
//! - a batch with an image of another size fails with `P2P_ERR_INVALID_ARGUMENT` naming it.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const N: usize = 4;

/// Four RGB images of `w`×`h` with different statistics (inverted, darkened), one after
/// another.
fn inputs(w: usize, h: usize) -> Vec<u8> {
    (0..N as u32)
        .flat_map(|k| {
            test_image(w, h, 3, 11 + 7 * k).into_iter().map(move |v| {
                let v = if k % 2 == 1 { 255 - v } else { v } as u32;
                (v * (2 + k) / 5).min(255) as u8
            })
        })
        .collect()
}

/// Runs the C program; returns (single translations, batch translation, its stdout).
fn translate_batch(
    exe: &Path,
    dir: &Path,
    model: &Path,
    (w, h): (usize, usize),
    shared: bool,
) -> (Vec<u8>, Vec<u8>, String) {
    let input = dir.join(format!("in_{w}x{h}.raw"));
    std::fs::write(&input, inputs(w, h)).unwrap();
    let (single, batch) = (dir.join("single.raw"), dir.join("batch.raw"));
    let out = run(Command::new(exe)
        .arg(model)
        .arg(&input)
        .args([w, h, N, shared as usize].map(|v| v.to_string()))
        .arg(&single)
        .arg(&batch));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (std::fs::read(&single).unwrap(), std::fs::read(&batch).unwrap(), text)
}

fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0)
}

#[test]
fn batch_equals_single_translations_with_per_image_statistics() {
    let dir = scratch("translate-batch");
    let exe = compile("translate_batch.c", &dir);
    // Batch norm (where batch statistics matter) and instance norm; 300x200 goes through the
    // pad policy, so the batch is padded alike.
    for (fixture, size) in [(UNET256, (300, 200)), (UNET128, (150, 100))] {
        let model = generator(fixture);
        let (single, batch, text) = translate_batch(&exe, &dir, &model, size, false);
        assert!(text.contains("mixed sizes: invalid in[2]"), "{fixture}: {text}");
        // The single translations are the Rust API's.
        let (w, h) = size;
        let first = &inputs(w, h)[..w * h * 3];
        assert_eq!(&single[..w * h * 3], rust_translate(&model, first, w, h, 3), "{fixture}");
        let d = max_diff(&single, &batch);
        assert!(d <= 1, "{fixture}: batch differs from single translations by {d} levels");
    }
}

#[test]
fn shared_statistics_are_the_whole_batchs() {
    use pix2pix::kernels::{with_mode, Mode};
    use pix2pix::{Checkpoint, Forward, Generator, Layer, NormStats};

    let dir = scratch("translate-batch-shared");
    let exe = compile("translate_batch.c", &dir);
    let model = generator(UNET256);
    // A multiple of the stride: the network sees the images as they are.
    let (w, h) = (256, 256);
    let (single, shared, _) = translate_batch(&exe, &dir, &model, (w, h), true);
    assert!(
        max_diff(&single, &shared) > 8,
        "shared statistics should change the output of a batch-norm model"
    );

    // The reference: candle's own ops on the stacked batch, batch norm over (N, H, W).
    let ckpt = Checkpoint::load(&model).unwrap();
    let config = pix2pix::infer_generator(&ckpt).unwrap();
    let generator = ckpt.build(|vb| Generator::new(config, vb)).unwrap();
    let plane = w * h;
    let px = inputs(w, h);
    let mut v = vec![0f32; N * 3 * plane];
    for k in 0..N {
        for i in 0..plane {
            for c in 0..3 {
                v[(k * 3 + c) * plane + i] = px[(k * plane + i) * 3 + c] as f32 / 127.5 - 1.0;
            }
        }
    }
    let x = candle_core::Tensor::from_vec(v, (N, 3, h, w), &candle_core::Device::Cpu).unwrap();
    let y = with_mode(Mode::Candle, || generator.forward(&x, &Forward::infer(NormStats::Batch)))
        .unwrap();
    let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    let mut want = vec![0u8; N * plane * 3];
    for k in 0..N {
        for i in 0..plane {
            for c in 0..3 {
                let s = y[(k * 3 + c) * plane + i];
                want[(k * plane + i) * 3 + c] = ((s.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
            }
        }
    }
    let d = max_diff(&shared, &want);
    assert!(d <= 1, "shared-statistics batch differs from the reference by {d} levels");
}
