//! `host run`: translate images with one model. The same runner as pipelines (progress,
//! atomic writes, per-file failures, summary), with a single translate step.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Result};
use pix2pix_ffi::{NormStats, OpenOptions, Precision, SizePolicy, DEFAULT_TILE_OVERLAP};

use crate::batch::naming::NameTemplate;
use crate::batch::runner::{self, Job, Output, Plan};
use crate::batch::steps::Step;
use crate::imageio::has_image_extension;
use crate::plugin::ModelArg;
use crate::settings::parser;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// Input images: files, folders (their images) or glob patterns ("labels/*.png").
    #[arg(long, value_name = "IN", num_args = 1.., required = true)]
    input: Vec<String>,
    /// Output: a file when there is one input, else a folder (created; outputs keep the input
    /// file names).
    #[arg(long, value_name = "OUT")]
    output: PathBuf,
    /// How sizes that are not multiples of the network stride are handled. The default, pad,
    /// translates the whole image at once, reflect-padded to a multiple of the stride (full
    /// detail, one set of batch statistics over the whole image): best for images up to a few
    /// megapixels; tile bounds memory for larger ones.
    #[arg(long, value_parser = parser::<SizePolicy>(), default_value_t = SizePolicy::default())]
    size_policy: SizePolicy,
    /// Tile overlap in pixels (tile policy).
    #[arg(long, default_value_t = DEFAULT_TILE_OVERLAP)]
    tile_overlap: u32,
    /// Normalisation statistics: batch (the image's own, the paper's protocol) or running
    /// (the checkpoint's, eval mode).
    #[arg(long, value_parser = parser::<NormStats>(), default_value_t = NormStats::default())]
    norm_stats: NormStats,
    /// Arithmetic of the convolutions: f32 (matches the reference) or bf16 (bf16 products
    /// accumulated in f32 on CPUs with AVX512_BF16: faster, outputs within about a level of
    /// f32's; elsewhere f32 runs, and this says so).
    #[arg(long, value_parser = parser::<Precision>(), default_value_t = Precision::default())]
    precision: Precision,
    /// Memory one translation may take, in MiB (0 = half of the machine's memory, or of the
    /// cgroup's or RLIMIT_AS limit if lower). A larger image fails with the estimate it needs;
    /// the tile policy needs little memory at any size.
    #[arg(long, value_name = "MiB", default_value_t = 0)]
    memory_budget: u64,
    /// Threads one translation uses at most (0 = all cores). The plugin shares its threads:
    /// with --threads 1 --workers 4 on four cores, four translations run side by side.
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: u32,
    /// Images translated at once (they share the model).
    #[arg(long, value_name = "N", default_value_t = 1)]
    workers: usize,
    /// Images a worker takes at once; same-size ones are translated together, in one forward
    /// pass (each normalised by its own statistics: the same result as one by one).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    batch: u32,
    /// Skip inputs whose output already exists (resume an interrupted run).
    #[arg(long)]
    skip_existing: bool,
    /// Search input folders recursively.
    #[arg(long)]
    recursive: bool,
}

pub fn main(args: Args) -> Result<ExitCode> {
    // An empty base keeps paths as the user wrote them (relative to the current folder).
    let mut found = crate::inputs::discover(&args.input, std::path::Path::new(""), args.recursive)?;
    if found.files.is_empty() {
        bail!("no input images found in {}", args.input.join(", "));
    }
    // A single input goes to OUT as a file unless OUT is a folder (existing, or extensionless).
    let to_file =
        found.files.len() == 1 && !args.output.is_dir() && args.output.extension().is_some();
    if !to_file && args.output.is_file() {
        bail!(
            "--output {} is a file but there are {} inputs; give a folder",
            args.output.display(),
            found.files.len()
        );
    }
    if !to_file
        && found.files.len() > 1
        && has_image_extension(&args.output)
        && !args.output.exists()
    {
        bail!(
            "--output {} looks like a file but there are {} inputs; give a folder",
            args.output.display(),
            found.files.len()
        );
    }
    let output = if to_file {
        crate::imageio::format_for(&args.output)?;
        Output::File(args.output.clone())
    } else {
        Output::Dir {
            dir: args.output.clone(),
            name: NameTemplate::parse("{name}").map_err(anyhow::Error::msg)?,
        }
    };
    if crate::outputs::without_own_outputs(&mut found, &output, "") > 0 && found.files.is_empty() {
        bail!(
            "no input images found in {} besides earlier outputs of this command",
            args.input.join(", ")
        );
    }
    let all: Vec<(usize, &std::path::Path)> =
        found.files.iter().enumerate().map(|(i, f)| (i, f.path.as_path())).collect();
    runner::check_collisions(&output, &all, "")?;
    crate::outputs::check(&output, &all, "")?;
    let _lock = crate::outputs::lock(&output, &all, "", None)?;

    let plugin = args.model.plugin.load()?;
    let options = OpenOptions {
        norm_stats: args.norm_stats,
        size_policy: args.size_policy,
        tile_overlap: args.tile_overlap,
        threads: args.threads,
        memory_budget_mb: args.memory_budget,
        precision: args.precision,
        ..OpenOptions::default()
    };
    let model = plugin.open(args.model.path.as_deref(), options)?;
    let info = model.info();
    crate::settings::note_precision(args.precision, info.precision);
    let ignored = if found.ignored > 0 {
        format!(" ({} non-image files ignored)", found.ignored)
    } else {
        String::new()
    };
    eprintln!(
        "{} inputs{ignored}; model {} ({} ngf {}, {} norm, native {}); size policy {}, {} statistics",
        found.files.len(),
        info.source,
        info.net_g,
        info.ngf,
        info.norm,
        info.native_size,
        args.size_policy.name(),
        args.norm_stats.name()
    );

    crate::cancel::install("finishing the images in flight, then stopping")?;
    let plan = Plan {
        jobs: found
            .files
            .iter()
            .enumerate()
            .map(|(index, f)| Job { index, path: f.path.clone() })
            .collect(),
        output,
        overwrite: !args.skip_existing,
        workers: args.workers.max(1),
        batch: args.batch as usize,
        stop_on_error: false,
        steps: vec![Step::Translate(Arc::new(model))],
        model_label: String::new(),
    };
    Ok(runner::report(&runner::execute(&plan)))
}
