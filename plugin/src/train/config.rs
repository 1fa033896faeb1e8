//! The training configuration: one TOML file, snake_case keys named after the reference's
//! options, grouped in `[data]`, `[model]`, `[train]` and `[output]`. Every key is optional
//! and defaults to the reference's pix2pix default (`direction` is `AtoB` there; the facades
//! recipes set `BtoA`).
//!
//! Relative paths (`data.root`, `model.init_*`, `output.dir`) are used as written, so they
//! resolve against the current directory of the process, not the config file's folder.
//!
//! Errors name the key and its line: an unknown key, a value of the wrong type and a value out
//! of range alike. The line comes from the span TOML reports, or, for range checks made after
//! parsing, from a second parse that records where every value sits.

use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use pix2pix_ffi::GeneratorName;

use super::Direction;
use crate::error::{Error, Result};
use crate::nets::generator::GeneratorConfig;
use crate::nets::norm::NormKind;
use crate::nets::patchgan::{DiscriminatorConfig, DiscriminatorKind};

/// Declares a config section twice from one field list: the typed struct (unknown keys denied,
/// every field defaulted) and a twin that records each value's span for error lines.
macro_rules! section {
    ($(#[$sm:meta])* $name:ident, $spans:ident {
        $( $(#[$fm:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)?
    }) => {
        $(#[$sm])*
        #[derive(Clone, Debug, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name { $( $(#[$fm])* pub $field: $ty, )* }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl $name {
            /// The section's keys, in declaration order.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        #[derive(Default, Deserialize)]
        #[serde(default)]
        struct $spans { $( $field: Option<toml::Spanned<toml::Value>>, )* }

        impl $spans {
            fn entries(&self) -> Vec<(&'static str, Range<usize>)> {
                let mut v = Vec::new();
                $( if let Some(s) = &self.$field { v.push((stringify!($field), s.span())); } )*
                v
            }
        }
    };
}

section! {
    /// `[data]`: where the pairs are and how they are augmented.
    DataConfig, DataSpans {
        /// The dataset folder (`dataroot`); images are read from `<root>/<phase>`.
        root: PathBuf = PathBuf::from("datasets/facades"),
        phase: String = "train".into(),
        /// `aligned`: A|B side by side in one image; `unaligned`: `A/` and `B/` folders with
        /// matching file names (paired by name).
        mode: Mode = Mode::Aligned,
        /// The reference trainer's option default (`AtoB`), not evaluation's
        /// ([`Direction::default`], the facades recipe's `BtoA`): configs follow the reference.
        #[serde(deserialize_with = "direction")]
        direction: Direction = Direction::AtoB,
        preprocess: Preprocess = Preprocess::ResizeAndCrop,
        load_size: usize = 286,
        crop_size: usize = 256,
        /// Random horizontal flips (the reference's `--no_flip` negated).
        flip: bool = true,
        /// Use at most this many pairs (the first ones in sorted order).
        max_dataset_size: Option<usize> = None,
    }
}

section! {
    /// `[model]`: the networks and their initialisation.
    ModelConfig, ModelSpans {
        /// Image channels of the generator's input and output (the reference's `input_nc`,
        /// `output_nc`): 3 = RGB, 1 = gray (images are read as ITU-R 601-2 luma).
        input_nc: usize = 3,
        output_nc: usize = 3,
        #[serde(deserialize_with = "net_g")]
        net_g: GeneratorName = GeneratorName::Unet { side: 256 },
        ngf: usize = 64,
        net_d: NetD = NetD::Basic,
        /// Layers of the `n_layers` discriminator (`basic` is 3).
        n_layers_d: usize = 3,
        ndf: usize = 64,
        norm: Norm = Norm::Batch,
        /// Dropout in the generator (the reference's `--no_dropout` negated).
        dropout: bool = true,
        init_type: InitType = InitType::Normal,
        init_gain: f64 = 0.02,
        /// Start the generator from this checkpoint (.safetensors or .pth) instead of `init_type`.
        init_generator: Option<PathBuf> = None,
        init_discriminator: Option<PathBuf> = None,
    }
}

section! {
    /// `[train]`: losses, optimiser, schedule and run length.
    TrainConfig, TrainSpans {
        gan_mode: GanMode = GanMode::Vanilla,
        lambda_l1: f64 = 100.0,
        lr: f64 = 2e-4,
        beta1: f64 = 0.5,
        beta2: f64 = 0.999,
        /// Epochs at the initial learning rate.
        n_epochs: u64 = 100,
        /// Epochs of linear decay to zero after `n_epochs` (policy `linear`).
        n_epochs_decay: u64 = 100,
        lr_policy: LrPolicy = LrPolicy::Linear,
        /// Epochs between ×0.1 decays (policy `step`).
        lr_decay_iters: u64 = 50,
        batch_size: usize = 1,
        /// Seeds everything: initialisation, data order, crops, flips, dropout.
        seed: u64 = 0,
        /// Hard stop after this many steps in all (counted across resumes).
        max_steps: Option<u64> = None,
        /// Memory training may take, in MiB; 0 = half of the memory the process may use. The
        /// estimate of a step ([`Config::check_memory`]) is checked before networks are built.
        memory_budget_mb: u64 = 0,
    }
}

section! {
    /// `[output]`: checkpoints, samples and logs.
    OutputConfig, OutputSpans {
        dir: PathBuf = PathBuf::from("checkpoints/experiment_name"),
        /// Write `step_NNNNNNN/` (and `latest/`) every this many steps; 0 = only at the end.
        save_every_steps: u64 = 5000,
        /// Write a sample grid and the loss curve every this many steps; 0 = never.
        sample_every_steps: u64 = 400,
        /// Start a new run even if `dir` holds one (its `latest/`, `losses.csv` and same-named
        /// `step_*` folders are replaced); without it that is an error unless resuming.
        overwrite: bool = false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Aligned,
    Unaligned,
}

/// The reference's `--preprocess`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preprocess {
    ResizeAndCrop,
    Crop,
    ScaleWidth,
    ScaleWidthAndCrop,
    None,
}

impl Preprocess {
    pub fn crops(self) -> bool {
        matches!(self, Preprocess::ResizeAndCrop | Preprocess::Crop | Preprocess::ScaleWidthAndCrop)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetD {
    Basic,
    NLayers,
    Pixel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    Batch,
    Instance,
    None,
}

impl Norm {
    pub fn kind(self) -> NormKind {
        match self {
            Norm::Batch => NormKind::Batch,
            Norm::Instance => NormKind::Instance,
            Norm::None => NormKind::None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitType {
    Normal,
    Xavier,
    Kaiming,
    Orthogonal,
}

/// The GAN objective. The reference's `wgangp` is not supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GanMode {
    /// Binary cross-entropy on logits (the paper's cGAN loss).
    Vanilla,
    /// Least squares (Mao et al. 2017).
    Lsgan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrPolicy {
    Linear,
    Step,
    Cosine,
}

/// `data.direction` by the contract's parser.
fn direction<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Direction, D::Error> {
    let s = String::deserialize(d)?;
    Direction::parse(&s).ok_or_else(|| serde::de::Error::unknown_variant(&s, Direction::NAMES))
}

/// `model.net_g` by the contract's parser, limited to the generators the reference trains.
fn net_g<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<GeneratorName, D::Error> {
    let s = String::deserialize(d)?;
    GeneratorName::parse(&s)
        .filter(|_| GeneratorName::REFERENCE.contains(&s.as_str()))
        .ok_or_else(|| serde::de::Error::unknown_variant(&s, GeneratorName::REFERENCE))
}

/// The largest `data.load_size` and `data.crop_size`.
pub const MAX_SIDE: usize = 8192;
/// The largest `model.ngf` and `model.ndf` (the reference uses 64).
pub const MAX_FILTERS: usize = 1024;
/// The largest `model.n_layers_d`.
pub const MAX_LAYERS_D: usize = 10;
/// The largest `train.batch_size`.
pub const MAX_BATCH: usize = 4096;

/// Every key at its default, commented with its range or choices: what `host train
/// --print-config` prints. A test checks that it parses to [`Config::default()`] and names every
/// key of every section.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default_config.toml");

/// The whole configuration, with the text it was read from (saved in every checkpoint).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub output: OutputConfig,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ConfigSpans {
    data: Option<DataSpans>,
    model: Option<ModelSpans>,
    train: Option<TrainSpans>,
    output: Option<OutputSpans>,
}

/// Where each `section.key` sits in the text, for error messages.
struct Locator<'a> {
    text: &'a str,
    entries: Vec<(String, Range<usize>)>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        let spans: ConfigSpans = toml::from_str(text).unwrap_or_default();
        let mut entries = Vec::new();
        let mut add = |section: &str, e: Vec<(&'static str, Range<usize>)>| {
            entries.extend(e.into_iter().map(|(k, r)| (format!("{section}.{k}"), r)));
        };
        if let Some(s) = &spans.data {
            add("data", s.entries());
        }
        if let Some(s) = &spans.model {
            add("model", s.entries());
        }
        if let Some(s) = &spans.train {
            add("train", s.entries());
        }
        if let Some(s) = &spans.output {
            add("output", s.entries());
        }
        Self { text, entries }
    }

    fn line_at(&self, offset: usize) -> usize {
        self.text.get(..offset).unwrap_or(self.text).matches('\n').count() + 1
    }

    fn line_of(&self, key: &str) -> Option<usize> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, r)| self.line_at(r.start))
    }

    /// The key whose value holds `offset`.
    fn key_at(&self, offset: usize) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, r)| r.contains(&offset) || r.start == offset)
            .map(|(k, _)| k.as_str())
    }

    /// The `[section]` a line falls under, read off the text (for unknown keys, which have no
    /// recorded value).
    fn section_at_line(&self, line: usize) -> Option<String> {
        self.text
            .lines()
            .take(line)
            .filter_map(|l| {
                let l = l.trim();
                l.strip_prefix('[').and_then(|l| l.split(']').next()).map(|s| s.trim().to_string())
            })
            .last()
    }

    /// An error about `key`: with its line if the file sets it, else saying it is the default.
    fn bad(&self, key: &str, msg: impl std::fmt::Display) -> Error {
        match self.line_of(key) {
            Some(line) => Error::Config(format!("config line {line}: `{key}`: {msg}")),
            None => Error::Config(format!("config: `{key}` (not set, so its default): {msg}")),
        }
    }
}

