//! `p2p_translate_ex` and the channel rules from a real C program (`tests/c/translate_ex.c`):
//! - the same image as u8, u16 and f32 samples gives translations that agree to the
//!   quantisation step, and 16-bit output keeps more than 8 bits;
//! - 1→3 and 3→1 models (parity fixtures from the reference, `tests/fixtures/gen_channels.py`)
//!   take gray / colour input and give colour / gray output matching the reference's output
//!   within one 8-bit level; alpha is carried through.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const U8: u32 = 1;
const U16: u32 = 2;
const F32: u32 = 3;

/// Runs the C program; returns the output bytes and its channel count.
fn translate_ex(
    exe: &Path,
    model: &Path,
    dir: &Path,
    samples: &[u8],
    (w, h, c): (usize, usize, usize),
    (in_format, out_format): (u32, u32),
) -> (Vec<u8>, usize) {
    let input = dir.join(format!("in_{in_format}_{c}.raw"));
    let output = dir.join(format!("out_{in_format}_{out_format}_{c}.raw"));
    std::fs::write(&input, samples).unwrap();
    let out = run(Command::new(exe)
        .arg(model)
        .arg(&input)
        .args([w, h, c].map(|v| v.to_string()))
        .args([in_format, out_format].map(|v| v.to_string()))
        .arg(&output));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    let channels = text
        .lines()
        .find_map(|l| l.strip_prefix("out "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no `out` line in {text}"));
    (std::fs::read(&output).unwrap(), channels)
}

fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])).collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn u8_u16_f32_agree_to_the_quantisation_step() {
    let dir = scratch("translate-ex-formats");
    let exe = compile("translate_ex.c", &dir);
    let model = generator(UNET128);
    // 150x100: the pad policy runs; RGBA: alpha goes through in every format.
    let (w, h, c) = (150, 100, 4);
    let px = test_image(w, h, c, 5);
    let as_u16: Vec<u8> = px.iter().flat_map(|&v| (v as u16 * 257).to_ne_bytes()).collect();
    let as_f32: Vec<u8> = px.iter().flat_map(|&v| (v as f32 / 255.0).to_ne_bytes()).collect();
    let (o8, c8) = translate_ex(&exe, &model, &dir, &px, (w, h, c), (U8, 0));
    let (o16, c16) = translate_ex(&exe, &model, &dir, &as_u16, (w, h, c), (U16, 0));
    let (of, cf) = translate_ex(&exe, &model, &dir, &as_f32, (w, h, c), (F32, 0));
    assert_eq!((c8, c16, cf), (4, 4, 4));
    // The u8 output is the 8-bit API's, which the Rust API gives too.
    assert_eq!(o8, rust_translate(&model, &px, w, h, c));
    let (o16, of) = (u16s(&o16), f32s(&of));
    assert_eq!((o16.len(), of.len()), (o8.len(), o8.len()));
    let (mut worst8, mut worst16) = (0f64, 0f64);
    for i in 0..o8.len() {
        let (a, b, f) = (o8[i] as f64 / 255.0, o16[i] as f64 / 65535.0, of[i] as f64);
        assert!((0.0..=1.0).contains(&f), "f32 sample {i} = {f} outside [0, 1]");
        if i % 4 == 3 {
            // Alpha is copied: exact in every format.
            assert_eq!((o16[i], of[i]), (px[i] as u16 * 257, px[i] as f32 / 255.0), "alpha {i}");
            continue;
        }
        worst8 = worst8.max((a - f).abs());
        worst16 = worst16.max((b - f).abs());
    }
    println!("max |u8 − f32| = {worst8:.2e} (step {:.2e}), max |u16 − f32| = {worst16:.2e} (step {:.2e})", 1.0 / 255.0, 1.0 / 65535.0);
    // Each integer output is the float output rounded to its grid (plus float noise from the
    // input's own rounding, far below a 16-bit step).
    assert!(worst8 <= 0.5 / 255.0 + 1e-5, "u8 vs f32: {worst8}");
    assert!(worst16 <= 0.5 / 65535.0 + 1e-5, "u16 vs f32: {worst16}");
    // 16 bits kept: not just 8-bit values scaled by 257.
    let colour = o16.iter().enumerate().filter(|(i, _)| i % 4 != 3).map(|(_, &v)| v);
    assert!(colour.clone().filter(|v| v % 257 != 0).count() > colour.count() / 2);

    // Output format chosen apart from the input's: u16 in, u8 out equals u8 in, u8 out.
    let (o16_8, _) = translate_ex(&exe, &model, &dir, &as_u16, (w, h, c), (U16, U8));
    assert_eq!(o16_8, o8);
}

