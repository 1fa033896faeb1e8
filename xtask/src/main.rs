//! `cargo xtask install --prefix DIR [--no-build] [--target-dir DIR]`: installs libpix2pix as a
//! C library (versioned shared object, header, pkg-config and CMake files) under a prefix.

mod config_files;
mod install;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask install --prefix DIR [--no-build] [--target-dir DIR]

  --prefix DIR      install under DIR: lib/, include/, lib/pkgconfig/, lib/cmake/pix2pix/
  --no-build        do not run `cargo build --release -p pix2pix` first; install what is built
  --target-dir DIR  the cargo target folder holding release/libpix2pix.so
                    (default: $CARGO_TARGET_DIR, else the workspace's target/)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("install") if !args.iter().any(|a| a == "-h" || a == "--help") => {
            install::install(&parse_install(&args[1..])?)
        }
        Some("install" | "-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task `{other}`\n{USAGE}")),
    }
}

fn parse_install(args: &[String]) -> Result<install::Request, String> {
    let mut prefix = None;
    let mut build = true;
    let mut target_dir = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next().map(PathBuf::from).ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--prefix" => prefix = Some(value("--prefix")?),
            "--target-dir" => target_dir = Some(value("--target-dir")?),
            "--no-build" => build = false,
            other => match other.split_once('=') {
                Some(("--prefix", v)) => prefix = Some(PathBuf::from(v)),
                Some(("--target-dir", v)) => target_dir = Some(PathBuf::from(v)),
                _ => return Err(format!("unknown argument `{other}`\n{USAGE}")),
            },
        }
    }
    let prefix = prefix.ok_or_else(|| format!("--prefix is required\n{USAGE}"))?;
    if prefix.as_os_str().is_empty() {
        return Err("--prefix is empty".into());
    }
    Ok(install::Request { prefix, build, target_dir })
}
