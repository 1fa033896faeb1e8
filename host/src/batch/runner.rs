//! Running a plan: `workers` images in flight, each read, filtered, encoded and written
//! atomically; a progress bar (done/total, images/s); a summary at the end.
//!
//! Outputs that already exist are skipped unless `overwrite`, and since every output appears
//! whole or not at all (see `atomic`), rerunning an interrupted run resumes where it stopped.
//! A failed image is reported with its reason and, under `on_error = "continue"`, the others
//! go on; under `"stop"` no new image starts after the first failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use super::naming::NameTemplate;
use super::steps::{apply_all, apply_all_batch, Step};
use crate::exit::{EXIT_FAILED_ITEMS, EXIT_INTERRUPTED};
use crate::{atomic, cancel, imageio};

pub struct Job {
    /// Position in the sorted list of all inputs (before sharding).
    pub index: usize,
    pub path: PathBuf,
}

pub enum Output {
    /// One input, one named output file.
    File(PathBuf),
    Dir {
        dir: PathBuf,
        name: NameTemplate,
    },
}

impl Output {
    pub fn path_for(&self, path: &Path, index: usize, model: &str) -> PathBuf {
        match self {
            Output::File(p) => p.clone(),
            Output::Dir { dir, name } => dir.join(name.render(path, index, model)),
        }
    }
}

pub struct Plan {
    pub jobs: Vec<Job>,
    pub output: Output,
    pub overwrite: bool,
    pub workers: usize,
    /// Images a worker takes at once; their same-size images go through each translate step
    /// together (one forward pass).
    pub batch: usize,
    pub stop_on_error: bool,
    pub steps: Vec<Step>,
    /// `{model}` in output names.
    pub model_label: String,
}

#[derive(Default)]
pub struct Summary {
    pub processed: usize,
    pub skipped: usize,
    pub failed: Vec<(PathBuf, String)>,
    /// Inputs never started (after a failure under "stop", or an interrupt).
    pub not_started: usize,
    pub interrupted: bool,
    pub seconds: f64,
}

/// Fails if two inputs would write the same output (say `a/x.png` and `b/x.png` with
/// `{stem}.png`): one would silently replace the other.
pub fn check_collisions(output: &Output, inputs: &[(usize, &Path)], model: &str) -> Result<()> {
    let mut seen: std::collections::HashMap<PathBuf, &Path> = std::collections::HashMap::new();
    for &(index, path) in inputs {
        let out = output.path_for(path, index, model);
        if let Some(first) = seen.insert(out.clone(), path) {
            bail!(
                "{} and {} would both write {}; add {{index}} (or a folder-unique part) to the output name",
                first.display(),
                path.display(),
                out.display()
            );
        }
    }
    Ok(())
}

enum Done {
    Written,
    Skipped,
}

fn process(plan: &Plan, job: &Job) -> Result<Done> {
    let out = plan.output.path_for(&job.path, job.index, &plan.model_label);
    if !plan.overwrite && out.exists() {
        return Ok(Done::Skipped);
    }
    let img = imageio::read(&job.path)?;
    let img = apply_all(&plan.steps, &img)?;
    write(plan, &out, &img)
}

/// [`process`] for several jobs at once, their images through the steps together
/// ([`apply_all_batch`]); one result per job, in order.
fn process_batch(plan: &Plan, jobs: &[Job]) -> Vec<Result<Done>> {
    if let [job] = jobs {
        return vec![process(plan, job)];
    }
    let mut results: Vec<Option<Result<Done>>> = jobs.iter().map(|_| None).collect();
    let mut todo = Vec::new();
    for (k, job) in jobs.iter().enumerate() {
        let out = plan.output.path_for(&job.path, job.index, &plan.model_label);
        if !plan.overwrite && out.exists() {
            results[k] = Some(Ok(Done::Skipped));
            continue;
        }
        match imageio::read(&job.path) {
            Ok(img) => todo.push((k, out, img)),
            Err(e) => results[k] = Some(Err(e)),
        }
    }
    let imgs: Vec<_> = todo.iter().map(|(_, _, img)| img.clone()).collect();
    let outs = apply_all_batch(&plan.steps, &imgs, plan.batch);
    for ((k, out, _), img) in todo.iter().zip(outs) {
        results[*k] = Some(img.and_then(|img| write(plan, out, &img)));
    }
    results.into_iter().map(|r| r.unwrap_or_else(|| bail!("internal: job not run"))).collect()
}

