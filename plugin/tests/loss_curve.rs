//! `loss_curve.png`: a short training run leaves one of the documented size that is a valid PNG
//! with something drawn in it (text, axes, each series' colour), and a long synthetic history
//! draws as well.

mod common;

use std::path::Path;

use common::{examples, TempDir};
use pix2pix::train::loss_curve::{save_loss_curve, HEIGHT, WIDTH};
use pix2pix::train::{self as train, Progress};

fn config(dir: &Path) -> String {
    format!(
        r#"
[data]
root = '{}'
direction = "BtoA"
load_size = 143
crop_size = 128

[model]
net_g = "unet_128"
ngf = 4
ndf = 4

[train]
batch_size = 2
n_epochs = 1
n_epochs_decay = 2
seed = 3
max_steps = 12

[output]
dir = '{}'
save_every_steps = 0
sample_every_steps = 6
"#,
        examples().display(),
        dir.display()
    )
}

/// Pixels within `tol` of `colour` in each channel.
fn count_near(img: &image::RgbImage, colour: [u8; 3], tol: i16) -> usize {
    img.pixels()
        .filter(|p| p.0.iter().zip(colour).all(|(&a, b)| (a as i16 - b as i16).abs() <= tol))
        .count()
}

fn check_curve(path: &Path) -> image::RgbImage {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .expect("a decodable PNG")
        .to_rgb8();
    assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
    // Not blank: the grey levels vary.
    let grey: Vec<f64> =
        img.pixels().map(|p| p.0.iter().map(|&v| v as f64).sum::<f64>() / 3.0).collect();
    let mean = grey.iter().sum::<f64>() / grey.len() as f64;
    let var = grey.iter().map(|g| (g - mean) * (g - mean)).sum::<f64>() / grey.len() as f64;
    assert!(var > 100.0, "{}: nearly uniform (variance {var:.1})", path.display());
    // The title is text: dark anti-aliased pixels in the top band (the embedded font works).
    let title_ink = (0..26)
        .flat_map(|y| (0..WIDTH).map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0[0] < 100)
        .count();
    assert!(title_ink > 300, "{}: no title text ({title_ink} dark pixels)", path.display());
    // Each series' colour (the bold smoothed lines and their legend entries).
    for (name, colour) in [
        ("G_GAN", [214, 39, 40]),
        ("D_real", [44, 160, 44]),
        ("D_fake", [31, 119, 180]),
        ("lr", [148, 103, 189]),
    ] {
        let n = count_near(&img, colour, 12);
        assert!(n > 40, "{}: no {name} line or legend ({n} pixels of its colour)", path.display());
    }
    img
}

#[test]
fn a_training_run_draws_a_readable_loss_curve() {
    let d = TempDir::new("loss-curve-run");
    let mut seen = Vec::new();
    let s = train::train(&config(&d.0), false, &mut |p| {
        seen.push(*p);
        true
    })
    .unwrap();
    assert_eq!(s.steps, 12);
    assert!(seen.last().unwrap().lr < seen[0].lr, "the schedule should decay within the run");
    check_curve(&d.0.join("loss_curve.png"));
}

#[test]
fn a_long_history_draws_too() {
    let d = TempDir::new("loss-curve-long");
    let n = 20_000u64;
    let history: Vec<Progress> = (1..=n)
        .map(|step| {
            let t = step as f32 / n as f32;
            let wobble = ((step * 7919) % 101) as f32 / 100.0 - 0.5;
            Progress {
                step,
                epoch: step / 400 + 1,
                total_steps: n,
                g_gan: 0.8 + 0.3 * wobble + 0.4 * t,
                g_l1: 40.0 * (-3.0 * t).exp() + 8.0 + 4.0 * wobble,
                d_real: 0.6 - 0.2 * t + 0.2 * wobble,
                // A NaN (a diverged step) must not break the drawing.
                d_fake: if step == 500 { f32::NAN } else { 0.5 - 0.1 * t - 0.2 * wobble },
                lr: if t < 0.5 { 2e-4 } else { 2e-4 * (1.0 - t as f64) * 2.0 },
                images_per_sec: 10.0,
            }
        })
        .collect();
    let path = d.0.join("curve.png");
    save_loss_curve(&path, &history).unwrap();
    check_curve(&path);
    // One step only: an axis of width one, still a valid picture.
    let one = d.0.join("one.png");
    save_loss_curve(&one, &history[..1]).unwrap();
    let img = image::open(&one).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
}
