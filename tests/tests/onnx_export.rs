//! `host export --onnx` (and `p2p_export_onnx`): the fixture generators (U-Net 128 and 256,
//! ResNet 6 blocks; batch and instance norm) exported with batch and running statistics, run in
//! ONNX Runtime by `tests/onnx/check_onnx.py`, must give `host run`'s output on the same image
//! within 1 level of 255, at the native size and at non-square sizes (the graph's height and
//! width are free).
//!
//! ONNX Runtime comes from a Python virtual environment the script creates when missing (see
//! its docstring). Without Python or PyPI the comparison is skipped with a message on the
//! terminal; with `PIX2PIX_REQUIRE_ONNX=1` that is a failure instead.

mod host_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use host_common::*;

const RESNET6: &str = "resnet6_ngf8_instance";
const UNET256: &str = "unet256_ngf8_batch";

/// Says that something was skipped where `cargo test` shows it: on the real stderr, which the
/// test harness does not capture (it captures `eprintln!`).
fn skipped(what: &str) {
    let _ = writeln!(std::io::stderr(), "\nSKIPPED (onnx_export): {what}");
}

fn required() -> bool {
    std::env::var_os("PIX2PIX_REQUIRE_ONNX").is_some_and(|v| v == "1")
}

/// A deterministic RGB test image with gradients and texture.
fn test_png(path: &Path, w: u32, h: u32, seed: u32) {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let mut px = [0u8; 3];
        for (c, v) in px.iter_mut().enumerate() {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let smooth = (x * 255 / w + y * 127 / h + c as u32 * 60) % 256;
            *v = (smooth + s % 48).min(255) as u8;
        }
        image::Rgb(px)
    });
    img.save(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn export(model: Option<&Path>, stats: &str, out: &Path) {
    let mut cmd = host(&["export", "--plugin"]);
    cmd.arg(plugin()).arg("--onnx").arg(out).args(["--norm-stats", stats]);
    if let Some(m) = model {
        cmd.arg("--model").arg(m);
    }
    let o = run(&mut cmd);
    assert!(o.status.success(), "host export failed: {}", stderr(&o));
    assert!(stdout(&o).contains("ONNX opset 17"), "{}", stdout(&o));
}

fn host_run(model: Option<&Path>, stats: &str, input: &Path, output: &Path) {
    let mut cmd = host(&["run", "--plugin"]);
    cmd.arg(plugin())
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--norm-stats", stats]);
    if let Some(m) = model {
        cmd.arg("--model").arg(m);
    }
    let o = run(&mut cmd);
    assert!(o.status.success(), "host run failed: {}", stderr(&o));
}

/// A model to export (`None`: the shipped default), its name, the statistics, and the image
/// sizes to compare at.
struct Case {
    name: &'static str,
    model: Option<PathBuf>,
    stats: &'static str,
    sizes: Vec<(u32, u32)>,
}

fn case(name: &'static str, stats: &'static str, sizes: &[(u32, u32)]) -> Case {
    let model = (name != "default").then(|| fixture(name));
    Case { name, model, stats, sizes: sizes.to_vec() }
}

#[test]
fn exported_generators_match_host_run_in_onnx_runtime() {
    let t = TempDir::new("onnx-export");
    // (model, statistics, sizes): the native size, then non-square multiples of the stride.
    let mut cases = vec![
        case(UNET128, "batch", &[(128, 128), (256, 128)]),
        case(UNET128, "running", &[(128, 256)]),
        case(UNET256, "batch", &[(256, 256), (512, 256)]),
        case(UNET256, "running", &[(256, 256), (256, 512)]),
        case(RESNET6, "batch", &[(64, 64), (96, 52)]),
        case(RESNET6, "running", &[(120, 68)]),
    ];
    // The shipped default model (unet_256, ngf 32, batch norm), when this checkout has it.
    if root().join("models/facades_label2photo.safetensors").is_file() {
        cases.push(case("default", "running", &[(256, 256)]));
        cases.push(case("default", "batch", &[(512, 256)]));
    } else {
        skipped(
            "models/facades_label2photo.safetensors is missing: the default model is not checked",
        );
    }
    let mut checks = Vec::new();
    for (i, Case { name, model, stats, sizes }) in cases.iter().enumerate() {
        let onnx = t.join(&format!("{name}_{stats}.onnx"));
        export(model.as_deref(), stats, &onnx);
        for (j, &(w, h)) in sizes.iter().enumerate() {
            let input = t.join(&format!("in_{i}_{j}_{w}x{h}.png"));
            let expected = t.join(&format!("host_{name}_{stats}_{w}x{h}.png"));
            test_png(&input, w, h, (i * 10 + j) as u32);
            host_run(model.as_deref(), stats, &input, &expected);
            checks.push(format!("{}:{}:{}", onnx.display(), input.display(), expected.display()));
        }
    }
    let script = root().join("tests/onnx/check_onnx.py");
    let python = std::env::var("P2P_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = match Command::new(&python).arg(&script).args(&checks).output() {
        Ok(o) => o,
        Err(e) if !required() => {
            return skipped(&format!("cannot run {python} ({e}); set P2P_PYTHON to a Python 3"))
        }
        Err(e) => panic!("PIX2PIX_REQUIRE_ONNX=1 but {python} cannot run: {e}"),
    };
    let (so, se) = (stdout(&out), stderr(&out));
    println!("{so}\n{se}");
    match out.status.code() {
        Some(0) => assert!(
            so.contains(&format!("{n} of {n} cases match host run", n = checks.len())),
            "{so}"
        ),
        Some(77) if !required() => skipped(so.trim().trim_start_matches("SKIP: ")),
        Some(77) => panic!("PIX2PIX_REQUIRE_ONNX=1 but ONNX Runtime is not available:\n{so}\n{se}"),
        _ => panic!("ONNX Runtime disagrees with host run ({}):\n{so}\n{se}", out.status),
    }
}

#[test]
fn export_refuses_to_replace_a_file_unless_asked() {
    let t = TempDir::new("onnx-overwrite");
    let out = t.join("model.onnx");
    std::fs::write(&out, b"keep me").unwrap();
    let mut cmd = host(&["export", "--plugin"]);
    cmd.arg(plugin()).arg("--model").arg(fixture(UNET128)).arg("--onnx").arg(&out);
    let o = run(&mut cmd);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already exists") && stderr(&o).contains("--overwrite"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");

    let o = run(cmd.arg("--overwrite"));
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        bytes.len() > 10_000 && bytes.windows(7).any(|w| w == b"unet_12"),
        "not an exported model: {} bytes",
        bytes.len()
    );
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["model.onnx"]);
}

