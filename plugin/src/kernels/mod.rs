//! Entry points for the CPU kernels, so that faster paths can replace candle's without touching
//! the networks.
//!
//! candle's CPU `conv_transpose2d` is a scalar loop over every output pixel, and its conv2d
//! backward goes through it (input gradient) and through a conv2d with the whole output
//! gradient as kernel (weight gradient). The fast path here runs every convolution, forward and
//! backward, as im2col/col2im around one `gemm` call per layer (per batch item on large grids),
//! as candle custom ops with their own backward; frozen transposed-convolution weights are
//! re-laid out for the product ([`ConvTranspose2d`]); normalisation and (Leaky)ReLU are fused
//! parallel passes (`norm`, `activation`).
//!
//! `PIX2PIX_KERNELS=candle` (or [`set_mode`], or [`with_mode`] for one thread) selects candle's
//! own ops instead, for comparison; the default is `fast`. Tensors that aren't f32 on the CPU
//! always take candle's ops.

mod activation;
pub mod amx;
mod amx_conv;
mod amx_conv_transpose;
mod bf16;
mod bf16_channels;
mod bf16_ops;
mod bias;
mod block_cache;
mod col2im_stride2;
mod conv2d;
mod conv_transpose;
mod direct;
mod direct_channels;
mod dot_tiles;
mod frozen;
mod gemm;
mod im2col;
mod image_conv_transpose;
pub mod isa;
mod mat;
mod norm;
mod output;
mod phase_conv_transpose;
mod profile;
mod scratch;
mod single_channel;
mod small_gemm;
// The unit tests' "skipped" / "passed" lines: a test helper kept with the tests (the library's
// own source prints nothing), shared with the integration tests as `common::test_report`.
#[cfg(test)]
#[path = "../../tests/common/test_report.rs"]
pub(crate) mod test_report;
mod weight_grad;
mod weight_grad_channels;

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{CpuStorage, DType, Layout, Module, Result, Tensor};

pub use activation::{CatReluOp, LeakyReluOp, TanhOp};
#[doc(hidden)]
pub use bf16::{bench_sgemm_bf16, Bf16Weights};
pub use bf16::{
    effective as effective_precision, from_bf16, precision, set_precision, to_bf16, with_precision,
    Precision,
};
pub use block_cache::BlockCache;
pub use conv2d::{column_floats, Conv2dOp};
#[doc(hidden)]
pub use conv2d::{BenchConv, ConvPath};
pub use conv_transpose::ConvTranspose2dOp;
pub use frozen::{Conv2d, ConvTranspose2d};
#[doc(hidden)]
pub use gemm::{bench_sgemm, Path as GemmPath};
pub use isa::Isa;
pub use norm::{Groups, MomentsOp, NormAffineOp};
pub use profile::take_report as take_profile;
pub(crate) use profile::timed;
pub use weight_grad::WeightGradOp;
pub use weight_grad_channels::bench as bench_channel_weight_grad;

/// Which implementation the convolutions run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// candle's own conv2d / conv_transpose2d (the reference).
    Candle,
    /// The gemm-based custom ops of this module.
    Fast,
}

const UNSET: u8 = 0;
static MODE: AtomicU8 = AtomicU8::new(UNSET);

fn encode(m: Mode) -> u8 {
    match m {
        Mode::Candle => 1,
        Mode::Fast => 2,
    }
}

