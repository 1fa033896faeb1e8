//! Embeds the shipped default model when `models/facades_label2photo.safetensors` exists, so
//! `libpix2pix.so` finds it with no path and no network.

fn main() {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/facades_label2photo.safetensors");
    println!("cargo::rustc-check-cfg=cfg(default_model)");
    println!("cargo::rerun-if-changed={}", model.display());
    if model.exists() {
        println!("cargo::rustc-cfg=default_model");
    }
}
