//! What the kernels' unit tests say about paths they could or could not run on this CPU
//! ("skipped (…)", "passed"), through the test harness's own channel (its captured stderr,
//! shown with `--nocapture`). A test module: the library itself never prints.

/// `what` could not run here, because `why`.
pub(crate) fn skipped(what: &str, why: &str) {
    eprintln!("{what}: skipped ({why})");
}

/// `what` ran and its checks held.
pub(crate) fn passed(what: &str) {
    eprintln!("{what}: passed");
}
