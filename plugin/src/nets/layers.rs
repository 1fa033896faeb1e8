//! The building blocks shared by the networks: a `Sequential` whose child indices are the
//! checkpoint's key indices (as PyTorch's `nn.Sequential`), its entries, and the constructors of
//! the reference's convolution layers.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

pub use crate::nets::forward::{Forward, Layer, NormStats, Run};
use crate::nets::norm::{Norm, NormKind};

/// One entry of a [`Sequential`]; parameter-free entries still take an index, as in PyTorch.
pub enum Op {
    Conv(crate::kernels::Conv2d),
    ConvTranspose(crate::kernels::ConvTranspose2d),
    Norm(Norm),
    ReLU,
    LeakyReLU(f64),
    Tanh,
    Dropout(f32),
    ReflectionPad(usize),
    Block(Box<dyn Layer + Send + Sync>),
}

impl Layer for Op {
    fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        // The element-wise entries are timed here, as the kernels time the convolutions'
        // parts, so that the profile (`PIX2PIX_KERNELS_PROFILE=1`) accounts for a whole pass.
        let what = match self {
            Op::Norm(_) => "norm",
            Op::ReLU | Op::LeakyReLU(_) => "relu",
            Op::Tanh => "tanh",
            Op::Dropout(_) => "dropout",
            Op::ReflectionPad(_) => "pad",
            Op::Conv(_) | Op::ConvTranspose(_) | Op::Block(_) => return self.apply(x, f),
        };
        crate::kernels::timed(|| format!("{what:<6} {:?}", x.dims()), 0.0, || self.apply(x, f))
    }
}

impl Op {
    fn apply(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        match self {
            Op::Conv(c) => c.forward(x),
            Op::ConvTranspose(c) => c.forward(x),
            Op::Norm(n) => n.forward(x, f),
            Op::ReLU => crate::kernels::leaky_relu(x, 0.0),
            Op::LeakyReLU(slope) => crate::kernels::leaky_relu(x, *slope),
            Op::Tanh => crate::kernels::tanh(x),
            Op::Dropout(p) => match f.dropout_mask(x, *p)? {
                Some(mask) => x * mask,
                None => Ok(x.clone()),
            },
            Op::ReflectionPad(p) => reflection_pad2d(x, *p),
            Op::Block(b) => b.forward(x, f),
        }
    }
}

/// PyTorch's `nn.Sequential`: child `i` reads its tensors under `<prefix>.<i>.`.
pub struct Sequential {
    ops: Vec<Op>,
}

impl Layer for Sequential {
    fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        let mut x = x.clone();
        let mut i = 0;
        while i < self.ops.len() {
            // A frozen strided convolution after LeakyReLU (the U-Net's down path) applies it
            // as it reads its input.
            if let (Op::LeakyReLU(slope), Some(Op::Conv(c))) = (&self.ops[i], self.ops.get(i + 1)) {
                if c.takes_activation(&x) {
                    x = c.forward_with(&x, Some(*slope as f32))?;
                    i += 2;
                    continue;
                }
            }
            // A skip block followed by ReLU (the U-Net's up path) hands over its concatenation's
            // parts: rectified as they are concatenated, in one pass, or read in place by the
            // transposed convolution after them.
            if let (Op::Block(b), Some(Op::ReLU)) = (&self.ops[i], self.ops.get(i + 1)) {
                if let Some((a, y)) = b.forward_parts(&x, f)? {
                    (x, i) = match self.ops.get(i + 2) {
                        Some(Op::ConvTranspose(c)) => {
                            // The U-Net's output layer applies the tanh after it too, where it
                            // can.
                            let tanh = matches!(self.ops.get(i + 3), Some(Op::Tanh));
                            let (x, applied) = c.forward_cat_relu(&a, &y, tanh)?;
                            (x, i + 3 + applied as usize)
                        }
                        _ => (crate::kernels::cat_relu(&a, &y)?, i + 2),
                    };
                    continue;
                }
            }
            x = x.run(&self.ops[i], f)?;
            i += 1;
        }
        Ok(x)
    }

    fn fold_running_norms(&mut self) -> Result<()> {
        let mut ops = Vec::with_capacity(self.ops.len());
        let mut rest = std::mem::take(&mut self.ops).into_iter().peekable();
        while let Some(op) = rest.next() {
            let affine = match rest.peek() {
                Some(Op::Norm(n)) => n.running_affine()?,
                _ => None,
            };
            let (op, folded) = match (op, affine) {
                (Op::Conv(c), Some(a)) => (Op::Conv(c.folded(&a)?), true),
                (Op::ConvTranspose(c), Some(a)) => (Op::ConvTranspose(c.folded(&a)?), true),
                (Op::Block(mut b), _) => {
                    b.fold_running_norms()?;
                    (Op::Block(b), false)
                }
                (op, _) => (op, false),
            };
            ops.push(op);
            if folded {
                rest.next(); // the norm, now in the convolution
            }
        }
        self.ops = ops;
        Ok(())
    }
}

