//! The shipped default model (facades labels → photo), once the project has trained one.

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

pub fn checkpoint() -> Result<Checkpoint> {
    Err(Error::invalid("model", "no default model is shipped in this build; pass a checkpoint path"))
}
