//! `#[repr(C)]` types of the C API (see `include/pix2pix.h`).