#[test]
fn export_errors_name_the_file() {
    let t = TempDir::new("onnx-errors");
    // A file that is not a generator (a discriminator checkpoint).
    let disc = root().join("tests/fixtures").join(UNET128).join("discriminator.safetensors");
    let out = t.join("d.onnx");
    let o = run(host(&["export", "--plugin"])
        .arg(plugin())
        .arg("--model")
        .arg(&disc)
        .arg("--onnx")
        .arg(&out));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("discriminator.safetensors") && stderr(&o).contains("generator"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // A folder that does not exist.
    let missing = t.join("no/such/dir/g.onnx");
    let o = run(host(&["export", "--plugin"])
        .arg(plugin())
        .arg("--model")
        .arg(fixture(UNET128))
        .arg("--onnx")
        .arg(&missing));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no/such/dir/g.onnx"), "{}", stderr(&o));
}

/// The C API writes the same bytes as the abi_stable entry behind `host export`.
#[test]
fn c_api_export_matches_host_export() {
    use std::ffi::{c_char, CString};
    let t = TempDir::new("onnx-capi");
    let so = plugin();
    // SAFETY: loading our own plugin, whose initialisers are Rust statics with no side effects.
    let lib = unsafe { libloading::Library::new(&so) }
        .unwrap_or_else(|e| panic!("{}: {e}", so.display()));
    type Export = unsafe extern "C" fn(*const c_char, *const c_char, u32, u32) -> i32;
    type LastError = unsafe extern "C" fn() -> *const c_char;
    // SAFETY: the signatures are those of the header.
    let (export_onnx, last_error) = unsafe {
        (
            *lib.get::<Export>(b"p2p_export_onnx").expect("p2p_export_onnx"),
            *lib.get::<LastError>(b"p2p_last_error").expect("p2p_last_error"),
        )
    };
    let message = || {
        // SAFETY: never NULL, NUL-terminated.
        unsafe { std::ffi::CStr::from_ptr(last_error()) }.to_string_lossy().into_owned()
    };
    use pix2pix_ffi::c::*;
    let model = CString::new(fixture(UNET256).to_str().unwrap()).unwrap();
    let c_out = t.join("c.onnx");
    let c_path = CString::new(c_out.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated strings for the duration of each call; NULL where allowed.
    unsafe {
        assert_eq!(
            export_onnx(model.as_ptr(), c_path.as_ptr(), P2P_NORM_STATS_RUNNING, 0),
            P2P_OK,
            "{}",
            message()
        );
        assert_eq!(
            export_onnx(model.as_ptr(), c_path.as_ptr(), P2P_NORM_STATS_RUNNING, 0),
            P2P_ERR_IO,
            "an existing file must not be replaced"
        );
        assert!(message().contains("already exists"), "{}", message());
        assert_eq!(
            export_onnx(
                model.as_ptr(),
                c_path.as_ptr(),
                P2P_NORM_STATS_RUNNING,
                P2P_EXPORT_OVERWRITE
            ),
            P2P_OK,
            "{}",
            message()
        );
        assert_eq!(export_onnx(model.as_ptr(), std::ptr::null(), 0, 0), P2P_ERR_NULL);
        assert_eq!(
            export_onnx(model.as_ptr(), c_path.as_ptr(), 7, P2P_EXPORT_OVERWRITE),
            P2P_ERR_INVALID_ARGUMENT
        );
        assert!(message().contains("norm_stats"), "{}", message());
        assert_eq!(export_onnx(model.as_ptr(), c_path.as_ptr(), 0, 0x10), P2P_ERR_INVALID_ARGUMENT);
    }
    let host_out = t.join("host.onnx");
    let o = run(host(&["export", "--plugin"])
        .arg(&so)
        .arg("--model")
        .arg(fixture(UNET256))
        .arg("--onnx")
        .arg(&host_out)
        .args(["--norm-stats", "running"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(&c_out).unwrap() == std::fs::read(&host_out).unwrap(),
        "the C API and host export wrote different models"
    );
}
