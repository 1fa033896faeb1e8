//! The .so as a frei0r filter inside an unmodified GStreamer: gst-plugins-bad's frei0r wrapper
//! exposes it as the element `frei0r-filter-pix2pix`, with the filter's parameters as the
//! properties `model`, `size-policy` and `norm-stats`. Its frames equal `host run`'s on the same
//! frames (within 1 level), the properties reach the filter, and a bad model path passes frames
//! through unchanged. The ffmpeg analogue is `frei0r_ffmpeg.rs`.
//!
//! Needs `gst-launch-1.0` with the frei0r wrapper (Debian: gstreamer1.0-tools, -plugins-base,
//! -plugins-good, -plugins-bad; `.ci/run` installs them). Without them the test says so and
//! returns, unless `PIX2PIX_REQUIRE_GSTREAMER=1` (as in CI), where that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn have_gstreamer() -> bool {
    let ok = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    // `gst-inspect-1.0 frei0r`: the wrapper plugin itself (gst-plugins-bad) is installed.
    let found = ok(Command::new("gst-launch-1.0").arg("--version"))
        && ok(Command::new("gst-inspect-1.0").arg("frei0r"));
    if !found && std::env::var("PIX2PIX_REQUIRE_GSTREAMER").as_deref() == Ok("1") {
        panic!("gst-launch-1.0 with the frei0r plugin is required (PIX2PIX_REQUIRE_GSTREAMER=1) but not found");
    }
    if !found {
        eprintln!(
            "gst-launch-1.0 or its frei0r plugin not found: GStreamer test skipped (install \
             gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)"
        );
    }
    found
}

/// A folder holding `pix2pix.so`, the name frei0r hosts look up (`FREI0R_PATH`).
fn frei0r_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("frei0r");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(plugin_so(), dir.join("pix2pix.so")).unwrap();
    dir
}