/// `tests/fixtures/<name>/forward.safetensors` tensor `key`, as f32 values and its shape.
fn fixture_tensor(name: &str, key: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(root().join("tests/fixtures").join(name).join("forward.safetensors"))
        .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap_or_else(|e| panic!("{name}: {key}: {e}"));
    (f32s(t.data()), t.shape().to_vec())
}

/// The fixture's input `x` (on the 8-bit grid) as packed 8-bit pixels, and its size.
pub fn fixture_input(name: &str) -> (Vec<u8>, usize, usize, usize) {
    let (x, shape) = fixture_tensor(name, "x");
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let mut px = vec![0u8; w * h * c];
    for ch in 0..c {
        for i in 0..w * h {
            let v = (x[ch * w * h + i] + 1.0) * 127.5;
            assert!((v - v.round()).abs() < 1e-3, "{name}: x is not on the 8-bit grid");
            px[i * c + ch] = v.round() as u8;
        }
    }
    (px, w, h, c)
}

/// The reference output (batch statistics, no dropout: the library's defaults) as packed
/// samples in [0, 255].
fn fixture_output(name: &str) -> (Vec<f32>, usize) {
    let (g, shape) = fixture_tensor(name, "g_train_nodrop");
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let mut out = vec![0f32; w * h * c];
    for ch in 0..c {
        for i in 0..w * h {
            out[i * c + ch] = (g[ch * w * h + i].clamp(-1.0, 1.0) + 1.0) * 127.5;
        }
    }
    (out, c)
}

fn assert_within_one_level(name: &str, got: &[u8], got_channels: usize, want_channels: usize) {
    let (want, c) = fixture_output(name);
    assert_eq!(c, want_channels);
    let pixels = want.len() / c;
    assert_eq!(got.len(), pixels * got_channels, "{name}: output size");
    let mut worst = 0f32;
    for p in 0..pixels {
        for ch in 0..c {
            worst = worst.max((got[p * got_channels + ch] as f32 - want[p * c + ch]).abs());
        }
    }
    println!("{name}: max |C API − reference| = {worst:.3} levels");
    assert!(worst <= 1.0, "{name}: {worst} levels from the reference");
}

#[test]
fn gray_to_colour_model_matches_the_reference() {
    let name = "unet128_ngf8_1to3";
    let dir = scratch("translate-ex-1to3");
    let exe = compile("translate_ex.c", &dir);
    let model = root().join("tests/fixtures").join(name).join("generator.safetensors");
    let (px, w, h, c) = fixture_input(name);
    assert_eq!(c, 1);
    let (out, oc) = translate_ex(&exe, &model, &dir, &px, (w, h, 1), (U8, U8));
    assert_eq!(oc, 3, "a 1→3 model gives RGB");
    assert_within_one_level(name, &out, 3, 3);
    // RGB input with R = G = B is read as that gray.
    let rgb: Vec<u8> = px.iter().flat_map(|&v| [v, v, v]).collect();
    let (out_rgb, _) = translate_ex(&exe, &model, &dir, &rgb, (w, h, 3), (U8, U8));
    assert_eq!(out_rgb, out);
    // Gray + alpha: RGB + the same alpha.
    let ga: Vec<u8> = px.iter().enumerate().flat_map(|(i, &v)| [v, (i * 7 % 256) as u8]).collect();
    let (out_a, oca) = translate_ex(&exe, &model, &dir, &ga, (w, h, 2), (U8, U8));
    assert_eq!(oca, 4);
    for (i, p) in out_a.chunks_exact(4).enumerate() {
        assert_eq!(&p[..3], &out[i * 3..i * 3 + 3]);
        assert_eq!(p[3], (i * 7 % 256) as u8);
    }
}

#[test]
fn colour_to_gray_model_matches_the_reference() {
    let name = "unet128_ngf8_3to1";
    let dir = scratch("translate-ex-3to1");
    let exe = compile("translate_ex.c", &dir);
    let model = root().join("tests/fixtures").join(name).join("generator.safetensors");
    let (px, w, h, c) = fixture_input(name);
    assert_eq!(c, 3);
    let (out, oc) = translate_ex(&exe, &model, &dir, &px, (w, h, 3), (U8, U8));
    assert_eq!(oc, 1, "a 3→1 model gives gray");
    assert_within_one_level(name, &out, 1, 1);
    // RGBA: gray + alpha.
    let rgba: Vec<u8> = px
        .chunks_exact(3)
        .enumerate()
        .flat_map(|(i, p)| [p[0], p[1], p[2], (i % 251) as u8])
        .collect();
    let (out_a, oca) = translate_ex(&exe, &model, &dir, &rgba, (w, h, 4), (U8, U8));
    assert_eq!(oca, 2);
    for (i, p) in out_a.chunks_exact(2).enumerate() {
        assert_eq!((p[0], p[1]), (out[i], (i % 251) as u8));
    }
}
