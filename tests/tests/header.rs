//! The committed C header is what cbindgen makes of the sources: regenerate it with the cbindgen
//! library and compare. `UPDATE_HEADER=1` writes it instead.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn generate() -> String {
    let root = root();
    // Everything comes from the contract crate: types and constants, then the functions.
    let config = cbindgen::Config::from_file(root.join("ffi/cbindgen.toml"))
        .unwrap_or_else(|e| panic!("ffi/cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("ffi/src/c.rs"))
        .with_src(root.join("ffi/src/c/functions.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen: {e}"));
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("cbindgen wrote UTF-8")
}

#[test]
fn committed_header_is_up_to_date() {
    let path = root().join("ffi/include/pix2pix.h");
    let fresh = generate();
    if std::env::var_os("UPDATE_HEADER").is_some_and(|v| v != "0") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let first = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(fresh.lines().count()));
        let show = |s: &str| s.lines().skip(first).take(3).collect::<Vec<_>>().join("\n");
        panic!(
            "{} is out of date with ffi/src/c.rs / ffi/src/c/functions.rs / ffi/cbindgen.toml.\n\
             First difference at line {}:\n--- committed\n{}\n+++ generated\n{}\n\n\
             Regenerate it with:\n    UPDATE_HEADER=1 cargo test --release -p pix2pix-tests --test header\n\
             and commit the result.",
            path.display(),
            first + 1,
            show(&committed),
            show(&fresh),
        );
    }
}
