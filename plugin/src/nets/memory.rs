//! The memory a network needs, from its shape alone (nothing is allocated to find out): a walk
//! through the layers in the order the forward runs them, keeping a tally of the tensors alive
//! at each point (a layer's output is allocated while its input is still held; the input of a
//! U-Net block stays alive for its skip connection; a residual block holds its input for the
//! sum) plus what each kernel allocates while it runs (the im2col / col2im column matrices and
//! the gemm result, `kernels/conv2d.rs`, `kernels/conv_transpose.rs`; the second index gather
//! of a reflection pad; a dropout mask). The kernels keep up to two column buffers between
//! calls (`kernels/scratch.rs`), counted on top as two of the largest.
//!
//! Deliberately pessimistic where the code may take either path: a norm is counted as a layer
//! of its own even when it is folded into the convolution before it, and as needing one
//! temporary of its input's size (candle's unfused path). A test (`estimate_bounds_real_peak`)
//! measures a real forward pass against [`forward_peak`].

use crate::kernels::{self, Precision};
use crate::nets::generator::GeneratorConfig;
use crate::nets::norm::NormKind;
use crate::nets::patchgan::{DiscriminatorConfig, DiscriminatorKind};
use crate::nets::resnet::ResnetConfig;
use crate::nets::unet::UnetConfig;

/// Bytes of one f32.
const F32: u128 = 4;

/// A batch of feature maps: (N, C, H, W).
#[derive(Clone, Copy, Debug)]
struct Maps {
    n: u128,
    c: u128,
    h: u128,
    w: u128,
}

impl Maps {
    fn len(self) -> u128 {
        self.n * self.c * self.h * self.w
    }
    fn with_c(self, c: usize) -> Self {
        Self { c: c as u128, ..self }
    }
}

/// The running tally of a forward pass, in f32 elements.
#[derive(Default)]
struct Tally {
    live: u128,
    peak: u128,
    /// The largest buffer taken from the kernels' scratch pool.
    scratch: u128,
    /// Every tensor allocated (a training step's graph keeps them all for the backward).
    total: u128,
    /// The products' precision (f32 convolutions of the outer layers make their column
    /// matrices a block at a time).
    precision: Precision,
    /// A training step: the weight gradients make whole column matrices.
    training: bool,
}

impl Tally {
    /// One layer: `output` is allocated while `input` and `transient` are alive; afterwards the
    /// input is released unless someone else holds it (`keep`).
    fn layer(&mut self, input: Maps, output: Maps, transient: u128, keep: bool) -> Maps {
        self.peak = self.peak.max(self.live + output.len() + transient);
        self.live += output.len();
        self.total += output.len();
        if !keep {
            self.release(input);
        }
        output
    }
    fn release(&mut self, m: Maps) {
        self.live = self.live.saturating_sub(m.len());
    }
    /// A parameter-free elementwise layer (activation, tanh).
    fn pointwise(&mut self, x: Maps, keep: bool) -> Maps {
        self.layer(x, x, 0, keep)
    }
    fn norm(&mut self, kind: NormKind, x: Maps) -> Maps {
        match kind.is_some() {
            true => self.layer(x, x, x.len(), false),
            false => x,
        }
    }
    /// `nn.Conv2d(x.c, cout, k, stride, pad)`: im2col columns (whole or in blocks,
    /// [`kernels::column_floats`]), the input split into phases (strided) and the gemm result
    /// are scratch.
    fn conv(&mut self, x: Maps, cout: usize, k: u128, stride: u128, pad: u128, keep: bool) -> Maps {
        let side = |n: u128| (n + 2 * pad).saturating_sub(k) / stride + 1;
        let y = Maps { c: cout as u128, h: side(x.h), w: side(x.w), ..x };
        let size = |v: u128| usize::try_from(v).unwrap_or(usize::MAX);
        let (rows, grid, nb) = (size(x.c * k * k), size(y.h * y.w), size(y.n));
        let cols = match self.training {
            true => x.c * k * k * y.n * y.h * y.w,
            false => kernels::column_floats(rows, grid, nb, self.precision) as u128,
        };
        let split = if stride > 1 { x.len() } else { 0 };
        self.scratch = self.scratch.max(cols).max(split).max(y.len());
        self.layer(x, y, cols + split + y.len(), keep)
    }
    /// `nn.ConvTranspose2d(x.c, cout, k, 2, pad, out_pad)`: the column matrix and the permuted
    /// input are scratch.
    fn conv_t(&mut self, x: Maps, cout: usize, k: u128, pad: u128, out_pad: u128) -> Maps {
        let side = |n: u128| ((n.max(1) - 1) * 2 + k + out_pad).saturating_sub(2 * pad);
        let y = Maps { c: cout as u128, h: side(x.h), w: side(x.w), ..x };
        let cols = y.c * k * k * x.n * x.h * x.w;
        self.scratch = self.scratch.max(cols).max(x.len());
        self.layer(x, y, cols + x.len(), false)
    }
    fn reflection_pad(&mut self, x: Maps, p: u128, keep: bool) -> Maps {
        let rows = Maps { h: x.h + 2 * p, ..x };
        let y = Maps { w: x.w + 2 * p, ..rows };
        self.layer(x, y, rows.len(), keep)
    }
    fn dropout(&mut self, x: Maps, active: bool) -> Maps {
        match active {
            true => self.layer(x, x, x.len(), false),
            false => x,
        }
    }
    /// Peak bytes, with the scratch pool's two kept buffers on top.
    fn peak_bytes(&self) -> u128 {
        (self.peak + 2 * self.scratch) * F32
    }
}

