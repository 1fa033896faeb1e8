//! With the `default-model` feature (on by default), checks that the model it embeds exists,
//! so that a missing file is a clear build error, not a library that quietly ships none.
//! Gives the library a versioned SONAME, as a C library installed by `cargo xtask install` has.

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
    soname();
}

/// `-Wl,-soname,libpix2pix.so.<major>` on ELF targets: programs linked with `-lpix2pix` then
/// record `libpix2pix.so.<major>` (DT_NEEDED), the name `cargo xtask install` links to the
/// versioned file. Hosts that `dlopen` the library by path (host, ffmpeg's frei0r) are unaffected.
fn soname() {
    // ELF platforms: unix, except Apple's (Mach-O has install names instead).
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if !var("CARGO_CFG_TARGET_FAMILY").split(',').any(|f| f == "unix")
        || var("CARGO_CFG_TARGET_VENDOR") == "apple"
    {
        return;
    }
    let version = env!("CARGO_PKG_VERSION");
    let major = version.split('.').next().unwrap_or(version);
    let soname = format!("libpix2pix.so.{major}");
    println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    dev_tree_link(&soname);
}

/// Programs linked against the build tree (`-Ltarget/release -lpix2pix -Wl,-rpath,…`, as the
/// README's C example and the tests do) look for `libpix2pix.so.<major>` there at run time, so
/// put a symlink to `libpix2pix.so` beside it. OUT_DIR is `<profile dir>/build/<pkg>-<hash>/out`;
/// anything else (an unusual build layout) is left alone.
fn dev_tree_link(soname: &str) {
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(std::path::PathBuf::from) else { return };
    let Some(profile_dir) = out_dir.ancestors().nth(3) else { return };
    if out_dir.parent().and_then(|p| p.parent()) != Some(profile_dir.join("build").as_path()) {
        return;
    }
    let link = profile_dir.join(soname);
    if std::fs::symlink_metadata(&link).is_err() {
        // Best effort: a read-only target folder only costs the build-tree convenience.
        #[cfg(unix)]
        let _ = std::os::unix::fs::symlink("libpix2pix.so", &link);
    }
}
