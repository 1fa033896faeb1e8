//! `host eval`: the plugin's evaluation protocol over aligned A|B pairs.

use std::path::PathBuf;
use std::process::ExitCode;

use abi_stable::std_types::{ROption, RString};
use anyhow::{bail, Context, Result};
use pix2pix_ffi::{Direction, EvalRequest};

use crate::plugin::{into_result, model_path, ModelArg};
use crate::settings::parser;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// Folder of aligned A|B images.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Which half is the input: AtoB (left → right) or BtoA (right → left, the facades recipe).
    #[arg(long, value_parser = parser::<Direction>(), default_value_t = Direction::default())]
    direction: Direction,
    /// Evaluation size (each pair is resized to it); 0 = the model's native size.
    #[arg(long, value_name = "N", default_value_t = 0)]
    size: u32,
    /// Folder for the HTML page of input | output | target rows.
    #[arg(long, value_name = "DIR", default_value = "eval_html")]
    html: PathBuf,
    /// Write no HTML page.
    #[arg(long, conflicts_with = "html")]
    no_html: bool,
}

fn utf8(p: &std::path::Path, what: &str) -> Result<RString> {
    Ok(p.to_str()
        .with_context(|| format!("{what} {}: path is not valid UTF-8", p.display()))?
        .into())
}

pub fn main(args: Args) -> Result<ExitCode> {
    if !args.data.is_dir() {
        bail!("--data {}: no such folder", args.data.display());
    }
    let model = model_path(args.model.path.as_deref())?;
    let plugin = args.model.plugin.load()?;
    let request = EvalRequest {
        model: model.map(RString::from).into(),
        data: utf8(&args.data, "--data")?,
        direction: args.direction.name().into(),
        size: args.size,
        html_dir: if args.no_html {
            ROption::RNone
        } else {
            ROption::RSome(utf8(&args.html, "--html")?)
        },
    };
    let m = into_result((plugin.module.evaluate())(request))
        .with_context(|| format!("evaluating on {}", args.data.display()))?;
    println!("pairs {}", m.count);
    if !args.no_html {
        println!("html {}", args.html.join("index.html").display());
    }
    println!("mae {:.4} psnr {:.4} ssim {:.4}", m.mae, m.psnr, m.ssim);
    Ok(ExitCode::SUCCESS)
}
