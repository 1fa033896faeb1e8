//! Shared by the `host_*` end-to-end tests: the built binary and plugin, temporary folders and
//! test images. Build first: `cargo build --release --workspace`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};

// The plugin's own tiling test measures seams with the same code.
#[path = "../../../plugin/tests/common/seams.rs"]
pub mod seams;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn built(name: &str) -> PathBuf {
    let p = root().join("target/release").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --release --workspace` first",
        p.display()
    );
    p
}

pub fn host_bin() -> PathBuf {
    built("host")
}

pub fn plugin() -> PathBuf {
    built("libpix2pix.so")
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name).join("generator.safetensors")
}

pub const UNET128: &str = "unet128_ngf8_instance_lsgan";

/// `host ARGS…`, without $PIX2PIX_PLUGIN from the environment (tests pass --plugin).
pub fn host(args: &[&str]) -> Command {
    let mut c = Command::new(host_bin());
    c.args(args);
    c.env_remove("PIX2PIX_PLUGIN");
    c
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("cannot start host");
    eprintln!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh folder under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("host-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("cannot create the temp folder");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A deterministic textured RGB image.
pub fn rgb(w: u32, h: u32, seed: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        let v = x
            .wrapping_mul(31)
            .wrapping_add(y.wrapping_mul(17))
            .wrapping_add(seed.wrapping_mul(101));
        Rgb([(v % 251) as u8, (x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8])
    }))
}

pub fn gray(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| Luma([((x + y) % 256) as u8])))
}

pub fn rgba(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(w, h, |x, y| {
        Rgba([x as u8, y as u8, 99, ((x * 7 + y) % 256) as u8])
    }))
}

/// A smooth two-axis gradient (the hardest case for hiding tile seams).
pub fn gradient(w: u32, h: u32) -> DynamicImage {
    let rgb = seams::gradient(w as usize, h as usize);
    DynamicImage::ImageRgb8(
        RgbImage::from_raw(w, h, rgb).expect("a packed RGB buffer of w × h pixels"),
    )
}

pub fn save(img: &DynamicImage, path: &Path) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    img.save(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Files under `dir` (recursively), relative, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap_or(&p).to_string_lossy().into_owned());
                }
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// The folder of mixed inputs the tests share: sizes that are and are not multiples of the
/// stride, gray and RGBA images, one corrupt PNG, one non-image file. Returns the image files
/// expected to translate, with their sizes.
pub fn mixed_inputs(dir: &Path) -> Vec<(&'static str, (u32, u32))> {
    let good = vec![
        ("a_rgb.png", (150, 100)),
        ("b_square.png", (128, 128)),
        ("c_gray.png", (97, 61)),
        ("d_rgba.png", (70, 90)),
        ("e_photo.jpg", (200, 130)),
    ];
    save(&rgb(150, 100, 1), &dir.join("a_rgb.png"));
    save(&rgb(128, 128, 2), &dir.join("b_square.png"));
    save(&gray(97, 61), &dir.join("c_gray.png"));
    save(&rgba(70, 90), &dir.join("d_rgba.png"));
    save(&rgb(200, 130, 3), &dir.join("e_photo.jpg"));
    // A PNG signature followed by garbage: found as an image, fails to decode.
    std::fs::write(dir.join("corrupt.png"), b"\x89PNG\r\n\x1a\nthis is not a png at all").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not an image").unwrap();
    good
}

pub fn size_of(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

/// No temporary or partial file: every file decodes.
pub fn assert_all_complete(dir: &Path) {
    for f in files(dir) {
        assert!(!f.ends_with(".tmp") && !f.contains("/."), "temporary file left: {f}");
        image::open(dir.join(&f)).unwrap_or_else(|e| panic!("{f} is not a whole image: {e}"));
    }
}
