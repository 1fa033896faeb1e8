//! The install layout of a C library:
//!
//! ```text
//! <prefix>/lib/libpix2pix.so.0.1.0          the library (SONAME libpix2pix.so.0)
//! <prefix>/lib/libpix2pix.so.0 -> libpix2pix.so.0.1.0
//! <prefix>/lib/libpix2pix.so   -> libpix2pix.so.0
//! <prefix>/include/pix2pix.h
//! <prefix>/lib/pkgconfig/pix2pix.pc
//! <prefix>/lib/cmake/pix2pix/pix2pix-config.cmake, pix2pix-config-version.cmake
//! ```
//!
//! Every file is written beside its destination and renamed over it, so a failed or interrupted
//! install never leaves a half-written library or config file.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config_files::{self, Library};

pub struct Request {
    pub prefix: PathBuf,
    /// Run `cargo build --release -p pix2pix` first.
    pub build: bool,
    /// The cargo target folder; `None`: `$CARGO_TARGET_DIR`, else the workspace's `target/`.
    pub target_dir: Option<PathBuf>,
}

/// The workspace root: xtask lives in `<root>/xtask`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn install(req: &Request) -> Result<(), String> {
    let version = env!("CARGO_PKG_VERSION");
    let major = version.split('.').next().unwrap_or(version);
    let soname = format!("libpix2pix.so.{major}");
    let file = format!("libpix2pix.so.{version}");
    let lib = Library {
        version,
        major,
        file: &file,
        soname: &soname,
        pointer_bytes: std::mem::size_of::<usize>(),
    };

    let root = workspace_root();
    let target_dir = req
        .target_dir
        .clone()
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| root.join("target"));
    if req.build {
        build(&root, req.target_dir.as_deref())?;
    }
    let built = target_dir.join("release/libpix2pix.so");
    let so = std::fs::read(&built).map_err(|e| {
        format!("{}: {e} (build it with `cargo build --release -p pix2pix`, or drop --no-build / fix --target-dir)", built.display())
    })?;
    check_soname(&so, &soname, &built)?;
    let header_src = root.join("ffi/include/pix2pix.h");
    let header =
        std::fs::read(&header_src).map_err(|e| format!("{}: {e}", header_src.display()))?;

    let prefix = std::path::absolute(&req.prefix)
        .map_err(|e| format!("--prefix {}: {e}", req.prefix.display()))?;
    let libdir = prefix.join("lib");
    let cmake_dir = libdir.join("cmake/pix2pix");
    for dir in [&libdir, &prefix.join("include"), &libdir.join("pkgconfig"), &cmake_dir] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }

    write(&libdir.join(&file), &so, 0o755)?;
    symlink(&file, &libdir.join(&soname))?;
    symlink(&soname, &libdir.join("libpix2pix.so"))?;
    write(&prefix.join("include/pix2pix.h"), &header, 0o644)?;
    write(
        &libdir.join("pkgconfig/pix2pix.pc"),
        config_files::pkg_config(&lib, &prefix).as_bytes(),
        0o644,
    )?;
    write(
        &cmake_dir.join("pix2pix-config.cmake"),
        config_files::cmake_config(&lib).as_bytes(),
        0o644,
    )?;
    write(
        &cmake_dir.join("pix2pix-config-version.cmake"),
        config_files::cmake_config_version(&lib).as_bytes(),
        0o644,
    )?;
    println!("installed libpix2pix {version} under {}", prefix.display());
    Ok(())
}

fn build(root: &Path, target_dir: Option<&Path>) -> Result<(), String> {
    // `cargo xtask` runs us under cargo, which says which cargo it is.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args(["build", "--release", "-p", "pix2pix"]);
    if let Some(dir) = target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    let status = cmd.status().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !status.success() {
        return Err(format!("{cmd:?} failed ({status})"));
    }
    Ok(())
}

/// A library built before plugin/build.rs set the SONAME (or for another version) would install
/// under a name its consumers' DT_NEEDED does not match: refuse it. The SONAME is a NUL-terminated
/// string in the dynamic string table, so its bytes appear in the file.
fn check_soname(so: &[u8], soname: &str, path: &Path) -> Result<(), String> {
    let needle = [soname.as_bytes(), b"\0"].concat();
    if so.windows(needle.len()).any(|w| w == needle) {
        Ok(())
    } else {
        Err(format!(
            "{} has no SONAME {soname}: rebuild it with `cargo build --release -p pix2pix`",
            path.display()
        ))
    }
}

/// Writes `bytes` to a temporary file beside `dest`, then renames it over `dest`.
fn write(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tmp_path(dest);
    let result = std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, dest));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", dest.display())
    })?;
    println!("  {}", dest.display());
    Ok(())
}

/// A relative symlink `link -> target`, replacing whatever `link` was.
fn symlink(target: &str, link: &Path) -> Result<(), String> {
    let tmp = tmp_path(link);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).and_then(|()| std::fs::rename(&tmp, link)).map_err(
        |e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot link {} -> {target}: {e}", link.display())
        },
    )?;
    println!("  {} -> {target}", link.display());
    Ok(())
}

fn tmp_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".xtask-{}.tmp", std::process::id()));
    dest.with_file_name(name)
}