/// Peak bytes of a generator's forward pass on a batch of `n` images of `h`×`w` (sides the
/// network takes as they are), besides its weights and the input tensor: the live tensors at
/// the worst point, the kernels' temporaries and their kept scratch. `dropout`: inference
/// dropout is on (its masks cost memory); `precision`: the products'. Saturates instead of
/// overflowing.
pub fn forward_peak(
    config: &GeneratorConfig,
    n: usize,
    h: usize,
    w: usize,
    dropout: bool,
    precision: Precision,
) -> u64 {
    let mut t = Tally { precision, ..Tally::default() };
    walk_generator(&mut t, config, n, h, w, dropout);
    saturate(t.peak_bytes())
}

/// Bytes of a training step of `g` and `d` on a batch of `n` crops of `h`×`w`: weights,
/// gradients and Adam's two moments for both networks, every activation of the generator and
/// of the three discriminator passes (the graph keeps them for the backward) and a gradient
/// of each, plus the largest temporaries.
pub fn train_step_bytes(
    g: &GeneratorConfig,
    g_parameters: u64,
    d: &DiscriminatorConfig,
    d_parameters: u64,
    n: usize,
    h: usize,
    w: usize,
) -> u64 {
    let mut tg = Tally { training: true, ..Tally::default() };
    walk_generator(&mut tg, g, n, h, w, g.dropout());
    let mut td = Tally { training: true, ..Tally::default() };
    walk_discriminator(&mut td, d, n, h, w);
    let (gin, gout) = g.channels();
    let images = (n * (gin + gout) * h * w) as u128;
    let activations = tg.total + 3 * td.total + 3 * images;
    let weights = 4 * (g_parameters as u128 + d_parameters as u128);
    let transient = tg.peak_bytes().max(td.peak_bytes()) / F32;
    saturate((weights + 2 * activations + 2 * transient) * F32)
}

