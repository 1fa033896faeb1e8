//! `host eval`: the plugin's evaluation protocol over aligned A|B pairs, and with `--segmenter`
//! the label-consistency score of the outputs (and of the real photos, for scale).

use std::path::PathBuf;
use std::process::ExitCode;

use abi_stable::std_types::{ROption, RString};
use anyhow::{bail, Context, Result};
use pix2pix_ffi::{Direction, EvalRequest, EvalRequestEx};

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
    /// A photo → label-map generator (a pix2pix unet_128 checkpoint, .pth or .safetensors,
    /// read with batch statistics) for the label-consistency score: each output is read back to
    /// labels at 128×128 and compared with the input label map (mean absolute error, 0–255,
    /// lower is better); the real photos' score is printed beside it. For label → photo models.
    #[arg(long, value_name = "PATH")]
    segmenter: Option<PathBuf>,
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
    let context = || format!("evaluating on {}", args.data.display());
    let (m, labels) = match &args.segmenter {
        None => (into_result((plugin.module.evaluate())(request)).with_context(context)?, None),
        Some(seg) => {
            if !seg.is_file() {
                bail!("--segmenter {}: no such file", seg.display());
            }
            let Some(evaluate_ex) = plugin.module.evaluate_ex() else {
                bail!(
                    "--segmenter: this plugin predates the label score (no evaluate_ex in its \
                     root module); use a libpix2pix.so built with it, or drop --segmenter"
                )
            };
            let request = EvalRequestEx {
                base: request,
                segmenter: ROption::RSome(utf8(seg, "--segmenter")?),
            };
            let m = into_result(evaluate_ex(request)).with_context(context)?;
            let labels = m.label_score.into_option().zip(m.real_label_score.into_option());
            if labels.is_none() {
                bail!("the plugin returned no label score for --segmenter {}", seg.display());
            }
            (m.base, labels)
        }
    };
    println!("pairs {}", m.count);
    if !args.no_html {
        println!("html {}", args.html.join("index.html").display());
    }
    println!("mae {:.4} psnr {:.4} ssim {:.4}", m.mae, m.psnr, m.ssim);
    if let Some((score, real)) = labels {
        println!("label_score {score:.4} real_label_score {real:.4}");
    }
    Ok(ExitCode::SUCCESS)
}
