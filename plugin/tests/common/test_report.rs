//! What the tests say about paths they could or could not run on this CPU ("skipped (…)",
//! "passed"), through the test harness's own channel (its captured stderr, shown with
//! `--nocapture`). Test support only: the plugin's unit tests include this file by path
//! (`kernels/mod.rs`, `#[cfg(test)]`), so it uses std only; the library never prints.

/// `what` could not run here, because `why`.
pub fn skipped(what: &str, why: &str) {
    eprintln!("{what}: skipped ({why})");
}

/// `what` ran and its checks held.
pub fn passed(what: &str) {
    eprintln!("{what}: passed");
}
