//! The data side of training: listing (aligned and paired layouts, recursive, sorted, skipping
//! unreadable files), augmentation, the loader's reproducibility, and the evaluation protocol's
//! metrics (checked against scikit-image) and HTML page.

mod common;

use common::{examples, TempDir};
use image::RgbImage;
use pix2pix::train::config::{Config, Preprocess};
use pix2pix::train::data::{make_batch, Dataset, Loader, Plan};
use pix2pix::train::preprocess::Preprocessor;
use pix2pix::train::{self as train, metrics, Direction};

fn solid(w: u32, h: u32, v: u8) -> RgbImage {
    RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v]))
}

#[test]
fn aligned_listing_skips_unreadable_files_and_sorts() {
    let d = TempDir::new("data-aligned");
    let root = &d.0;
    std::fs::create_dir_all(root.join("train/sub")).unwrap();
    solid(64, 32, 10).save(root.join("train/b.png")).unwrap();
    solid(64, 32, 20).save(root.join("train/sub/a.bmp")).unwrap();
    solid(64, 32, 30).save(root.join("train/a.jpg")).unwrap();
    std::fs::write(root.join("train/broken.jpg"), b"not a jpeg").unwrap();
    std::fs::write(root.join("train/notes.txt"), b"ignored").unwrap();
    let cfg = Config::parse(&format!("[data]\nroot = '{}'\n", root.display())).unwrap();
    let ds = Dataset::open(&cfg.data).unwrap();
    let names: Vec<String> = ds
        .sources
        .iter()
        .map(|s| s.path().strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["train/a.jpg", "train/b.png", "train/sub/a.bmp"]);
    assert_eq!(ds.skipped.len(), 1);
    assert!(ds.skipped[0].path.ends_with("broken.jpg"));
    // A and B halves, in the configured direction.
    let (input, target) = ds.load(1).unwrap();
    assert_eq!((input.dimensions(), target.dimensions()), ((32, 32), (32, 32)));

    // Nothing usable is an error that says so.
    let e = TempDir::new("data-empty");
    std::fs::create_dir_all(e.0.join("train")).unwrap();
    std::fs::write(e.0.join("train/x.png"), b"garbage").unwrap();
    let cfg = Config::parse(&format!("[data]\nroot = '{}'\n", e.0.display())).unwrap();
    let Err(err) = Dataset::open(&cfg.data) else { panic!("no usable pairs must fail") };
    let err = err.to_string();
    assert!(err.contains("no usable image pairs") && err.contains("1 file(s) skipped"), "{err}");
    // And train() reports the same.
    let text = format!(
        "[data]\nroot = '{}'\n[output]\ndir = '{}'\n",
        e.0.display(),
        e.0.join("out").display()
    );
    let Err(err) = train::train(&text, false, &mut |_| true) else { panic!("train must fail") };
    let err = err.to_string();
    assert!(err.contains("no usable image pairs"), "{err}");
}

#[test]
fn unaligned_pairs_by_name() {
    let d = TempDir::new("data-paired");
    for (dir, v) in [("train/A", 50u8), ("train/B", 200)] {
        std::fs::create_dir_all(d.0.join(dir)).unwrap();
        solid(40, 30, v).save(d.0.join(dir).join("1.png")).unwrap();
        solid(40, 30, v).save(d.0.join(dir).join("2.png")).unwrap();
    }
    solid(40, 30, 1).save(d.0.join("train/A/3.png")).unwrap(); // no partner
    solid(20, 30, 1).save(d.0.join("train/A/4.png")).unwrap();
    solid(40, 30, 1).save(d.0.join("train/B/4.jpg")).unwrap(); // partner of another size
    let cfg = Config::parse(&format!(
        "[data]\nroot = '{}'\nmode = \"unaligned\"\ndirection = \"BtoA\"\n",
        d.0.display()
    ))
    .unwrap();
    let ds = Dataset::open(&cfg.data).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.skipped.len(), 2);
    let (input, target) = ds.load(0).unwrap();
    assert_eq!(
        (input.get_pixel(0, 0)[0], target.get_pixel(0, 0)[0]),
        (200, 50),
        "BtoA takes B as the input"
    );
}

