//! The generator families of the reference release behind one type.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use pix2pix_ffi::GeneratorName;

use crate::nets::forward::{Forward, Layer};
use crate::nets::norm::NormKind;
use crate::nets::parameters;
use crate::nets::resnet::{ResnetConfig, ResnetGenerator};
use crate::nets::unet::{UnetConfig, UnetGenerator};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratorConfig {
    Unet(UnetConfig),
    Resnet(ResnetConfig),
}

impl GeneratorConfig {
    /// The generator a `netG` name stands for, RGB → RGB.
    pub fn named(name: GeneratorName, ngf: usize, norm: NormKind, dropout: bool) -> Self {
        match name {
            GeneratorName::Unet { side } => GeneratorConfig::Unet(UnetConfig {
                in_channels: 3,
                out_channels: 3,
                num_downs: side.trailing_zeros() as usize,
                ngf,
                norm,
                dropout,
            }),
            GeneratorName::Resnet { blocks } => GeneratorConfig::Resnet(ResnetConfig {
                in_channels: 3,
                out_channels: 3,
                ngf,
                n_blocks: blocks as usize,
                norm,
                dropout,
            }),
        }
    }
    /// This architecture with `input` and `output` image channels (the reference's `input_nc`,
    /// `output_nc`).
    pub fn with_channels(self, input: usize, output: usize) -> Self {
        match self {
            GeneratorConfig::Unet(c) => {
                GeneratorConfig::Unet(UnetConfig { in_channels: input, out_channels: output, ..c })
            }
            GeneratorConfig::Resnet(c) => GeneratorConfig::Resnet(ResnetConfig {
                in_channels: input,
                out_channels: output,
                ..c
            }),
        }
    }
    /// The reference's `netG` name of this architecture.
    pub fn name(&self) -> GeneratorName {
        match self {
            GeneratorConfig::Unet(c) => GeneratorName::Unet { side: c.stride() as u32 },
            GeneratorConfig::Resnet(c) => GeneratorName::Resnet { blocks: c.n_blocks as u32 },
        }
    }
    /// The reference's `netG` name: `unet_256`, `unet_128`, `resnet_9blocks`, …
    pub fn net_g(&self) -> String {
        self.name().name()
    }
    /// Trainable parameters (running statistics not counted), counted by building the network
    /// on placeholders that take no memory: safe to ask before allocating a huge network.
    pub fn parameters(&self) -> Result<u64> {
        parameters::count(|vb| Generator::new(*self, vb))
    }
    /// Input sides must be multiples of this; `unet_256` takes 256, 512, …
    pub fn stride(&self) -> usize {
        match self {
            GeneratorConfig::Unet(c) => c.stride(),
            GeneratorConfig::Resnet(c) => c.stride(),
        }
    }
    /// The side the network was designed for (the crop size of its recipe).
    pub fn native_size(&self) -> usize {
        match self {
            GeneratorConfig::Unet(c) => c.stride(),
            GeneratorConfig::Resnet(_) => 256,
        }
    }
    pub fn ngf(&self) -> usize {
        match self {
            GeneratorConfig::Unet(c) => c.ngf,
            GeneratorConfig::Resnet(c) => c.ngf,
        }
    }
    pub fn norm(&self) -> NormKind {
        match self {
            GeneratorConfig::Unet(c) => c.norm,
            GeneratorConfig::Resnet(c) => c.norm,
        }
    }
    pub fn channels(&self) -> (usize, usize) {
        match self {
            GeneratorConfig::Unet(c) => (c.in_channels, c.out_channels),
            GeneratorConfig::Resnet(c) => (c.in_channels, c.out_channels),
        }
    }
    pub fn dropout(&self) -> bool {
        match self {
            GeneratorConfig::Unet(c) => c.dropout,
            GeneratorConfig::Resnet(c) => c.dropout,
        }
    }
}

pub enum Generator {
    Unet(UnetGenerator),
    Resnet(ResnetGenerator),
}

impl Generator {
    pub fn new(config: GeneratorConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match config {
            GeneratorConfig::Unet(c) => Generator::Unet(UnetGenerator::new(c, vb)?),
            GeneratorConfig::Resnet(c) => Generator::Resnet(ResnetGenerator::new(c, vb)?),
        })
    }
    pub fn config(&self) -> GeneratorConfig {
        match self {
            Generator::Unet(g) => GeneratorConfig::Unet(g.config),
            Generator::Resnet(g) => GeneratorConfig::Resnet(g.config),
        }
    }
}

impl Layer for Generator {
    fn forward(&self, x: &Tensor, f: &Forward) -> Result<Tensor> {
        match self {
            Generator::Unet(g) => g.forward(x, f),
            Generator::Resnet(g) => g.forward(x, f),
        }
    }

    fn fold_running_norms(&mut self) -> Result<()> {
        match self {
            Generator::Unet(g) => g.fold_running_norms(),
            Generator::Resnet(g) => g.fold_running_norms(),
        }
    }
}
