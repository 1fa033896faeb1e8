//! Averages the weights of several generator checkpoints of one training run
//! (`pix2pix::checkpoint::average`) and saves the mean as f32 safetensors, checking that it still
//! builds: with `export_model`, how the shipped default model is made (`models/README.md`).
//!
//!   cargo run --release -p pix2pix --example average_checkpoints -- OUT IN1 IN2 [IN…]

use candle_core::DType;
use pix2pix::checkpoint::{average, save_safetensors};
use pix2pix::{Checkpoint, Model, Options};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [output, inputs @ ..] = args.as_slice() else {
        anyhow::bail!("usage: average_checkpoints OUT IN1 IN2 [IN…]");
    };
    let checkpoints = inputs.iter().map(Checkpoint::load).collect::<Result<Vec<_>, _>>()?;
    let mean = average(&checkpoints, output)?;
    let model = Model::from_checkpoint(mean.clone(), Options::default())?;
    save_safetensors(output, mean.tensors(), DType::F32)?;
    println!(
        "mean of {} checkpoints ({}, ngf {}) → {output}",
        inputs.len(),
        model.config().net_g(),
        model.config().ngf()
    );
    Ok(())
}
