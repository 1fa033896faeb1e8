//! Helpers shared by the end-to-end tests: where the built libraries and fixtures are, scratch
//! folders, test images, compiling the C/C++ programs, and the Rust-side reference translation.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/release`, or `$CARGO_TARGET_DIR/release`.
pub fn release_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    target.join("release")
}

/// A library built by `cargo build --release --workspace`, or a panic saying so.
pub fn built_library(file: &str) -> PathBuf {
    let p = release_dir().join(file);
    assert!(
        p.exists(),
        "{} is missing: the end-to-end tests load the built libraries; run `cargo build --release --workspace` first \
         (the README's test command does)",
        p.display()
    );
    p
}

pub fn plugin_so() -> PathBuf {
    let so = built_library("libpix2pix.so");
    warn_if_stale(&so);
    so
}

/// The tests compare the .so with the rlib cargo builds for them; a .so older than the sources
/// (`cargo test` alone does not relink it) explains a mismatch, so say so.
fn warn_if_stale(so: &Path) {
    fn newest(dir: &Path, best: &mut Option<(std::time::SystemTime, PathBuf)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                newest(&path, best);
            } else if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
                if best.as_ref().is_none_or(|(b, _)| t > *b) {
                    *best = Some((t, path));
                }
            }
        }
    }
    let Ok(built) = so.metadata().and_then(|m| m.modified()) else { return };
    let mut best = None;
    newest(&root().join("plugin/src"), &mut best);
    newest(&root().join("ffi/src"), &mut best);
    if let Some((t, path)) = best {
        if t > built {
            eprintln!(
                "NOTE: {} is older than {}; if results differ from the Rust API, rebuild it with `cargo build --release --workspace`",
                so.display(),
                path.display()
            );
        }
    }
}

pub const UNET128: &str = "unet128_ngf8_instance_lsgan";
pub const UNET256: &str = "unet256_ngf8_batch";

/// `tests/fixtures/<name>/generator.safetensors`.
pub fn generator(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name).join("generator.safetensors")
}

/// A fresh scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("p2p-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// A deterministic test image: smooth gradients with some texture, packed, `channels` 1/3/4
/// (alpha varies too, so copying it through is visible).
pub fn test_image(width: usize, height: usize, channels: usize, seed: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(width * height * channels);
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    for y in 0..height {
        for x in 0..width {
            for c in 0..channels {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let smooth = (x * 255 / width.max(1) + y * 127 / height.max(1) + c * 60) % 256;
                v.push((smooth as u32 + (s % 32)).min(255) as u8);
            }
        }
    }
    v
}

/// The reference: the same translation through the Rust API (the rlib), default options.
pub fn rust_translate(
    model: &Path,
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
) -> Vec<u8> {
    let m = pix2pix::Model::open(model, pix2pix::Options::default())
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let view = pix2pix::ImageView::new(width, height, width * channels, channels, pixels)
        .expect("valid test image");
    m.translate(&view).expect("translate").data
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Compiles `tests/c/<source>` with the system C or C++ compiler against the header, linked to
/// the built `libpix2pix.so` (with an rpath to it), into `dir`.
pub fn compile(source: &str, dir: &Path) -> PathBuf {
    let src = root().join("tests/c").join(source);
    let cxx = source.ends_with(".cpp");
    let exe = dir.join(Path::new(source).file_stem().expect("file name"));
    let lib_dir = plugin_so().parent().expect("a folder").to_path_buf();
    let mut cmd = Command::new(if cxx { "c++" } else { "cc" });
    cmd.arg(if cxx { "-std=c++17" } else { "-std=c11" })
        .args(["-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg("-I")
        .arg(root().join("ffi/include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&lib_dir)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lpix2pix")
        .arg("-pthread");
    run(&mut cmd);
    exe
}

pub fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A tiny aligned dataset: `n` A|B pairs of 128x128 halves under `<dir>/data/train`, and a
/// training config (unet_128, ngf 8) writing to `<dir>/out`, stopping after `max_steps`.
pub fn tiny_training_run(dir: &Path, n: usize, max_steps: u64) -> (PathBuf, String) {
    let train = dir.join("data/train");
    std::fs::create_dir_all(&train).unwrap();
    for i in 0..n {
        let a = test_image(128, 128, 3, i as u32);
        let img = image::RgbImage::from_fn(256, 128, |x, y| {
            let (x, y) = (x as usize, y as usize);
            let p = &a[(y * 128 + x % 128) * 3..][..3];
            // B is A inverted: something to learn.
            if x < 128 {
                image::Rgb([p[0], p[1], p[2]])
            } else {
                image::Rgb([255 - p[0], 255 - p[1], 255 - p[2]])
            }
        });
        img.save(train.join(format!("{i:03}.png"))).unwrap();
    }
    let toml_path = |p: &Path| p.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    let config = format!(
        r#"[data]
root = "{data}"
direction = "AtoB"
preprocess = "none"
load_size = 128
crop_size = 128
flip = false

[model]
net_g = "unet_128"
ngf = 8
ndf = 8
norm = "instance"

[train]
n_epochs = 1
n_epochs_decay = 0
max_steps = {max_steps}
seed = 1

[output]
dir = "{out}"
save_every_steps = 0
sample_every_steps = 0
"#,
        data = toml_path(&dir.join("data")),
        out = toml_path(&dir.join("out")),
    );
    (train, config)
}
