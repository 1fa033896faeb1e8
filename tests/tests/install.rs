//! `cargo xtask install` into a temporary prefix, then the library used as an installed C
//! library: the layout and SONAME, `host` loading the installed copy, the README's C example
//! built with `cc translate.c $(pkg-config --cflags --libs pix2pix)`, and a C++ CMake project
//! (`find_package(pix2pix)`, `pix2pix::pix2pix`, four threads) built and run. Translations are
//! checked byte for byte against the Rust API.
//!
//! Needs `pkg-config` and `cmake` for the last two; without them those tests say so and return,
//! unless `PIX2PIX_REQUIRE_CMAKE=1` (as in CI), where that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn major() -> &'static str {
    VERSION.split('.').next().unwrap_or(VERSION)
}

/// One install per test process, shared by the tests: `cargo xtask install --no-build` of the
/// built library.
fn prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let so = plugin_so();
        let target_dir =
            so.parent().and_then(Path::parent).expect("<target>/release/libpix2pix.so");
        let prefix = scratch("install").join("prefix");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = run(Command::new(cargo)
            .current_dir(root())
            .args(["xtask", "install", "--no-build", "--prefix"])
            .arg(&prefix)
            .arg("--target-dir")
            .arg(target_dir));
        print!("{}", String::from_utf8_lossy(&out.stdout));
        prefix
    })
}

/// `cmake`/`pkg-config` present, or a visible skip (a failure under `PIX2PIX_REQUIRE_CMAKE=1`).
fn tools(names: &[&str], what: &str) -> bool {
    let missing: Vec<_> = names.iter().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("PIX2PIX_REQUIRE_CMAKE").as_deref() == Ok("1") {
        panic!("{missing:?} required (PIX2PIX_REQUIRE_CMAKE=1) but not found");
    }
    eprintln!("{missing:?} not found: {what} skipped (install cmake and pkg-config to run it)");
    false
}

fn readelf_dynamic(file: &Path) -> String {
    String::from_utf8_lossy(&run(Command::new("readelf").arg("-d").arg(file)).stdout).into_owned()
}

/// The fenced blocks of one language in README.md, in order (as tests/tests/readme.rs reads them).
fn readme_blocks(lang: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let fence = format!("```{lang}\n");
    let mut out = vec![];
    let mut rest = text.as_str();
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let Some(end) = body.find("```") else { break };
        out.push(body[..end].to_string());
        rest = &body[end..];
    }
    out
}

#[test]
fn install_lays_out_a_versioned_library_header_and_config_files() {
    let prefix = prefix();
    let lib = prefix.join("lib");
    let file = format!("libpix2pix.so.{VERSION}");
    let soname = format!("libpix2pix.so.{}", major());
    assert_eq!(
        std::fs::read(lib.join(&file)).expect("installed library"),
        std::fs::read(plugin_so()).unwrap(),
        "installed library is not the built one"
    );
    assert_eq!(std::fs::read_link(lib.join(&soname)).expect("SONAME link"), Path::new(&file));
    assert_eq!(
        std::fs::read_link(lib.join("libpix2pix.so")).expect("dev link"),
        Path::new(&soname)
    );
    assert!(
        readelf_dynamic(&lib.join(&file)).contains(&format!("Library soname: [{soname}]")),
        "no SONAME {soname}"
    );
    assert_eq!(
        std::fs::read(prefix.join("include/pix2pix.h")).expect("installed header"),
        std::fs::read(root().join("ffi/include/pix2pix.h")).unwrap()
    );
    let pc = std::fs::read_to_string(lib.join("pkgconfig/pix2pix.pc")).expect("pix2pix.pc");
    assert!(pc.lines().any(|l| l == format!("prefix={}", prefix.display())), "{pc}");
    assert!(pc.lines().any(|l| l == format!("Version: {VERSION}")), "{pc}");
    let cmake = lib.join("cmake/pix2pix");
    assert!(std::fs::read_to_string(cmake.join("pix2pix-config.cmake"))
        .expect("config")
        .contains("pix2pix::pix2pix"));
    assert!(std::fs::read_to_string(cmake.join("pix2pix-config-version.cmake"))
        .expect("version file")
        .contains(VERSION));
    // No temporary file of the atomic writes is left behind.
    for dir in [&lib, &lib.join("pkgconfig"), &cmake, &prefix.join("include")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name();
            assert!(
                !name.to_string_lossy().ends_with(".tmp"),
                "left over: {}",
                dir.join(name).display()
            );
        }
    }
}

#[test]
fn install_refuses_a_missing_library_naming_it() {
    let dir = scratch("install-missing");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["xtask", "install", "--no-build", "--prefix"])
        .arg(dir.join("prefix"))
        .arg("--target-dir")
        .arg(dir.join("no-target"))
        .output()
        .expect("cargo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-target/release/libpix2pix.so"), "{stderr}");
    assert!(!dir.join("prefix/lib").exists(), "a failed install created the prefix");
}

#[test]
fn host_loads_the_installed_library() {
    let so = prefix().join("lib/libpix2pix.so");
    let out = run(Command::new(built_library("host")).args(["info", "--plugin"]).arg(&so));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("abi check ok") && text.contains(VERSION),
        "host info on {}:\n{text}",
        so.display()
    );
}

