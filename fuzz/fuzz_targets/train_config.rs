//! Training config TOML through the trainer's parser and checks: any error is fine (it must
//! name a key or a line); a panic, abort or hang is a finding. A config that passes must give
//! networks whose sizes the checks bounded.
#![no_main]

use pix2pix::train::config::Config;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text) {
        Ok(c) => {
            let _ = (c.generator_config(), c.discriminator_config());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
