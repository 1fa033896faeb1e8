//! Finding and loading `libpix2pix.so`, and calling it.
//!
//! The library is loaded through its abi_stable root module, which checks the module's layout
//! against the one this host was built with; a mismatch is an error, never undefined
//! behaviour. Every call returns an `RResult` with a message; nothing panics across.

use std::path::{Path, PathBuf};

use abi_stable::library::{LibraryError, RootModule};
use abi_stable::std_types::{ROption, RSlice, RStr, RString};
use anyhow::{anyhow, bail, Context, Result};
use image::DynamicImage;
use pix2pix_ffi::{OpenOptions, Pix2PixModRef, PluginInfo, SampleFormat, TranslatorBox};

use crate::imageio::{from_buf, from_buf_ex, Pixels};

pub const PLUGIN_HELP: &str = "The plugin is found by --plugin, else $PIX2PIX_PLUGIN, else libpix2pix.so beside the host executable.";

/// The environment variable naming the plugin when `--plugin` is not given.
pub const PLUGIN_ENV: &str = "PIX2PIX_PLUGIN";

/// The `--plugin` option shared by every command.
#[derive(clap::Args, Clone, Debug)]
pub struct PluginArg {
    /// Path to libpix2pix.so (default: $PIX2PIX_PLUGIN, else libpix2pix.so beside this executable).
    #[arg(long, value_name = "P")]
    pub plugin: Option<PathBuf>,
}

impl PluginArg {
    pub fn path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.plugin {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os(PLUGIN_ENV) {
            return Ok(PathBuf::from(p));
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("libpix2pix.so")));
        match beside {
            Some(p) if p.exists() => Ok(p),
            _ => bail!("no plugin given: pass --plugin PATH/libpix2pix.so or set {PLUGIN_ENV}"),
        }
    }

    pub fn load(&self) -> Result<Plugin> {
        Plugin::load(&self.path()?)
    }
}

/// `--plugin` and `--model`, shared by the commands that work with one model.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArg {
    #[command(flatten)]
    pub plugin: PluginArg,
    /// Checkpoint (.safetensors or .pth); default: the shipped default model.
    #[arg(long = "model", value_name = "M")]
    pub path: Option<PathBuf>,
}

/// A checkpoint path as the plugin takes it, or `None` for the shipped default model. Checked
/// here so that a missing file is reported as such, not as whatever the plugin makes of it.
pub fn model_path(model: Option<&Path>) -> Result<Option<&str>> {
    let Some(p) = model else { return Ok(None) };
    crate::file_check::regular_file(p).map_err(|why| anyhow!("model {}: {why}", p.display()))?;
    Ok(Some(p.to_str().with_context(|| format!("model {}: path is not valid UTF-8", p.display()))?))
}

/// A loaded plugin.
#[derive(Clone, Copy)]
pub struct Plugin {
    pub module: Pix2PixModRef,
}

impl Plugin {
    /// Loads the library and checks its root module's version and layout.
    pub fn load(path: &Path) -> Result<Self> {
        crate::file_check::regular_file(path)
            .map_err(|why| anyhow!("plugin {}: {why}", path.display()))?;
        // dlopen searches the library path for names without a slash: make it absolute.
        let abs =
            std::path::absolute(path).with_context(|| format!("plugin {}", path.display()))?;
        let module = Pix2PixModRef::load_from_file(&abs).map_err(|e| match e {
            LibraryError::OpenError { err, .. } => {
                anyhow!("plugin {}: cannot load: {err}", path.display())
            }
            e => anyhow!("plugin {}: {}", path.display(), one_line(&e.to_string())),
        })?;
        Ok(Self { module })
    }

    pub fn info(&self) -> PluginInfo {
        (self.module.info())()
    }

    /// Opens a checkpoint, or the shipped default model for `None`.
    pub fn open_model(&self, model: Option<&Path>, options: OpenOptions) -> Result<TranslatorBox> {
        let arg: ROption<RStr<'_>> = model_path(model)?.map(RStr::from_str).into();
        into_result((self.module.open_model())(arg, options)).with_context(|| match model {
            Some(p) => format!("model {}", p.display()),
            None => "default model".to_string(),
        })
    }
}

