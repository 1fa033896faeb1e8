//! One pix2pix training step, in the reference's order (which the running statistics depend
//! on): one generator forward (train mode); the discriminator on (x, G(x) detached), then on
//! (x, y); its loss halved, backward and Adam step; then the discriminator again on (x, G(x)),
//! still in train mode (its running statistics move a third time, its weights get no update);
//! the generator's GAN + λ·L1 loss, backward and Adam step.
//!
//! The networks are built over `VarMap`s, so the parameters are candle `Var`s that backward
//! reaches and Adam updates in place; BatchNorm's running statistics live in the same maps (and
//! are saved with them) but are left out of the optimiser. For the generator's loss the
//! discriminator runs as a second instance over the same storage with its weights detached, so
//! the backward pass skips the discriminator's weight gradients nobody would use.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;

use super::adam::Adam;
use super::config::{GanMode, InitType};
use super::init::{init_weights, is_running_stat, sorted_vars};
use super::loss::{gan_loss, l1};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::kernels;
use crate::nets::generator::{Generator, GeneratorConfig};
use crate::nets::layers::{Forward, Layer};
use crate::nets::patchgan::{Discriminator, DiscriminatorConfig};

/// The loss and optimiser settings of a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub gan_mode: GanMode,
    pub lambda_l1: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { gan_mode: GanMode::Vanilla, lambda_l1: 100.0, beta1: 0.5, beta2: 0.999, eps: 1e-8 }
    }
}

/// One step's losses, as the reference logs them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Losses {
    pub g_gan: f32,
    /// λ·L1.
    pub g_l1: f32,
    pub d_real: f32,
    pub d_fake: f32,
}

/// What a step leaves besides the updated weights.
pub struct StepOutput {
    pub losses: Losses,
    /// G(x), detached (the sample grids show it).
    pub fake: Tensor,
    /// Gradients of the generator's loss w.r.t. its parameters, by name.
    pub grads_g: BTreeMap<String, Tensor>,
    /// Gradients of the discriminator's loss w.r.t. its parameters, by name.
    pub grads_d: BTreeMap<String, Tensor>,
}

pub struct Trainer {
    pub generator: Generator,
    pub discriminator: Discriminator,
    /// The discriminator over the same storage, weights detached (for the generator's step).
    discriminator_frozen: Discriminator,
    g_vars: VarMap,
    d_vars: VarMap,
    g_params: Vec<(String, Var)>,
    d_params: Vec<(String, Var)>,
    pub opt_g: Adam,
    pub opt_d: Adam,
    pub settings: Settings,
    /// The learning rate of both optimisers for the next step (the schedule sets it).
    pub lr: f64,
}

/// Hands out a map's variables detached (same storage, so later updates show, but no
/// gradient), except BatchNorm's running statistics, which stay the variables themselves so
/// that their updates land in the map.
struct Frozen {
    vars: BTreeMap<String, Var>,
}

impl SimpleBackend for Frozen {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.dims() != s.dims() {
            candle_core::bail!("`{name}` has shape {:?}, {:?} wanted", t.dims(), s.dims())
        }
        Ok(t)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        let Some(v) = self.vars.get(name) else { candle_core::bail!("no variable `{name}`") };
        Ok(if is_running_stat(name) { v.as_tensor().clone() } else { v.as_tensor().detach() })
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }
}

/// Learnable parameters of a map, sorted by name (running statistics excluded).
fn params_of(vars: &VarMap) -> Vec<(String, Var)> {
    sorted_vars(vars).into_iter().filter(|(k, _)| !is_running_stat(k)).collect()
}

