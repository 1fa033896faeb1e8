//! Tiled translation for very large images (in progress).

use crate::error::{Error, Result};
use crate::model::Model;

pub(crate) fn translate_tiled(_model: &Model, _rgb: &[u8], _w: usize, _h: usize) -> Result<Vec<u8>> {
    Err(Error::invalid("size policy", "tile is not implemented yet"))
}
