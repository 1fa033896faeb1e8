//! The dataset and its loader thread.
//!
//! Two layouts, as the reference: `aligned` (each image holds A | B side by side, read from
//! `<root>/<phase>`) and `unaligned` with pairs matched by file name between `<root>/<phase>/A`
//! and `<root>/<phase>/B` (or the reference's `<root>/<phase>A` and `<root>/<phase>B`). Images
//! (jpg, jpeg, png, webp, bmp) are listed recursively and sorted by path, so a run sees the same
//! list everywhere. Every image is decoded once up front: an unreadable one is skipped with a
//! warning naming it, and the skipped files are reported; no usable pair is an error.
//!
//! The loader thread decodes and augments the batches of a range of steps ahead of the
//! compute, through a bounded channel. The order of epoch `e` and the augmentation of each
//! sample come from counter-derived generators ([`super::rng`]), so any step's batch can be
//! rebuilt from the seed alone: resuming needs no loader state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::Tensor;
use image::RgbImage;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::config::{DataConfig, Mode};
use super::preprocess::Preprocessor;
use super::rng::{derive, Stream};
use super::Direction;
use crate::error::{Error, Result};
use crate::filter::image_tensor::u8_to_tensor_channels;

const EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm", "pgm"];

/// Where one pair's pixels come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// One image, A on the left half and B on the right.
    Aligned(PathBuf),
    /// Two images of the same size.
    Pair { a: PathBuf, b: PathBuf },
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::Aligned(p) => p,
            Source::Pair { a, .. } => a,
        }
    }
}

/// A file left out of the dataset, and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

pub struct Dataset {
    pub sources: Vec<Source>,
    pub skipped: Vec<Skipped>,
    /// One line per skipped file and a count, for the caller's message channel (the library
    /// does not print).
    pub warnings: Vec<String>,
    pub direction: Direction,
    /// Image channels of the model's input and output (1 = gray, 3 = RGB).
    pub channels: (usize, usize),
}

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The images under `dir`, recursively, sorted by their path text (as Python's `sorted`).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            // Follows links to files; links to folders are not followed (no cycles).
            let is_dir = std::fs::symlink_metadata(&path).map(|m| m.is_dir()).unwrap_or(false);
            if is_dir {
                walk(&path, out)?;
            } else if is_image(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        ));
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort_by_cached_key(|p| p.to_string_lossy().into_owned());
    Ok(out)
}

/// Decodes an image file to RGB8 (gray is replicated, alpha dropped).
pub fn decode(path: &Path) -> Result<RgbImage> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::Image { path: path.into(), msg: e.to_string() })?;
    Ok(img.into_rgb8())
}

/// Splits an A|B image: A is the left `w/2` columns, B the rest (as the reference).
pub fn split_aligned(img: &RgbImage) -> (RgbImage, RgbImage) {
    let (w, h) = img.dimensions();
    let half = w / 2;
    let a = image::imageops::crop_imm(img, 0, 0, half, h).to_image();
    let b = image::imageops::crop_imm(img, half, 0, w - half, h).to_image();
    (a, b)
}

impl Dataset {
    /// The training set a `[data]` section describes.
    pub fn open(data: &DataConfig) -> Result<Self> {
        let dir = data.root.join(&data.phase);
        let mut ds = match data.mode {
            Mode::Aligned => Self::aligned(&dir, data.direction)?,
            Mode::Unaligned => {
                let (a_dir, b_dir) = if dir.join("A").is_dir() {
                    (dir.join("A"), dir.join("B"))
                } else {
                    (
                        data.root.join(format!("{}A", data.phase)),
                        data.root.join(format!("{}B", data.phase)),
                    )
                };
                Self::paired(&a_dir, &b_dir, data.direction)?
            }
        };
        if let Some(max) = data.max_dataset_size {
            ds.sources.truncate(max);
        }
        Ok(ds)
    }

    /// A folder of A|B images.
    pub fn aligned(dir: &Path, direction: Direction) -> Result<Self> {
        let files = list_images(dir)?;
        let sources = files.into_iter().map(Source::Aligned).collect();
        Self::checked(sources, Vec::new(), direction, dir)
    }

