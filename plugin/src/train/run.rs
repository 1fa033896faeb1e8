//! The training loop behind [`super::train`]: config → dataset → networks (initialised, loaded
//! or resumed) → steps fed by the loader thread, with the schedule, the log, samples, progress
//! reports and checkpoints.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::config::Config;
use super::data::{Dataset, Loader, Plan};
use super::divergence;
use super::log::LossLog;
use super::loss_curve::save_loss_curve;
use super::preprocess::Preprocessor;
use super::rng::{derive, Stream};
use super::samples::save_grid;
use super::schedule::lr_at;
use super::state::{self, step_name, RunState, LATEST};
use super::trainer::{Settings, Trainer};
use super::{Progress, Reporter, TrainSummary};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// Batches the loader may prepare ahead of the compute.
const LOADER_DEPTH: usize = 4;

fn settings(cfg: &Config) -> Settings {
    let t = &cfg.train;
    Settings {
        gan_mode: t.gan_mode,
        lambda_l1: t.lambda_l1,
        beta1: t.beta1,
        beta2: t.beta2,
        eps: 1e-8,
    }
}

/// The networks of a new run: from `init_*` checkpoints where given, else `init_type`.
fn fresh(cfg: &Config) -> Result<Trainer> {
    let trainer = Trainer::new(
        cfg.generator_config(),
        cfg.discriminator_config(),
        settings(cfg),
        cfg.train.lr,
    )?;
    let (m, seed) = (&cfg.model, cfg.train.seed);
    match &m.init_generator {
        Some(p) => trainer.load_generator(&Checkpoint::load(p)?)?,
        None => trainer.init_generator(
            m.init_type,
            m.init_gain,
            &mut derive(seed, Stream::InitGenerator, 0),
        )?,
    }
    match &m.init_discriminator {
        Some(p) => trainer.load_discriminator(&Checkpoint::load(p)?)?,
        None => trainer.init_discriminator(
            m.init_type,
            m.init_gain,
            &mut derive(seed, Stream::InitDiscriminator, 0),
        )?,
    }
    Ok(trainer)
}

/// The networks and optimisers of `<dir>/latest`, and the step it was saved at.
fn resumed(
    cfg: &Config,
    dir: &Path,
    steps_per_epoch: u64,
    report: &mut dyn Reporter,
) -> Result<(Trainer, u64)> {
    let folder = dir.join(LATEST);
    if !folder.is_dir() {
        return Err(Error::invalid(
            "resume",
            format!("nothing to resume: {} does not exist", folder.display()),
        ));
    }
    let loaded = state::load(&folder)?;
    let mut trainer = Trainer::new(
        cfg.generator_config(),
        cfg.discriminator_config(),
        settings(cfg),
        cfg.train.lr,
    )?;
    trainer.load_generator(&loaded.generator)?;
    trainer.load_discriminator(&loaded.discriminator)?;
    trainer.load_optimizer_tensors(|k| loaded.optimizer.get(k).cloned())?;
    let run = &loaded.run;
    if run.seed != cfg.train.seed {
        report.message(&format!(
            "warning: resuming a run seeded {} with seed {}: data order, augmentation and dropout will differ",
            run.seed, cfg.train.seed
        ));
    }
    if run.steps_per_epoch != steps_per_epoch {
        report.message(&format!(
            "warning: the checkpoint had {} steps per epoch, the data now gives {steps_per_epoch}",
            run.steps_per_epoch
        ));
    }
    // A longer `max_steps` or other output frequencies are what resuming is for; anything
    // else that changed is worth a word.
    let comparable = |c: &Config| {
        let mut c = c.clone();
        c.train.max_steps = None;
        c.output = Default::default();
        c
    };
    match Config::parse(&run.config_text) {
        Ok(saved) if comparable(&saved) == comparable(cfg) => {}
        _ => report.message(&format!(
            "warning: the config differs from the one {} was trained with",
            folder.display()
        )),
    }
    Ok((trainer, run.step))
}

