//! `nn.ConvTranspose2d` as the networks hold it, with frozen weights re-laid out for the
//! product.
//!
//! The transposed convolution multiplies `Wᵀ` (`cout·kh·kw × cin`) by the input. Stored as the
//! checkpoint has it, `(cin, cout, kh, kw)`, `Wᵀ` is a column-major view whose reduction steps
//! are `cout·kh·kw` floats apart (32 KB in the inner U-Net layers): on the small grids there,
//! where the product is a pass over the weights, gemm runs at a third of its speed on it. Frozen
//! weights (not training variables: a model opened for inference) are therefore copied once,
//! on first use, into the row-major `(cout, kh, kw, cin)` layout, and the copy replaces the
//! stored tensor so memory does not grow. Training variables change every step and keep theirs.
//!
//! Frozen convolutions that the direct kernel runs (`direct.rs`: the outer layers on AVX-512)
//! keep their weights packed for it, made on first use, beside the stored ones.
//!
//! A model pinned to running statistics replaces each layer followed by batch norm with one
//! whose weights and bias have the norm's per-channel `x·scale + shift` folded in
//! ([`Conv2d::folded`]), once, when it is opened: the unfolded weights are not kept.
//!
//! Under [`Precision::Bf16`](super::Precision) (where the CPU has AVX512_BF16) frozen layers
//! also keep their weights packed as bf16, made on first use, and run their products on them
//! (those with at least [`BF16_ROWS`] rows, or [`BF16_MIN_ROWS`] and a reduction of
//! [`BF16_MIN_REDUCTION`], and [`BF16_MIN_COLUMNS`] columns; the outermost and innermost
//! layers stay f32).

use std::sync::{Arc, Mutex, RwLock};

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::amx;
use super::amx_conv::{self, AmxConvWeights};
use super::amx_conv_transpose::{self, AmxConvTWeights};
use super::bf16::{self, PackedA};
use super::bf16_channels::{self, Bf16ChannelWeights, Bf16PhaseWeights};
use super::bf16_ops::{
    AmxConv2dOp, AmxConvTranspose2dOp, ChannelConv2dOp, PackedConv2dOp, PackedConvTranspose2dOp,
};
use super::conv2d::Conv2dOp;
use super::conv_transpose::ConvTranspose2dOp;
use super::direct::{self, DirectWeights};
use super::direct_channels::Packing;
use super::im2col::Geom;
use super::image_conv_transpose::{self, ImageConvTWeights};
use super::mat::{transpose, Mat};
use super::phase_conv_transpose::{self, PhaseWeights};
use super::{concat_parts, contiguous_f32, fast_for, with_f32};

/// Products with fewer rows than this (or than [`BF16_ROWS`] with a reduction shorter than
/// [`BF16_MIN_REDUCTION`]) stay in f32 under bf16: converting the activations to bf16 costs a pass over them whatever
/// the rows, the product's saving grows with the rows and the reduction. On the outermost U-Net
/// layers the conversion ate the saving (kernel profile, ngf 32, AMX: the 48-row transposed
/// conv 19 ms f32 vs 33 ms bf16 over 10 runs). The 64-row conv (ngf 32's 32→64) gains since a
/// model's first-use weights are no longer made in a pool worker's malloc arena (`filter::
/// Model::translate_batch`; before, its measurements drowned in page faults): 53 → 41–50 ms
/// over 41 calls, the ngf-32 batch-1 forward 11.5–11.9 → 11.3–11.5 ms (3 interleaved runs).
const BF16_MIN_ROWS: usize = 64;

/// Products of [`BF16_MIN_ROWS`] up to [`BF16_ROWS`] rows run in bf16 only with a reduction of
/// at least this: ngf 64's first layer (64 rows, 3 channels × 4 × 4 = 48) lost in bf16 at
/// batch 1, 14.8 → 15.7–20.1 ms over 16 calls.
const BF16_MIN_REDUCTION: usize = 64;
/// Products of this many rows or more run in bf16 whatever their reduction.
const BF16_ROWS: usize = 128;

/// Products of at most this many columns stay f32 under bf16: the f32 small-n kernels stream
/// the weights at memory speed, while the bf16 product pads its columns to 32-wide panels
/// (kernel profile, ngf 32: the 1×1-grid conv 0.16 ms f32 vs 0.45 ms bf16, the 2×2 one 0.29 vs
/// 0.53).
const BF16_MIN_COLUMNS: usize = 9;

/// Whether `w` acts as a frozen weight on `x`: not a training variable, no gradient wanted
/// through `x`, and both on the fast kernels' path.
fn frozen_for(x: &Tensor, w: &Tensor) -> bool {
    !x.track_op() && !w.is_variable() && fast_for(x, w)
}

/// Whether a frozen layer whose product is `rows × cols` with a reduction of `k` runs this
/// input in bf16: asked for and possible, no gradient wanted, and a product large enough to
/// gain.
fn bf16_for(x: &Tensor, w: &Tensor, rows: usize, k: usize, cols: usize) -> bool {
    (rows >= BF16_ROWS || (rows >= BF16_MIN_ROWS && k >= BF16_MIN_REDUCTION))
        && cols >= BF16_MIN_COLUMNS
        && bf16::active()
        && frozen_for(x, w)
}

