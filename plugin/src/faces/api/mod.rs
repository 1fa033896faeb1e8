//! The one implementation behind the plugin's faces: the abi_stable root module
//! ([`crate::faces::abi_module`]), the C API ([`crate::faces::capi`]) and the frei0r filter
//! ([`crate::faces::frei0r`]) only convert their types and call these functions. Everything here
//! returns an [`ApiError`], whose [`ErrorKind`] becomes a C status code and whose message is what
//! every face shows.
//!
//! By purpose: [`error`] (the error and the panic guard), [`model`] (the plugin, opening models),
//! [`run`] (training and evaluation), [`bench`] (the benchmark).

pub mod bench;
pub mod error;
pub mod export;
pub mod model;
pub mod run;

pub use bench::{bench, generator_config, random_generator, BenchSpec, BenchTimes};
pub use error::{guard, panic_error, ApiError, ApiResult, ErrorKind};
pub use export::export_onnx;
pub use model::{open_model, plugin_info, LoadedModel, ModelInfo, PluginInfo, MAX_THREADS};
pub use run::{evaluate, evaluate_ex, evaluate_path, parse_direction, train};
