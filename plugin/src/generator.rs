//! The generator families of the reference release behind one type.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::{Forward, Layer};
use crate::resnet::{ResnetConfig, ResnetGenerator};
use crate::unet::{UnetConfig, UnetGenerator};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratorConfig {
    Unet(UnetConfig),
    Resnet(ResnetConfig),
}

impl GeneratorConfig {
    /// The reference's `netG` name: `unet_256`, `unet_128`, `resnet_9blocks`, …
    pub fn net_g(&self) -> String {
        match self {
            GeneratorConfig::Unet(c) => format!("unet_{}", c.stride()),
            GeneratorConfig::Resnet(c) => format!("resnet_{}blocks", c.n_blocks),
        }
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
    pub fn norm(&self) -> crate::norm::NormKind {
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
}
