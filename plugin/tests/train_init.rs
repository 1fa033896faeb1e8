//! Initialisation: the reference's `init_weights` distributions, seeded, and starting from
//! checkpoints (`init_generator` / `init_discriminator`), with errors naming the tensor.

use std::path::PathBuf;

use candle_core::Tensor;
use pix2pix::train::config::{Config, InitType};
use pix2pix::train::rng::{derive, Stream};
use pix2pix::train::trainer::{Settings, Trainer};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn stats(t: &Tensor) -> (f64, f64) {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn trainer(text: &str) -> (Trainer, Config) {
    let cfg = Config::parse(text).unwrap();
    let t =
        Trainer::new(cfg.generator_config(), cfg.discriminator_config(), Settings::default(), 2e-4)
            .unwrap();
    (t, cfg)
}

#[test]
fn init_types_follow_the_reference() {
    for init in [InitType::Normal, InitType::Xavier, InitType::Kaiming, InitType::Orthogonal] {
        let (t, cfg) = trainer("[model]\nnet_g = \"unet_128\"\nngf = 8\nndf = 8\n");
        t.init_weights(
            init,
            0.02,
            &mut derive(3, Stream::InitGenerator, 0),
            &mut derive(3, Stream::InitDiscriminator, 0),
        )
        .unwrap();
        let g = t.generator_tensors().unwrap();
        // The second down convolution: (16, 8, 4, 4), fan_in 128, fan_out 256.
        let (mean, std) = stats(&g["model.model.1.model.1.weight"]);
        let want = match init {
            InitType::Normal => 0.02,
            InitType::Xavier => 0.02 * (2.0f64 / (128.0 + 256.0)).sqrt(),
            InitType::Kaiming => (2.0f64 / 128.0).sqrt(),
            // Rows of a (16, 128) orthogonal matrix times the gain: each element ~ gain / √128.
            InitType::Orthogonal => 0.02 / 128f64.sqrt(),
        };
        assert!(
            mean.abs() < want * 0.2 && (std / want - 1.0).abs() < 0.15,
            "{init:?}: mean {mean}, std {std}, want {want}"
        );
        // BatchNorm: weight N(1, gain), bias 0, running statistics at their defaults.
        let (bn_mean, bn_std) = stats(&g["model.model.1.model.2.weight"]);
        assert!(
            (bn_mean - 1.0).abs() < 0.02 && bn_std > 0.005 && bn_std < 0.04,
            "{init:?}: BN weight {bn_mean} ± {bn_std}"
        );
        assert_eq!(stats(&g["model.model.1.model.2.bias"]), (0.0, 0.0));
        assert_eq!(stats(&g["model.model.1.model.2.running_var"]), (1.0, 0.0));
        assert_eq!(stats(&g["model.model.3.bias"]), (0.0, 0.0));
        // Seeded: the same seed gives the same weights, another seed others.
        let (t2, _) = trainer("[model]\nnet_g = \"unet_128\"\nngf = 8\nndf = 8\n");
        t2.init_weights(
            init,
            0.02,
            &mut derive(3, Stream::InitGenerator, 0),
            &mut derive(3, Stream::InitDiscriminator, 0),
        )
        .unwrap();
        let g2 = t2.generator_tensors().unwrap();
        assert_eq!(stats(&g["model.model.0.weight"]), stats(&g2["model.model.0.weight"]));
        let _ = cfg;
    }
}

#[test]
fn init_from_checkpoints() {
    let dir = std::env::temp_dir().join(format!("pix2pix-init-{}", std::process::id()));
    let f = fixture("unet256_ngf8_batch");
    let text = |ngf: usize| {
        format!(
            "[data]\nroot = '{}'\n[model]\nngf = {ngf}\nndf = 8\ninit_generator = '{}'\ninit_discriminator = '{}'\n[train]\nmax_steps = 0\n[output]\ndir = '{}'\noverwrite = true\n",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/facades").display(),
            f.join("generator.pth").display(),
            f.join("discriminator.safetensors").display(),
            dir.display()
        )
    };
    let s = pix2pix::train::train(&text(8), false, &mut |_| true).unwrap();
    for net in ["generator", "discriminator"] {
        let ours = candle_core::safetensors::load(
            s.checkpoint_dir.join(format!("{net}.safetensors")),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let theirs = candle_core::safetensors::load(
            f.join(format!("{net}.safetensors")),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert_eq!(ours.len(), theirs.len());
        for (k, t) in &theirs {
            assert_eq!(ours[k].dtype(), t.dtype(), "{k}: dtype as the reference writes it");
            let d = (ours[k].to_dtype(candle_core::DType::F64).unwrap()
                - t.to_dtype(candle_core::DType::F64).unwrap())
            .unwrap();
            assert_eq!(
                d.abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap(),
                0.0,
                "{net} {k}"
            );
        }
    }
    let Err(e) = pix2pix::train::train(&text(16), false, &mut |_| true) else {
        panic!("a mismatching checkpoint must fail")
    };
    let e = e.to_string();
    assert!(e.contains("generator.pth") && e.contains("model.model.0.weight"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
