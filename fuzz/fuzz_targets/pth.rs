//! `.pth` bytes (zip + pickle) through the checkpoint reader: any error is fine, a panic, abort,
//! hang or unbounded allocation is a finding.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(c) = pix2pix::Checkpoint::from_bytes("fuzz.pth", data, &common::limits()) {
        common::check(&c);
    }
});