/// Copies a checkpoint into a map: every variable must be in the file with its shape, and the
/// file must hold nothing else.
fn load_into(vars: &VarMap, ckpt: &Checkpoint, what: &str) -> Result<()> {
    let all = sorted_vars(vars);
    for (name, var) in &all {
        let dims = var.as_tensor().dims();
        let t = ckpt.get(name).ok_or_else(|| {
            Error::checkpoint(
                &ckpt.path,
                format!("missing tensor `{name}` (the {what} needs shape {dims:?})"),
            )
        })?;
        if t.dims() != dims {
            return Err(Error::checkpoint(
                &ckpt.path,
                format!(
                    "tensor `{name}` has shape {:?} in the file but the {what} needs {dims:?}",
                    t.dims()
                ),
            ));
        }
        var.set(&t.to_dtype(DType::F32)?.contiguous()?)?;
    }
    if let Some(extra) = ckpt.names().find(|n| !all.contains_key(*n)) {
        return Err(Error::checkpoint(
            &ckpt.path,
            format!("tensor `{extra}` is not part of the {what} built from the settings"),
        ));
    }
    Ok(())
}

/// Deep copies of a map's tensors (the variables change in place as training goes on).
fn snapshot(vars: &VarMap) -> Result<BTreeMap<String, Tensor>> {
    sorted_vars(vars).into_iter().map(|(k, v)| Ok((k, v.as_tensor().copy()?))).collect()
}

fn grads_of(
    params: &[(String, Var)],
    grads: &candle_core::backprop::GradStore,
) -> BTreeMap<String, Tensor> {
    params
        .iter()
        .filter_map(|(k, v)| grads.get(v.as_tensor()).map(|g| (k.clone(), g.clone())))
        .collect()
}

impl Trainer {
    /// Networks with candle's default initialisation (see [`Trainer::init_weights`] and the
    /// `load_*` methods for the reference's).
    pub fn new(
        g: GeneratorConfig,
        d: DiscriminatorConfig,
        settings: Settings,
        lr: f64,
    ) -> Result<Self> {
        let g_vars = VarMap::new();
        let d_vars = VarMap::new();
        let generator =
            Generator::new(g, VarBuilder::from_varmap(&g_vars, DType::F32, &Device::Cpu))?;
        let discriminator =
            Discriminator::new(d, VarBuilder::from_varmap(&d_vars, DType::F32, &Device::Cpu))?;
        let frozen = Frozen { vars: sorted_vars(&d_vars) };
        let discriminator_frozen = Discriminator::new(
            d,
            VarBuilder::from_backend(Box::new(frozen), DType::F32, Device::Cpu),
        )?;
        let (g_params, d_params) = (params_of(&g_vars), params_of(&d_vars));
        let adam = Adam::new(settings.beta1, settings.beta2, settings.eps);
        Ok(Self {
            generator,
            discriminator,
            discriminator_frozen,
            g_vars,
            d_vars,
            g_params,
            d_params,
            opt_g: adam.clone(),
            opt_d: adam,
            settings,
            lr,
        })
    }

    /// Networks with the architecture and weights of two checkpoints (read off them).
    pub fn from_checkpoints(
        g: &Checkpoint,
        d: &Checkpoint,
        settings: Settings,
        lr: f64,
    ) -> Result<Self> {
        let t = Self::new(
            crate::nets::arch::infer_generator(g)?,
            crate::nets::arch::infer_discriminator(d)?,
            settings,
            lr,
        )?;
        t.load_generator(g)?;
        t.load_discriminator(d)?;
        Ok(t)
    }

    pub fn init_weights(
        &self,
        init: InitType,
        gain: f64,
        rng_g: &mut StdRng,
        rng_d: &mut StdRng,
    ) -> Result<()> {
        init_weights(&self.g_vars, init, gain, rng_g)?;
        init_weights(&self.d_vars, init, gain, rng_d)
    }
    pub fn init_generator(&self, init: InitType, gain: f64, rng: &mut StdRng) -> Result<()> {
        init_weights(&self.g_vars, init, gain, rng)
    }
    pub fn init_discriminator(&self, init: InitType, gain: f64, rng: &mut StdRng) -> Result<()> {
        init_weights(&self.d_vars, init, gain, rng)
    }
    pub fn load_generator(&self, ckpt: &Checkpoint) -> Result<()> {
        load_into(&self.g_vars, ckpt, "generator")
    }
    pub fn load_discriminator(&self, ckpt: &Checkpoint) -> Result<()> {
        load_into(&self.d_vars, ckpt, "discriminator")
    }

