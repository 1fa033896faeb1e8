//! The shipped default model: facades label maps → photos (unet_256, ngf 32, f16), trained by
//! the project's own trainer from `models/facades_label2photo.toml` and embedded in the library
//! at build time (the `default-model` cargo feature, on by default), so it is found with no path
//! and no network.

use crate::checkpoint::Checkpoint;
use crate::error::Result;

/// The name the embedded model reports as its source.
pub const NAME: &str = "<embedded facades_label2photo>";

#[cfg(feature = "default-model")]
static BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/facades_label2photo.safetensors"
));

/// The default model's weights.
pub fn checkpoint() -> Result<Checkpoint> {
    #[cfg(feature = "default-model")]
    {
        Checkpoint::from_safetensors_bytes(NAME, BYTES)
    }
    #[cfg(not(feature = "default-model"))]
    {
        Err(crate::error::Error::invalid(
            "model",
            "no default model is shipped in this build (built without the `default-model` feature); pass a checkpoint path",
        ))
    }
}