/// Whether a frozen layer runs this input on the direct AMX kernels where their shapes allow
/// ([`amx_conv::suits`], [`amx_conv_transpose::suits`]): bf16 asked for and possible, no
/// gradient wanted. Unlike the bf16 products they need no minimum of columns: they do not pad
/// the grid to 32-wide panels, and on the innermost grids (2 × 2) they stream the weights in
/// bf16, half the bytes of the f32 small-n kernels.
fn amx_for(x: &Tensor, w: &Tensor) -> bool {
    bf16::active() && frozen_for(x, w)
}

/// Output-channel scales and shifts of a batch norm on running statistics.
pub type Affine = (Vec<f32>, Vec<f32>);

/// `w` scaled per output channel (`w`'s dimension `dim`) and `bias·scale + shift`.
fn fold(
    w: &Tensor,
    bias: Option<&Tensor>,
    dim: usize,
    (scale, shift): &Affine,
) -> Result<(Tensor, Tensor)> {
    let c = w.dim(dim)?;
    if scale.len() != c || shift.len() != c {
        candle_core::bail!("batch norm folding: {} channels after a layer with {c}", scale.len())
    }
    let mut shape = [1usize; 4];
    shape[dim] = c;
    let s = Tensor::from_slice(scale, c, w.device())?;
    let w2 = w.broadcast_mul(&s.reshape(shape.to_vec())?)?.contiguous()?;
    let t = Tensor::from_slice(shift, c, w.device())?;
    let b2 = match bias {
        Some(b) => ((b * &s)? + t)?,
        None => t,
    };
    Ok((w2, b2))
}

/// Something made from a frozen layer's weights on first use and kept: its weights packed for
/// a kernel, or (one per key) its copies on trimmed kernel windows.
struct Cached<L, K = ()>(Mutex<Vec<(K, Arc<L>)>>);

impl<L, K> Default for Cached<L, K> {
    fn default() -> Self {
        Self(Mutex::new(Vec::new()))
    }
}

impl<L, K: PartialEq> Cached<L, K> {
    fn get_for(&self, key: K, make: impl FnOnce() -> Result<L>) -> Result<Arc<L>> {
        let find =
            |all: &Vec<(K, Arc<L>)>| all.iter().find(|(k, _)| *k == key).map(|e| e.1.clone());
        if let Some(l) = find(&self.0.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(l);
        }
        // Made without the lock held: `make` runs parallel loops, and a pool worker waiting on
        // them may pick up another translation of this model that wants the same entry, which
        // would wait on the lock below itself forever. Two first uses at once both make it;
        // the first kept wins.
        let made = Arc::new(make()?);
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = find(&all) {
            return Ok(l);
        }
        all.push((key, made.clone()));
        Ok(made)
    }
}

impl<L> Cached<L> {
    fn get(&self, make: impl FnOnce() -> Result<L>) -> Result<Arc<L>> {
        self.get_for((), make)
    }
}

/// Taps `t0..t1` of a `k`-tap kernel axis (dilation 1), the rest of which read only padding at
/// this size: a convolution from `n` inputs to `out` outputs (`transposed`: from `n` inputs of
/// a transposed one) when that window is narrower than the kernel and the same layer on it,
/// padded `pad - t0`, has the same output size. Where a layer's grid shrinks to a pixel or
/// two (the U-Net's innermost level at 256²: 4 of 16 taps), the product over the window reads
/// that fraction of the weights, which there is most of the layer's time.
fn live_taps(
    n: usize,
    k: usize,
    s: usize,
    pad: usize,
    out: usize,
    transposed: bool,
) -> Option<Window> {
    let (n, k, s, pad, out) = (n as isize, k as isize, s as isize, pad as isize, out as isize);
    // Tap t reads input o·s + t − pad (conv), or writes output i·s + t − pad (transposed),
    // for o in 0..out (i in 0..n): some of it lies inside the other side's 0..n (0..out).
    let (span, other) = if transposed { (n, out) } else { (out, n) };
    let (t0, t1) = ((pad - (span - 1) * s).max(0), (other + pad).min(k));
    let (k2, pad2) = (t1 - t0, pad - t0);
    let same = match transposed {
        false => n + 2 * pad2 >= k2 && (n + 2 * pad2 - k2) / s + 1 == out,
        true => (n - 1) * s + k2 - 2 * pad2 == (n - 1) * s + k - 2 * pad,
    };
    (t0 < t1 && k2 < k && pad2 >= 0 && same).then_some((t0 as usize, t1 as usize))
}

/// Taps `t0..t1` of each kernel axis.
type Window = (usize, usize);

/// `nn.Conv2d` as the networks hold it: candle's layer, plus, when frozen, its weights packed
/// for the bf16 products and for the direct kernel, and its copies on trimmed windows.
pub struct Conv2d {
    layer: candle_nn::Conv2d,
    bf16: Cached<PackedA>,
    bf16_channels: Cached<Bf16ChannelWeights>,
    amx: Cached<AmxConvWeights>,
    direct: Cached<DirectWeights>,
    trimmed: Cached<Conv2d, Window>,
}