impl Config {
    /// Parses and checks a config text.
    pub fn parse(text: &str) -> Result<Self> {
        let loc = Locator::new(text);
        let config: Config = toml::from_str(text).map_err(|e| toml_error(&loc, &e))?;
        config.validate(&loc)?;
        Ok(config)
    }

    fn validate(&self, loc: &Locator) -> Result<()> {
        let Config { data, model, train, output: _ } = self;
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(loc.bad(key, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        // Upper bounds keep a typo from asking for terabytes; the memory budget
        // (`check_memory`) then decides what this machine can take.
        let range = |key: &str, v: usize, max: usize| {
            if v == 0 {
                Err(loc.bad(key, "must be at least 1"))
            } else if v > max {
                Err(loc.bad(key, format!("{v} exceeds {max}, the largest this trainer takes")))
            } else {
                Ok(())
            }
        };
        range("data.load_size", data.load_size, MAX_SIDE)?;
        range("data.crop_size", data.crop_size, MAX_SIDE)?;
        range("model.ngf", model.ngf, MAX_FILTERS)?;
        range("model.ndf", model.ndf, MAX_FILTERS)?;
        range("model.n_layers_d", model.n_layers_d, MAX_LAYERS_D)?;
        for (key, nc) in [("model.input_nc", model.input_nc), ("model.output_nc", model.output_nc)]
        {
            if !matches!(nc, 1 | 3) {
                return Err(loc.bad(key, format!("{nc} must be 1 (gray) or 3 (RGB)")));
            }
        }
        range("train.batch_size", train.batch_size, MAX_BATCH)?;
        if let Some(n) = data.max_dataset_size {
            positive("data.max_dataset_size", n)?;
        }
        if data.phase.is_empty() {
            return Err(loc.bad("data.phase", "must not be empty"));
        }
        if matches!(data.preprocess, Preprocess::ResizeAndCrop | Preprocess::ScaleWidthAndCrop)
            && data.crop_size > data.load_size
        {
            return Err(loc.bad(
                "data.crop_size",
                format!(
                    "{} exceeds data.load_size = {}: the crop must fit in the resized image",
                    data.crop_size, data.load_size
                ),
            ));
        }
        let stride = self.generator_config().stride();
        if data.preprocess.crops() && data.crop_size % stride != 0 {
            return Err(loc.bad(
                "data.crop_size",
                format!(
                    "{} is not a multiple of {stride}, which {} needs for its input sides",
                    data.crop_size,
                    model.net_g.name()
                ),
            ));
        }
        if !model.init_gain.is_finite() {
            return Err(loc.bad("model.init_gain", "must be a finite number"));
        }
        let finite_nonneg = |key: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(loc.bad(key, format!("{v} must be a finite number ≥ 0")))
            }
        };
        finite_nonneg("train.lambda_l1", train.lambda_l1)?;
        if !(train.lr.is_finite() && train.lr > 0.0) {
            return Err(loc.bad("train.lr", format!("{} must be a finite number > 0", train.lr)));
        }
        for (key, b) in [("train.beta1", train.beta1), ("train.beta2", train.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(loc.bad(key, format!("{b} must be in [0, 1)")));
            }
        }
        if train.n_epochs + train.n_epochs_decay == 0 {
            return Err(loc.bad("train.n_epochs", "n_epochs + n_epochs_decay must be at least 1"));
        }
        if train.lr_policy == LrPolicy::Cosine && train.n_epochs == 0 {
            return Err(
                loc.bad("train.n_epochs", "the cosine policy needs n_epochs ≥ 1 (its period)")
            );
        }
        if train.lr_policy == LrPolicy::Step && train.lr_decay_iters == 0 {
            return Err(loc.bad("train.lr_decay_iters", "must be at least 1"));
        }
        Ok(())
    }