thread_local! {
    static THREAD_MODE: std::cell::Cell<Option<Mode>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with this thread's ops dispatched in mode `m` (ops dispatch on the calling thread;
/// only their insides run on rayon's), leaving other threads as they are.
pub fn with_mode<R>(m: Mode, f: impl FnOnce() -> R) -> R {
    let before = THREAD_MODE.with(|c| c.replace(Some(m)));
    struct Restore(Option<Mode>);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREAD_MODE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// Runs `f` on a worker of the library's rayon pool, with this thread's kernel settings
/// ([`with_mode`], [`with_precision`]); in place when already on a worker of any pool.
///
/// The kernels split each op's work with rayon. From a thread outside the pool every such
/// split is injected into the pool and the caller sleeps until a worker finishes it: two
/// thread wake-ups per op, hundreds per forward pass. From a worker the split is a local
/// work-stealing deque. Measured on a 2-core AVX-512 VM (`PIX2PIX_BENCH=infer|step
/// PIX2PIX_BENCH_NGF=32 cargo bench -p pix2pix --bench kernels`, 3 interleaved runs each):
/// ngf-32 forward 18.6–19.4 → 18.1–18.5 ms, training step 186–193 → 174–176 ms.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let (mode, precision) = (THREAD_MODE.with(|c| c.get()), bf16::thread_precision());
    rayon::scope(|_| {
        let f = || match precision {
            Some(p) => with_precision(p, f),
            None => f(),
        };
        match mode {
            Some(m) => with_mode(m, f),
            None => f(),
        }
    })
}

/// [`on_pool`], but on the calling thread when `first` (a model's first translation, a
/// trainer's first step). Those make what is kept for good: layers' weights re-laid out and
/// packed on first use, the optimisers' moments. Made on a pool worker it would sit in that
/// worker's malloc arena, where (glibc) every later pass's large buffers then no longer fit the
/// arena's first heap: a heap mapped and unmapped per pass, its pages faulted in afresh each
/// time. bf16 ngf-32 translation at batch 1 (kernels bench): 13.7–13.9 → 11.6–11.8 ms, page
/// faults 2.2 K → 0.6 K; f32 unchanged; ngf-32 training step at batch 1, 3 interleaved runs:
/// minima 162–167 → 158–160 ms.
///
/// From the second on, freed large blocks are kept for reuse ([`BlockCache`]), and each call
/// ends a pass (the cache shrinks to its peak in use).
pub fn on_pool_after_first<R: Send>(first: bool, f: impl FnOnce() -> R + Send) -> R {
    match first {
        true => f(),
        false => {
            block_cache::enable();
            let r = on_pool(f);
            block_cache::end_pass();
            r
        }
    }
}

/// Frees what the kernels keep between calls: scratch buffers and cached large blocks (after
/// a large batch, say); the next kernels allocate afresh.
pub fn release_scratch() {
    scratch::release();
    block_cache::release();
}

/// The current mode: [`with_mode`]'s on this thread, else [`set_mode`]'s, else
/// `PIX2PIX_KERNELS` (`candle` | `fast`), else fast.
pub fn mode() -> Mode {
    if let Some(m) = THREAD_MODE.with(|c| c.get()) {
        return m;
    }
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Candle,
        2 => Mode::Fast,
        _ => {
            let m = match std::env::var("PIX2PIX_KERNELS").as_deref() {
                Ok("candle") => Mode::Candle,
                _ => Mode::Fast,
            };
            // Keep a concurrent set_mode's choice if it came first.
            let _ = MODE.compare_exchange(UNSET, encode(m), Ordering::Relaxed, Ordering::Relaxed);
            mode()
        }
    }
}

/// Overrides `PIX2PIX_KERNELS` for the whole process (benchmarks and tests compare both).
pub fn set_mode(m: Mode) {
    MODE.store(encode(m), Ordering::Relaxed);
}

pub(crate) fn fast_for(x: &Tensor, w: &Tensor) -> bool {
    mode() == Mode::Fast
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
}

/// `f` on the f32 values of `t` (on the CPU, contiguous), read in place.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("pix2pix kernels: tensor not on the CPU")
    };
    Ok(f(contiguous_f32(cpu, layout)?))
}

fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        None => Ok(y),
        Some(b) if fast_for(&y, b) && y.rank() == 4 => y.apply_op2(&b.contiguous()?, bias::BiasOp),
        Some(b) => {
            let c = b.dims1()?;
            y.broadcast_add(&b.reshape((1, c, 1, 1))?)
        }
    }
}

/// `nn.Conv2d` (groups 1 on the fast path).
pub fn conv2d(x: &Tensor, layer: &candle_nn::Conv2d) -> Result<Tensor> {
    conv2d_with(x, layer, None)
}

/// [`conv2d`] of `leaky_relu(x, act)` when `act` is a slope, the activation applied as the
/// layer reads its input (and its gradient in the layer's backward).
pub fn conv2d_with(x: &Tensor, layer: &candle_nn::Conv2d, act: Option<f32>) -> Result<Tensor> {
    let cfg = layer.config();
    if !fast_for(x, layer.weight()) || cfg.groups != 1 {
        return match act {
            Some(slope) => layer.forward(&leaky_relu(x, slope as f64)?),
            None => layer.forward(x),
        };
    }
    let (stride, padding, dilation) = (cfg.stride, cfg.padding, cfg.dilation);
    let op = Conv2dOp { stride, padding, dilation, act };
    let y = x.contiguous()?.apply_op2(&layer.weight().contiguous()?, op)?;
    add_bias(y, layer.bias())
}

/// Transposed convolution as `nn.ConvTranspose2d`.
pub fn conv_transpose2d(x: &Tensor, layer: &candle_nn::ConvTranspose2d) -> Result<Tensor> {
    let cfg = layer.config();
    if !fast_for(x, layer.weight()) {
        return layer.forward(x);
    }
    let op = ConvTranspose2dOp {
        stride: cfg.stride,
        padding: cfg.padding,
        dilation: cfg.dilation,
        output_padding: (cfg.output_padding, cfg.output_padding),
    };
    let y = x.contiguous()?.apply_op2(&layer.weight().contiguous()?, op)?;
    add_bias(y, layer.bias())
}

/// `nn.LeakyReLU(slope)` (`nn.ReLU` for 0), with PyTorch's gradient.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if !fast_for(x, x) {
        return if slope == 0.0 { x.relu() } else { candle_nn::ops::leaky_relu(x, slope) };
    }
    x.contiguous()?.apply_op1(LeakyReluOp { slope: slope as f32 })
}