    /// Two folders of images paired by their path relative to the folder, extension aside.
    pub fn paired(a_dir: &Path, b_dir: &Path, direction: Direction) -> Result<Self> {
        let key = |root: &Path, p: &Path| {
            p.strip_prefix(root).unwrap_or(p).with_extension("").to_string_lossy().into_owned()
        };
        let b_files: BTreeMap<String, PathBuf> =
            list_images(b_dir)?.into_iter().map(|p| (key(b_dir, &p), p)).collect();
        let mut skipped = Vec::new();
        let mut sources = Vec::new();
        for a in list_images(a_dir)? {
            match b_files.get(&key(a_dir, &a)) {
                Some(b) => sources.push(Source::Pair { a, b: b.clone() }),
                None => skipped.push(Skipped {
                    reason: format!("no matching file in {}", b_dir.display()),
                    path: a,
                }),
            }
        }
        Self::checked(sources, skipped, direction, a_dir)
    }

    /// Decodes every source once (in parallel), keeping the usable ones.
    fn checked(
        sources: Vec<Source>,
        mut skipped: Vec<Skipped>,
        direction: Direction,
        dir: &Path,
    ) -> Result<Self> {
        let verdicts: Vec<Option<Skipped>> = sources.par_iter().map(|s| check(s).err()).collect();
        let mut usable = Vec::with_capacity(sources.len());
        for (s, v) in sources.into_iter().zip(verdicts) {
            match v {
                Some(sk) => skipped.push(sk),
                None => usable.push(s),
            }
        }
        let mut warnings: Vec<String> = skipped
            .iter()
            .map(|s| format!("warning: skipping {}: {}", s.path.display(), s.reason))
            .collect();
        if !skipped.is_empty() {
            warnings.push(format!(
                "warning: {} file(s) skipped in {}",
                skipped.len(),
                dir.display()
            ));
        }
        if usable.is_empty() {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{}: no usable image pairs ({} file(s) skipped)",
                    dir.display(),
                    skipped.len()
                ),
            ));
        }
        Ok(Self { sources: usable, skipped, warnings, direction, channels: (3, 3) })
    }

    /// This dataset read for a model with `input` and `output` channels.
    pub fn with_channels(self, input: usize, output: usize) -> Self {
        Self { channels: (input, output), ..self }
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// (input, target) of pair `i`, before augmentation, in the configured direction.
    pub fn load(&self, i: usize) -> Result<(RgbImage, RgbImage)> {
        let source = self
            .sources
            .get(i)
            .ok_or_else(|| Error::invalid("dataset index", format!("{i} of {}", self.len())))?;
        let (a, b) = load_ab(source)?;
        Ok(match self.direction {
            Direction::AtoB => (a, b),
            Direction::BtoA => (b, a),
        })
    }
}

fn load_ab(source: &Source) -> Result<(RgbImage, RgbImage)> {
    match source {
        Source::Aligned(p) => {
            let img = decode(p)?;
            if img.width() < 2 {
                return Err(Error::Image {
                    path: p.clone(),
                    msg: "narrower than 2 pixels, so it cannot hold A | B".into(),
                });
            }
            Ok(split_aligned(&img))
        }
        Source::Pair { a, b } => {
            let (ia, ib) = (decode(a)?, decode(b)?);
            if ia.dimensions() != ib.dimensions() {
                return Err(Error::Image {
                    path: b.clone(),
                    msg: format!(
                        "is {}x{} but its A image {} is {}x{}",
                        ib.width(),
                        ib.height(),
                        a.display(),
                        ia.width(),
                        ia.height()
                    ),
                });
            }
            Ok((ia, ib))
        }
    }
}

fn check(source: &Source) -> std::result::Result<(), Skipped> {
    load_ab(source).map(|_| ()).map_err(|e| {
        let (path, reason) = match e {
            Error::Image { path, msg } => (path, msg),
            Error::Io { path, source } => (path, source.to_string()),
            e => (source.path().to_path_buf(), e.to_string()),
        };
        Skipped { path, reason }
    })
}

/// Which pairs each step takes: epochs of `ceil(len / batch_size)` steps, each epoch a fresh
/// shuffle, the last batch of an epoch smaller when `batch_size` does not divide `len`
/// (as PyTorch's `DataLoader` with `shuffle=True`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub len: usize,
    pub batch_size: usize,
    pub seed: u64,
}