    /// Refuses a configuration whose training step is estimated to need more than the memory
    /// budget (`train.memory_budget_mb`), before any network is built. The side is the crop
    /// (or `load_size` when not cropping: with `preprocess = "none"` the data decides, and this
    /// is a guess).
    pub fn check_memory(&self) -> Result<()> {
        let (g, d) = (self.generator_config(), self.discriminator_config());
        let (gp, dp) = (g.parameters()?, d.parameters()?);
        let side =
            if self.data.preprocess.crops() { self.data.crop_size } else { self.data.load_size };
        let n = self.train.batch_size;
        let estimate = crate::nets::memory::train_step_bytes(&g, gp, &d, dp, n, side, side);
        crate::filter::memory::check(
            &format!(
                "training {} (model.ngf = {}, model.ndf = {}) on batches of {n} (train.batch_size) at {side}x{side} (data.crop_size / data.load_size)",
                self.model.net_g.name(),
                self.model.ngf,
                self.model.ndf
            ),
            estimate,
            self.train.memory_budget_mb,
            || "smaller model.ngf, model.ndf, train.batch_size or data.crop_size need less".into(),
        )
    }

    /// The generator the `[model]` section describes.
    pub fn generator_config(&self) -> GeneratorConfig {
        let m = &self.model;
        let norm = m.norm.kind();
        GeneratorConfig::named(m.net_g, m.ngf, norm, m.dropout)
            .with_channels(m.input_nc, m.output_nc)
    }