#[test]
fn augmentation_and_loader_are_reproducible() {
    let cfg = Config::parse(&format!(
        "[data]\nroot = '{}'\ndirection = \"BtoA\"\nload_size = 143\ncrop_size = 128\n[model]\nnet_g = \"unet_128\"\n",
        examples().display()
    ))
    .unwrap();
    let ds = std::sync::Arc::new(Dataset::open(&cfg.data).unwrap());
    let pre = Preprocessor::new(&cfg.data);
    assert_eq!(pre.kind, Preprocess::ResizeAndCrop);
    let plan = Plan { len: ds.len(), batch_size: 3, seed: 5 };
    assert_eq!(plan.steps_per_epoch(), 3);
    // Every pair once per epoch; epochs shuffled differently.
    let (o0, o1) = (plan.order(0), plan.order(1));
    let mut sorted = o0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..8).collect::<Vec<_>>());
    assert_ne!(o0, o1);
    assert_eq!(plan.batch(2, &o0).len(), 2, "the last batch of an epoch is smaller");
    // The loader thread gives what make_batch gives, in step order, from any starting step.
    let loader = Loader::spawn(ds.clone(), pre.clone(), plan, 2, 5, 2).unwrap();
    for step in 2..5 {
        let b = loader.next().unwrap();
        let direct = make_batch(&ds, &pre, &plan, step, &plan.order(plan.epoch_of(step))).unwrap();
        assert_eq!(b.step, step);
        assert_eq!(b.input.dims()[1..], [3, 128, 128]);
        let diff = (&b.input - &direct.input)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
    }
    drop(loader);
    // Stopping early does not hang.
    let loader = Loader::spawn(ds, pre, plan, 0, 1000, 2).unwrap();
    loader.next().unwrap();
}

/// Two procedural images, also built in Python for scikit-image's figures below.
fn metric_pair() -> (Vec<u8>, Vec<u8>) {
    let (h, w) = (48usize, 64usize);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = ((x * 7 + y * 13 + c * 29 + (x * y) % 17) % 256) as i32;
                let n = ((x * 31 + y * 17 + c * 11) % 41) as i32 - 20;
                a.push(v as u8);
                b.push((v + n).clamp(0, 255) as u8);
            }
        }
    }
    (a, b)
}

#[test]
fn metrics_match_scikit_image() {
    // numpy/skimage 0.26: np.abs(a - b).mean(), peak_signal_noise_ratio(a, b, data_range=255),
    // structural_similarity(a, b, channel_axis=2, data_range=255).
    let (a, b) = metric_pair();
    let (mae, psnr, ssim) =
        (metrics::mae(&a, &b), metrics::psnr(&a, &b), metrics::ssim(&a, &b, 64, 48).unwrap());
    println!("MAE {mae} PSNR {psnr} SSIM {ssim}");
    assert!((mae - 9.962565104166666).abs() < 1e-12);
    assert!((psnr - 26.849769097939298).abs() < 1e-9);
    assert!((ssim - 0.95579218442977).abs() < 1e-9);
}

#[test]
fn evaluate_writes_metrics_and_html() {
    let d = TempDir::new("evaluate");
    // A generator to evaluate: the initial weights of a tiny run (max_steps = 0).
    let cfg = format!(
        "[data]\nroot = '{}'\n[model]\nnet_g = \"unet_128\"\nngf = 4\nndf = 4\n[train]\nmax_steps = 0\n[output]\ndir = '{}'\n",
        examples().display(),
        d.0.join("run").display()
    );
    let s = train::train(&cfg, false, &mut |_| true).unwrap();
    assert_eq!(s.steps, 0);
    let model = pix2pix::Model::open(
        &s.checkpoint_dir.join("generator.safetensors"),
        pix2pix::Options::default(),
    )
    .unwrap();
    let html = d.0.join("html");
    let m = train::evaluate(&model, &examples().join("test"), Direction::BtoA, 128, Some(&html))
        .unwrap();
    println!("{m:?}");
    assert_eq!(m.count, 4);
    assert!(m.mae > 0.0 && m.mae < 255.0 && m.psnr.is_finite() && m.ssim > -1.0 && m.ssim < 1.0);
    let page = std::fs::read_to_string(html.join("index.html")).unwrap();
    assert_eq!(page.matches("<tr><td>").count(), 4);
    assert_eq!(std::fs::read_dir(html.join("images")).unwrap().count(), 12);
    assert!(
        train::evaluate(&model, &examples().join("test"), Direction::BtoA, 100, None).is_err(),
        "size must suit the network"
    );
}
