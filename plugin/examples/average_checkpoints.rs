//! Averages the weights of several generator checkpoints of one training run (uniform
//! checkpoint averaging, as in Izmailov et al., *Averaging Weights Leads to Wider Optima and Better
//! Generalization*, 2018) and saves the mean as f32 safetensors, checking that it still builds.
//!
//!   cargo run --release -p pix2pix --example average_checkpoints -- OUT IN1 IN2 [IN…]
//!
//! The checkpoints must hold the same tensors with the same shapes (one architecture). Batch-norm
//! running statistics are averaged too; inference on the image's own batch statistics (the
//! shipped models' protocol) does not read them. `num_batches_tracked` is taken from the last.

use candle_core::{DType, Tensor};
use pix2pix::{checkpoint::save_safetensors, Checkpoint, Model, Options};
use std::collections::BTreeMap;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [output, inputs @ ..] = args.as_slice() else {
        anyhow::bail!("usage: average_checkpoints OUT IN1 IN2 [IN…]");
    };
    if inputs.len() < 2 {
        anyhow::bail!("usage: average_checkpoints OUT IN1 IN2 [IN…] (at least two inputs)");
    }
    let first = Checkpoint::load(&inputs[0])?;
    let mut sums: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, t) in first.tensors() {
        sums.insert(name.clone(), t.to_dtype(DType::F64)?);
    }
    for input in &inputs[1..] {
        let ckpt = Checkpoint::load(input)?;
        if ckpt.tensors().len() != sums.len() {
            anyhow::bail!(
                "{input}: {} tensors where {} has {}",
                ckpt.tensors().len(),
                inputs[0],
                sums.len()
            );
        }
        for (name, t) in ckpt.tensors() {
            let Some(sum) = sums.get_mut(name) else {
                anyhow::bail!("{input}: tensor `{name}` is not in {}", inputs[0]);
            };
            if sum.dims() != t.dims() {
                anyhow::bail!(
                    "{input}: tensor `{name}` is {:?} where {} has {:?}",
                    t.dims(),
                    inputs[0],
                    sum.dims()
                );
            }
            *sum = if name.ends_with("num_batches_tracked") {
                t.to_dtype(DType::F64)?
            } else {
                (&*sum + t.to_dtype(DType::F64)?)?
            };
        }
    }
    let n = inputs.len() as f64;
    let mut mean = BTreeMap::new();
    for (name, sum) in sums {
        let t = if name.ends_with("num_batches_tracked") { sum } else { (sum / n)? };
        mean.insert(name, t.to_dtype(DType::F32)?);
    }
    let averaged = Checkpoint::from_tensors(output, mean)?;
    let model = Model::from_checkpoint(&averaged, Options::default())?;
    save_safetensors(output, averaged.tensors(), DType::F32)?;
    println!(
        "mean of {} checkpoints ({}, ngf {}) → {output}",
        inputs.len(),
        model.config().net_g(),
        model.config().ngf()
    );
    Ok(())
}
