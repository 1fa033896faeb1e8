//! The translation filter: a generator opened from a checkpoint ([`model`]) turning 8-bit images
//! of any size into translated images of the same size. The model picks the size policy
//! ([`size_policy`]); the policies use leaf pixel helpers ([`pixels`]) and, for very large
//! images, feathered tiles run through a forward function ([`tiling`]); [`image_tensor`]
//! converts between 8-bit pixels and the network's tensors; [`threads`] says where a
//! translation's parallel work runs. A batch of images of one size is one forward pass
//! ([`model::Model::translate_batch`]), shared by every face.

pub mod image_tensor;
pub mod memory;
pub mod model;
mod pixels;
pub mod size_policy;
pub mod threads;
mod tiling;
