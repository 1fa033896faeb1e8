//! The U-Net generator of pix2pix.
//!
//! Isola, Zhu, Zhou, Efros, "Image-to-Image Translation with Conditional Adversarial Networks",
//! CVPR 2017, §3.2.1 and appendix 6.1.1: an encoder-decoder of 4×4 stride-2 convolutions with
//! skip connections between each layer i and layer n−i, built recursively from the innermost
//! block outwards as the PyTorch release does, so tensor names match its checkpoints
//! (`model.model.1.model.3.weight`, …).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::nets::layers::{
    conv, conv_transpose, Forward, Layer, Op, Run, Sequential, SequentialBuilder,
};
use crate::nets::norm::NormKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Number of downsamplings: 8 for `unet_256`, 7 for `unet_128`.
    pub num_downs: usize,
    pub ngf: usize,
    pub norm: NormKind,
    /// Dropout(0.5) in the intermediate ngf·8 blocks (the paper's noise source).
    pub dropout: bool,
}

impl UnetConfig {
    /// The smallest input side the network accepts; inputs must be multiples of it.
    pub fn stride(&self) -> usize {
        1 << self.num_downs
    }
}

/// `UnetSkipConnectionBlock`: `down → sub-block → up`, its input concatenated to its output
/// except in the outermost block.
pub struct UnetBlock {
    model: Sequential,
    outermost: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Outermost,
    Intermediate { dropout: bool },
    Innermost,
}

/// Channel widths of one block: `outer` at its input and output, `inner` inside it.
struct Level {
    outer: usize,
    inner: usize,
    input: usize,
    position: Position,
}

impl UnetBlock {
    fn new(levels: &[Level], norm: NormKind, vb: VarBuilder) -> Result<Self> {
        let Some((level, rest)) = levels.split_first() else {
            candle_core::bail!("a U-Net needs at least one level")
        };
        let Level { outer, inner, input, position } = *level;
        let bias = norm.conv_bias();
        let down = conv(input, inner, 4, 2, 1, bias);
        let sub = |vb| -> Result<Op> { Ok(Op::Block(Box::new(UnetBlock::new(rest, norm, vb)?))) };
        let seq = SequentialBuilder::new(vb.pp("model"));
        let model = match position {
            Position::Outermost => seq
                .add(down)?
                .add(sub)?
                .push(Op::ReLU)
                .add(conv_transpose(inner * 2, outer, 4, 2, 1, 0, true))?
                .push(Op::Tanh),
            Position::Innermost => {
                let seq = seq
                    .push(Op::LeakyReLU(0.2))
                    .add(down)?
                    .push(Op::ReLU)
                    .add(conv_transpose(inner, outer, 4, 2, 1, 0, bias))?;
                seq.add_norm(norm, outer)?
            }
            Position::Intermediate { dropout } => seq
                .push(Op::LeakyReLU(0.2))
                .add(down)?
                .add_norm(norm, inner)?
                .add(sub)?
                .push(Op::ReLU)
                .add(conv_transpose(inner * 2, outer, 4, 2, 1, 0, bias))?
                .add_norm(norm, outer)?
                .push_if(dropout, Op::Dropout(0.5)),
        };
        Ok(Self { model: model.build(), outermost: position == Position::Outermost })
    }
}

impl Layer for UnetBlock {
    fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        let y = x.run(&self.model, f)?;
        if self.outermost {
            Ok(y)
        } else {
            crate::kernels::timed(
                || format!("cat    {:?}", x.dims()),
                0.0,
                || Tensor::cat(&[x, &y], 1),
            )
        }
    }

    /// The skip concatenation's two parts, for the parent's `ReLU` and transposed convolution
    /// to read in place.
    fn forward_parts(&self, x: &Tensor, f: &Forward) -> Result<Option<(Tensor, Tensor)>> {
        if self.outermost {
            return Ok(None);
        }
        Ok(Some((x.clone(), x.run(&self.model, f)?)))
    }

    fn fold_running_norms(&mut self) -> Result<()> {
        self.model.fold_running_norms()
    }
}

pub struct UnetGenerator {
    model: UnetBlock,
    pub config: UnetConfig,
}

impl UnetGenerator {
    pub fn new(config: UnetConfig, vb: VarBuilder) -> Result<Self> {
        let UnetConfig { in_channels, out_channels, num_downs, ngf, norm, dropout } = config;
        if num_downs < 5 {
            candle_core::bail!("a U-Net generator needs at least 5 downsamplings, got {num_downs}");
        }
        let level = |outer, inner, position| Level { outer, inner, input: outer, position };
        let mut levels = vec![
            Level {
                outer: out_channels,
                inner: ngf,
                input: in_channels,
                position: Position::Outermost,
            },
            level(ngf, ngf * 2, Position::Intermediate { dropout: false }),
            level(ngf * 2, ngf * 4, Position::Intermediate { dropout: false }),
            level(ngf * 4, ngf * 8, Position::Intermediate { dropout: false }),
        ];
        levels.extend(
            (0..num_downs - 5).map(|_| level(ngf * 8, ngf * 8, Position::Intermediate { dropout })),
        );
        levels.push(level(ngf * 8, ngf * 8, Position::Innermost));
        Ok(Self { model: UnetBlock::new(&levels, norm, vb.pp("model"))?, config })
    }
}

impl Layer for UnetGenerator {
    fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        x.run(&self.model, f)
    }

    fn fold_running_norms(&mut self) -> Result<()> {
        self.model.fold_running_norms()
    }
}
