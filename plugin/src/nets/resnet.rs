//! The ResNet generator (`resnet_9blocks` / `resnet_6blocks`) of the pix2pix/CycleGAN release.
//!
//! Johnson, Alahi, Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
//! Super-Resolution", ECCV 2016, as used by Zhu et al., "Unpaired Image-to-Image Translation
//! using Cycle-Consistent Adversarial Networks", ICCV 2017: a reflection-padded 7×7 stem, two
//! stride-2 downsamplings, residual blocks, two transposed-convolution upsamplings and a 7×7
//! output with tanh. Tensor names follow the release (`model.10.conv_block.5.weight`, …).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::nets::layers::{
    conv, conv_transpose, Forward, Layer, Op, Run, Sequential, SequentialBuilder,
};
use crate::nets::norm::NormKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub ngf: usize,
    pub n_blocks: usize,
    pub norm: NormKind,
    /// Dropout layers inside the residual blocks; their presence shifts the tensor indices.
    pub dropout: bool,
}

impl ResnetConfig {
    pub fn stride(&self) -> usize {
        4
    }
}

/// `ResnetBlock`: `x + conv_block(x)`.
pub struct ResnetBlock {
    conv_block: Sequential,
}

impl ResnetBlock {
    fn new(dim: usize, norm: NormKind, dropout: bool, vb: VarBuilder) -> Result<Self> {
        let bias = norm.conv_bias();
        let mut seq = SequentialBuilder::new(vb.pp("conv_block"))
            .push(Op::ReflectionPad(1))
            .add(conv(dim, dim, 3, 1, 0, bias))?;
        seq = seq.add_norm(norm, dim)?;
        seq = seq
            .push(Op::ReLU)
            .push_if(dropout, Op::Dropout(0.5))
            .push(Op::ReflectionPad(1))
            .add(conv(dim, dim, 3, 1, 0, bias))?;
        seq = seq.add_norm(norm, dim)?;
        Ok(Self { conv_block: seq.build() })
    }
}

impl Layer for ResnetBlock {
    fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        x + x.run(&self.conv_block, f)?
    }

    fn fold_running_norms(&mut self) -> Result<()> {
        self.conv_block.fold_running_norms()
    }
}

pub struct ResnetGenerator {
    model: Sequential,
    pub config: ResnetConfig,
}

impl ResnetGenerator {
    pub fn new(config: ResnetConfig, vb: VarBuilder) -> Result<Self> {
        let ResnetConfig { in_channels, out_channels, ngf, n_blocks, norm, dropout } = config;
        let bias = norm.conv_bias();
        let mut seq = SequentialBuilder::new(vb.pp("model"))
            .push(Op::ReflectionPad(3))
            .add(conv(in_channels, ngf, 7, 1, 0, bias))?;
        seq = seq.add_norm(norm, ngf)?.push(Op::ReLU);
        for i in 0..2 {
            let m = 1 << i;
            seq = seq.add(conv(ngf * m, ngf * m * 2, 3, 2, 1, bias))?;
            seq = seq.add_norm(norm, ngf * m * 2)?.push(Op::ReLU);
        }
        for _ in 0..n_blocks {
            seq = seq
                .add(|vb| Ok(Op::Block(Box::new(ResnetBlock::new(ngf * 4, norm, dropout, vb)?))))?;
        }
        for i in 0..2 {
            let m = 1 << (2 - i);
            seq = seq.add(conv_transpose(ngf * m, ngf * m / 2, 3, 2, 1, 1, bias))?;
            seq = seq.add_norm(norm, ngf * m / 2)?.push(Op::ReLU);
        }
        let seq = seq
            .push(Op::ReflectionPad(3))
            .add(conv(ngf, out_channels, 7, 1, 0, true))?
            .push(Op::Tanh);
        Ok(Self { model: seq.build(), config })
    }
}

impl Layer for ResnetGenerator {
    fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        x.run(&self.model, f)
    }

    fn fold_running_norms(&mut self) -> Result<()> {
        self.model.fold_running_norms()
    }
}