/// `gst-launch-1.0 PIPELINE...` with the filter on FREI0R_PATH and a registry of its own, so the
/// plugin scan sees this FREI0R_PATH and the user's registry cache is left alone. One argument
/// per token: gst-launch escapes each, so a path with spaces stays one property value.
fn gst_launch(tmp: &Path, pipeline: &[String]) -> Output {
    let out = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline)
        .env("FREI0R_PATH", frei0r_dir(tmp))
        .env("GST_REGISTRY", tmp.join("registry.bin"))
        .output()
        .expect("gst-launch-1.0");
    assert!(
        out.status.success(),
        "gst-launch-1.0 {} failed:\n{}{}",
        pipeline.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Frames of a scrolling test pattern as RGBA, saved as they are (`in/`) and through the filter
/// with `properties` (`out/`), in one pipeline: both branches see the same pixels.
fn translate_frames(tmp: &Path, width: u32, height: u32, properties: &[String]) -> Output {
    for d in ["in", "out"] {
        std::fs::create_dir_all(tmp.join(d)).unwrap();
    }
    let tokens = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let loc = |d: &str| format!("location={}", tmp.join(d).join("%03d.png").display());
    let mut pipeline = tokens(&format!(
        "videotestsrc num-buffers=3 pattern=smpte horizontal-speed=16 \
         ! video/x-raw,format=RGBA,width={width},height={height} ! tee name=t \
         t. ! queue ! pngenc ! multifilesink"
    ));
    pipeline.push(loc("in"));
    pipeline.extend(tokens("t. ! queue ! videoconvert ! frei0r-filter-pix2pix"));
    pipeline.extend_from_slice(properties);
    pipeline.extend(tokens("! videoconvert ! pngenc ! multifilesink"));
    pipeline.push(loc("out"));
    gst_launch(tmp, &pipeline)
}

/// The filter's properties: `model=PATH` and the given others.
fn properties(model: &Path, others: &[&str]) -> Vec<String> {
    let mut p = vec![format!("model={}", model.display())];
    p.extend(others.iter().map(|s| s.to_string()));
    p
}

fn host_run(input: &Path, output: &Path, model: &Path, size_policy: &str) {
    run(Command::new(built_library("host"))
        .args(["run", "--plugin"])
        .arg(plugin_so())
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--size-policy", size_policy, "--norm-stats", "batch"]));
}

/// A PNG file (by its signature, then decoded) as RGB.
fn png_rgb(path: &Path) -> image::RgbImage {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", path.display());
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

fn max_diff(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

const FRAMES: [&str; 3] = ["000.png", "001.png", "002.png"];

#[test]
#[cfg_attr(
    not(have_gstreamer),
    ignore = "needs gst-launch-1.0 with gstreamer1.0-plugins-bad (not found when the tests were built)"
)]
fn gstreamer_output_matches_host_run() {
    if !have_gstreamer() {
        return;
    }
    let tmp = scratch("gst-match");
    let model = generator(UNET128);
    translate_frames(&tmp, 256, 256, &properties(&model, &["size-policy=pad", "norm-stats=batch"]));
    host_run(&tmp.join("in"), &tmp.join("host"), &model, "pad");
    for name in FRAMES {
        let (input, gst, host) = (
            png_rgb(&tmp.join("in").join(name)),
            png_rgb(&tmp.join("out").join(name)),
            png_rgb(&tmp.join("host").join(name)),
        );
        assert_eq!(gst.dimensions(), (256, 256), "{name}");
        let d = max_diff(&gst, &host);
        assert!(d <= 1, "{name}: GStreamer vs host run differ by {d} levels");
        assert!(max_diff(&gst, &input) > 8, "{name} looks untranslated");
    }
    // The pattern scrolls: three different frames, not one frame three times.
    let first = png_rgb(&tmp.join("in").join(FRAMES[0]));
    assert!(
        max_diff(&first, &png_rgb(&tmp.join("in").join(FRAMES[2]))) > 0,
        "frames do not differ"
    );
}

#[test]
#[cfg_attr(
    not(have_gstreamer),
    ignore = "needs gst-launch-1.0 with gstreamer1.0-plugins-bad (not found when the tests were built)"
)]
fn gstreamer_properties_reach_the_filter() {
    if !have_gstreamer() {
        return;
    }
    // Not a multiple of the network stride: `resize` and `pad` give different images.
    let tmp = scratch("gst-props");
    let model = generator(UNET128);
    translate_frames(&tmp, 200, 120, &properties(&model, &["size-policy=resize"]));
    host_run(&tmp.join("in"), &tmp.join("host-resize"), &model, "resize");
    host_run(&tmp.join("in"), &tmp.join("host-pad"), &model, "pad");
    let name = FRAMES[1];
    let gst = png_rgb(&tmp.join("out").join(name));
    let d = max_diff(&gst, &png_rgb(&tmp.join("host-resize").join(name)));
    assert!(d <= 1, "size-policy=resize: GStreamer vs host run --size-policy resize differ by {d}");
    assert!(
        max_diff(&gst, &png_rgb(&tmp.join("host-pad").join(name))) > 8,
        "size-policy=resize gave the pad policy's image: the property did not reach the filter"
    );
}

#[test]
#[cfg_attr(
    not(have_gstreamer),
    ignore = "needs gst-launch-1.0 with gstreamer1.0-plugins-bad (not found when the tests were built)"
)]
fn gstreamer_missing_model_passes_frames_through() {
    if !have_gstreamer() {
        return;
    }
    let tmp = scratch("gst-missing");
    let out = translate_frames(
        &tmp,
        128,
        96,
        &properties(Path::new("/nonexistent/model.safetensors"), &[]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("pix2pix frei0r:").count(),
        1,
        "reported once, not per frame:\n{stderr}"
    );
    assert!(stderr.contains("/nonexistent/model.safetensors"), "{stderr}");
    for name in FRAMES {
        let d =
            max_diff(&png_rgb(&tmp.join("in").join(name)), &png_rgb(&tmp.join("out").join(name)));
        assert_eq!(d, 0, "{name} changed");
    }
}
