//! Probes, when the end-to-end tests are built, for the tools some of them drive (ffmpeg with
//! frei0r, valgrind, GStreamer, cmake) and sets `have_ffmpeg` / `have_valgrind` / `have_gstreamer` /
//! `have_cmake`. A test that needs a missing tool
//! is compiled `#[ignore = "needs …"]`, so plain `cargo test` lists it as `ignored, needs …`
//! (and counts it in the summary) instead of passing it silently.
//!
//! `PIX2PIX_REQUIRE_<TOOL>=1` (CI) set the cfg regardless: the tests then
//! run and fail if the tool is missing. Installing a tool touches a folder on `PATH`, which
//! reruns this probe.

use std::process::Command;

fn main() {
    for (tool, name, version_flag) in [
        ("ffmpeg", "ffmpeg", "-version"),
        ("valgrind", "valgrind", "--version"),
        ("gst-launch-1.0", "gstreamer", "--version"),
        ("cmake", "cmake", "--version"),
    ] {
        let cfg = format!("have_{name}");
        let require = format!("PIX2PIX_REQUIRE_{}", name.to_uppercase());
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={require}");
        let found = Command::new(tool).arg(version_flag).output().is_ok_and(|o| o.status.success());
        if found || std::env::var(&require).as_deref() == Ok("1") {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.is_absolute() && dir.is_dir() {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
}
