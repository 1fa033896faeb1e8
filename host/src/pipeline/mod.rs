//! `host pipeline CONFIG.toml`: batch filter pipelines described by a TOML file ([`config`]),
//! run by the batch engine ([`crate::batch`]).

pub mod config;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use pix2pix_ffi::{OpenOptions, Precision};

use crate::batch::runner::{self, Job, Output, Plan};
use crate::batch::steps::Step;
use crate::inputs;
use crate::plugin::{Model, Plugin, PluginArg};
use crate::settings::parser;
use crate::shard::ShardSpec;
use config::{OnError, StepSpec, TranslateSpec};

pub const ABOUT: &str = "\
The pipeline TOML:

  workers = 2                 # images in flight at once; models are shared, not copied
  batch = 1                   # images a worker takes at once: same-size ones go through each
                              # translate step together (one forward pass, each image
                              # normalised by its own statistics: the same result, faster)
  on_error = \"continue\"       # or \"stop\"

  [input]
  paths = [\"labels/\", \"more/*.png\"]   # files, folders, globs
  recursive = true

  [output]
  dir = \"out\"
  name = \"{stem}_{model}.png\" # {stem} {name} {ext} {model} {index}; format from the extension
  overwrite = false           # existing outputs are skipped and counted

  [[model]]
  name = \"facades\"
  path = \"models/facades.safetensors\"   # omit for the shipped default model
  norm_stats = \"batch\"        # or \"running\"
  threads = 0                 # threads one translation uses at most; 0 = all cores (the plugin
                              # shares its threads between models and workers)
  precision = \"f32\"          # or \"bf16\": faster on CPUs with AVX512_BF16, within about a
                              # level of f32 (elsewhere f32 runs)

  [[step]]
  op = \"split\"                # half = \"left\" | \"right\" of an aligned A|B image
  half = \"right\"

  [[step]]
  op = \"translate\"            # model, size_policy (resize | pad | tile), tile_overlap, norm_stats
  model = \"facades\"
  size_policy = \"tile\"
  tile_overlap = 32

  [[step]]
  op = \"resize\"               # width and/or height, filter (nearest, triangle, catmullrom, gaussian, lanczos3)
  width = 512
  height = 512

Other ops: crop (x, y, width, height), flip (direction = horizontal | vertical),
concat (with = \"input\": the image the previous step received, or \"original\": the file as
read; side = \"left\" | \"right\" for where it goes): side-by-side review sheets.

Relative paths in the file resolve against the file's own folder. One model instance is
opened per distinct (model, size_policy, tile_overlap, norm_stats) and shared by all workers.
Outputs are written atomically (temporary file + rename): an interrupted run leaves no partial
image and a rerun with overwrite = false resumes. No output may be an input or lie outside
output.dir; files there that are outputs of other inputs are not taken as inputs. The output
folder is locked while a run writes it (shards share it). Exit status: 0 all done, 1 some inputs failed,
2 the pipeline could not run, 130 interrupted.";

#[derive(clap::Args)]
pub struct Args {
    /// The pipeline TOML.
    #[arg(value_name = "CONFIG.toml")]
    config: PathBuf,
    /// Process only shard K of N (inputs whose sorted index ≡ K mod N), or `auto` to read K
    /// and N from a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, and PIX2PIX_SHARD_COUNT or
    /// JOB_COMPLETIONS set to the completions) or a Slurm array (SLURM_ARRAY_TASK_ID,
    /// SLURM_ARRAY_TASK_COUNT).
    #[arg(long, value_name = "K/N|auto")]
    shard: Option<ShardSpec>,
    /// Memory one translation may take, in MiB (default: half of the machine's memory, or of
    /// the cgroup's or RLIMIT_AS limit if lower); overrides `[[model]] memory_budget_mb`.
    #[arg(long, value_name = "MiB")]
    memory_budget: Option<u64>,
    /// Arithmetic of the convolutions, f32 or bf16 (bf16 products accumulated in f32 on CPUs
    /// with AVX512_BF16; elsewhere f32 runs, and this says so); overrides `[[model]] precision`.
    #[arg(long, value_parser = parser::<Precision>())]
    precision: Option<Precision>,
    #[command(flatten)]
    plugin: PluginArg,
}

pub fn main(args: Args) -> Result<ExitCode> {
    let p = config::load(&args.config)?;
    let shard = args.shard.map(|s| s.resolve(|k| std::env::var(k).ok())).transpose()?;
    let mut found = inputs::discover(&p.inputs, &p.base, p.recursive)?;

    let model_label = model_label(&p);
    let output = Output::Dir { dir: p.out_dir.clone(), name: p.name.clone() };
    let own = crate::outputs::without_own_outputs(&mut found, &output, &model_label);
    let all: Vec<(usize, &std::path::Path)> =
        found.files.iter().enumerate().map(|(i, f)| (i, f.path.as_path())).collect();
    runner::check_collisions(&output, &all, &model_label)?;
    crate::outputs::check(&output, &all, &model_label)?;
    let mine: Vec<(usize, &std::path::Path)> =
        all.iter().copied().filter(|(i, _)| shard.is_none_or(|s| s.takes(*i))).collect();
    let _locks = crate::outputs::lock(&output, &mine, &model_label, shard)?;
    if own > 0 {
        eprintln!("{own} earlier outputs of this pipeline found among the inputs and left out");
    }
    let jobs: Vec<Job> = found
        .files
        .iter()
        .enumerate()
        .filter(|(i, _)| shard.is_none_or(|s| s.takes(*i)))
        .map(|(index, f)| Job { index, path: f.path.clone() })
        .collect();

    let steps = open_steps(&p, &args.plugin, args.memory_budget, args.precision)?;
    let shard_note = shard
        .map(|s| format!(" (shard {}/{}: {})", s.index, s.count, jobs.len()))
        .unwrap_or_default();
    let ignored = if found.ignored > 0 {
        format!(", {} non-image files ignored", found.ignored)
    } else {
        String::new()
    };
    eprintln!(
        "{} inputs{shard_note}{ignored}; {} workers, batch {}; output {}",
        found.files.len(),
        p.workers,
        p.batch,
        p.out_dir.display()
    );

    crate::cancel::install("finishing the images in flight, then stopping")?;
    let plan = Plan {
        jobs,
        output,
        overwrite: p.overwrite,
        workers: p.workers,
        batch: p.batch,
        stop_on_error: p.on_error == OnError::Stop,
        steps,
        model_label,
    };
    let summary = runner::execute(&plan);
    Ok(runner::report(&summary))
}

/// `{model}`: the translate steps' model names in order, joined by `+`.
fn model_label(p: &config::Pipeline) -> String {
    let names: Vec<&str> = p
        .steps
        .iter()
        .filter_map(|s| match s {
            StepSpec::Translate(t) => Some(p.models[t.model].name.as_str()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("+")
    }
}

/// Opens one model instance per distinct translate configuration and builds the steps. The
/// plugin is loaded only when a step translates.
fn open_steps(
    p: &config::Pipeline,
    plugin_arg: &PluginArg,
    memory_budget: Option<u64>,
    precision: Option<Precision>,
) -> Result<Vec<Step>> {
    let needs_plugin = p.steps.iter().any(|s| matches!(s, StepSpec::Translate(_)));
    let plugin: Option<Plugin> = if needs_plugin { Some(plugin_arg.load()?) } else { None };
    let mut open: HashMap<TranslateSpec, Arc<Model>> = HashMap::new();
    let mut steps = Vec::new();
    for s in &p.steps {
        steps.push(match *s {
            StepSpec::Split(h) => Step::Split(h),
            StepSpec::Crop { x, y, width, height } => Step::Crop { x, y, width, height },
            StepSpec::Resize { width, height, filter } => Step::Resize { width, height, filter },
            StepSpec::Flip(d) => Step::Flip(d),
            StepSpec::Concat { with, side } => Step::Concat { with, side },
            StepSpec::Translate(t) => {
                let model = match open.get(&t) {
                    Some(m) => m.clone(),
                    None => {
                        let decl = &p.models[t.model];
                        let options = OpenOptions {
                            norm_stats: t.norm_stats,
                            size_policy: t.size_policy,
                            tile_overlap: t.tile_overlap,
                            threads: decl.threads,
                            memory_budget_mb: memory_budget.unwrap_or(decl.memory_budget_mb),
                            precision: precision.unwrap_or(decl.precision),
                            ..OpenOptions::default()
                        };
                        let asked = options.precision;
                        let plugin = plugin.as_ref().context("internal: plugin not loaded")?;
                        let m = Arc::new(
                            plugin
                                .open(decl.path.as_deref(), options)
                                .with_context(|| format!("[[model]] {:?}", decl.name))?,
                        );
                        crate::settings::note_precision(asked, m.info().precision);
                        open.insert(t, m.clone());
                        m
                    }
                };
                Step::Translate(model)
            }
        });
    }
    Ok(steps)
}
