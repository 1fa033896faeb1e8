//! pix2pix (Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks",
//! CVPR 2017) in candle, on the CPU: the networks of the PyTorch reference release with its
//! checkpoint layout, a translation filter for images of any size, and the trainer. The same
//! crate builds `libpix2pix.so`, which exports this API through a stable Rust ABI (abi_stable)
//! and a C API (`ffi/include/pix2pix.h`).

pub mod abi_module;
pub mod api;
pub mod arch;
pub mod checkpoint;
pub mod capi;
pub mod default_model;
pub mod error;
pub mod export;
pub mod frei0r;
pub mod generator;
pub mod image_tensor;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod norm;
pub mod patchgan;
pub mod resnet;
pub mod size_policy;
mod tiling;
pub mod unet;

pub use arch::{infer_discriminator, infer_generator};
pub use checkpoint::Checkpoint;
pub use error::{Error, Result};
pub use generator::{Generator, GeneratorConfig};
pub use image_tensor::{ImageU8, ImageView};
pub use layers::{Forward, Layer, NormStats};
pub use model::{Model, Options};
pub use norm::NormKind;
pub use patchgan::{Discriminator, DiscriminatorConfig, DiscriminatorKind};
pub use size_policy::SizePolicy;
pub mod train;