fn saturate(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

fn walk_generator(t: &mut Tally, config: &GeneratorConfig, n: usize, h: usize, w: usize, d: bool) {
    let (cin, _) = config.channels();
    let x = Maps { n: n as u128, c: cin as u128, h: h as u128, w: w as u128 };
    // The input is the caller's: held throughout.
    t.live += x.len();
    t.peak = t.peak.max(t.live);
    match config {
        GeneratorConfig::Unet(c) => {
            unet(t, c, x, d);
        }
        GeneratorConfig::Resnet(c) => {
            resnet(t, c, x, d);
        }
    }
}

/// The U-Net of `nets/unet.rs`, block by block from the outermost.
fn unet(t: &mut Tally, c: &UnetConfig, x: Maps, dropout: bool) -> Maps {
    let ngf = c.ngf;
    // (outer, inner) channels per level, as `UnetGenerator::new` lays them out.
    let mut levels = vec![(c.out_channels, ngf), (ngf, ngf * 2), (ngf * 2, ngf * 4)];
    levels.push((ngf * 4, ngf * 8));
    levels.extend((0..c.num_downs.saturating_sub(5)).map(|_| (ngf * 8, ngf * 8)));
    levels.push((ngf * 8, ngf * 8));
    // Only the ngf·8 blocks between the fourth and the innermost carry dropout.
    let with_dropout = |i: usize| c.dropout && dropout && i >= 4 && i + 1 < levels.len();
    unet_block(t, &levels, 0, x, c.norm, &with_dropout)
}

fn unet_block(
    t: &mut Tally,
    levels: &[(usize, usize)],
    i: usize,
    x: Maps,
    norm: NormKind,
    dropout: &dyn Fn(usize) -> bool,
) -> Maps {
    let (outer, inner) = levels[i];
    if i == 0 {
        let d = t.conv(x, inner, 4, 2, 1, true);
        let s = unet_block(t, levels, 1, d, norm, dropout);
        t.release(d);
        let r = t.pointwise(s, false);
        let y = t.conv_t(r, outer, 4, 1, 0);
        return t.pointwise(y, false);
    }
    // The block's input stays alive for the skip connection.
    let a = t.pointwise(x, true);
    let d = t.conv(a, inner, 4, 2, 1, false);
    let y = if i + 1 == levels.len() {
        let r = t.pointwise(d, false);
        let y = t.conv_t(r, outer, 4, 1, 0);
        t.norm(norm, y)
    } else {
        let d = t.norm(norm, d);
        let s = unet_block(t, levels, i + 1, d, norm, dropout);
        t.release(d);
        let r = t.pointwise(s, false);
        let y = t.conv_t(r, outer, 4, 1, 0);
        let y = t.norm(norm, y);
        t.dropout(y, dropout(i))
    };
    // `cat([x, y])`; y is released after it, x by the caller.
    t.layer(y, y.with_c((x.c + y.c) as usize), 0, false)
}

/// The ResNet generator of `nets/resnet.rs`.
fn resnet(t: &mut Tally, c: &ResnetConfig, x: Maps, dropout: bool) -> Maps {
    let (ngf, norm) = (c.ngf, c.norm);
    let p = t.reflection_pad(x, 3, true);
    let y = t.conv(p, ngf, 7, 1, 0, false);
    let y = t.norm(norm, y);
    let mut y = t.pointwise(y, false);
    for m in [1, 2] {
        y = t.conv(y, ngf * m * 2, 3, 2, 1, false);
        y = t.norm(norm, y);
        y = t.pointwise(y, false);
    }
    for _ in 0..c.n_blocks {
        let b = t.reflection_pad(y, 1, true);
        let b = t.conv(b, ngf * 4, 3, 1, 0, false);
        let b = t.norm(norm, b);
        let b = t.pointwise(b, false);
        let b = t.dropout(b, c.dropout && dropout);
        let b = t.reflection_pad(b, 1, false);
        let b = t.conv(b, ngf * 4, 3, 1, 0, false);
        let b = t.norm(norm, b);
        // `x + block(x)`: the sum, then both operands go.
        let sum = t.layer(b, b, 0, false);
        t.release(y);
        y = sum;
    }
    for m in [4, 2] {
        y = t.conv_t(y, ngf * m / 2, 3, 1, 1);
        y = t.norm(norm, y);
        y = t.pointwise(y, false);
    }
    let y = t.reflection_pad(y, 3, false);
    let y = t.conv(y, c.out_channels, 7, 1, 0, false);
    t.pointwise(y, false)
}

/// The PatchGAN of `nets/patchgan.rs` on (input, output) pairs.
fn walk_discriminator(t: &mut Tally, config: &DiscriminatorConfig, n: usize, h: usize, w: usize) {
    let DiscriminatorConfig { kind, in_channels, ndf, norm } = *config;
    let x = Maps { n: n as u128, c: in_channels as u128, h: h as u128, w: w as u128 };
    t.live += x.len();
    match kind {
        DiscriminatorKind::NLayer(layers) => {
            let y = t.conv(x, ndf, 4, 2, 1, true);
            let mut y = t.pointwise(y, false);
            for i in 1..=layers {
                let mult = (1usize << i.min(3)).min(8);
                let stride = if i < layers { 2 } else { 1 };
                y = t.conv(y, ndf * mult, 4, stride, 1, false);
                y = t.norm(norm, y);
                y = t.pointwise(y, false);
            }
            t.conv(y, 1, 4, 1, 1, false);
        }
        DiscriminatorKind::Pixel => {
            let y = t.conv(x, ndf, 1, 1, 0, true);
            let y = t.pointwise(y, false);
            let y = t.conv(y, ndf * 2, 1, 1, 0, false);
            let y = t.norm(norm, y);
            let y = t.pointwise(y, false);
            t.conv(y, 1, 1, 1, 0, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faces::api::random_generator;
    use crate::nets::forward::{Forward, Layer, NormStats};
    use candle_core::{Device, Tensor};
    use pix2pix_ffi::GeneratorName;

    const CHILD: &str = "PIX2PIX_MEMORY_PEAK_CHILD";
    /// Where the child writes its measurement (a file: the library prints nothing).
    const CHILD_OUT: &str = "PIX2PIX_MEMORY_PEAK_OUT";

    fn networks() -> Vec<(&'static str, GeneratorConfig, usize)> {
        let unet = GeneratorName::Unet { side: 128 };
        let resnet = GeneratorName::Resnet { blocks: 6 };
        vec![
            ("unet_128 batch", GeneratorConfig::named(unet, 8, NormKind::Batch, true), 1024),
            ("unet_128 instance", GeneratorConfig::named(unet, 8, NormKind::Instance, true), 768),
            ("resnet_6blocks", GeneratorConfig::named(resnet, 8, NormKind::Instance, false), 512),
        ]
    }

    fn status_kib(key: &str) -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let line = s.lines().find(|l| l.starts_with(key)).expect(key);
        line[key.len()..].split_whitespace().next().and_then(|v| v.parse().ok()).expect(key)
    }

    /// In the child: one forward pass of network `i` on a `side`² image, its peak resident
    /// memory above what was resident before it (VmHWM − VmRSS), written for the parent.
    fn child(i: usize) {
        let (_, config, side) = networks()[i];
        let g = random_generator(config).expect("generator");
        let f = Forward::infer(NormStats::Batch);
        // A small pass first: thread pools and lazily built kernels are not the estimate's.
        let small = Tensor::zeros((1, 3, 128, 128), candle_core::DType::F32, &Device::Cpu);
        g.forward(&small.expect("small"), &f).expect("small forward");
        crate::kernels::release_scratch();
        let x = Tensor::rand(-1f32, 1f32, (1, 3, side, side), &Device::Cpu).expect("input");
        let before = status_kib("VmRSS:");
        let y = g.forward(&x, &f).expect("forward");
        let peak = status_kib("VmHWM:");
        drop(y);
        let out = std::env::var(CHILD_OUT).expect("output path");
        std::fs::write(out, ((peak.saturating_sub(before)) * 1024).to_string())
            .expect("write peak");
    }

    /// The estimate bounds the real peak, measured in a fresh process by the kernel's own
    /// count of resident memory (independent of the estimate's bookkeeping), and is not
    /// uselessly loose (within 4× of it).
    #[test]
    fn estimate_bounds_real_peak() {
        if let Ok(i) = std::env::var(CHILD) {
            return child(i.parse().expect("child index"));
        }
        let exe = std::env::current_exe().expect("test executable");
        let dir = std::env::temp_dir().join(format!("pix2pix-memory-peak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (i, (name, config, side)) in networks().into_iter().enumerate() {
            let peak_file = dir.join(format!("peak-{i}"));
            let out = std::process::Command::new(&exe)
                .args(["nets::memory::tests::estimate_bounds_real_peak", "--exact", "--nocapture"])
                .args(["--test-threads", "1"])
                .env(CHILD, i.to_string())
                .env(CHILD_OUT, &peak_file)
                .output()
                .expect("child");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{name}: child failed: {text}");
            let measured: u64 = std::fs::read_to_string(&peak_file)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name}: no peak written ({text})"));
            let estimate = forward_peak(&config, 1, side, side, false, Precision::F32);
            assert!(
                measured <= estimate && estimate <= 4 * measured,
                "{name} at {side}²: measured peak {measured} bytes, estimate {estimate}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn estimates_grow_with_the_request_and_saturate() {
        let unet =
            GeneratorConfig::named(GeneratorName::Unet { side: 256 }, 64, NormKind::Batch, true);
        let small = forward_peak(&unet, 1, 256, 256, false, Precision::F32);
        assert!(small < forward_peak(&unet, 1, 512, 512, false, Precision::F32));
        assert!(small < forward_peak(&unet, 2, 256, 256, false, Precision::F32));
        let huge = GeneratorConfig::named(
            GeneratorName::Unet { side: 256 },
            1 << 40,
            NormKind::Batch,
            true,
        );
        assert_eq!(forward_peak(&huge, 1 << 20, 1 << 30, 1 << 30, false, Precision::F32), u64::MAX);
    }
}
