//! The README cannot rot: every shell command in it runs here (the `cargo` lines are what
//! `.ci/run` runs, checked to be the same), and its C program compiles, links to the built
//! library and translates an image.

mod common;

use std::path::Path;
use std::process::Command;

use common::{built_library, root};

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

/// The fenced blocks of one language, in order.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    let mut out = vec![];
    let mut rest = text;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let Some(end) = body.find("```") else { break };
        out.push(body[..end].to_string());
        rest = &body[end..];
    }
    out
}

fn commands() -> Vec<String> {
    blocks(&readme(), "sh")
        .iter()
        .flat_map(|b| b.lines().map(str::trim).map(String::from).collect::<Vec<_>>())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("-version").output().is_ok()
}

#[test]
fn the_test_command_is_what_ci_runs() {
    let ci = std::fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    let test_cmd = "cargo build --release --workspace && cargo test --release --workspace";
    assert!(commands().iter().any(|c| c == test_cmd), "README lost its test command");
    assert!(
        ci.lines().any(|l| l.trim() == test_cmd),
        ".ci/run no longer runs the README's test command"
    );
}

#[test]
fn every_readme_shell_command_runs() {
    built_library("host");
    for cmd in commands() {
        // Build and test commands are what this test runs under; `.ci/run` runs them.
        let cmd = match cmd.strip_prefix("cargo build --release --workspace && ") {
            Some(rest) if !rest.starts_with("cargo ") => rest.to_string(),
            _ if cmd.starts_with("cargo ") => continue,
            _ => cmd,
        };
        let missing = [("ffmpeg", "PIX2PIX_REQUIRE_FFMPEG"), ("gst-launch-1.0", "PIX2PIX_REQUIRE_GSTREAMER")]
            .into_iter()
            .find(|(tool, require)| cmd.contains(tool) && !have(tool) && std::env::var(require).as_deref() != Ok("1"));
        if let Some((tool, _)) = missing {
            eprintln!("{tool} not found: skipped `{cmd}`");
            continue;
        }
        let out =
            Command::new("bash").arg("-ec").arg(&cmd).current_dir(root()).output().expect("bash");
        assert!(
            out.status.success(),
            "README command failed: {cmd}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Command 1 leaves one photo per example label map.
    for entry in std::fs::read_dir(root().join("examples/labels")).expect("examples/labels") {
        let name = entry.expect("entry").file_name();
        let out = root().join("out/facades").join(&name);
        let img = image::open(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        assert_eq!((img.width(), img.height()), (256, 256));
    }
}

#[test]
fn the_readme_c_program_translates_an_image() {
    let so = built_library("libpix2pix.so");
    let c = blocks(&readme(), "c").into_iter().next().expect("a C example in the README");
    let dir = std::env::temp_dir().join(format!("p2p-readme-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("translate.c"), c).expect("write");
    let lib_dir = so.parent().unwrap_or(Path::new("."));
    let out = Command::new("cc")
        .arg(dir.join("translate.c"))
        .arg("-I")
        .arg(root().join("ffi/include"))
        .arg("-L")
        .arg(lib_dir)
        .arg("-lpix2pix")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-o")
        .arg(dir.join("translate"))
        .output()
        .expect("cc");
    assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new(dir.join("translate")).current_dir(&dir).output().expect("run");
    assert!(
        run.status.success(),
        "translate: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let ppm = std::fs::read(dir.join("translated.ppm")).expect("translated.ppm");
    assert!(ppm.starts_with(b"P6 300 200 255\n"));
    assert_eq!(ppm.len(), "P6 300 200 255\n".len() + 300 * 200 * 3);
}