impl Plan {
    pub fn steps_per_epoch(&self) -> u64 {
        self.len.div_ceil(self.batch_size.max(1)) as u64
    }
    /// The 0-based epoch of step `step` (0-based).
    pub fn epoch_of(&self, step: u64) -> u64 {
        step / self.steps_per_epoch().max(1)
    }
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        order.shuffle(&mut derive(self.seed, Stream::Order, epoch));
        order
    }
    /// Dataset indices of step `step`'s batch, given that epoch's order.
    pub fn batch<'a>(&self, step: u64, order: &'a [usize]) -> &'a [usize] {
        let i = (step % self.steps_per_epoch().max(1)) as usize * self.batch_size;
        &order[i.min(order.len())..(i + self.batch_size).min(order.len())]
    }
}

/// One step's tensors, (N, 3, H, W) in [-1, 1].
pub struct Batch {
    pub step: u64,
    pub epoch: u64,
    pub input: Tensor,
    pub target: Tensor,
}

/// Builds the batch of `step`: load, augment (generators derived from the sample's global
/// position), stack.
pub fn make_batch(
    ds: &Dataset,
    pre: &Preprocessor,
    plan: &Plan,
    step: u64,
    order: &[usize],
) -> Result<Batch> {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut size = None;
    for (j, &idx) in plan.batch(step, order).iter().enumerate() {
        let (a, b) = ds.load(idx)?;
        // Gray before the geometric preprocessing, as the reference's transform chain does.
        let (a, b) = (gray_if(a, ds.channels.0), gray_if(b, ds.channels.1));
        let mut rng = derive(plan.seed, Stream::Augment, step * plan.batch_size as u64 + j as u64);
        let (a, b) = pre.apply_pair(&a, &b, &mut rng);
        if a.dimensions() != b.dimensions() || size.is_some_and(|s| s != a.dimensions()) {
            return Err(Error::invalid(
                "data.preprocess",
                format!("images of one batch differ in size after preprocessing ({}); use a cropping preprocess or batch_size 1", ds.sources[idx].path().display()),
            ));
        }
        size = Some(a.dimensions());
        let (w, h) = (a.width() as usize, a.height() as usize);
        xs.push(u8_to_tensor_channels(a.as_raw(), 3, w, h, ds.channels.0)?);
        ys.push(u8_to_tensor_channels(b.as_raw(), 3, w, h, ds.channels.1)?);
    }
    if xs.is_empty() {
        return Err(Error::invalid("dataset", "empty batch"));
    }
    Ok(Batch {
        step,
        epoch: plan.epoch_of(step),
        input: Tensor::cat(&xs, 0)?,
        target: Tensor::cat(&ys, 0)?,
    })
}

/// The loader thread: batches of steps `start..end`, at most `depth` ahead of the consumer.
/// Dropping it stops the thread.
/// For a 1-channel side, the image's ITU-R 601-2 luma (PIL's `convert('L')`, which the reference
/// applies when `input_nc` / `output_nc` is 1), replicated to RGB so the preprocessing stays
/// one; other channel counts keep the image.
pub fn gray_if(img: RgbImage, channels: usize) -> RgbImage {
    if channels != 1 {
        return img;
    }
    let mut img = img;
    for p in img.pixels_mut() {
        let [r, g, b] = p.0.map(u32::from);
        let l = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8;
        p.0 = [l; 3];
    }
    img
}

pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Loader {
    pub fn spawn(
        ds: Arc<Dataset>,
        pre: Preprocessor,
        plan: Plan,
        start: u64,
        end: u64,
        depth: usize,
    ) -> Result<Self> {
        let (tx, rx) = sync_channel(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("pix2pix-loader".into())
            .spawn(move || {
                let mut cached: Option<(u64, Vec<usize>)> = None;
                for step in start..end {
                    let epoch = plan.epoch_of(step);
                    if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
                        cached = Some((epoch, plan.order(epoch)));
                    }
                    let order = cached.as_ref().map(|(_, o)| o.as_slice()).unwrap_or(&[]);
                    let batch = make_batch(&ds, &pre, &plan, step, order);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|e| Error::invalid("loader thread", e.to_string()))?;
        Ok(Self { rx: Some(rx), handle: Some(handle) })
    }

    /// The next batch, in step order.
    pub fn next(&self) -> Result<Batch> {
        let rx = self.rx.as_ref().ok_or_else(|| Error::invalid("loader", "stopped"))?;
        rx.recv().map_err(|_| Error::invalid("loader", "the loader thread stopped early"))?
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel first makes a blocked `send` fail, so the join cannot hang.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