    /// Generator state (parameters and running statistics) in the reference key layout.
    pub fn generator_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        snapshot(&self.g_vars)
    }
    pub fn discriminator_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        snapshot(&self.d_vars)
    }
    pub fn generator_params(&self) -> &[(String, Var)] {
        &self.g_params
    }
    pub fn discriminator_params(&self) -> &[(String, Var)] {
        &self.d_params
    }

    /// Both optimisers' state, under `opt_g.` and `opt_d.`.
    pub fn optimizer_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut v = self.opt_g.export("opt_g", &self.g_params)?;
        v.extend(self.opt_d.export("opt_d", &self.d_params)?);
        Ok(v)
    }
    pub fn load_optimizer_tensors(&mut self, get: impl Fn(&str) -> Option<Tensor>) -> Result<()> {
        self.opt_g.import("opt_g", &self.g_params, &get)?;
        self.opt_d.import("opt_d", &self.d_params, &get)
    }

    /// One training step on the batch (`x` input, `y` target, both (N, 3, H, W) in [-1, 1]).
    /// `dropout` drives the generator's dropout layers; `None` turns them off. It runs on a
    /// worker of the library's thread pool, but for the first, which makes the optimisers'
    /// moments ([`kernels::on_pool_after_first`]).
    pub fn step(&mut self, x: &Tensor, y: &Tensor, dropout: Option<StdRng>) -> Result<StepOutput> {
        let first = self.opt_g.steps() == 0;
        kernels::on_pool_after_first(first, || self.step_here(x, y, dropout))
    }

    fn step_here(&mut self, x: &Tensor, y: &Tensor, dropout: Option<StdRng>) -> Result<StepOutput> {
        let mode = self.settings.gan_mode;
        let fake = self.generator.forward(x, &Forward::train(dropout))?;
        let f_d = Forward::train(None);

        // Discriminator: fake pairs (G detached), then real pairs.
        let pred_fake = self.discriminator.forward(&Tensor::cat(&[x, &fake.detach()], 1)?, &f_d)?;
        let pred_real = self.discriminator.forward(&Tensor::cat(&[x, y], 1)?, &f_d)?;
        let d_fake = gan_loss(&pred_fake, false, mode)?;
        let d_real = gan_loss(&pred_real, true, mode)?;
        let loss_d = ((&d_fake + &d_real)? * 0.5)?;
        let grads = loss_d.backward()?;
        // Keeping only the parameters' gradients frees the rest of the graph's.
        let grads_d = grads_of(&self.d_params, &grads);
        drop(grads);
        self.opt_d.step(self.lr, &self.d_params, &grads_d)?;

        // Generator: fool the updated discriminator, stay close to the target.
        let pred_fake = self.discriminator_frozen.forward(&Tensor::cat(&[x, &fake], 1)?, &f_d)?;
        let g_gan = gan_loss(&pred_fake, true, mode)?;
        let g_l1 = (l1(&fake, y)? * self.settings.lambda_l1)?;
        let grads = (&g_gan + &g_l1)?.backward()?;
        let grads_g = grads_of(&self.g_params, &grads);
        drop(grads);
        self.opt_g.step(self.lr, &self.g_params, &grads_g)?;

        let scalar =
            |t: &Tensor| -> Result<f32> { Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?) };
        let losses = Losses {
            g_gan: scalar(&g_gan)?,
            g_l1: scalar(&g_l1)?,
            d_real: scalar(&d_real)?,
            d_fake: scalar(&d_fake)?,
        };
        Ok(StepOutput { losses, fake: fake.detach(), grads_g, grads_d })
    }
}
