//! pix2pix (Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks",
//! CVPR 2017) in candle, on the CPU: the networks of the PyTorch reference release with its
//! checkpoint layout, a translation filter for images of any size, and the trainer. The same
//! crate builds `libpix2pix.so`, which exports this API through a stable Rust ABI (abi_stable)
//! and a C API (`ffi/include/pix2pix.h`).
//!
//! Layers, each using only those before it (ARCHITECTURE.md): the contract (`pix2pix_ffi`),
//! [`kernels`] beneath everything, [`nets`], then [`filter`] and [`train`], then [`faces`].

/// Keeps freed large blocks for reuse once passes repeat (`kernels::BlockCache`); Rust
/// programs that link this crate with their own global allocator turn the feature off.
#[cfg(feature = "block-cache")]
#[global_allocator]
static ALLOCATOR: kernels::BlockCache = kernels::BlockCache;

pub mod checkpoint;
pub mod error;
pub mod export;
pub mod faces;
pub mod filter;
pub mod kernels;
pub mod nets;
pub mod train;

pub use checkpoint::Checkpoint;
pub use error::{Error, Result};
pub use filter::image_tensor::{ImageU8, ImageView};
pub use filter::model::{Model, Options};
pub use filter::size_policy::SizePolicy;
pub use nets::arch::{infer_discriminator, infer_generator};
pub use nets::generator::{Generator, GeneratorConfig};
pub use nets::layers::{Forward, Layer, NormStats};
pub use nets::norm::NormKind;
pub use nets::patchgan::{Discriminator, DiscriminatorConfig, DiscriminatorKind};
