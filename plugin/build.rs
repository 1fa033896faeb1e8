//! With the `default-model` feature (on by default), checks that the model it embeds exists,
//! so that a missing file is a clear build error, not a library that quietly ships none.

fn main() {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/facades_label2photo.safetensors");
    println!("cargo::rerun-if-changed={}", model.display());
    if std::env::var_os("CARGO_FEATURE_DEFAULT_MODEL").is_some() && !model.is_file() {
        panic!(
            "feature `default-model`: {} is missing; restore it, or build with --no-default-features for a library without a shipped model",
            model.display()
        );
    }
}