impl Conv2d {
    pub fn new(layer: candle_nn::Conv2d) -> Self {
        Self {
            layer,
            bf16: Cached::default(),
            bf16_channels: Cached::default(),
            amx: Cached::default(),
            direct: Cached::default(),
            trimmed: Cached::default(),
        }
    }

    /// Whether [`Conv2d::forward_with`] applies an input activation itself for `x`: a frozen
    /// strided layer (its phase split applies it), or a layer in training, whose op applies it
    /// as it reads its input and takes its gradient in its backward.
    pub fn takes_activation(&self, x: &Tensor) -> bool {
        let (w, cfg) = (self.layer.weight(), self.layer.config());
        cfg.groups == 1 && fast_for(x, w) && (cfg.stride > 1 || !frozen_for(x, w))
    }

    /// This layer then the per-channel map `affine` (batch norm on running statistics), as one
    /// layer.
    pub fn folded(&self, affine: &Affine) -> Result<Self> {
        let (w, b) = fold(self.layer.weight(), self.layer.bias(), 0, affine)?;
        Ok(Conv2d::new(candle_nn::Conv2d::new(w, Some(b), *self.layer.config())))
    }

    pub fn layer(&self) -> &candle_nn::Conv2d {
        &self.layer
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, None)
    }

    /// The layer on `leaky_relu(x, act)` when `act` is a slope: frozen strided layers apply it
    /// as they read the input ([`Conv2d::takes_activation`]), saving the down path's separate
    /// pass; the others take it as a layer first.
    pub fn forward_with(&self, x: &Tensor, act: Option<f32>) -> Result<Tensor> {
        let (w, cfg) = (self.layer.weight(), self.layer.config());
        if let (Some(slope), false) = (act, self.takes_activation(x)) {
            return self.forward(&super::leaky_relu(x, slope as f64)?);
        }
        let (cout, cin, kh, kw) = w.dims4()?;
        let geom = x.dims4().ok().and_then(|(nb, c, h, wd)| {
            let g = Geom::conv(c, (h, wd), (kh, kw), cfg.stride, cfg.padding, cfg.dilation);
            Some((nb, g.ok()?))
        });
        let frozen = cfg.groups == 1 && frozen_for(x, w);
        if let (true, 1, Some((_, g))) = (frozen, cfg.dilation, &geom) {
            let (s, p) = (cfg.stride, cfg.padding);
            let rows = live_taps(g.h, kh, s, p, g.oh, false);
            if let (Some(r), true) = (rows, kh == kw && g.h == g.w) {
                let trimmed = self.trimmed.get_for(r, || {
                    let w2 = w.narrow(2, r.0, r.1 - r.0)?.narrow(3, r.0, r.1 - r.0)?;
                    let cfg2 = candle_nn::Conv2dConfig { padding: p - r.0, ..*cfg };
                    let layer =
                        candle_nn::Conv2d::new(w2.contiguous()?, self.layer.bias().cloned(), cfg2);
                    Ok(Conv2d::new(layer))
                })?;
                return trimmed.forward_with(x, act);
            }
        }
        // The product's columns: the grid of output positions of the whole batch.
        let cols = geom.as_ref().map_or(usize::MAX, |(nb, g)| nb * g.grid());
        let rows = cin * kh * kw;
        if cfg.groups == 1
            && amx_for(x, w)
            && geom.as_ref().is_some_and(|(_, g)| amx_conv::suits(g, cout))
        {
            let packed =
                self.amx.get(|| with_f32(w, |v| AmxConvWeights::pack(v, cout, cin, kh, kw)))?;
            let op = AmxConv2dOp {
                w: packed,
                bias: bias_vec(self.layer.bias(), cout)?,
                padding: cfg.padding,
                act,
            };
            return x.contiguous()?.apply_op1_no_bwd(&op);
        }
        if cfg.groups == 1 && bf16_for(x, w, cout, rows, cols) {
            let bias = bias_vec(self.layer.bias(), cout)?;
            // Without AMX, the channel tiles where the layer suits them; else the packed product.
            if !amx::ready() && geom.as_ref().is_some_and(|(_, g)| bf16_channels::suits(g, cout)) {
                let w = self
                    .bf16_channels
                    .get(|| with_f32(w, |v| Bf16ChannelWeights::pack(v, cout, rows)))?;
                let (kernel, stride, padding) = ((kh, kw), cfg.stride, cfg.padding);
                let op = ChannelConv2dOp { w, bias, kernel, stride, padding, act };
                return x.contiguous()?.apply_op1_no_bwd(&op);
            }
            let packed = self.bf16.get(|| with_f32(w, |v| PackedA::new(Mat::rm(v, cout, rows))))?;
            let op = PackedConv2dOp {
                w: packed,
                bias,
                kernel: (kh, kw),
                stride: cfg.stride,
                padding: cfg.padding,
                dilation: cfg.dilation,
                act,
            };
            return x.contiguous()?.apply_op1_no_bwd(&op);
        }
        if frozen {
            let op = Conv2dOp {
                stride: cfg.stride,
                padding: cfg.padding,
                dilation: cfg.dilation,
                act: None,
            };
            let direct = match geom.is_some_and(|(_, g)| direct::applies(&g, cout, Packing::Once)) {
                true => Some(self.direct.get(|| {
                    with_f32(w, |v| DirectWeights::pack(Mat::rm(v, cout, rows), Packing::Once))
                })?),
                false => None,
            };
            let op = FrozenConv2dOp { op, bias: bias_vec(self.layer.bias(), cout)?, act, direct };
            return x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &op);
        }
        super::conv2d_with(x, &self.layer, act)
    }
}

