//! The README cannot rot: every shell command in it runs here (the `cargo` lines are what
//! `.ci/run` runs, checked to be the same), from a scratch stand-in for the repository root so
//! the working tree stays as it was, and its C program compiles, links to the built library and
//! translates an image.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use common::{built_library, release_dir, root};

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

/// The README's shell blocks, each as its command lines (comments and blank lines dropped).
fn command_blocks() -> Vec<Vec<String>> {
    blocks(&readme(), "sh")
        .iter()
        .map(|b| {
            b.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect()
        })
        .collect()
}

fn commands() -> Vec<String> {
    command_blocks().into_iter().flatten().collect()
}

/// A scratch stand-in for the repository root to run README commands in, so that their outputs
/// (`out/…`) land there and not in the working tree: `examples/` is copied (its TOML files
/// write relative to themselves), the other top-level entries are linked, `target` to the
/// build folder actually in use.
fn sandbox(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2p-readme-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in std::fs::read_dir(root()).expect("repository root").flatten() {
        let name = entry.file_name();
        match name.to_str() {
            Some(".git" | "out" | "runs" | "target" | "examples") => {}
            _ => std::os::unix::fs::symlink(entry.path(), dir.join(&name)).expect("symlink"),
        }
    }
    let target = release_dir().parent().expect("the target folder").to_path_buf();
    std::os::unix::fs::symlink(target, dir.join("target")).expect("symlink");
    copy_dir(&root().join("examples"), &dir.join("examples"));
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())).flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name()))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

