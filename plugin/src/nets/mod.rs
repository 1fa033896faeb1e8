//! The networks of the PyTorch reference release, built over a `VarBuilder` whose paths are the
//! checkpoint's keys: the forward context and shared layers ([`forward`], [`layers`], [`norm`]),
//! the generators ([`unet`], [`resnet`], [`generator`]), the PatchGAN discriminator
//! ([`patchgan`]), and the architecture read off a checkpoint ([`arch`]).

pub mod arch;
pub mod forward;
pub mod generator;
pub mod layers;
pub mod memory;
pub mod norm;
pub mod parameters;
pub mod patchgan;
pub mod resnet;
pub mod unet;
