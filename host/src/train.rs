//! `host train`: trains through the plugin with a progress bar. Ctrl-C makes the progress
//! callback return false: the plugin saves a checkpoint (`<output.dir>/latest`) and returns,
//! and `--resume` continues from it.

use std::path::PathBuf;
use std::process::ExitCode;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::RStr;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pix2pix_ffi::{ProgressSink, ProgressSink_TO, TrainProgress};

use crate::cancel;
use crate::plugin::{into_result, PluginArg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    plugin: PluginArg,
    /// The training TOML ([data], [model], [train], [output]); its relative paths resolve
    /// against the current folder (the trainer's rule).
    #[arg(long, value_name = "train.toml")]
    config: PathBuf,
    /// Continue from <output.dir>/latest exactly where it stopped.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Start a new run in an output folder that holds one, replacing its latest/, losses.csv
    /// and same-named step_* folders (the config's `[output] overwrite = true`).
    #[arg(long)]
    overwrite: bool,
}

/// The progress bar the plugin reports to.
struct Bar {
    bar: ProgressBar,
    last: TrainProgress,
}

impl ProgressSink for Bar {
    fn progress(&mut self, p: &TrainProgress) -> bool {
        if self.bar.length() != Some(p.total_steps) {
            self.bar.set_length(p.total_steps);
        }
        self.bar.set_position(p.step);
        self.bar.set_message(format!(
            "epoch {}  G_GAN {:.3}  G_L1 {:.3}  D_real {:.3}  D_fake {:.3}  lr {:.2e}  {:.1} images/s",
            p.epoch, p.g_gan, p.g_l1, p.d_real, p.d_fake, p.lr, p.images_per_sec
        ));
        self.last = *p;
        // False asks the plugin to save a checkpoint and stop.
        !cancel::cancelled()
    }

    fn message(&mut self, text: RStr<'_>) {
        // suspend, not println: println is silent when the bar is hidden (no terminal).
        self.bar.suspend(|| eprintln!("{text}"));
    }
}

pub fn main(args: Args) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let text = if args.overwrite { crate::train_overwrite::with_overwrite(&text)? } else { text };
    let plugin = args.plugin.load()?;
    cancel::install("saving a checkpoint, then stopping")?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("step {pos}/{len} [{bar:30.cyan/blue}] ETA {eta}  {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut sink = Bar { bar, last: TrainProgress::default() };
    let report = {
        let to = ProgressSink_TO::from_ptr(&mut sink, TD_Opaque);
        (plugin.module.train())(RStr::from_str(&text), args.resume, to)
    };
    sink.bar.finish_and_clear();
    let report =
        into_result(report).with_context(|| format!("training from {}", args.config.display()))?;
    let p = sink.last;
    if p.step > 0 {
        println!(
            "epoch {} step {}: G_GAN {:.4} G_L1 {:.4} D_real {:.4} D_fake {:.4}",
            p.epoch, p.step, p.g_gan, p.g_l1, p.d_real, p.d_fake
        );
    }
    if report.cancelled {
        println!(
            "cancelled after {} steps; checkpoint saved in {}; continue with --resume",
            report.steps, report.checkpoint_dir
        );
        Ok(ExitCode::from(crate::exit::EXIT_INTERRUPTED))
    } else {
        println!("trained {} steps; checkpoint in {}", report.steps, report.checkpoint_dir);
        Ok(ExitCode::SUCCESS)
    }
}
