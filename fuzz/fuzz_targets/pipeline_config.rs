//! Pipeline TOML through the host's parser and resolver: any error is fine (it names the file,
//! line and key); a panic, abort or hang is a finding. Parsing touches no file: paths resolve
//! against a base folder that need not exist.
#![no_main]

use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = host::pipeline::config::parse(text, "fuzz.toml", Path::new("/nonexistent/base"))
    {
        assert!(e.to_string().starts_with("fuzz.toml"), "{e:#}");
    }
});
