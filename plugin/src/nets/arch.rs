//! Architecture inference: the network settings read off a checkpoint's names and shapes, so a
//! user never restates them.

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::nets::generator::GeneratorConfig;
use crate::nets::norm::NormKind;
use crate::nets::patchgan::{DiscriminatorConfig, DiscriminatorKind};
use crate::nets::resnet::ResnetConfig;
use crate::nets::unet::UnetConfig;

fn dims4(ckpt: &Checkpoint, name: &str) -> Result<[usize; 4]> {
    match ckpt.dims(name) {
        Some(&[a, b, c, d]) => Ok([a, b, c, d]),
        Some(other) => Err(Error::checkpoint(
            &ckpt.path,
            format!("tensor `{name}` has shape {other:?}, expected a 4-d convolution weight"),
        )),
        None => Err(Error::checkpoint(&ckpt.path, format!("missing tensor `{name}`"))),
    }
}

fn has_prefix(ckpt: &Checkpoint, prefix: &str) -> bool {
    ckpt.names().any(|n| n.starts_with(prefix))
}

fn has_batch_norm(ckpt: &Checkpoint) -> bool {
    ckpt.names().any(|n| n.ends_with("running_mean"))
}

/// The generator settings a checkpoint holds. U-Net dropout layers carry no tensors, so their
/// presence cannot be read and is taken as the pix2pix default (on).
pub fn infer_generator(ckpt: &Checkpoint) -> Result<GeneratorConfig> {
    if ckpt.get("model.model.0.weight").is_some() {
        let [ngf, in_channels, _, _] = dims4(ckpt, "model.model.0.weight")?;
        let [_, out_channels, _, _] = dims4(ckpt, "model.model.3.weight")?;
        let norm = if has_batch_norm(ckpt) {
            NormKind::Batch
        } else if has_prefix(ckpt, "model.model.1.model.3.") {
            NormKind::Instance
        } else {
            NormKind::None
        };
        // Walk down the nested blocks: the sub-block sits at index 3 behind a norm layer, else 2.
        let sub = if norm.is_some() { 3 } else { 2 };
        let mut prefix = "model.model.1.".to_string();
        let mut num_downs = 2;
        loop {
            let next = format!("{prefix}model.{sub}.");
            // A nested block has a `model.` of its own; the innermost up-conv at index 3 has not.
            let nested = format!("{next}model.");
            if !has_prefix(ckpt, &nested) {
                break;
            }
            prefix = next;
            num_downs += 1;
        }
        if num_downs < 5 {
            return Err(Error::checkpoint(
                &ckpt.path,
                format!("a U-Net with {num_downs} levels is not a pix2pix generator (at least 5)"),
            ));
        }
        return Ok(GeneratorConfig::Unet(UnetConfig {
            in_channels,
            out_channels,
            num_downs,
            ngf,
            norm,
            dropout: true,
        }));
    }
    if ckpt.get("model.1.weight").is_some()
        && has_prefix(ckpt, "model.")
        && ckpt.names().any(|n| n.contains(".conv_block."))
    {
        let [ngf, in_channels, _, _] = dims4(ckpt, "model.1.weight")?;
        let norm = if has_batch_norm(ckpt) {
            NormKind::Batch
        } else if ckpt.get("model.4.weight").is_some() {
            NormKind::Instance
        } else {
            NormKind::None
        };
        let mut blocks: Vec<usize> = ckpt
            .names()
            .filter_map(|n| n.strip_prefix("model.")?.split_once(".conv_block.")?.0.parse().ok())
            .collect();
        blocks.sort_unstable();
        blocks.dedup();
        let first =
            *blocks.first().ok_or_else(|| Error::checkpoint(&ckpt.path, "no residual blocks"))?;
        // The second convolution of a block moves one index up when a dropout layer precedes it.
        let second = if norm.is_some() { 5 } else { 4 };
        let dropout = ckpt
            .dims(&format!("model.{first}.conv_block.{}.weight", second + 1))
            .map(<[usize]>::len)
            == Some(4);
        let last = ckpt
            .names()
            .filter_map(|n| {
                n.strip_prefix("model.")?.strip_suffix(".weight")?.parse::<usize>().ok()
            })
            .max()
            .ok_or_else(|| Error::checkpoint(&ckpt.path, "no output convolution"))?;
        let [out_channels, _, _, _] = dims4(ckpt, &format!("model.{last}.weight"))?;
        return Ok(GeneratorConfig::Resnet(ResnetConfig {
            in_channels,
            out_channels,
            ngf,
            n_blocks: blocks.len(),
            norm,
            dropout,
        }));
    }
    Err(Error::checkpoint(
        &ckpt.path,
        "does not hold a pix2pix generator: neither `model.model.0.weight` (U-Net) nor `model.1.weight` with residual blocks (ResNet) is in it",
    ))
}

/// The discriminator settings a checkpoint holds.
pub fn infer_discriminator(ckpt: &Checkpoint) -> Result<DiscriminatorConfig> {
    let batch = has_batch_norm(ckpt);
    if ckpt.get("model.0.weight").is_some() {
        let [ndf, in_channels, _, _] = dims4(ckpt, "model.0.weight")?;
        let convs = ckpt
            .names()
            .filter(|n| {
                n.starts_with("model.")
                    && n.ends_with(".weight")
                    && ckpt.dims(n).map(|d| d.len()) == Some(4)
            })
            .count();
        if convs < 3 {
            return Err(Error::checkpoint(
                &ckpt.path,
                format!("a PatchGAN needs at least 3 convolutions, found {convs}"),
            ));
        }
        // Without norm the second convolution's activation is at 3 and the next conv at 4.
        let norm = if batch {
            NormKind::Batch
        } else if ckpt.dims("model.4.weight").map(|d| d.len()) == Some(4) {
            NormKind::None
        } else {
            NormKind::Instance
        };
        return Ok(DiscriminatorConfig {
            kind: DiscriminatorKind::NLayer(convs - 2),
            in_channels,
            ndf,
            norm,
        });
    }
    if ckpt.get("net.0.weight").is_some() {
        let [ndf, in_channels, _, _] = dims4(ckpt, "net.0.weight")?;
        let norm = if batch {
            NormKind::Batch
        } else if ckpt.get("net.5.weight").is_some() {
            NormKind::Instance
        } else {
            NormKind::None
        };
        return Ok(DiscriminatorConfig { kind: DiscriminatorKind::Pixel, in_channels, ndf, norm });
    }
    Err(Error::checkpoint(
        &ckpt.path,
        "does not hold a PatchGAN discriminator: no `model.0.weight` or `net.0.weight`",
    ))
}
