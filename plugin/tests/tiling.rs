//! The tile size policy through the public API: on a smooth gradient, the tiled output has no
//! seams (its error against the padded whole-image output does not jump at tile boundaries
//! more than elsewhere) and keeps the padded output's tone.

mod common;

use common::fixture;
use common::seams::{gradient, seam_error};
use pix2pix::{ImageView, Model, Options, SizePolicy};

fn translate(name: &str, policy: SizePolicy, rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    let path = fixture(name).join("generator.safetensors");
    let model =
        Model::open(&path, Options { size_policy: policy, tile_overlap: 32, ..Options::default() })
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let view = ImageView::new(w, h, w * 3, 3, rgb).unwrap();
    let out = model.translate(&view).unwrap_or_else(|e| panic!("{name} {policy:?}: {e}"));
    assert_eq!((out.width, out.height, out.channels), (w, h, 3));
    out.data
}

fn mean_abs(a: &[u8], b: &[u8]) -> f64 {
    a.iter().zip(b).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>() / a.len() as f64
}

#[test]
fn tiled_output_has_no_seams() {
    // Sides are multiples of 32 but not of the stride, so the size policy applies.
    for (name, w, h) in
        [("unet128_ngf8_instance_lsgan", 416, 192), ("unet256_ngf8_batch", 608, 288)]
    {
        let rgb = gradient(w, h);
        let tiled = translate(name, SizePolicy::Tile, &rgb, w, h);
        let pad = translate(name, SizePolicy::Pad, &rgb, w, h);
        let (boundary, interior) = seam_error(&tiled, &pad, w, h);
        let mad = mean_abs(&tiled, &pad);
        println!("{name} {w}x{h}: seam error at boundaries {boundary:.3}, inside {interior:.3}; mean abs diff to pad {mad:.2}");
        assert!(
            boundary <= interior,
            "{name}: error jumps {boundary:.3} at tile boundaries vs {interior:.3} inside"
        );
        assert!(
            mad < 10.0,
            "{name}: tiled output far from the padded one ({mad:.2} mean abs difference)"
        );
    }
}

#[test]
fn tiles_small_and_odd_images() {
    // Smaller than one tile, odd sides, gray and RGBA inputs: same size out, alpha kept.
    let path = fixture("unet128_ngf8_instance_lsgan").join("generator.safetensors");
    let model = Model::open(&path, Options { size_policy: SizePolicy::Tile, ..Options::default() })
        .unwrap();
    for (w, h, c) in [(37, 23, 3), (131, 129, 1), (200, 61, 4)] {
        let data: Vec<u8> = (0..w * h * c).map(|i| (i * 7 % 251) as u8).collect();
        let out = model.translate(&ImageView::new(w, h, w * c, c, &data).unwrap()).unwrap();
        assert_eq!((out.width, out.height), (w, h));
        assert_eq!(out.channels, if c == 4 { 4 } else { 3 });
        if c == 4 {
            assert!(out.data.chunks_exact(4).zip(data.chunks_exact(4)).all(|(o, i)| o[3] == i[3]));
        }
    }
}