enum Weight {
    /// `(cin, cout, kh, kw)`, as loaded.
    Stored(Tensor),
    /// `(cout, kh, kw, cin)`, contiguous: the frozen layout.
    RowMajor(Tensor),
}

pub struct ConvTranspose2d {
    weight: RwLock<Weight>,
    bias: Option<Tensor>,
    config: candle_nn::ConvTranspose2dConfig,
    /// The row-major weights as bf16 (`cout·kh·kw × cin`).
    bf16: Cached<PackedA>,
    /// The same as AMX tiles per output phase.
    amx: Cached<AmxConvTWeights>,
    /// The same per output phase for the channel tiles, as bf16 pairs and as floats.
    bf16_phases: Cached<Bf16PhaseWeights>,
    phases: Cached<PhaseWeights>,
    /// The same for the direct kernel onto the image's few channels.
    image: Cached<ImageConvTWeights>,
    trimmed: Cached<ConvTranspose2d, Window>,
}

impl ConvTranspose2d {
    pub fn new(layer: candle_nn::ConvTranspose2d) -> Self {
        let config = *layer.config();
        Self {
            weight: RwLock::new(Weight::Stored(layer.weight().clone())),
            bias: layer.bias().cloned(),
            config,
            bf16: Cached::default(),
            amx: Cached::default(),
            bf16_phases: Cached::default(),
            phases: Cached::default(),
            image: Cached::default(),
            trimmed: Cached::default(),
        }
    }

    /// As [`Conv2d::folded`].
    pub fn folded(&self, affine: &Affine) -> Result<Self> {
        let (w, b) = fold(&self.weight()?, self.bias.as_ref(), 1, affine)?;
        Ok(ConvTranspose2d::new(candle_nn::ConvTranspose2d::new(w, Some(b), self.config)))
    }

    fn op(&self) -> ConvTranspose2dOp {
        let c = &self.config;
        ConvTranspose2dOp {
            stride: c.stride,
            padding: c.padding,
            dilation: c.dilation,
            output_padding: (c.output_padding, c.output_padding),
        }
    }

    /// The weights in the checkpoint's layout (a copy back if they were re-laid out).
    pub fn weight(&self) -> Result<Tensor> {
        match &*self.weight.read().unwrap_or_else(|e| e.into_inner()) {
            Weight::Stored(w) => Ok(w.clone()),
            Weight::RowMajor(w) => w.permute((3, 0, 1, 2))?.contiguous(),
        }
    }

    /// The row-major weights if they are frozen, converting them on the first call.
    fn row_major(&self) -> Result<Option<Tensor>> {
        // Converted with no lock held (the transpose runs parallel loops: see `Cached`), then
        // swapped in unless another first use got there before.
        let stored = match &*self.weight.read().unwrap_or_else(|e| e.into_inner()) {
            Weight::RowMajor(w) => return Ok(Some(w.clone())),
            Weight::Stored(w) if w.is_variable() || !fast_for(w, w) => return Ok(None),
            Weight::Stored(w) => w.clone(),
        };
        let (cin, cout, kh, kw) = stored.dims4()?;
        let t = {
            // Read in place: a copy first would hold a third weight-sized buffer at once.
            let (storage, layout) = stored.storage_and_layout();
            let candle_core::Storage::Cpu(cpu) = &*storage else { return Ok(None) };
            transpose(contiguous_f32(cpu, layout)?, cin, cout * kh * kw)
        };
        let row_major = Tensor::from_vec(t, (cout, kh, kw, cin), stored.device())?;
        drop(stored);
        let mut slot = self.weight.write().unwrap_or_else(|e| e.into_inner());
        if let Weight::Stored(_) = &*slot {
            *slot = Weight::RowMajor(row_major);
        }
        match &*slot {
            Weight::RowMajor(w) => Ok(Some(w.clone())),
            Weight::Stored(_) => Ok(None),
        }
    }

    /// For the direct ops that read the concatenation of `parts` in place: the row-major
    /// weights, where they are frozen and no part wants a gradient, and whether the layer has
    /// the U-Net's stride 2, padding 1 and no dilation or output padding.
    fn frozen_for_parts(&self, parts: &[&Tensor]) -> Result<Option<(Tensor, bool)>> {
        if parts.iter().any(|p| p.track_op() || !fast_for(p, p)) {
            return Ok(None);
        }
        let c = &self.config;
        let plain = (c.stride, c.padding, c.dilation, c.output_padding) == (2, 1, 1, 0);
        Ok(self.row_major()?.map(|w| (w, plain)))
    }

