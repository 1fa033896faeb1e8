//! The bounded pickle machine alone, on raw pickle streams (no zip around them to get right).
#![no_main]

use pix2pix::checkpoint::{pickle, PickleLimits};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(p) = pickle::parse(data, &PickleLimits::default()) {
        assert!(p.values() > 0);
        let _ = p.get(p.root());
    }
});