#[test]
#[cfg_attr(
    not(have_cmake),
    ignore = "needs cmake and pkg-config (not found when the tests were built)"
)]
fn readme_c_example_builds_with_pkg_config() {
    if !tools(&["pkg-config"], "the pkg-config build of the README's C example") {
        return;
    }
    let prefix = prefix();
    let dir = scratch("install-pkg-config");
    let c = readme_blocks("c").into_iter().next().expect("a C example in the README");
    std::fs::write(dir.join("translate.c"), c).unwrap();
    // The README's own command (its Install section); only pkg-config says where the header
    // and library are, and the rpath is pkg-config's libdir.
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let command = readme
        .lines()
        .filter_map(|l| l.trim().strip_prefix("$ "))
        .find(|l| l.starts_with("cc translate.c $(pkg-config"))
        .expect("README's Install section has `$ cc translate.c $(pkg-config ...)`");
    run(Command::new("bash")
        .arg("-ec")
        .arg(command)
        .current_dir(&dir)
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")));
    let exe = dir.join("a.out");
    let dynamic = readelf_dynamic(&exe);
    assert!(dynamic.contains(&format!("Shared library: [libpix2pix.so.{}]", major())), "{dynamic}");
    assert!(
        dynamic.contains(&prefix.join("lib").display().to_string()),
        "no rpath to the install:\n{dynamic}"
    );

    let run_out = run(Command::new(&exe).current_dir(&dir).env_remove("LD_LIBRARY_PATH"));
    print!("{}", String::from_utf8_lossy(&run_out.stdout));
    let ppm = std::fs::read(dir.join("translated.ppm")).expect("translated.ppm");
    let header = b"P6 300 200 255\n";
    assert!(ppm.starts_with(header), "not a 300x200 PPM");

    // The README program's gradient, translated by the Rust API with the default model.
    let (w, h) = (300usize, 200usize);
    let mut pixels = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            pixels.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
        }
    }
    let ckpt = pix2pix::faces::default_model::checkpoint().expect("the shipped default model");
    let model = pix2pix::Model::from_checkpoint(ckpt, pix2pix::Options::default())
        .expect("the shipped default model");
    let view = pix2pix::ImageView::new(w, h, w * 3, 3, &pixels).expect("image");
    let expected = model.translate(&view).expect("translate").data;
    assert!(
        ppm[header.len()..] == expected[..],
        "the installed library's translation differs from the Rust API's"
    );
}

#[test]
#[cfg_attr(
    not(have_cmake),
    ignore = "needs cmake and pkg-config (not found when the tests were built)"
)]
fn cmake_consumer_builds_and_runs_from_four_threads() {
    if !tools(&["cmake", "c++"], "the CMake consumer") {
        return;
    }
    let prefix = prefix();
    let dir = scratch("install-cmake");
    let src = root().join("tests/cmake_consumer");
    let build = dir.join("build");
    run(Command::new("cmake")
        .arg("-S")
        .arg(&src)
        .arg("-B")
        .arg(&build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
        .arg("-DCMAKE_BUILD_TYPE=Release"));
    run(Command::new("cmake").arg("--build").arg(&build));
    let app = build.join("app");
    let dynamic = readelf_dynamic(&app);
    assert!(dynamic.contains(&format!("Shared library: [libpix2pix.so.{}]", major())), "{dynamic}");

    let model = generator(UNET128);
    let out = run(Command::new(&app).arg(&model).arg(&dir).env_remove("LD_LIBRARY_PATH"));
    print!("{}", String::from_utf8_lossy(&out.stdout));
    for i in 0..4 {
        let (w, h) = (64 + 32 * i, 48 + 16 * i);
        let input = std::fs::read(dir.join(format!("in_{i}.raw"))).expect("input written by app");
        let from_cpp =
            std::fs::read(dir.join(format!("out_{i}.raw"))).expect("output written by app");
        assert_eq!(input.len(), w * h * 3);
        assert!(
            from_cpp == rust_translate(&model, &input, w, h, 3),
            "image {i}: C++ through the install differs from the Rust API"
        );
    }

    // Relocatable: a copy of the install elsewhere is found where it is, not where it was made.
    let moved = dir.join("moved prefix");
    run(Command::new("cp").arg("-a").arg(prefix).arg(&moved));
    let moved_build = dir.join("build-moved");
    run(Command::new("cmake")
        .arg("-S")
        .arg(&src)
        .arg("-B")
        .arg(&moved_build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", moved.display())));
    run(Command::new("cmake").arg("--build").arg(&moved_build));
    let dynamic = readelf_dynamic(&moved_build.join("app"));
    assert!(
        dynamic.contains(&moved.join("lib").display().to_string()),
        "not linked to the moved copy:\n{dynamic}"
    );
    run(Command::new(moved_build.join("app")).arg(&model).arg(&dir).env_remove("LD_LIBRARY_PATH"));

    // A version the install cannot satisfy is refused at configure time.
    let refused = Command::new("cmake")
        .arg("-S")
        .arg(&src)
        .arg("-B")
        .arg(dir.join("build-v1"))
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
        .arg("-DP2P_WANT_VERSION=1.0")
        .output()
        .expect("cmake");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains(VERSION),
        "version 1.0 was not refused:\n{stderr}"
    );
}
