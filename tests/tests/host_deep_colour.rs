//! `host run` and `host pipeline` keep an image's depth and follow the model's channels:
//! - 16-bit PNG and TIFF in give 16-bit PNG and TIFF out, equal to the plugin's own 16-bit
//!   translation (so nothing went through 8 bits on the way); PPM in, PNG out works;
//! - 1→3 and 3→1 models (the reference's parity fixtures) turn a gray PNG into a colour one
//!   and a colour PNG into a gray one, within one level of the reference's output;
//! - `host train` trains a gray → colour model whose L1 falls.

mod host_common;

use std::path::Path;

use host_common::*;
use image::{DynamicImage, ImageBuffer, Luma, Rgb};
use pix2pix::filter::image_tensor::{ImageView, SampleFormat};

/// A smooth 16-bit RGB image whose samples use all 16 bits (not multiples of 257).
fn rgb16(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb16(ImageBuffer::from_fn(w, h, |x, y| {
        Rgb([
            (x * 65535 / w.max(1)) as u16,
            (y * 65535 / h.max(1)) as u16,
            ((x * 7919 + y * 104729) % 65536) as u16,
        ])
    }))
}

/// The plugin's translation of `img`'s 16-bit samples into 16-bit samples (the Rust API).
fn expected16(img: &DynamicImage, model: &Path) -> Vec<u16> {
    let px: Vec<u8> = img.to_rgb16().as_raw().iter().flat_map(|v| v.to_ne_bytes()).collect();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let m = pix2pix::Model::open(model, pix2pix::Options::default()).unwrap();
    let v = ImageView::with_format(w, h, w * 6, 3, SampleFormat::U16, &px).unwrap();
    let out = m.translate_as(&v, SampleFormat::U16).unwrap();
    out.data.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])).collect()
}

fn host_run(input: &Path, output: &Path, model: &Path) {
    let out = run(host(&["run", "--plugin"])
        .arg(plugin())
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output));
    assert!(out.status.success(), "host run {}", input.display());
}

fn check_16_bit(path: &Path, want: &[u16]) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let DynamicImage::ImageRgb16(got) = img else {
        panic!("{}: {:?}, 16-bit RGB expected", path.display(), img.color())
    };
    assert_eq!(got.as_raw().as_slice(), want, "{}: samples", path.display());
    let deep = want.iter().filter(|v| *v % 257 != 0).count();
    assert!(
        deep > want.len() / 2,
        "{}: only {deep} of {} samples use 16 bits",
        path.display(),
        want.len()
    );
}

#[test]
fn sixteen_bit_png_and_tiff_keep_16_bits() {
    let t = TempDir::new("deep-16");
    let model = fixture(UNET128);
    let img = rgb16(150, 100); // not a multiple of the stride: the pad policy runs
    let want = expected16(&img, &model);
    for ext in ["png", "tif"] {
        let input = t.join(&format!("in16.{ext}"));
        save(&img, &input);
        let output = t.join(&format!("out16.{ext}"));
        host_run(&input, &output, &model);
        check_16_bit(&output, &want);
    }
}

#[test]
fn ppm_in_png_out() {
    let t = TempDir::new("deep-ppm");
    let model = fixture(UNET128);
    let (w, h) = (96usize, 64usize);
    let px: Vec<u8> = (0..w * h * 3).map(|i| ((i * 53) % 256) as u8).collect();
    // A PPM as the README's C example writes it.
    let mut ppm = format!("P6 {w} {h} 255\n").into_bytes();
    ppm.extend_from_slice(&px);
    std::fs::write(t.join("in.ppm"), &ppm).unwrap();
    host_run(&t.join("in.ppm"), &t.join("out.png"), &model);
    let out = image::open(t.join("out.png")).unwrap();
    let DynamicImage::ImageRgb8(out) = out else { panic!("8-bit RGB expected") };
    let m = pix2pix::Model::open(&model, pix2pix::Options::default()).unwrap();
    let want = m.translate(&ImageView::new(w, h, w * 3, 3, &px).unwrap()).unwrap();
    assert_eq!(out.as_raw(), &want.data);
    // And back out as PPM, read by the same decoder.
    host_run(&t.join("in.ppm"), &t.join("out.ppm"), &model);
    assert_eq!(image::open(t.join("out.ppm")).unwrap().to_rgb8().as_raw(), &want.data);
}

#[test]
fn a_pipeline_keeps_16_bits() {
    let t = TempDir::new("deep-pipe");
    let model = fixture(UNET128);
    let img = rgb16(128, 96);
    save(&img, &t.join("in/a.png"));
    let toml = format!(
        "[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\nname = \"{{stem}}.tif\"\n\
         [[model]]\nname = \"m\"\npath = \"{}\"\n[[step]]\nop = \"flip\"\n[[step]]\nop = \"translate\"\n",
        model.display()
    );
    std::fs::write(t.join("p.toml"), toml).unwrap();
    let out = run(host(&["pipeline"]).arg(t.join("p.toml")).arg("--plugin").arg(plugin()));
    assert!(out.status.success());
    check_16_bit(&t.join("out/a.tif"), &expected16(&img.fliph(), &model));
}

