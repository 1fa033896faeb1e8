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
    /// against the current folder (the trainer's rule). `--print-config` lists every key.
    #[arg(long, value_name = "train.toml", required_unless_present = "print_config")]
    config: Option<PathBuf>,
    /// Continue from <output.dir>/latest exactly where it stopped.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Start a new run in an output folder that holds one, replacing its latest/, losses.csv
    /// and same-named step_* folders (the config's `[output] overwrite = true`).
    #[arg(long)]
    overwrite: bool,
    /// Print a config with every key at its default, commented with its range or choices, and
    /// exit (`host train --print-config > my.toml` to start one).
    #[arg(long, conflicts_with_all = ["config", "resume"])]
    print_config: bool,
}

/// The progress bar the plugin reports to.
struct Bar {
    bar: ProgressBar,
    last: TrainProgress,
    /// The step the run started from (the first report's step − 1): a resumed run's start.
    first: Option<u64>,
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
        self.first.get_or_insert(p.step.saturating_sub(1));
        // False asks the plugin to save a checkpoint and stop.
        !cancel::cancelled()
    }

    fn message(&mut self, text: RStr<'_>) {
        // suspend, not println: println is silent when the bar is hidden (no terminal).
        self.bar.suspend(|| eprintln!("{text}"));
    }
}

pub fn main(args: Args) -> Result<ExitCode> {
    if args.print_config {
        let plugin = args.plugin.load()?;
        let Some(text) = plugin.module.default_train_config() else {
            anyhow::bail!("this plugin predates --print-config; see `[data]`, `[model]`, `[train]`, `[output]` in the README");
        };
        print!("{}", text());
        return Ok(ExitCode::SUCCESS);
    }
    let Some(config) = args.config else { anyhow::bail!("--config is required") };
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let text = if args.overwrite { crate::train_overwrite::with_overwrite(&text)? } else { text };
    let plugin = args.plugin.load()?;
    cancel::install("saving a checkpoint, then stopping")?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("step {pos}/{len} [{bar:30.cyan/blue}] ETA {eta}  {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut sink = Bar { bar, last: TrainProgress::default(), first: None };
    let report = {
        let to = ProgressSink_TO::from_ptr(&mut sink, TD_Opaque);
        (plugin.module.train())(RStr::from_str(&text), args.resume, to)
    };
    sink.bar.finish_and_clear();
    let report =
        into_result(report).with_context(|| format!("training from {}", config.display()))?;
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
    } else if args.resume && sink.first.is_none() {
        // The plugin returns at once when the run had already reached its last step.
        println!(
            "nothing to train: the run in {} was already complete at step {}; raise train.max_steps or the epochs to train further",
            report.checkpoint_dir, report.steps
        );
        Ok(ExitCode::SUCCESS)
    } else {
        match sink.first {
            Some(start) if start > 0 => println!(
                "trained {} steps from step {start} to step {}; checkpoint in {}",
                report.steps.saturating_sub(start),
                report.steps,
                report.checkpoint_dir
            ),
            _ => {
                println!("trained {} steps; checkpoint in {}", report.steps, report.checkpoint_dir)
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
