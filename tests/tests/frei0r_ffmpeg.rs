//! The .so as a frei0r filter inside an unmodified ffmpeg: output frames equal `host run`'s on
//! the same frames (within 1 level), and a bad model path passes frames through unchanged.
//!
//! Needs ffmpeg built with frei0r (Debian's is; `.ci/run` installs it). Without ffmpeg when the
//! tests are built (`build.rs`), both tests are ignored with the reason, which plain `cargo test`
//! shows; `PIX2PIX_REQUIRE_FFMPEG=1` (as in CI) makes a missing ffmpeg a failure instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn release_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release")
}

/// The tests below are compiled in only when ffmpeg was found at build time (or required): if
/// it cannot be run now, that is a failure, not a skip.
fn require_ffmpeg() {
    let ok = Command::new("ffmpeg").arg("-version").output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "ffmpeg cannot be run: it is required (PIX2PIX_REQUIRE_FFMPEG=1), or it went away after the tests were built \
         (install Debian's ffmpeg, which has frei0r)"
    );
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A folder holding `pix2pix.so`, the name frei0r hosts look up (`FREI0R_PATH`).
fn frei0r_dir(tmp: &Path) -> PathBuf {
    let so = release_dir().join("libpix2pix.so");
    assert!(so.exists(), "{} missing: run `cargo build --release --workspace` first", so.display());
    let dir = tmp.join("frei0r");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("pix2pix.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&so, &link).unwrap();
    dir
}

fn ffmpeg_frei0r(
    tmp: &Path,
    input: &[&str],
    params: &str,
    out_pattern: &Path,
) -> std::process::Output {
    let mut cmd = Command::new("ffmpeg");
    cmd.env("FREI0R_PATH", frei0r_dir(tmp))
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(input);
    cmd.args([
        "-vf",
        &format!("frei0r=filter_name=pix2pix:filter_params={params}"),
        "-pix_fmt",
        "rgba",
    ])
    .arg(out_pattern);
    run(&mut cmd)
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

fn max_diff(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("p2p-frei0r-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const MODEL: &str = "unet128_ngf8_instance_lsgan/generator.safetensors";

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(MODEL)
}

#[test]
#[cfg_attr(
    not(have_ffmpeg),
    ignore = "needs ffmpeg with frei0r (not found when the tests were built)"
)]
fn ffmpeg_output_matches_host_run_on_video_and_png() {
    require_ffmpeg();
    let tmp = tmpdir("match");
    let frames = tmp.join("in");
    std::fs::create_dir_all(&frames).unwrap();
    // testsrc is generated as RGB, so these PNGs hold exactly the pixels the filter receives.
    let src = ["-f", "lavfi", "-i", "testsrc=size=256x256:rate=5", "-t", "2"];
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(src)
        .arg(frames.join("%03d.png")));
    let out = tmp.join("ffmpeg");
    std::fs::create_dir_all(&out).unwrap();
    let model = model_path();
    ffmpeg_frei0r(&tmp, &src, &format!("{}|pad|batch", model.display()), &out.join("%03d.png"));
    // the same filter over a single PNG
    ffmpeg_frei0r(
        &tmp,
        &["-i", frames.join("001.png").to_str().unwrap()],
        &format!("{}|pad|batch", model.display()),
        &tmp.join("single.png"),
    );

    let host_out = tmp.join("host");
    let host = release_dir().join("host");
    run(Command::new(&host)
        .args(["run", "--plugin"])
        .arg(release_dir().join("libpix2pix.so"))
        .arg("--model")
        .arg(&model)
        .arg("--input")
        .arg(&frames)
        .arg("--output")
        .arg(&host_out)
        .args(["--size-policy", "pad", "--norm-stats", "batch"]));

    let mut names: Vec<_> =
        std::fs::read_dir(&frames).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names.len(), 10, "2 s at 5 fps");
    for name in &names {
        let a = rgb(&out.join(name));
        let host_file = std::fs::read_dir(&host_out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_stem() == Path::new(name).file_stem())
            .unwrap_or_else(|| panic!("host run wrote no output for {name:?}"));
        let b = rgb(&host_file);
        let d = max_diff(&a, &b);
        assert!(d <= 1, "{name:?}: ffmpeg vs host run differ by {d} levels");
        // and it is a translation, not a pass-through
        assert!(max_diff(&a, &rgb(&frames.join(name))) > 8, "{name:?} looks untranslated");
    }
    let d = max_diff(&rgb(&tmp.join("single.png")), &rgb(&out.join(&names[0])));
    assert!(d <= 1, "single PNG vs video frame differ by {d}");
    // frame-to-frame determinism: the PNG run and the video run agree on frame 1.
}

#[test]
#[cfg_attr(
    not(have_ffmpeg),
    ignore = "needs ffmpeg with frei0r (not found when the tests were built)"
)]
fn missing_model_passes_frames_through() {
    require_ffmpeg();
    let tmp = tmpdir("missing");
    let src = ["-f", "lavfi", "-i", "testsrc=size=128x96:rate=5", "-t", "1"];
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(src)
        .arg(tmp.join("in_%03d.png")));
    let out = ffmpeg_frei0r(
        &tmp,
        &src,
        "/nonexistent/model.safetensors|pad|batch",
        &tmp.join("out_%03d.png"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("pix2pix frei0r:").count(),
        1,
        "reported once, not per frame:\n{stderr}"
    );
    assert!(stderr.contains("/nonexistent/model.safetensors"), "{stderr}");
    for i in 1..=5 {
        let name = format!("{i:03}.png");
        let d =
            max_diff(&rgb(&tmp.join(format!("in_{name}"))), &rgb(&tmp.join(format!("out_{name}"))));
        assert_eq!(d, 0, "frame {i} changed");
    }
}
