//! `host info`: what the plugin says about itself, and whether this host can use it.

use std::path::PathBuf;
use std::process::ExitCode;

use abi_stable::library::{lib_header_from_path, RootModule};
use anyhow::Result;
use pix2pix_ffi::{Pix2PixModRef, ABI_VERSION};

use crate::plugin::{Plugin, PluginArg};
use pix2pix_ffi::OpenOptions;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    plugin: PluginArg,
    /// Also open this checkpoint (.pth or .safetensors) and print the architecture read off it.
    #[arg(long, value_name = "M")]
    model: Option<PathBuf>,
}

pub fn main(args: Args) -> Result<ExitCode> {
    let path = args.plugin.path()?;
    println!("plugin    {}", path.display());
    let host_version = Pix2PixModRef::VERSION_STRINGS;
    // The library's own module version, read before the layout check so that a mismatch can
    // still say which versions met.
    let lib_version = std::path::absolute(&path)
        .ok()
        .and_then(|abs| lib_header_from_path(&abs).ok())
        .ok_or(())
        .map(|h| h.version_strings().version.as_str().to_string());
    match Plugin::load(&path) {
        Ok(plugin) => {
            let i = plugin.info();
            println!("name      {}", i.name);
            println!("version   {}", i.version);
            println!(
                "module    {} {} (host built against {})",
                Pix2PixModRef::NAME,
                lib_version.as_deref().unwrap_or("?"),
                host_version.version
            );
            let c_abi = if i.abi_version == ABI_VERSION { "ok" } else { "DIFFERS" };
            println!(
                "abi check ok: root module layout matches; C ABI {} (host {ABI_VERSION}) {c_abi}",
                i.abi_version
            );
            println!("features  {}", i.features);
            if let Some(path) = &args.model {
                let m = plugin.open_model(Some(path), OpenOptions::default())?.info();
                println!("model     {}", m.source);
                println!(
                    "  network {}, ngf {}, {} norm, {} → {} channels",
                    m.net_g, m.ngf, m.norm, m.in_channels, m.out_channels
                );
                println!("  sizes   native {0}×{0}; other sizes are made multiples of {1} (--size-policy)", m.native_size, m.stride);
                println!("  weights {} parameters", m.parameters);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if let Ok(v) = &lib_version {
                println!(
                    "module    {} {v} (host built against {})",
                    Pix2PixModRef::NAME,
                    host_version.version
                );
            }
            println!("abi check FAILED: {e:#}");
            Ok(ExitCode::from(crate::exit::EXIT_ERROR))
        }
    }
}
