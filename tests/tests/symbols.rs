//! The built `libpix2pix.so`, opened with libloading: every function the header declares is
//! exported, and the version functions answer what the header and the crate say.

mod common;

use std::ffi::{c_char, CStr};

use common::*;

/// The function names `ffi/include/pix2pix.h` declares.
fn header_functions() -> Vec<String> {
    let header = std::fs::read_to_string(root().join("ffi/include/pix2pix.h"))
        .expect("read ffi/include/pix2pix.h");
    header
        .lines()
        .filter(|l| {
            !l.starts_with("//")
                && !l.starts_with(' ')
                && !l.starts_with('#')
                && !l.starts_with("typedef")
        })
        .filter_map(|l| {
            let open = l.find('(')?;
            let name = l[..open].rsplit(|c: char| !(c.is_alphanumeric() || c == '_')).next()?;
            name.starts_with("p2p_").then(|| name.to_string())
        })
        .collect()
}

#[test]
fn every_header_function_is_exported() {
    let names = header_functions();
    for required in [
        "p2p_abi_version",
        "p2p_version",
        "p2p_last_error",
        "p2p_status_name",
        "p2p_model_open",
        "p2p_model_free",
        "p2p_model_get_info",
        "p2p_translate",
        "p2p_image_free",
        "p2p_train",
        "p2p_train_ex",
        "p2p_evaluate",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "the header does not declare {required} (found {names:?})"
        );
    }
    let so = plugin_so();
    // SAFETY: loading our own plugin, whose initialisers are Rust statics with no side effects.
    let lib = unsafe { libloading::Library::new(&so) }
        .unwrap_or_else(|e| panic!("{}: {e}", so.display()));
    for name in &names {
        // SAFETY: only the address is looked up; nothing is called through it.
        let sym = unsafe { lib.get::<*const ()>(name.as_bytes()) };
        assert!(sym.is_ok(), "{} does not export `{name}`: {:?}", so.display(), sym.err());
    }
    println!(
        "{} exports all {} functions of the header: {}",
        so.display(),
        names.len(),
        names.join(", ")
    );
}

#[test]
fn versions_answer() {
    let so = plugin_so();
    // SAFETY: as above.
    let lib = unsafe { libloading::Library::new(&so) }
        .unwrap_or_else(|e| panic!("{}: {e}", so.display()));
    // SAFETY: the signatures are those of the header.
    unsafe {
        let abi: libloading::Symbol<extern "C" fn() -> u32> = lib.get(b"p2p_abi_version").unwrap();
        assert_eq!(abi(), pix2pix_ffi::c::P2P_ABI_VERSION);
        let version: libloading::Symbol<extern "C" fn() -> *const c_char> =
            lib.get(b"p2p_version").unwrap();
        assert_eq!(CStr::from_ptr(version()).to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        let last: libloading::Symbol<extern "C" fn() -> *const c_char> =
            lib.get(b"p2p_last_error").unwrap();
        assert!(!last().is_null());
        let name: libloading::Symbol<extern "C" fn(i32) -> *const c_char> =
            lib.get(b"p2p_status_name").unwrap();
        assert_eq!(
            CStr::from_ptr(name(pix2pix_ffi::c::P2P_ERR_CHECKPOINT)).to_str().unwrap(),
            "P2P_ERR_CHECKPOINT"
        );
    }
}
