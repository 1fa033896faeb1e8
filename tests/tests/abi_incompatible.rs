//! A library that exports a root module under pix2pix's name but with another layout
//! (tests/fake-plugin) is refused by the abi_stable layout check, with a message, before any of
//! its functions is called. (Its own test binary: abi_stable caches the first root module a
//! process loads.)

mod common;

use abi_stable::library::{lib_header_from_path, LibraryError, RootModule};
use pix2pix_ffi::Pix2PixModRef;

#[test]
fn a_plugin_with_another_layout_is_refused() {
    let fake = common::built_library("libpix2pix_fake_plugin.so");
    let header = lib_header_from_path(&fake)
        .unwrap_or_else(|e| panic!("{}: not an abi_stable library at all: {e}", fake.display()));
    let err = match header.init_root_module::<Pix2PixModRef>() {
        Ok(_) => panic!("{} was accepted as the pix2pix plugin", fake.display()),
        Err(e) => e,
    };
    let message = err.to_string();
    println!("refused with:\n{message}");
    assert!(
        matches!(err, LibraryError::AbiInstability(_)),
        "expected a layout refusal, got: {message}"
    );
    assert!(!message.is_empty());

    // The same through the usual entry point.
    match Pix2PixModRef::load_from_file(&fake) {
        Ok(_) => panic!("load_from_file accepted {}", fake.display()),
        Err(e) => assert!(matches!(e, LibraryError::AbiInstability(_)), "{e}"),
    }
}

#[test]
fn a_library_without_a_root_module_is_refused() {
    // The C/C++ side's own library is no abi_stable plugin: libstdc++ or libc will do.
    let not_a_plugin = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .map(std::path::Path::new)
    .find(|p| p.exists());
    let Some(path) = not_a_plugin else {
        eprintln!("NOTE: no libm found at the usual places; skipped");
        return;
    };
    match lib_header_from_path(path) {
        Ok(_) => panic!("{} has an abi_stable root module?", path.display()),
        Err(e) => {
            println!("refused {}: {e}", path.display());
            assert!(matches!(e, LibraryError::GetSymbolError { .. }), "{e}");
        }
    }
}