/// Encodes `img` and writes it to `out` atomically.
fn write(plan: &Plan, out: &Path, img: &image::DynamicImage) -> Result<Done> {
    let bytes = imageio::encode(img, out)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if plan.overwrite {
        atomic::write(out, &bytes)?;
    } else if !atomic::write_new(out, &bytes)? {
        // Another run wrote it meanwhile (the check above and this write are apart).
        return Ok(Done::Skipped);
    }
    Ok(Done::Written)
}

pub fn execute(plan: &Plan) -> Summary {
    let started = Instant::now();
    let bar = ProgressBar::new(plan.jobs.len() as u64);
    let style = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {pos}/{len} images  {ips}  ETA {eta}  {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key("ips", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{:.2} images/s", s.per_sec());
    });
    bar.set_style(style);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        let chunks = plan.jobs.len().div_ceil(plan.batch.max(1)).max(1);
        for _ in 0..plan.workers.clamp(1, chunks) {
            scope.spawn(|| loop {
                if stop.load(Ordering::SeqCst) || cancel::cancelled() {
                    break;
                }
                let per = plan.batch.max(1);
                let i = next.fetch_add(per, Ordering::SeqCst);
                if i >= plan.jobs.len() {
                    break;
                }
                let jobs = &plan.jobs[i..(i + per).min(plan.jobs.len())];
                bar.set_message(
                    jobs[0]
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
                let results = process_batch(plan, jobs);
                for (job, result) in jobs.iter().zip(results) {
                    let mut s = summary.lock().unwrap_or_else(|e| e.into_inner());
                    match result {
                        Ok(Done::Written) => s.processed += 1,
                        Ok(Done::Skipped) => s.skipped += 1,
                        Err(e) => {
                            let reason = format!("{e:#}");
                            // Live, above the bar; without a terminal the summary lists it.
                            if !bar.is_hidden() {
                                bar.suspend(|| {
                                    eprintln!("failed: {}: {reason}", job.path.display())
                                });
                            }
                            s.failed.push((job.path.clone(), reason));
                            if plan.stop_on_error {
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                    drop(s);
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut s = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    s.not_started = plan.jobs.len() - (s.processed + s.skipped + s.failed.len());
    s.interrupted = cancel::cancelled();
    s.seconds = started.elapsed().as_secs_f64();
    // Workers finish in any order; the report follows the input order.
    s.failed.sort();
    s
}

/// Prints the summary on stdout; the exit status says whether anything failed.
pub fn report(s: &Summary) -> ExitCode {
    let rate = if s.seconds > 0.0 { s.processed as f64 / s.seconds } else { 0.0 };
    println!(
        "processed {}, skipped {}, failed {} ({:.1} s, {rate:.2} images/s)",
        s.processed,
        s.skipped,
        s.failed.len(),
        s.seconds
    );
    if s.not_started > 0 {
        let why = if s.interrupted {
            "interrupted"
        } else {
            "stopped after a failure (on_error = \"stop\")"
        };
        println!("not started {} ({why}); rerun to resume", s.not_started);
    }
    for (path, reason) in &s.failed {
        println!("failed: {}: {reason}", path.display());
    }
    if s.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if !s.failed.is_empty() {
        ExitCode::from(EXIT_FAILED_ITEMS)
    } else {
        ExitCode::SUCCESS
    }
}
