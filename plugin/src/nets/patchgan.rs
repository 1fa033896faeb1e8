//! The PatchGAN discriminator of pix2pix.
//!
//! Isola et al. 2017, §3.2.2: a convolutional classifier that judges each N×N patch of the
//! (input, output) pair as real or fake; `n_layers = 3` gives the 70×70 receptive field of the
//! paper (`basic`), and the 1×1 `pixel` variant judges single pixels. Tensor names follow the
//! release (`model.0.weight`, … and `net.0.weight`, … for the pixel discriminator).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::nets::layers::{conv, Forward, Layer, Op, Run, Sequential, SequentialBuilder};
use crate::nets::norm::NormKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscriminatorKind {
    /// `NLayerDiscriminator` with this many stride-2 layers (`basic` = 3).
    NLayer(usize),
    /// `PixelDiscriminator`: 1×1 convolutions.
    Pixel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscriminatorConfig {
    pub kind: DiscriminatorKind,
    /// Channels of (input, output) concatenated: 6 for RGB → RGB.
    pub in_channels: usize,
    pub ndf: usize,
    pub norm: NormKind,
}

impl DiscriminatorConfig {
    /// Trainable parameters, counted on placeholders (nothing of the network's size allocated).
    pub fn parameters(&self) -> Result<u64> {
        crate::nets::parameters::count(|vb| Discriminator::new(*self, vb))
    }
}

pub struct Discriminator {
    seq: Sequential,
    pub config: DiscriminatorConfig,
}

impl Discriminator {
    pub fn new(config: DiscriminatorConfig, vb: VarBuilder) -> Result<Self> {
        let DiscriminatorConfig { kind, in_channels, ndf, norm } = config;
        let bias = norm.conv_bias();
        let seq = match kind {
            DiscriminatorKind::NLayer(n_layers) => {
                let mut seq = SequentialBuilder::new(vb.pp("model"))
                    .add(conv(in_channels, ndf, 4, 2, 1, true))?
                    .push(Op::LeakyReLU(0.2));
                let mut mult = 1;
                for n in 1..n_layers {
                    let prev = mult;
                    mult = (1 << n).min(8);
                    seq = seq.add(conv(ndf * prev, ndf * mult, 4, 2, 1, bias))?;
                    seq = seq.add_norm(norm, ndf * mult)?.push(Op::LeakyReLU(0.2));
                }
                let prev = mult;
                mult = (1 << n_layers).min(8);
                seq = seq.add(conv(ndf * prev, ndf * mult, 4, 1, 1, bias))?;
                seq = seq.add_norm(norm, ndf * mult)?.push(Op::LeakyReLU(0.2));
                seq.add(conv(ndf * mult, 1, 4, 1, 1, true))?
            }
            DiscriminatorKind::Pixel => {
                let seq = SequentialBuilder::new(vb.pp("net"))
                    .add(conv(in_channels, ndf, 1, 1, 0, true))?
                    .push(Op::LeakyReLU(0.2))
                    .add(conv(ndf, ndf * 2, 1, 1, 0, bias))?;
                seq.add_norm(norm, ndf * 2)?.push(Op::LeakyReLU(0.2)).add(conv(
                    ndf * 2,
                    1,
                    1,
                    1,
                    0,
                    bias,
                ))?
            }
        };
        Ok(Self { seq: seq.build(), config })
    }
}

impl Layer for Discriminator {
    fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        x.run(&self.seq, f)
    }
}