    /// The conditional discriminator: it sees (input, output) stacked,
    /// `input_nc + output_nc` channels.
    pub fn discriminator_config(&self) -> DiscriminatorConfig {
        let m = &self.model;
        let kind = match m.net_d {
            NetD::Basic => DiscriminatorKind::NLayer(3),
            NetD::NLayers => DiscriminatorKind::NLayer(m.n_layers_d),
            NetD::Pixel => DiscriminatorKind::Pixel,
        };
        DiscriminatorConfig {
            kind,
            in_channels: m.input_nc + m.output_nc,
            ndf: m.ndf,
            norm: m.norm.kind(),
        }
    }
}

/// A TOML or serde error, with the line and the key it is about.
fn toml_error(loc: &Locator, e: &toml::de::Error) -> Error {
    let msg = e.message().trim();
    let Some(span) = e.span() else { return Error::Config(format!("config: {msg}")) };
    let line = loc.line_at(span.start);
    if let Some(key) = loc.key_at(span.start) {
        return Error::Config(format!("config line {line}: `{key}`: {msg}"));
    }
    // Unknown keys: serde names the key; the section is the header above the line.
    if let Some(field) = msg.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
        let key = match loc.section_at_line(line) {
            Some(section) if !msg.contains("expected one of `data`") => {
                format!("{section}.{field}")
            }
            _ => field.to_string(),
        };
        return Error::Config(format!("config line {line}: unknown key `{key}`: {msg}"));
    }
    Error::Config(format!("config line {line}: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.data.load_size, 286);
        assert_eq!(c.model.net_g, GeneratorName::Unet { side: 256 });
        assert_eq!(c.data.direction, Direction::AtoB);
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = Config::parse("[data]\nload_size = 286\ncrop_size = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("data.crop_size"), "{e}");
        let e = Config::parse("[data]\n\ncropsize = 3\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("data.cropsize"), "{e}");
        let e = Config::parse("[data]\nload_size = 200\n").unwrap_err().to_string();
        assert!(e.contains("data.crop_size"), "{e}");
        let e = Config::parse("[train]\nlr = -1.0\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("train.lr"), "{e}");
        let e = Config::parse("[model]\nnet_g = \"unet_64\"\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("model.net_g"), "{e}");
        let e = Config::parse("[modle]\nngf = 3\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("modle"), "{e}");
    }

    #[test]
    fn sizes_have_upper_bounds_naming_the_key() {
        for (text, key, msg) in [
            ("[model]\nngf = 100000\n", "model.ngf", "100000 exceeds 1024"),
            ("[model]\nndf = 2000\n", "model.ndf", "2000 exceeds 1024"),
            ("[data]\nload_size = 100000\n", "data.load_size", "100000 exceeds 8192"),
            ("[data]\nload_size = 8192\ncrop_size = 9000\n", "data.crop_size", "9000 exceeds 8192"),
            ("[train]\nbatch_size = 5000\n", "train.batch_size", "5000 exceeds 4096"),
            ("[model]\nn_layers_d = 11\n", "model.n_layers_d", "11 exceeds 10"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            // Each case sets its key on its last line.
            let line = format!("config line {}: `{key}`: {msg}", text.lines().count());
            assert!(e.contains(&line), "{text}: {e}");
        }
        // The bounds themselves are accepted.
        let edge = "[data]\nload_size = 8192\ncrop_size = 8192\n[model]\nngf = 1024\nndf = 1024\n";
        assert!(Config::parse(edge).is_ok());
    }

    #[test]
    fn memory_is_checked_against_the_budget_before_building() {
        // In range, but a step at ngf 1024 on 8192² crops needs far more than 1 GiB.
        let big = "[data]\nload_size = 8192\ncrop_size = 8192\n[model]\nngf = 1024\n[train]\nmemory_budget_mb = 1024\n";
        let e = Config::parse(big).unwrap().check_memory().unwrap_err();
        assert!(matches!(e, Error::OutOfMemory(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("training unet_256 (model.ngf = 1024"), "{e}");
        assert!(e.contains("over the memory budget of 1.0 GiB (set by the caller"), "{e}");
        assert!(e.contains("train.memory_budget_mb"), "{e}");
        // The reference's defaults fit in 4 GiB (weights, gradients and Adam state alone are 0.9 GiB).
        let small = "[train]\nmemory_budget_mb = 4096\n";
        Config::parse(small).unwrap().check_memory().unwrap();
    }
}
