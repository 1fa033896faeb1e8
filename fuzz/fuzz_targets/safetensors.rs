//! `.safetensors` bytes through the checkpoint reader.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(c) = pix2pix::Checkpoint::from_bytes("fuzz.safetensors", data, &common::limits()) {
        common::check(&c);
    }
});