    /// The AMX op for the concatenation of `parts` along channels (`dims` its shape), where
    /// this layer runs there on it: frozen, bf16 asked for, the U-Net's geometry.
    fn amx_op(
        &self,
        parts: &[&Tensor],
        (_, cin, _, wd): (usize, usize, usize, usize),
    ) -> Result<Option<AmxConvTranspose2dOp>> {
        if !bf16::active() {
            return Ok(None);
        }
        let Some((w, plain)) = self.frozen_for_parts(parts)? else { return Ok(None) };
        let (cout, kh, kw, wcin) = w.dims4()?;
        if wcin != cin
            || !amx_conv_transpose::suits(cin, cout, (kh, kw), wd, plain)
            || !amx_for(parts[0], &w)
        {
            return Ok(None);
        }
        let packed = self.amx.get(|| with_f32(&w, |v| AmxConvTWeights::pack(v, cout, cin)))?;
        let bias = bias_vec(self.bias.as_ref(), cout)?;
        Ok(Some(AmxConvTranspose2dOp { w: packed, bias, relu: false }))
    }

    /// The op by output phases on the channel tiles ([`phase_conv_transpose`]) for the
    /// concatenation of `parts` (`dims` its shape), where this layer runs there on it: frozen,
    /// the U-Net's geometry; in bf16 where asked for on a CPU with AVX512_BF16 and no AMX
    /// (there the AMX op runs), else in f32 on batches of two images or more. The f32 phases
    /// hold a packed copy of the weights beside the row-major ones (ngf 32: 21 MB, which took
    /// `host run` of the shipped model from 125.6 to 148.8 MiB against its budget of 146), and
    /// gain only on batches: kernel profile, ngf 32, Zen 5, gemm + col2im + cat+relu against
    /// phases, ms over 11 batch-4 forwards: 256→64 @32² 85.4 → 67.1, 512→128 @16² 83.9 → 65.3,
    /// 512→256 @8² 49.8 → 32.8, @4² 13.4 → 10.4 (the forward 42.1 → 36.6); at batch 1 the
    /// same layers 98 / 88 → 100 / 84 ms over 21 calls.
    fn phases_op(
        &self,
        parts: &[&Tensor],
        (nb, cin, h, wd): (usize, usize, usize, usize),
    ) -> Result<Option<PhaseConvTranspose2dOp>> {
        let Some((w, plain)) = self.frozen_for_parts(parts)? else { return Ok(None) };
        let (cout, kh, kw, wcin) = w.dims4()?;
        if wcin != cin || !phase_conv_transpose::suits(cin, cout, (kh, kw), (h, wd), plain) {
            return Ok(None);
        }
        let weights = match bf16::active() {
            true if amx::ready() => return Ok(None),
            true => PhaseWeightsOf::Bf16(
                self.bf16_phases
                    .get(|| with_f32(&w, |v| Bf16PhaseWeights::pack_bf16(v, cout, cin)))?,
            ),
            false if nb < 2 => return Ok(None),
            false => PhaseWeightsOf::F32(
                self.phases.get(|| with_f32(&w, |v| PhaseWeights::pack_f32(v, cout, cin)))?,
            ),
        };
        let bias = bias_vec(self.bias.as_ref(), cout)?;
        Ok(Some(PhaseConvTranspose2dOp { w: weights, bias, relu: false }))
    }

    /// The direct op onto the image for the concatenation of `parts` (`cin` channels), where
    /// this layer runs there on it: frozen, the U-Net's geometry, a few output channels.
    fn image_op(&self, parts: &[&Tensor], cin: usize) -> Result<Option<ImageConvTranspose2dOp>> {
        let Some((w, plain)) = self.frozen_for_parts(parts)? else { return Ok(None) };
        let (cout, kh, kw, wcin) = w.dims4()?;
        if wcin != cin || !image_conv_transpose::suits(cout, (kh, kw), plain) {
            return Ok(None);
        }
        let packed = self.image.get(|| with_f32(&w, |v| ImageConvTWeights::pack(v, cout, cin)))?;
        let bias = bias_vec(self.bias.as_ref(), cout)?;
        Ok(Some(ImageConvTranspose2dOp { w: packed, bias, relu: false, tanh: false }))
    }

