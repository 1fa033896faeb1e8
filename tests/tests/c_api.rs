//! The C API from real C and C++ programs, compiled here with the system compilers against
//! `ffi/include/pix2pix.h` and linked to the built `libpix2pix.so`:
//! - translations equal the Rust API's byte for byte (library-allocated and caller buffers),
//! - four C++ threads sharing one model give the bytes of one thread,
//! - misuse gives a status and a message, never a crash or a write outside the buffers,
//!   also under valgrind when it is installed (without it, that test is listed as ignored,
//!   `build.rs`; `PIX2PIX_REQUIRE_VALGRIND=1` makes its absence a failure, for CI).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Runs `tests/c/<program>` (C or C++) on a test image and checks its output against the Rust
/// API's translation of the same pixels.
fn check_against_rust(
    program: &str,
    fixture: &str,
    width: usize,
    height: usize,
    channels: usize,
    extra: &[&str],
) {
    let dir = scratch(&format!("{program}-{fixture}-{width}x{height}x{channels}"));
    let exe = compile(program, &dir);
    let model = generator(fixture);
    let pixels = test_image(width, height, channels, (width * 31 + height * 7 + channels) as u32);
    let input = dir.join("in.raw");
    let output = dir.join("out.raw");
    std::fs::write(&input, &pixels).unwrap();
    let out = run(Command::new(&exe)
        .arg(&model)
        .arg(&input)
        .args([width.to_string(), height.to_string(), channels.to_string()])
        .arg(&output)
        .args(extra));
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let from_c = std::fs::read(&output).unwrap();
    let from_rust = rust_translate(&model, &pixels, width, height, channels);
    let out_channels = if channels == 4 { 4 } else { 3 };
    assert_eq!(from_rust.len(), width * height * out_channels);
    assert_eq!(from_c.len(), from_rust.len(), "{program}: output size");
    if let Some(i) = from_c.iter().zip(&from_rust).position(|(a, b)| a != b) {
        panic!(
            "{program} on {fixture} {width}x{height}x{channels}: byte {i} (pixel {}, channel {}) is {} through the C API, {} through Rust",
            i / out_channels,
            i % out_channels,
            from_c[i],
            from_rust[i]
        );
    }
}

#[test]
fn c_translate_unet128_rgb_matches_rust() {
    // 150x100 is no multiple of 128: the pad policy runs.
    check_against_rust("translate.c", UNET128, 150, 100, 3, &[]);
}

#[test]
fn c_translate_unet128_gray_matches_rust() {
    check_against_rust("translate.c", UNET128, 128, 128, 1, &[]);
}

#[test]
fn c_translate_unet256_rgba_matches_rust() {
    check_against_rust("translate.c", UNET256, 300, 200, 4, &[]);
}

#[test]
fn cpp_threads_unet256_match_rust() {
    // Four threads, two translations each, one shared model; all equal to one thread's bytes.
    check_against_rust("translate_threads.cpp", UNET256, 256, 256, 3, &["4", "2"]);
}

#[test]
fn cpp_threads_unet128_rgba_match_rust() {
    check_against_rust("translate_threads.cpp", UNET128, 200, 140, 4, &["4", "2"]);
}

/// The broken files the abuse program tries to open.
fn broken_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let good = std::fs::read(generator(UNET128)).unwrap();
    let missing = dir.join("missing.safetensors");
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let text = dir.join("text.safetensors");
    std::fs::write(&text, "This is a text file, not a checkpoint.\n").unwrap();
    let pth =
        std::fs::read(root().join("tests/fixtures").join(UNET128).join("generator.pth")).unwrap();
    let truncated_pth = dir.join("truncated.pth");
    std::fs::write(&truncated_pth, &pth[..pth.len() / 3]).unwrap();
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let folder = dir.join("folder.safetensors");
    std::fs::create_dir_all(&folder).unwrap();
    vec![missing, truncated, text, truncated_pth, empty, folder]
}

#[test]
fn c_abuse_gives_statuses_and_messages() {
    let dir = scratch("abuse");
    let exe = compile("abuse.c", &dir);
    let out = run(Command::new(&exe).arg(generator(UNET128)).args(broken_files(&dir)));
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
#[cfg_attr(not(have_valgrind), ignore = "needs valgrind (not found when the tests were built)")]
fn c_abuse_is_clean_under_valgrind() {
    // Compiled in only when valgrind was found at build time (or required): its absence now
    // is a failure, not a skip.
    assert!(
        have("valgrind"),
        "valgrind cannot be run: it is required (PIX2PIX_REQUIRE_VALGRIND=1), or it went away after the tests were built"
    );
    let dir = scratch("abuse-valgrind");
    let exe = compile("abuse.c", &dir);
    let log = dir.join("valgrind.log");
    let out = Command::new("valgrind")
        .args([
            "--error-exitcode=97",
            "--leak-check=full",
            // candle and rayon keep global pools alive to the end: "still reachable" and
            // "possibly lost" (thread stacks) are expected; definite leaks and invalid accesses
            // are failures.
            "--show-leak-kinds=definite",
            "--errors-for-leak-kinds=definite",
            "--track-origins=yes",
        ])
        .arg(format!("--log-file={}", log.display()))
        .arg(&exe)
        .arg(generator(UNET128))
        .args(broken_files(&dir))
        .output()
        .expect("run valgrind");
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| {
            l.contains("ERROR SUMMARY") || l.contains("definitely lost") || l.contains("Invalid")
        })
        .collect();
    println!("{}", summary.join("\n"));
    assert!(
        out.status.success(),
        "the abuse program under valgrind failed ({}):\n--- stderr\n{}\n--- valgrind\n{report}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("ERROR SUMMARY: 0 errors"), "valgrind reported errors:\n{report}");
}
