//! A library that claims to be the pix2pix plugin (same root-module type name, prefix-ref name,
//! module name and version) but whose `open_model` has another signature: the layout check of a
//! host built against `pix2pix_ffi::Pix2PixModRef` must refuse it, with a message, before any
//! function is called (see tests/tests/abi_incompatible.rs).

use abi_stable::{
    declare_root_module_statics, export_root_module,
    library::RootModule,
    package_version_strings,
    prefix_type::PrefixTypeTrait,
    sabi_types::VersionStrings,
    std_types::{RString, RVec},
    StableAbi,
};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = Pix2PixModRef)))]
#[sabi(missing_field(panic))]
pub struct Pix2PixMod {
    pub info: extern "C" fn() -> RString,
    /// Takes raw pixels instead of a path and options: an incompatible change.
    #[sabi(last_prefix_field)]
    pub open_model: extern "C" fn(pixels: RVec<u8>) -> u32,
}

impl RootModule for Pix2PixModRef {
    declare_root_module_statics! {Pix2PixModRef}
    const BASE_NAME: &'static str = "pix2pix";
    const NAME: &'static str = "pix2pix";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

extern "C" fn info() -> RString {
    RString::from("fake")
}

extern "C" fn open_model(pixels: RVec<u8>) -> u32 {
    pixels.len() as u32
}

#[export_root_module]
pub fn get_library() -> Pix2PixModRef {
    Pix2PixMod { info, open_model }.leak_into_prefix()
}