    /// `self.forward(relu(cat([a, b], 1)))` (the U-Net's up path after a skip block), the
    /// concatenation read in place where the layer runs on AMX or onto the image; there, with
    /// `tanh`, also the tanh after it (the U-Net's output). Returns whether tanh was applied.
    pub fn forward_cat_relu(&self, a: &Tensor, b: &Tensor, tanh: bool) -> Result<(Tensor, bool)> {
        if let (Ok((nb, ca, h, w)), Ok((_, cb, _, _))) = (a.dims4(), b.dims4()) {
            if let Some(op) = self.image_op(&[a, b], ca + cb)? {
                let op = ImageConvTranspose2dOp { relu: true, tanh, ..op };
                return Ok((a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &op)?, tanh));
            }
            if let Some(op) = self.amx_op(&[a, b], (nb, ca + cb, h, w))? {
                let op = AmxConvTranspose2dOp { relu: true, ..op };
                return Ok((a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &op)?, false));
            }
            if let Some(op) = self.phases_op(&[a, b], (nb, ca + cb, h, w))? {
                let op = PhaseConvTranspose2dOp { relu: true, ..op };
                return Ok((a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &op)?, false));
            }
            if let Some(op) = self.packed_parts_op(&[a, b], (nb, ca + cb, h, w))? {
                let op = PackedConvTranspose2dOp { relu: true, ..op };
                return Ok((a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &op)?, false));
            }
        }
        Ok((self.forward(&super::cat_relu(a, b)?)?, false))
    }

    /// The taps of a square kernel that read a square `h × h` input (`None`: all of them), as
    /// the frozen forward trims the innermost layers' kernels.
    fn window(&self, h: usize, wd: usize, (kh, kw): (usize, usize)) -> Option<Window> {
        let c = &self.config;
        if c.dilation != 1 || kh != kw || h != wd {
            return None;
        }
        let out = (h.max(1) - 1) * c.stride + kh + c.output_padding;
        out.checked_sub(2 * c.padding)
            .and_then(|out| live_taps(h, kh, c.stride, c.padding, out, true))
    }

    /// The bf16 product op on `w` (row-major `(cout, kh, kw, cin)`), its packed weights made
    /// once.
    fn packed_op(&self, w: &Tensor) -> Result<PackedConvTranspose2dOp> {
        let (cout, kh, kw, cin) = w.dims4()?;
        let rows = cout * kh * kw;
        let packed = self.bf16.get(|| with_f32(w, |v| PackedA::new(Mat::rm(v, rows, cin))))?;
        Ok(PackedConvTranspose2dOp {
            w: packed,
            bias: bias_vec(self.bias.as_ref(), cout)?,
            cout,
            kernel: (kh, kw),
            op: self.op(),
            relu: false,
        })
    }

    /// The bf16 product op for the concatenation of `parts` (`dims` its shape), read in place
    /// as its columns are packed, where [`Self::forward`] would run the layer as that product
    /// on the concatenation: frozen, bf16, every tap live. Only on grids the product takes an
    /// image at a time (not [`super::batch_merge`]d into one product). The 128→32 layer at ngf 32 (Zen 5, no AMX; its outputs are half the phases'
    /// block), kernel profile, ms over 11 batch-4 forwards: cat + ReLU + gemm + col2im 65.3 →
    /// 50.6 (the forward 21.2–21.3 → 20.6–20.8 ms in 2 interleaved runs).
    fn packed_parts_op(
        &self,
        parts: &[&Tensor],
        (nb, cin, h, wd): (usize, usize, usize, usize),
    ) -> Result<Option<PackedConvTranspose2dOp>> {
        let Some((w, _)) = self.frozen_for_parts(parts)? else { return Ok(None) };
        let (cout, kh, kw, wcin) = w.dims4()?;
        if wcin != cin
            || super::batch_merge(nb, h * wd)
            || self.window(h, wd, (kh, kw)).is_some()
            || !bf16_for(parts[0], &w, cout * kh * kw, cin, nb * h * wd)
        {
            return Ok(None);
        }
        self.packed_op(&w).map(Some)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Ok(dims) = x.dims4() {
            if let Some(op) = self.image_op(&[x], dims.1)? {
                return x.contiguous()?.apply_op1_no_bwd(&op);
            }
            if let Some(op) = self.amx_op(&[x], dims)? {
                return x.contiguous()?.apply_op1_no_bwd(&op);
            }
            if let Some(op) = self.phases_op(&[x], dims)? {
                return x.contiguous()?.apply_op1_no_bwd(&op);
            }
        }
        // An input that needs its gradient takes the op with a backward (stored layout).
        if !x.track_op() && fast_for(x, x) {
            if let Some(w) = self.row_major()? {
                let (_, kh, kw, _) = w.dims4()?;
                let c = &self.config;
                let (_, _, h, wd) = x.dims4()?;
                if let Some(r) = self.window(h, wd, (kh, kw)) {
                    let trimmed = self.trimmed.get_for(r, || {
                        let n = r.1 - r.0;
                        // Checkpoint layout (cin, cout, kh, kw).
                        let w2 = self.weight()?.narrow(2, r.0, n)?.narrow(3, r.0, n)?;
                        let cfg =
                            candle_nn::ConvTranspose2dConfig { padding: c.padding - r.0, ..*c };
                        let layer = candle_nn::ConvTranspose2d::new(
                            w2.contiguous()?,
                            self.bias.clone(),
                            cfg,
                        );
                        Ok(ConvTranspose2d::new(layer))
                    })?;
                    return trimmed.forward(x);
                }
                let (cout, kh, kw, cin) = w.dims4()?;
                let cols = x.dims4().map_or(usize::MAX, |(nb, _, h, w)| nb * h * w);
                if bf16_for(x, &w, cout * kh * kw, cin, cols) {
                    return x.contiguous()?.apply_op1_no_bwd(&self.packed_op(&w)?);
                }
                let op = RowMajorOp(self.op(), bias_vec(self.bias.as_ref(), cout)?);
                return x.contiguous()?.apply_op2_no_bwd(&w, &op);
            }
        }
        super::conv_transpose2d(
            x,
            &candle_nn::ConvTranspose2d::new(self.weight()?, self.bias.clone(), self.config),
        )
    }
}