pub fn train(config_text: &str, resume: bool, report: &mut dyn Reporter) -> Result<TrainSummary> {
    let cfg = Config::parse(config_text)?;
    cfg.check_memory()?;
    let ds =
        Arc::new(Dataset::open(&cfg.data)?.with_channels(cfg.model.input_nc, cfg.model.output_nc));
    for w in &ds.warnings {
        report.message(w);
    }
    let t = &cfg.train;
    let plan = Plan { len: ds.len(), batch_size: t.batch_size, seed: t.seed };
    let spe = plan.steps_per_epoch();
    let mut total = spe.saturating_mul(t.n_epochs.saturating_add(t.n_epochs_decay));
    if let Some(max) = t.max_steps {
        total = total.min(max);
    }
    let dir = cfg.output.dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let _lock = super::claim::claim(&dir, resume, cfg.output.overwrite)?;
    state::recover(&dir, &mut |text| report.message(text))?;
    let (mut trainer, start) =
        if resume { resumed(&cfg, &dir, spe, report)? } else { (fresh(&cfg)?, 0) };
    let (mut log, mut history) = LossLog::open(&dir.join("losses.csv"), resume.then_some(start))?;
    let run_state = |step: u64| RunState {
        step,
        epoch: step / spe.max(1),
        seed: t.seed,
        steps_per_epoch: spe,
        config_text: config_text.to_string(),
    };

    let loader = Loader::spawn(
        ds.clone(),
        Preprocessor::new(&cfg.data),
        plan,
        start,
        total.max(start),
        LOADER_DEPTH,
    )?;
    let (mut step, mut cancelled) = (start, false);
    let mut saved_at = resume.then_some(start);
    let mut last = Instant::now();
    while step < total {
        let batch = loader.next()?;
        trainer.lr = lr_at(t, batch.epoch);
        let out = trainer.step(
            &batch.input,
            &batch.target,
            Some(derive(t.seed, Stream::Dropout, step)),
        )?;
        step += 1;
        let last_saved = || saved_at.map(|s| (s, dir.join(LATEST).display().to_string()));
        divergence::check_losses(step, &out.losses, last_saved())?;
        let now = Instant::now();
        let secs = now.duration_since(last).as_secs_f32().max(1e-9);
        last = now;
        let l = out.losses;
        let p = Progress {
            step,
            epoch: batch.epoch + 1,
            total_steps: total,
            g_gan: l.g_gan,
            g_l1: l.g_l1,
            d_real: l.d_real,
            d_fake: l.d_fake,
            lr: trainer.lr,
            images_per_sec: batch.input.dim(0)? as f32 / secs,
        };
        log.append(&p)?;
        history.push(p);
        let every = cfg.output.sample_every_steps;
        if every > 0 && step % every == 0 {
            save_grid(
                &dir.join("samples").join(format!("{}.png", step_name(step))),
                &batch.input,
                &out.fake,
                &batch.target,
                4,
            )?;
            save_loss_curve(&dir.join("loss_curve.png"), &history)?;
        }
        let keep_going = report.progress(&p);
        let every = cfg.output.save_every_steps;
        if every > 0 && step % every == 0 {
            divergence::check_weights(step, &trainer, last_saved())?;
            state::save(&dir, &[step_name(step), LATEST.to_string()], &trainer, &run_state(step))?;
            saved_at = Some(step);
        }
        if !keep_going {
            cancelled = true;
            break;
        }
    }
    drop(loader);
    if saved_at != Some(step) {
        divergence::check_weights(
            step,
            &trainer,
            saved_at.map(|s| (s, dir.join(LATEST).display().to_string())),
        )?;
        state::save(&dir, &[LATEST.to_string()], &trainer, &run_state(step))?;
    }
    Ok(TrainSummary {
        steps: step,
        cancelled,
        checkpoint_dir: dir.join(LATEST),
        pairs: ds.len(),
        skipped: ds.skipped.iter().map(|s| s.path.clone()).collect(),
    })
}
