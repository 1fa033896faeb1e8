//! Checkpoint I/O: architecture inference, bit-exact round trips, dtypes, DataParallel prefixes,
//! and bad files reported with the file and tensor named.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use common::*;
use pix2pix::checkpoint::save_safetensors;
use pix2pix::{Checkpoint, DiscriminatorKind, GeneratorConfig, Model, NormKind, Options};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("p2p-ckpt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn architecture_is_inferred_from_the_fixtures() {
    for name in FIXTURES {
        let m = meta(name);
        let g = pix2pix::infer_generator(
            &Checkpoint::load(fixture(name).join("generator.pth")).unwrap(),
        )
        .unwrap();
        let d = pix2pix::infer_discriminator(
            &Checkpoint::load(fixture(name).join("discriminator.safetensors")).unwrap(),
        )
        .unwrap();
        let norm = NormKind::parse(m["norm"].as_str().unwrap()).unwrap();
        assert_eq!(g.ngf(), m["ngf"].as_u64().unwrap() as usize, "{name}");
        assert_eq!(g.norm(), norm, "{name}");
        assert_eq!(g.channels(), (3, 3), "{name}");
        match (g, m["net_g"].as_str().unwrap()) {
            (GeneratorConfig::Unet(c), "unet") => {
                assert_eq!(c.num_downs, m["downs"].as_u64().unwrap() as usize, "{name}")
            }
            (GeneratorConfig::Resnet(c), net) => {
                assert_eq!(format!("resnet_{}blocks", c.n_blocks), net, "{name}");
                assert_eq!(c.dropout, !m["no_dropout"].as_bool().unwrap(), "{name}");
            }
            (g, net) => panic!("{name}: inferred {g:?} for {net}"),
        }
        assert_eq!(d.kind, DiscriminatorKind::NLayer(3), "{name}");
        assert_eq!(
            (d.in_channels, d.ndf, d.norm),
            (6, m["ngf"].as_u64().unwrap() as usize, norm),
            "{name}"
        );
    }
}

#[test]
fn save_then_load_is_bit_exact() {
    let dir = tmp("roundtrip");
    for name in FIXTURES {
        for file in ["generator.pth", "discriminator.pth"] {
            let a = Checkpoint::load(fixture(name).join(file)).unwrap();
            let out = dir.join(format!("{name}-{file}.safetensors"));
            save_safetensors(&out, a.tensors(), DType::F32).unwrap();
            let b = Checkpoint::load(&out).unwrap();
            assert_eq!(
                a.tensors().keys().collect::<Vec<_>>(),
                b.tensors().keys().collect::<Vec<_>>()
            );
            for (k, t) in a.tensors() {
                let (x, y): (Vec<f32>, Vec<f32>) = (
                    t.flatten_all().unwrap().to_vec1().unwrap(),
                    b.tensors()[k].flatten_all().unwrap().to_vec1().unwrap(),
                );
                assert!(
                    x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                    "{name}/{file}: {k} differs"
                );
            }
            // num_batches_tracked goes back as int64, as PyTorch's load_state_dict expects.
            let raw = std::fs::read(&out).unwrap();
            let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
            for (k, v) in st.tensors() {
                let want = if k.ends_with("num_batches_tracked") {
                    safetensors::Dtype::I64
                } else {
                    safetensors::Dtype::F32
                };
                assert_eq!(v.dtype(), want, "{k}");
            }
        }
    }
}

#[test]
fn half_precision_and_dataparallel_files_load() {
    let dir = tmp("dtypes");
    let name = "unet128_ngf8_instance_lsgan";
    let a = Checkpoint::load(fixture(name).join("generator.safetensors")).unwrap();
    let x = &load(name, "forward.safetensors")["x"];
    let reference =
        Model::from_checkpoint(a.clone(), Options::default()).unwrap().forward(x).unwrap();
    for dtype in [DType::F16, DType::BF16] {
        let out = dir.join(format!("g-{dtype:?}.safetensors"));
        let prefixed: BTreeMap<String, Tensor> =
            a.tensors().iter().map(|(k, v)| (format!("module.{k}"), v.clone())).collect();
        save_safetensors(&out, &prefixed, dtype).unwrap();
        let b = Checkpoint::load(&out).unwrap();
        assert!(b.names().all(|n| !n.starts_with("module.")));
        let y = Model::from_checkpoint(b, Options::default()).unwrap().forward(x).unwrap();
        let err = max_abs(&y, &reference);
        println!("{dtype:?} weights: max abs output error {err:.2e}");
        assert!(err < 0.1, "{dtype:?}: {err}");
    }
}