/// A frozen layer's bias as the kernels take it (added in their output pass, which saves a
/// separate pass over the output), checked against the layer's `channels`.
fn bias_vec(b: Option<&Tensor>, channels: usize) -> Result<Option<Vec<f32>>> {
    let Some(b) = b else { return Ok(None) };
    let v = b.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
    if v.len() != channels {
        candle_core::bail!("bias of {} for a layer of {channels} output channels", v.len())
    }
    Ok(Some(v))
}

/// A frozen conv2d with its bias (forward only).
struct FrozenConv2dOp {
    op: Conv2dOp,
    bias: Option<Vec<f32>>,
    /// The LeakyReLU slope applied to the input as it is read.
    act: Option<f32>,
    /// The weights packed for the direct kernel, where it runs the layer.
    direct: Option<Arc<DirectWeights>>,
}

impl CustomOp2 for FrozenConv2dOp {
    fn name(&self) -> &'static str {
        "pix2pix-conv2d-frozen"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.op.forward_on(s1, l1, s2, l2, self.bias.as_deref(), self.act, self.direct.as_deref())
    }
}

/// The transposed convolution onto the image ([`image_conv_transpose`]), on its input's
/// concatenation in one or two parts, plus bias, with the input's ReLU and the output's tanh
/// when asked (forward only: frozen).
struct ImageConvTranspose2dOp {
    w: Arc<ImageConvTWeights>,
    bias: Option<Vec<f32>>,
    relu: bool,
    tanh: bool,
}

impl ImageConvTranspose2dOp {
    fn run(&self, inputs: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
        let what = "conv_transpose2d (image)";
        let (parts, (nb, h, w)) = concat_parts(inputs, self.w.channels(), what)?;
        let (m, cin) = (self.w.rows(), self.w.channels());
        let y = super::profile::timed(
            || format!("convT  image    {cin}x{m}x{nb} k4 s2 @{h}x{w}"),
            2.0 * (16 * m * cin * nb * h * w) as f64,
            || {
                let bias = self.bias.as_deref();
                image_conv_transpose::conv_t(
                    &parts,
                    nb,
                    (h, w),
                    &self.w,
                    bias,
                    self.relu,
                    self.tanh,
                )
            },
        );
        Ok((CpuStorage::F32(y), Shape::from((nb, m, 2 * h, 2 * w))))
    }
}

super::on_concat_parts!(
    ImageConvTranspose2dOp,
    "pix2pix-conv-transpose2d-image",
    "pix2pix-cat-conv-transpose2d-image"
);

/// A layer's weights per output phase, in the precision it runs in.
enum PhaseWeightsOf {
    F32(Arc<PhaseWeights>),
    Bf16(Arc<Bf16PhaseWeights>),
}

/// The U-Net's transposed convolution by output phases on the channel tiles
/// ([`phase_conv_transpose`]), on one input or on the skip concatenation's two parts read in
/// place, rectified as read when asked (forward only: frozen).
struct PhaseConvTranspose2dOp {
    w: PhaseWeightsOf,
    bias: Option<Vec<f32>>,
    relu: bool,
}

impl PhaseConvTranspose2dOp {
    fn run(&self, inputs: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
        const WHAT: &str = "conv_transpose2d (phases)";
        type Suits = fn(usize, usize, (usize, usize), (usize, usize), bool) -> bool;
        let (m, cin, form, suits): (_, _, _, Suits) = match &self.w {
            PhaseWeightsOf::F32(w) => {
                (w.rows(), w.channels(), "phases ", phase_conv_transpose::suits)
            }
            PhaseWeightsOf::Bf16(w) => {
                (w.rows(), w.channels(), "bf16 ph", bf16_channels::suits_transposed)
            }
        };
        let (parts, (nb, h, w)) = concat_parts(inputs, cin, WHAT)?;
        if !suits(cin, m, (4, 4), (h, w), true) {
            candle_core::bail!("{WHAT}: input {h}x{w} does not suit the kernel")
        }
        let y = super::profile::timed(
            || format!("convT  {form}  {cin}x{m}x{nb} k4 s2 @{h}x{w}"),
            2.0 * (16 * m * cin * nb * h * w) as f64,
            || {
                let bias = self.bias.as_deref();
                match &self.w {
                    PhaseWeightsOf::F32(wt) => phase_conv_transpose::conv_t(
                        &parts,
                        nb,
                        (h, w),
                        (m, cin),
                        |p, b| wt.phases[p].block(b),
                        bias,
                        self.relu,
                    ),
                    PhaseWeightsOf::Bf16(wt) => {
                        bf16_channels::conv_t(&parts, nb, (h, w), wt, bias, self.relu)
                    }
                }
            },
        );
        Ok((CpuStorage::F32(y), Shape::from((nb, m, 2 * h, 2 * w))))
    }
}

