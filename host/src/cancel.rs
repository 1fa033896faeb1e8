//! Ctrl-C: the first asks the running command to stop at a safe point (training saves a
//! checkpoint, a pipeline finishes the images in flight); the second exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Installs the handler; `what` completes "Ctrl-C: …" in the notice.
pub fn install(what: &'static str) -> Result<()> {
    ctrlc::set_handler(move || {
        if CANCELLED.swap(true, Ordering::SeqCst) {
            eprintln!("\nCtrl-C again: exiting now");
            std::process::exit(crate::exit::EXIT_INTERRUPTED as i32);
        }
        eprintln!("\nCtrl-C: {what} (press again to quit at once)");
    })
    .context("cannot install the Ctrl-C handler")
}

pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}