/// The fixture's input x (on the 8-bit grid) as an 8-bit image, and the reference output
/// (batch statistics, no dropout: the host's defaults) in [0, 255], channel-major.
fn fixture_io(name: &str) -> (DynamicImage, Vec<f32>, usize) {
    let bytes = std::fs::read(root().join("tests/fixtures").join(name).join("forward.safetensors"))
        .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f = |k: &str| -> (Vec<f32>, Vec<usize>) {
        let t = st.tensor(k).unwrap();
        let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        (v.collect(), t.shape().to_vec())
    };
    let (x, xs) = f("x");
    let (c, h, w) = (xs[1], xs[2], xs[3]);
    let level = |ch: usize, x0: u32, y0: u32| {
        ((x[ch * w * h + y0 as usize * w + x0 as usize] + 1.0) * 127.5).round() as u8
    };
    let img = match c {
        1 => DynamicImage::ImageLuma8(ImageBuffer::from_fn(w as u32, h as u32, |x0, y0| {
            Luma([level(0, x0, y0)])
        })),
        _ => DynamicImage::ImageRgb8(ImageBuffer::from_fn(w as u32, h as u32, |x0, y0| {
            Rgb([level(0, x0, y0), level(1, x0, y0), level(2, x0, y0)])
        })),
    };
    let (g, gs) = f("g_train_nodrop");
    (img, g.iter().map(|v| (v.clamp(-1.0, 1.0) + 1.0) * 127.5).collect(), gs[1])
}

fn check_channels(name: &str, want_color: image::ColorType) {
    let t = TempDir::new(name);
    let (input, want, c) = fixture_io(name);
    save(&input, &t.join("in.png"));
    let model = root().join("tests/fixtures").join(name).join("generator.safetensors");
    host_run(&t.join("in.png"), &t.join("out.png"), &model);
    let out = image::open(t.join("out.png")).unwrap();
    assert_eq!(out.color(), want_color, "{name}: output colour type");
    let (w, h) = (out.width() as usize, out.height() as usize);
    let got = out.as_bytes();
    let mut worst = 0f32;
    for ch in 0..c {
        for i in 0..w * h {
            worst = worst.max((got[i * c + ch] as f32 - want[ch * w * h + i]).abs());
        }
    }
    println!("{name}: max |host run − reference| = {worst:.3} levels");
    assert!(worst <= 1.0, "{name}: {worst} levels from the reference");
}

#[test]
fn gray_in_colour_out_with_a_1_to_3_model() {
    check_channels("unet128_ngf8_1to3", image::ColorType::Rgb8);
}

#[test]
fn colour_in_gray_out_with_a_3_to_1_model() {
    check_channels("unet128_ngf8_3to1", image::ColorType::L8);
}

/// Mean of column `g_l1` over the given rows of losses.csv.
fn mean_l1(rows: &[Vec<f64>]) -> f64 {
    rows.iter().map(|r| r[3]).sum::<f64>() / rows.len() as f64
}

#[test]
fn host_trains_a_gray_to_colour_model() {
    let t = TempDir::new("train-colourise");
    // Pairs A | B: A the gray of a colour pattern B, so colour must be learnt from the gray.
    for i in 0..4u32 {
        let img = image::RgbImage::from_fn(256, 128, |x, y| {
            let (u, v) = (x % 128, y);
            let colour = Rgb([
                ((u * 2 + i * 40) % 256) as u8,
                ((v * 2 + u) % 256) as u8,
                (255 - (u + v + i * 30) % 256) as u8,
            ]);
            if x < 128 {
                let [r, g, b] = colour.0.map(u32::from);
                let l = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8;
                Rgb([l, l, l])
            } else {
                colour
            }
        });
        save(&DynamicImage::ImageRgb8(img), &t.join(&format!("data/train/{i}.png")));
    }
    let steps = 40;
    let config = format!(
        "[data]\nroot = \"data\"\ndirection = \"AtoB\"\npreprocess = \"none\"\nload_size = 128\ncrop_size = 128\nflip = false\n\
         [model]\ninput_nc = 1\noutput_nc = 3\nnet_g = \"unet_128\"\nngf = 8\nndf = 8\nnorm = \"instance\"\n\
         [train]\nn_epochs = 1000\nn_epochs_decay = 0\nmax_steps = {steps}\nseed = 3\nlr = 0.001\n\
         [output]\ndir = \"ckpt\"\nsave_every_steps = 0\nsample_every_steps = 0\n"
    );
    std::fs::write(t.join("train.toml"), config).unwrap();
    let out = run(host(&["train", "--config", "train.toml", "--plugin"])
        .arg(plugin())
        .current_dir(t.path()));
    assert!(out.status.success());
    let csv = std::fs::read_to_string(t.join("ckpt/losses.csv")).unwrap();
    let rows: Vec<Vec<f64>> =
        csv.lines().skip(1).map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    assert_eq!(rows.len(), steps);
    let (first, last) = (mean_l1(&rows[..5]), mean_l1(&rows[steps - 5..]));
    println!("G_L1 over the first 5 steps {first:.2}, the last 5 {last:.2}");
    assert!(last < first * 0.8, "L1 did not fall: {first} → {last}");
    // The trained model is 1 → 3: read off its checkpoint by the translator.
    let model = t.join("ckpt/latest/generator.safetensors");
    save(&gray(130, 70), &t.join("g.png"));
    host_run(&t.join("g.png"), &t.join("c.png"), &model);
    assert_eq!(image::open(t.join("c.png")).unwrap().color(), image::ColorType::Rgb8);
}
