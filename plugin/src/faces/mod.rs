//! The faces callers see, over one shared layer ([`api`]): the abi_stable root module for Rust
//! hosts ([`abi_module`]), the C API ([`capi`]), and the frei0r filter ([`frei0r`]). Each face
//! only converts its own types and calls [`api`]; [`default_model`] is the model shipped inside
//! the library.

pub mod abi_module;
pub mod api;
pub mod capi;
pub mod default_model;
pub mod frei0r;