/// An opened model with the plugin that opened it: translates images keeping their sample
/// depth.
pub struct Model {
    pub translator: TranslatorBox,
    module: Pix2PixModRef,
}

impl Plugin {
    /// Opens a model as [`Plugin::open_model`] does, for [`Model::translate`].
    pub fn open(&self, model: Option<&Path>, options: OpenOptions) -> Result<Model> {
        Ok(Model { translator: self.open_model(model, options)?, module: self.module })
    }
}

impl Model {
    pub fn info(&self) -> pix2pix_ffi::ModelInfo {
        self.translator.info()
    }

    /// Translates `img` into an image of the same size and sample depth: 8-bit images through
    /// the translator, 16-bit and float ones through the plugin's `translate_ex` (a plugin
    /// from before it gets them as 8-bit). Channels: the model's output (gray or RGB), plus
    /// the input's alpha.
    pub fn translate(&self, img: &DynamicImage) -> Result<DynamicImage> {
        let px = Pixels::from_image(img);
        match (px.format, self.module.translate_ex()) {
            (SampleFormat::U8, _) => from_buf(into_result(self.translator.translate(px.as_ref()))?),
            (format, Some(translate_ex)) => {
                from_buf_ex(into_result(translate_ex(&self.translator, px.as_ref_ex(), format))?)
            }
            (_, None) => {
                let px = px.to_u8(img);
                from_buf(into_result(self.translator.translate(px.as_ref()))?)
            }
        }
    }
}

impl Model {
    /// Translates several images as [`Model::translate`] does each, sending images of one size
    /// and sample depth to the plugin together, up to `batch` per forward pass (each normalised
    /// by its own statistics, so the results are those of one call per image to within float
    /// rounding). Results come back in order, one per image: when a batch fails, its images
    /// are translated one by one, so that a failure is only the failing image's.
    pub fn translate_many(
        &self,
        imgs: &[&DynamicImage],
        batch: usize,
    ) -> Vec<Result<DynamicImage>> {
        let mut out: Vec<Option<Result<DynamicImage>>> = imgs.iter().map(|_| None).collect();
        let pixels: Vec<Pixels> = imgs.iter().map(|img| Pixels::from_image(img)).collect();
        // Groups in order of first appearance, each cut into batches of up to `batch`.
        let mut groups: Vec<((u32, u32, SampleFormat), Vec<usize>)> = Vec::new();
        for (i, px) in pixels.iter().enumerate() {
            let key = (px.width, px.height, px.format);
            match groups.iter_mut().find(|(k, g)| *k == key && g.len() < batch.max(1)) {
                Some((_, g)) => g.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        for ((_, _, format), group) in groups {
            let together = match (group.len(), self.module.translate_batch()) {
                (2.., Some(translate_batch)) => {
                    let refs: Vec<_> = group.iter().map(|&i| pixels[i].as_ref_ex()).collect();
                    into_result(translate_batch(
                        &self.translator,
                        RSlice::from_slice(&refs),
                        format,
                        false,
                    ))
                    .ok()
                    .filter(|bufs| bufs.len() == group.len())
                }
                _ => None,
            };
            match together {
                Some(bufs) => {
                    for (&i, buf) in group.iter().zip(bufs) {
                        out[i] = Some(from_buf_ex(buf));
                    }
                }
                None => {
                    for &i in &group {
                        out[i] = Some(self.translate(imgs[i]));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(anyhow!("internal: image left untranslated"))))
            .collect()
    }
}

/// Plugin errors are `RString`s; long layout reports become one line.
pub fn into_result<T>(r: abi_stable::std_types::RResult<T, RString>) -> Result<T> {
    r.into_result().map_err(|e| anyhow!("{}", one_line(e.as_str())))
}

pub fn one_line(s: &str) -> String {
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}
