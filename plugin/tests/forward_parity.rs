//! The networks against the PyTorch reference's fixtures: forward outputs in eval mode (running
//! statistics) and with batch statistics, from both checkpoint formats.

mod common;

use candle_core::Tensor;
use common::*;
use pix2pix::{Checkpoint, Discriminator, Forward, Generator, Layer, NormStats};

const TOL: f32 = 1e-4;

fn parity(name: &str, ext: &str) {
    let fw = load(name, "forward.safetensors");
    let g_ckpt = Checkpoint::load(fixture(name).join(format!("generator.{ext}"))).unwrap();
    let d_ckpt = Checkpoint::load(fixture(name).join(format!("discriminator.{ext}"))).unwrap();
    let g_cfg = pix2pix::infer_generator(&g_ckpt).unwrap();
    let d_cfg = pix2pix::infer_discriminator(&d_ckpt).unwrap();
    let g = g_ckpt.build(|vb| Generator::new(g_cfg, vb)).unwrap();
    let d = d_ckpt.build(|vb| Discriminator::new(d_cfg, vb)).unwrap();
    let (x, y) = (&fw["x"], &fw["y"]);
    let xy = Tensor::cat(&[x, y], 1).unwrap();
    for (stats, g_ref, d_ref) in
        [(NormStats::Running, "g_eval", "d_eval"), (NormStats::Batch, "g_train_nodrop", "d_train")]
    {
        let f = Forward::infer(stats);
        let eg = max_abs(&g.forward(x, &f).unwrap(), &fw[g_ref]);
        let ed = max_abs(&d.forward(&xy, &f).unwrap(), &fw[d_ref]);
        println!("{name} .{ext} {g_ref}: max abs err {eg:.2e}; {d_ref}: {ed:.2e}");
        assert!(eg < TOL, "{name} .{ext}: {g_ref} max abs error {eg}");
        assert!(ed < TOL, "{name} .{ext}: {d_ref} max abs error {ed}");
    }
}

#[test]
fn forward_parity_from_pth() {
    for name in FIXTURES {
        parity(name, "pth");
    }
}

#[test]
fn forward_parity_from_safetensors() {
    for name in FIXTURES {
        parity(name, "safetensors");
    }
}
