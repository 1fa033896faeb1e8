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
    // The C side's own library is no abi_stable plugin: the libc this test process runs on is
    // one that certainly exists, wherever the distribution keeps it.
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(std::path::Path::new)
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libc.so")))
        .unwrap_or_else(|| panic!("no libc.so mapped into this process:\n{maps}"));
    match lib_header_from_path(path) {
        Ok(_) => panic!("{} has an abi_stable root module?", path.display()),
        Err(e) => {
            println!("refused {}: {e}", path.display());
            assert!(matches!(e, LibraryError::GetSymbolError { .. }), "{e}");
        }
    }
}
