//! Pixels ↔ tensors: the [-1, 1] mapping, the gray/RGBA rules, and buffer validation.

use pix2pix::filter::image_tensor::{rgb_to_tensor, tensor_to_rgb};
use pix2pix::ImageView;

#[test]
fn rgb_round_trips_exactly_and_maps_to_unit_range() {
    let (w, h) = (7, 5);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect();
    let t = rgb_to_tensor(&rgb, w, h).unwrap();
    assert_eq!(t.dims(), &[1, 3, h, w]);
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    // channel-major: pixel 1's green sample is at plane 1, index 1
    assert_eq!(v[w * h + 1], rgb[4] as f32 / 127.5 - 1.0);
    let (back, bw, bh) = tensor_to_rgb(&t).unwrap();
    assert_eq!((bw, bh), (w, h));
    assert_eq!(back, rgb);
}

#[test]
fn output_clamps_and_rounds_half_away_from_zero() {
    // 0 maps to exactly 127.5 → 128; values past ±1 clamp; 3.4 and 3.6 round to nearest.
    let vals = [-3.0f32, 1.5, 0.0, 3.4 / 127.5 - 1.0, 3.6 / 127.5 - 1.0];
    let t = candle_core::Tensor::from_vec(vals.to_vec(), (1, 1, 1, 5), &candle_core::Device::Cpu)
        .unwrap();
    let (out, _, _) = tensor_to_rgb(&t).unwrap();
    let gray: Vec<u8> = out.chunks(3).map(|p| p[0]).collect();
    assert_eq!(gray, vec![0, 255, 128, 3, 4]);
}

#[test]
fn gray_is_replicated_and_alpha_dropped() {
    let gray = [10u8, 20, 30, 40];
    let v = ImageView::new(2, 2, 2, 1, &gray).unwrap();
    assert_eq!(v.to_rgb(), vec![10, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40]);
    // stride larger than the row: padding bytes are skipped
    let rgba = [1u8, 2, 3, 255, 9, 9, 4, 5, 6, 0, 9, 9];
    let v = ImageView::new(1, 2, 6, 4, &rgba).unwrap();
    assert_eq!(v.to_rgb(), vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn bad_views_are_rejected_with_the_argument_named() {
    let buf = [0u8; 64];
    let e = |r: pix2pix::Result<ImageView>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e(ImageView::new(4, 4, 20, 5, &buf)).contains("channels"));
    assert!(e(ImageView::new(4, 4, 4, 0, &buf)).contains("channels"));
    assert!(ImageView::new(4, 4, 8, 2, &buf).is_ok()); // gray + alpha
    assert!(e(ImageView::new(0, 4, 12, 3, &buf)).contains("size"));
    assert!(e(ImageView::new(4, 4, 11, 3, &buf)).contains("stride"));
    assert!(e(ImageView::new(8, 8, 24, 3, &buf)).contains("data"));
    assert!(e(ImageView::new(100_000, 100_000, 300_000, 3, &buf)).contains("size"));
    assert!(ImageView::new(4, 4, 12, 3, &buf).is_ok());
}