/// `relu(cat([a, b], 1))` of two 4-d tensors, in one pass, with the same values and gradients
/// as [`leaky_relu`]`(cat, 0)`.
pub fn cat_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    timed(
        || format!("cat+relu {:?}", a.dims()),
        0.0,
        || {
            if !fast_for(a, b) || a.rank() != 4 || b.rank() != 4 {
                return leaky_relu(&Tensor::cat(&[a, b], 1)?, 0.0);
            }
            a.contiguous()?.apply_op2(&b.contiguous()?, CatReluOp)
        },
    )
}

/// `tanh` (within an ulp of the exact value) with candle's gradient, on all threads.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    if !fast_for(x, x) {
        return x.tanh();
    }
    x.contiguous()?.apply_op1(TanhOp)
}

/// Batches go through one gemm (weights read once, at the price of a transposing copy) when
/// grids are this small; larger grids run a gemm per batch item straight on NCHW.
const MERGE_BELOW: usize = 1024;

fn batch_merge(nb: usize, grid: usize) -> bool {
    nb > 1 && grid < MERGE_BELOW
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!(
            "pix2pix kernels take contiguous tensors, got strides {:?}",
            l.stride()
        ),
    }
}

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

/// `CustomOp1` (one input) and `CustomOp2` (the skip concatenation's two parts, read in place)
/// for an op whose `run(&self, inputs: &[(&CpuStorage, &Layout)])` takes either.
macro_rules! on_concat_parts {
    ($op:ty, $one:literal, $two:literal) => {
        impl candle_core::CustomOp1 for $op {
            fn name(&self) -> &'static str {
                $one
            }

            fn cpu_fwd(
                &self,
                s: &candle_core::CpuStorage,
                l: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                self.run(&[(s, l)])
            }
        }

        impl candle_core::CustomOp2 for $op {
            fn name(&self) -> &'static str {
                $two
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                self.run(&[(s1, l1), (s2, l2)])
            }
        }
    };
}
use on_concat_parts;

/// Parts of a concatenation along channels, `(data, channels)` each, and the `(images, height,
/// width)` they share.
type Parts<'a> = (Vec<(&'a [f32], usize)>, (usize, usize, usize));

/// The inputs of an op that reads the U-Net's skip concatenation in place (`inputs`: one tensor,
/// or the concatenation's parts along channels): `(data, channels)` each, and the `(images,
/// height, width)` they share, checked against the `channels` the op's kernel takes. `what`
/// names the op in errors.
fn concat_parts<'a>(
    inputs: &[(&'a CpuStorage, &Layout)],
    channels: usize,
    what: &str,
) -> Result<Parts<'a>> {
    let mut parts = Vec::with_capacity(inputs.len());
    let mut shared = None;
    for &(s, l) in inputs {
        let (nb, c, h, w) = dims4(l)?;
        if shared.is_some_and(|d| d != (nb, h, w)) {
            let dims: Vec<_> = inputs.iter().map(|(_, l)| l.dims()).collect();
            candle_core::bail!("{what}: cannot concatenate {dims:?} along channels")
        }
        shared = Some((nb, h, w));
        parts.push((contiguous_f32(s, l)?, c));
    }
    let Some(shared) = shared else { candle_core::bail!("{what}: no input") };
    let cin = parts.iter().map(|p| p.1).sum::<usize>();
    if cin != channels {
        candle_core::bail!("{what}: input has {cin} channels, kernel expects {channels}")
    }
    Ok((parts, shared))
}

/// For each channel of the concatenation of `parts` (`(data, channels)` each) along channels:
/// `(part, its channel)`.
fn part_channels(parts: &[(&[f32], usize)]) -> Vec<(usize, usize)> {
    parts.iter().enumerate().flat_map(|(i, p)| (0..p.1).map(move |cc| (i, cc))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The concatenation's parts come back in order with their channels; parts that disagree
    /// on images or size, or a channel count the kernel does not take, are errors naming the op.
    #[test]
    fn concat_parts_checks_what_the_parts_share() {
        let t = |c: usize, h: usize| CpuStorage::F32(vec![c as f32; 2 * c * h * 3]);
        let (a, b, odd) = (t(2, 4), t(3, 4), t(3, 5));
        let (la, lb, lodd) = (
            Layout::contiguous((2, 2, 4, 3)),
            Layout::contiguous((2, 3, 4, 3)),
            Layout::contiguous((2, 3, 5, 3)),
        );
        let (parts, dims) = concat_parts(&[(&a, &la), (&b, &lb)], 5, "op").unwrap();
        assert_eq!(dims, (2, 4, 3));
        assert_eq!(parts.iter().map(|p| (p.0[0], p.1)).collect::<Vec<_>>(), [(2.0, 2), (3.0, 3)]);
        let err = concat_parts(&[(&a, &la), (&odd, &lodd)], 5, "op").unwrap_err().to_string();
        assert!(err.contains("op: cannot concatenate"), "{err}");
        let err = concat_parts(&[(&a, &la), (&b, &lb)], 6, "op").unwrap_err().to_string();
        assert!(err.contains("op: input has 5 channels, kernel expects 6"), "{err}");
    }
}