/// Every file of the working tree (build output and `.git` aside) with its size and time.
fn tree_state() -> BTreeMap<PathBuf, (u64, SystemTime)> {
    fn walk(dir: &Path, skip: &[PathBuf], out: &mut BTreeMap<PathBuf, (u64, SystemTime)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                if !skip.iter().any(|s| s == &path) {
                    walk(&path, skip, out);
                }
            } else {
                out.insert(path, (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
    }
    let root = root().canonicalize().expect("repository root");
    let mut skip = vec![root.join(".git"), root.join("target")];
    if let Ok(t) = release_dir().join("..").canonicalize() {
        skip.push(t);
    }
    let mut out = BTreeMap::new();
    walk(&root, &skip, &mut out);
    out
}

/// Runs README command lines, in order, from `dir`.
fn run_in(dir: &Path, cmds: &[String]) {
    for cmd in cmds {
        // Build and test commands are what this test runs under; `.ci/run` runs them.
        let cmd = match cmd.strip_prefix("cargo build --release --workspace && ") {
            Some(rest) if !rest.starts_with("cargo ") => rest.to_string(),
            _ if cmd.starts_with("cargo ") => continue,
            _ => cmd.clone(),
        };
        let out =
            Command::new("bash").arg("-ec").arg(&cmd).current_dir(dir).output().expect("bash");
        assert!(
            out.status.success(),
            "README command failed: {cmd}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
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

/// Every README shell command except the ffmpeg block (next test), run as written from a
/// stand-in for the repository root: they succeed, and the working tree is left as it was.
#[test]
fn every_readme_shell_command_runs() {
    built_library("host");
    let dir = sandbox("commands");
    let before = tree_state();
    let cmds: Vec<String> = command_blocks()
        .into_iter()
        .filter(|b| !b.iter().any(|c| c.contains("ffmpeg") || c.contains("gst-launch")))
        .flatten()
        .collect();
    run_in(&dir, &cmds);
    // Command 1 leaves one photo per example label map.
    for entry in std::fs::read_dir(root().join("examples/labels")).expect("examples/labels") {
        let name = entry.expect("entry").file_name();
        let out = dir.join("out/facades").join(&name);
        let img = image::open(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        assert_eq!((img.width(), img.height()), (256, 256));
    }
    let after = tree_state();
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, s)| before.get(*p) != Some(s))
        .map(|(p, _)| p.display().to_string())
        .collect();
    let removed: Vec<_> = before
        .keys()
        .filter(|p| !after.contains_key(*p))
        .map(|p| p.display().to_string())
        .collect();
    assert!(changed.is_empty() && removed.is_empty(), "README commands wrote into the working tree: new or changed {changed:?}, removed {removed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's ffmpeg block (the frei0r filter in ffmpeg), as written.
#[test]
#[cfg_attr(
    not(have_ffmpeg),
    ignore = "needs ffmpeg with frei0r (not found when the tests were built)"
)]
fn readme_ffmpeg_commands_run() {
    built_library("libpix2pix.so");
    let dir = sandbox("ffmpeg");
    let block = command_blocks()
        .into_iter()
        .find(|b| b.iter().any(|c| c.contains("ffmpeg")))
        .expect("the README's ffmpeg block");
    run_in(&dir, &block);
    let frames = std::fs::read_dir(dir.join("out"))
        .expect("out/")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("frei0r_"))
        .count();
    assert_eq!(frames, 5, "1 s at 5 fps");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's GStreamer block (the same frei0r filter as a GStreamer element), as written.
#[test]
#[cfg_attr(
    not(have_gstreamer),
    ignore = "needs gst-launch-1.0 with gstreamer1.0-plugins-bad (not found when the tests were built)"
)]
fn readme_gstreamer_commands_run() {
    built_library("libpix2pix.so");
    let dir = sandbox("gstreamer");
    let block = command_blocks()
        .into_iter()
        .find(|b| b.iter().any(|c| c.contains("gst-launch")))
        .expect("the README's GStreamer block");
    run_in(&dir, &block);
    let frames = std::fs::read_dir(dir.join("out"))
        .expect("out/")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gst_"))
        .count();
    assert_eq!(frames, 3, "num-buffers=3");
    let _ = std::fs::remove_dir_all(&dir);
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
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `host info --model` output the README shows is what the host prints (the plugin's
/// folder, which depends on the checkout, aside).
#[test]
fn the_readme_info_output_is_what_host_info_prints() {
    let shown = blocks(&readme(), "text")
        .into_iter()
        .find(|b| b.contains("abi check ok"))
        .expect("the README's `host info` output");
    let model =
        shown.lines().find_map(|l| l.strip_prefix("model     ")).expect("a model line").to_string();
    let out = Command::new(built_library("host"))
        .args(["info", "--plugin"])
        .arg(built_library("libpix2pix.so"))
        .arg("--model")
        .arg(&model)
        .current_dir(root())
        .output()
        .expect("host info");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let (shown_first, shown_rest) = shown.split_once('\n').expect("lines");
    let (printed_first, printed_rest) = printed.split_once('\n').expect("lines");
    assert!(
        shown_first.ends_with("/target/release/libpix2pix.so")
            && printed_first.ends_with("/libpix2pix.so"),
        "{shown_first} / {printed_first}"
    );
    assert_eq!(
        shown_rest, printed_rest,
        "the README shows other `host info --model {model}` output than the host prints"
    );
}

/// Every colour of the README's label legend occurs in the example label maps, and its hex
/// spelling is its (R, G, B).
#[test]
fn the_label_legend_colours_are_in_the_example_label_maps() {
    let text = readme();
    let legend: Vec<(String, [u8; 3], String)> = text
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("| `#"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
            let rgb: Vec<u8> = cells[1]
                .trim_matches(|c| c == '(' || c == ')')
                .split(", ")
                .map(|v| v.parse().expect("a 0-255 value"))
                .collect();
            (cells[0].to_string(), [rgb[0], rgb[1], rgb[2]], cells[2].trim_matches('`').to_string())
        })
        .collect();
    assert_eq!(legend.len(), 12, "the twelve CMP classes");
    let mut pixels: Vec<[u8; 3]> = vec![];
    for entry in
        std::fs::read_dir(root().join("examples/labels")).expect("examples/labels").flatten()
    {
        let img = image::open(entry.path()).expect("a label map").to_rgb8();
        pixels.extend(img.pixels().map(|p| p.0));
    }
    for (part, rgb, hex) in &legend {
        assert_eq!(hex, &format!("#{:02X}{:02X}{:02X}", rgb[0], rgb[1], rgb[2]), "{part}");
        // JPEG-compressed source data: the examples scatter each colour by a few levels.
        let near = pixels
            .iter()
            .filter(|p| {
                p.iter().zip(rgb).map(|(a, b)| (*a as i32 - *b as i32).pow(2)).sum::<i32>()
                    <= 16 * 16
            })
            .count();
        assert!(near >= 50, "{part} {rgb:?}: only {near} pixels of that colour in examples/labels");
    }
}

/// The toolchain the README names is the one `Cargo.toml` declares.
#[test]
fn the_readme_names_the_declared_rust_version() {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"');
    assert!(
        readme().contains(&format!("Rust {version} or newer (`rust-version` in `Cargo.toml`")),
        "the README does not say Rust {version}"
    );
}
