//! Counting a network's parameters by building it: the network asks a `VarBuilder` for every
//! tensor it holds, so a builder that records the requests and hands out zeros that take no
//! memory (a broadcast scalar) counts exactly what a checkpoint of it holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// True for the tensors BatchNorm tracks rather than learns (state, not parameters).
pub fn is_running_stat(name: &str) -> bool {
    [".running_mean", ".running_var", ".num_batches_tracked"].iter().any(|s| name.ends_with(s))
}

struct Counter(Arc<AtomicU64>);

impl SimpleBackend for Counter {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        if !is_running_stat(name) {
            self.0.fetch_add(s.elem_count() as u64, Ordering::Relaxed);
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("parameter count: {name} asked for without a shape")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The trainable parameters of what `build` builds.
pub fn count<T>(build: impl FnOnce(VarBuilder) -> Result<T>) -> Result<u64> {
    let n = Arc::new(AtomicU64::new(0));
    let backend: Box<dyn SimpleBackend> = Box::new(Counter(n.clone()));
    drop(build(VarBuilder::from_backend(backend, DType::F32, Device::Cpu))?);
    Ok(n.load(Ordering::Relaxed))
}