fn err_of(r: pix2pix::Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_are_errors_naming_file_and_tensor() {
    let dir = tmp("bad");
    let good = fixture("unet128_ngf8_instance_lsgan").join("generator.safetensors");
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(Checkpoint::load(&truncated));
    assert!(e.contains("truncated.safetensors"), "{e}");

    let corrupt = dir.join("corrupt.safetensors");
    let mut b = bytes.clone();
    b[8..23].copy_from_slice(b"{\"oops\": [1, 2,");
    std::fs::write(&corrupt, &b).unwrap();
    let e = err_of(Checkpoint::load(&corrupt));
    assert!(e.contains("corrupt.safetensors") && e.contains("safetensors"), "{e}");

    let text = dir.join("text.safetensors");
    std::fs::write(&text, "this is not a model\n").unwrap();
    assert!(err_of(Checkpoint::load(&text)).contains("text.safetensors"));

    let truncated_pth = dir.join("truncated.pth");
    let pth = std::fs::read(fixture("unet128_ngf8_instance_lsgan").join("generator.pth")).unwrap();
    std::fs::write(&truncated_pth, &pth[..pth.len() / 3]).unwrap();
    assert!(err_of(Checkpoint::load(&truncated_pth)).contains("truncated.pth"));

    let missing = dir.join("does-not-exist.safetensors");
    assert!(err_of(Checkpoint::load(&missing)).contains("does-not-exist.safetensors"));

    let a = Checkpoint::load(&good).unwrap();
    let victim = "model.model.1.model.1.weight";

    let mut t = a.tensors().clone();
    t.remove(victim);
    let p = dir.join("missing-tensor.safetensors");
    save_safetensors(&p, &t, DType::F32).unwrap();
    let e = err_of(Model::open(&p, Options::default()));
    assert!(e.contains("missing-tensor.safetensors") && e.contains(victim), "{e}");

    let mut t = a.tensors().clone();
    t.insert(victim.into(), Tensor::zeros((16, 8, 3, 3), DType::F32, &Device::Cpu).unwrap());
    let p = dir.join("wrong-shape.safetensors");
    save_safetensors(&p, &t, DType::F32).unwrap();
    let e = err_of(Model::open(&p, Options::default()));
    assert!(
        e.contains("wrong-shape.safetensors")
            && e.contains(victim)
            && e.contains("[16, 8, 3, 3]")
            && e.contains("[16, 8, 4, 4]"),
        "{e}"
    );

    let mut t: Vec<(String, Tensor)> =
        a.tensors().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    t[0].1 = t[0].1.to_dtype(DType::U8).unwrap();
    let p = dir.join("u8.safetensors");
    candle_core::safetensors::save(&t.into_iter().collect(), &p).unwrap();
    let e = err_of(Checkpoint::load(&p));
    assert!(
        e.contains("u8.safetensors")
            && e.contains("dtype")
            && e.contains(a.tensors().keys().next().unwrap()),
        "{e}"
    );
}

#[test]
fn explicit_settings_that_contradict_the_file_name_the_tensor_and_shapes() {
    let a = Checkpoint::load(fixture("unet128_ngf8_instance_lsgan").join("generator.safetensors"))
        .unwrap();
    let GeneratorConfig::Unet(mut cfg) = pix2pix::infer_generator(&a).unwrap() else { panic!() };
    cfg.ngf = 16;
    let e = err_of(Model::from_checkpoint_with(
        a.clone(),
        GeneratorConfig::Unet(cfg),
        Options::default(),
    ));
    assert!(
        e.contains("model.model.0.weight")
            && e.contains("[8, 3, 4, 4]")
            && e.contains("[16, 3, 4, 4]"),
        "{e}"
    );
    cfg.ngf = 8;
    cfg.num_downs = 8;
    let e = err_of(Model::from_checkpoint_with(
        a.clone(),
        GeneratorConfig::Unet(cfg),
        Options::default(),
    ));
    assert!(e.contains("missing tensor"), "{e}");
}