/// Builds a [`Sequential`], giving each child the `VarBuilder` of its index.
pub struct SequentialBuilder<'a> {
    vb: VarBuilder<'a>,
    ops: Vec<Op>,
}

impl<'a> SequentialBuilder<'a> {
    pub fn new(vb: VarBuilder<'a>) -> Self {
        Self { vb, ops: Vec::new() }
    }
    /// Adds a child built from the `VarBuilder` at its index (`nn.Sequential`'s word, not `+`).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, build: impl FnOnce(VarBuilder<'a>) -> Result<Op>) -> Result<Self> {
        let vb = self.vb.pp(self.ops.len());
        self.ops.push(build(vb)?);
        Ok(self)
    }
    /// Adds a parameter-free child.
    pub fn push(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
    /// Adds the norm layer for `c` channels, unless `norm = none` (which takes no index).
    pub fn add_norm(self, norm: NormKind, c: usize) -> Result<Self> {
        match norm.layer(c) {
            Some(build) => self.add(|vb| Ok(Op::Norm(build(vb)?))),
            None => Ok(self),
        }
    }
    pub fn push_if(self, cond: bool, op: Op) -> Self {
        if cond {
            self.push(op)
        } else {
            self
        }
    }
    pub fn build(self) -> Sequential {
        Sequential { ops: self.ops }
    }
}

/// `nn.Conv2d(cin, cout, k, stride, padding, bias)`.
pub fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    bias: bool,
) -> impl FnOnce(VarBuilder) -> Result<Op> {
    move |vb| {
        let cfg = candle_nn::Conv2dConfig { padding, stride, ..Default::default() };
        let c = if bias {
            candle_nn::conv2d(cin, cout, k, cfg, vb)?
        } else {
            candle_nn::conv2d_no_bias(cin, cout, k, cfg, vb)?
        };
        Ok(Op::Conv(crate::kernels::Conv2d::new(c)))
    }
}

/// `nn.ConvTranspose2d(cin, cout, k, stride, padding, output_padding, bias)`.
pub fn conv_transpose(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    output_padding: usize,
    bias: bool,
) -> impl FnOnce(VarBuilder) -> Result<Op> {
    move |vb| {
        let cfg = candle_nn::ConvTranspose2dConfig { padding, output_padding, stride, dilation: 1 };
        let c = if bias {
            candle_nn::conv_transpose2d(cin, cout, k, cfg, vb)?
        } else {
            candle_nn::conv_transpose2d_no_bias(cin, cout, k, cfg, vb)?
        };
        Ok(Op::ConvTranspose(crate::kernels::ConvTranspose2d::new(c)))
    }
}

/// `nn.ReflectionPad2d(p)` on NCHW, as index gathers so that it has a gradient.
pub fn reflection_pad2d(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 0 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4()?;
    if p >= h || p >= w {
        candle_core::bail!("reflection padding {p} needs a spatial size above it, got {h}x{w}");
    }
    let idx = |n: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..n + 2 * p)
            .map(|i| {
                let i = i as i64 - p as i64;
                let r = if i < 0 {
                    -i
                } else if i >= n as i64 {
                    2 * (n as i64 - 1) - i
                } else {
                    i
                };
                r as u32
            })
            .collect();
        Tensor::from_vec(v, n + 2 * p, x.device())
    };
    x.index_select(&idx(h)?, D::Minus2)?.index_select(&idx(w)?, D::Minus1)
}
