//! Models whose image channels are not 3 → 3 (the reference's `input_nc` / `output_nc`): the
//! 1→3 and 3→1 parity fixtures (`tests/fixtures/gen_channels.py`) forward like the reference,
//! their channel counts are read off the checkpoint, and the filter converts images to the
//! model's channels the reference's way (PIL's `convert('L')` luma, gray replicated to RGB).

mod common;

use common::*;
use pix2pix::filter::image_tensor::{ImageView, SampleFormat};
use pix2pix::{Checkpoint, Forward, Generator, Layer, Model, NormStats, Options};

const CHANNEL_FIXTURES: [(&str, (usize, usize)); 2] =
    [("unet128_ngf8_1to3", (1, 3)), ("unet128_ngf8_3to1", (3, 1))];

#[test]
fn forward_parity_of_gray_and_colour_models() {
    for (name, channels) in CHANNEL_FIXTURES {
        let fw = load(name, "forward.safetensors");
        for ext in ["pth", "safetensors"] {
            let ckpt = Checkpoint::load(fixture(name).join(format!("generator.{ext}"))).unwrap();
            let cfg = pix2pix::infer_generator(&ckpt).unwrap();
            assert_eq!(cfg.channels(), channels, "{name}.{ext}: channels read off the file");
            let g = ckpt.build(|vb| Generator::new(cfg, vb)).unwrap();
            for (stats, key) in
                [(NormStats::Running, "g_eval"), (NormStats::Batch, "g_train_nodrop")]
            {
                let y = g.forward(&fw["x"], &Forward::infer(stats)).unwrap();
                let e = max_abs(&y, &fw[key]);
                println!("{name}.{ext} {key}: max abs err {e:.2e}");
                assert!(e < 1e-4, "{name}.{ext}: {key} max abs error {e}");
            }
        }
    }
}

fn open(name: &str) -> Model {
    Model::open(&fixture(name).join("generator.safetensors"), Options::default()).unwrap()
}

#[test]
fn rgb_reads_as_pil_luma_for_a_gray_model() {
    // PIL's convert('L') of pure colours: 601-2 weights, rounded (0.299·255 = 76.2, …).
    let rgb = [255u8, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 10, 20, 30, 0, 0, 0];
    let v = ImageView::new(6, 1, 18, 3, &rgb).unwrap();
    let gray = v.to_channels(1).unwrap();
    let levels: Vec<u8> = gray.data.iter().map(|&s| (s * 255.0).round() as u8).collect();
    // (10·19595 + 20·38470 + 30·7471 + 32768) >> 16 = 18
    assert_eq!(levels, [76, 150, 29, 255, 18, 0]);
    // Gray is replicated for an RGB model; alpha is never a colour.
    let ga = [7u8, 200, 9, 100];
    let v = ImageView::new(2, 1, 4, 2, &ga).unwrap();
    let rgb = v.to_channels(3).unwrap();
    assert_eq!(rgb.data, [7, 7, 7, 9, 9, 9].map(|x| x as f32 / 255.0));
}

#[test]
fn the_filter_converts_images_to_the_model_channels() {
    let (w, h) = (96, 80); // not a multiple of the stride: the pad policy runs
    let gray: Vec<u8> = (0..w * h).map(|i| ((i * 37) % 256) as u8).collect();
    let rgb: Vec<u8> = gray.iter().flat_map(|&g| [g, g, g]).collect();

    // 1→3: an RGB image with R = G = B is that gray image; the output is RGB.
    let m = open("unet128_ngf8_1to3");
    let a = m.translate(&ImageView::new(w, h, w, 1, &gray).unwrap()).unwrap();
    let b = m.translate(&ImageView::new(w, h, w * 3, 3, &rgb).unwrap()).unwrap();
    assert_eq!((a.channels, b.channels), (3, 3));
    assert_eq!(a, b);

    // 3→1: gray input is replicated to RGB; the output is gray (+ alpha when given).
    let m = open("unet128_ngf8_3to1");
    let a = m.translate(&ImageView::new(w, h, w, 1, &gray).unwrap()).unwrap();
    let b = m.translate(&ImageView::new(w, h, w * 3, 3, &rgb).unwrap()).unwrap();
    assert_eq!((a.channels, b.channels), (1, 1));
    assert_eq!(a, b);
    let rgba: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 77]).collect();
    let c = m.translate(&ImageView::new(w, h, w * 4, 4, &rgba).unwrap()).unwrap();
    assert_eq!(c.channels, 2);
    assert!(c.data.chunks_exact(2).zip(&a.data).all(|(p, &g)| p[0] == g && p[1] == 77));

    // Deep input through the same path: 16-bit samples v·257 (the same values up to float
    // rounding) give the 8-bit result, up to a rounding flip.
    let deep: Vec<u8> = gray.iter().flat_map(|&g| (g as u16 * 257).to_ne_bytes()).collect();
    let v = ImageView::with_format(w, h, w * 2, 1, SampleFormat::U16, &deep).unwrap();
    let d = m.translate_as(&v, SampleFormat::U8).unwrap();
    assert_eq!((d.channels, d.data.len()), (1, a.data.len()));
    assert!(d.data.iter().zip(&a.data).all(|(&x, &y)| x.abs_diff(y) <= 1));
}