super::on_concat_parts!(
    PhaseConvTranspose2dOp,
    "pix2pix-conv-transpose2d-phases",
    "pix2pix-cat-conv-transpose2d-phases"
);

/// The transposed convolution on `(cout, kh, kw, cin)` weights, plus bias (forward only:
/// frozen).
struct RowMajorOp(ConvTranspose2dOp, Option<Vec<f32>>);

impl CustomOp2 for RowMajorOp {
    fn name(&self) -> &'static str {
        "pix2pix-conv-transpose2d-frozen"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0.forward_on(s1, l1, s2, l2, true, self.1.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    #[test]
    fn live_taps_are_the_taps_that_read_the_input() {
        // The U-Net's innermost level at 256²: conv 2×2 → 1×1, transposed 1×1 → 2×2.
        assert_eq!(live_taps(2, 4, 2, 1, 1, false), Some((1, 3)));
        assert_eq!(live_taps(1, 4, 2, 1, 2, true), Some((1, 3)));
        // One level out every tap reads something: no window.
        assert_eq!(live_taps(4, 4, 2, 1, 2, false), None);
        assert_eq!(live_taps(2, 4, 2, 1, 4, true), None);
        // A 3×3 kernel (padding 1) on a 1×1 input: only the centre.
        assert_eq!(live_taps(1, 3, 1, 1, 1, false), Some((1, 2)));
        // Against the definition: a window exactly when taps are dead, never dropping a live one.
        for (n, k, s, pad) in [(1, 3, 2, 1), (2, 4, 2, 1), (3, 3, 1, 1), (1, 5, 1, 2), (3, 3, 2, 0)]
        {
            let out = (n + 2 * pad - k) / s + 1;
            let live = |t: usize| (0..out).any(|o| (0..n).any(|i| o * s + t == i + pad));
            let want: Vec<usize> = (0..k).filter(|&t| live(t)).collect();
            match live_taps(n, k, s, pad, out, false) {
                Some((t0, t1)) => {
                    assert_eq!((t0..t1).collect::<Vec<_>>(), want, "{n} {k} {s} {pad}")
                }
                None => assert_eq!(want.len(), k, "{n} {k} {s} {pad}: dead taps kept"),
            }
        }
    }

    /// Frozen layers on grids where their windows are trimmed, against candle's own ops on the
    /// whole kernels.
    #[test]
    fn trimmed_layers_match_the_whole_kernels() -> Result<()> {
        let dev = Device::Cpu;
        let vals = |n: usize, s: f32| crate::kernels::mat::test_values(n, s);
        let cfg = candle_nn::Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
        let (w, b) = (vals(6 * 5 * 16, 60.0), vals(6, 9.0));
        let w = Tensor::from_vec(w, (6, 5, 4, 4), &dev)?;
        let b = Tensor::from_vec(b, 6, &dev)?;
        let x = Tensor::from_vec(vals(2 * 5 * 4, 30.0), (2, 5, 2, 2), &dev)?;
        let whole = x.conv2d(&w, 1, 2, 1, 1)?.broadcast_add(&b.reshape((1, 6, 1, 1))?)?;
        let layer = Conv2d::new(candle_nn::Conv2d::new(w, Some(b), cfg));
        let got = layer.forward(&x)?;
        let err = (got - whole)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-5, "trimmed conv: error {err}");
        assert_eq!(layer.trimmed.0.lock().map(|t| t.len()).unwrap_or(0), 1, "conv not trimmed");

        let cfg = candle_nn::ConvTranspose2dConfig { padding: 1, stride: 2, ..Default::default() };
        let (w, b) = (vals(5 * 6 * 16, 60.0), vals(6, 9.0));
        let w = Tensor::from_vec(w, (5, 6, 4, 4), &dev)?;
        let b = Tensor::from_vec(b, 6, &dev)?;
        let x = Tensor::from_vec(vals(2 * 5, 30.0), (2, 5, 1, 1), &dev)?;
        let whole = candle_nn::ConvTranspose2d::new(w.clone(), Some(b.clone()), cfg);
        let whole = super::super::with_mode(super::super::Mode::Candle, || whole.forward(&x))?;
        let layer = ConvTranspose2d::new(candle_nn::ConvTranspose2d::new(w, Some(b), cfg));
        let got = layer.forward(&x)?;
        assert_eq!(got.dims(), whole.dims());
        let err = (got - whole)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-5, "trimmed transposed conv: error {err}");
        assert_eq!(layer.trimmed.0.lock().map(|t| t.len()).unwrap_or(0), 1, "convT not trimmed");
        Ok(())
    }
}
