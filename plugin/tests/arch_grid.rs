//! Architecture inference over the whole grid the reference release can build: networks built
//! from a setting, saved, and read back must give that setting again.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use pix2pix::checkpoint::save_safetensors;
use pix2pix::nets::resnet::ResnetConfig;
use pix2pix::nets::unet::UnetConfig;
use pix2pix::{
    Checkpoint, Discriminator, DiscriminatorConfig, DiscriminatorKind, Generator, GeneratorConfig,
    NormKind,
};

fn saved(build: impl FnOnce(VarBuilder) -> candle_core::Result<()>, tag: &str) -> Checkpoint {
    let vm = VarMap::new();
    build(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let tensors =
        vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    let p = std::env::temp_dir().join(format!("p2p-grid-{}-{tag}.safetensors", std::process::id()));
    save_safetensors(&p, &tensors, DType::F32).unwrap();
    let c = Checkpoint::load(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    c
}

const NORMS: [NormKind; 3] = [NormKind::Batch, NormKind::Instance, NormKind::None];

#[test]
fn generators_round_trip_their_settings() {
    let mut configs = vec![];
    for norm in NORMS {
        for num_downs in [5, 7, 8] {
            configs.push(GeneratorConfig::Unet(UnetConfig {
                in_channels: 1,
                out_channels: 3,
                num_downs,
                ngf: 4,
                norm,
                dropout: true,
            }));
        }
        for n_blocks in [6, 9] {
            for dropout in [false, true] {
                configs.push(GeneratorConfig::Resnet(ResnetConfig {
                    in_channels: 3,
                    out_channels: 2,
                    ngf: 4,
                    n_blocks,
                    norm,
                    dropout,
                }));
            }
        }
    }
    for (i, cfg) in configs.into_iter().enumerate() {
        let ckpt = saved(|vb| Generator::new(cfg, vb).map(|_| ()), &format!("g{i}"));
        assert_eq!(pix2pix::infer_generator(&ckpt).unwrap(), cfg);
    }
}

#[test]
fn discriminators_round_trip_their_settings() {
    let mut configs = vec![];
    for norm in NORMS {
        for n in 1..=5 {
            configs.push(DiscriminatorConfig {
                kind: DiscriminatorKind::NLayer(n),
                in_channels: 6,
                ndf: 4,
                norm,
            });
        }
        configs.push(DiscriminatorConfig {
            kind: DiscriminatorKind::Pixel,
            in_channels: 4,
            ndf: 4,
            norm,
        });
    }
    for (i, cfg) in configs.into_iter().enumerate() {
        let ckpt = saved(|vb| Discriminator::new(cfg, vb).map(|_| ()), &format!("d{i}"));
        assert_eq!(pix2pix::infer_discriminator(&ckpt).unwrap(), cfg);
    }
}
