//! The host links only the FFI contract: no candle, no plugin crate (it loads the plugin at
//! run time).

use std::process::Command;

#[test]
fn host_depends_on_neither_candle_nor_the_plugin() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "host",
            "--prefix",
            "none",
            "--edges",
            "normal,build,dev",
            "--format",
            "{p}",
        ])
        .current_dir(&root)
        .output()
        .expect("cannot run cargo tree");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("pix2pix-ffi"), "{text}");
    for line in text.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(!name.starts_with("candle"), "host depends on {line}");
        assert_ne!(name, "pix2pix", "host depends on the plugin crate: {line}");
    }
}
