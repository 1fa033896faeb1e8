//! Re-saves a generator checkpoint (.safetensors or .pth) as safetensors in f32, f16 or bf16,
//! checking that it still builds: how the shipped default model is made from a training run.
//!
//!   cargo run --release -p pix2pix --example export_model -- IN OUT [f32|f16|bf16]

use candle_core::DType;
use pix2pix::{checkpoint::save_safetensors, Checkpoint, Model, Options};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: export_model IN OUT [f32|f16|bf16]");
    };
    let dtype = match rest.first().map(String::as_str).unwrap_or("f16") {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => anyhow::bail!("dtype `{other}`: expected f32, f16 or bf16"),
    };
    let ckpt = Checkpoint::load(input)?;
    let model = Model::from_checkpoint(ckpt.clone(), Options::default())?;
    save_safetensors(output, ckpt.tensors(), dtype)?;
    let size = std::fs::metadata(output)?.len();
    println!(
        "{} ({}, ngf {}) → {output}: {dtype:?}, {:.1} MB",
        input,
        model.config().net_g(),
        model.config().ngf(),
        size as f64 / 1e6
    );
    Ok(())
}
