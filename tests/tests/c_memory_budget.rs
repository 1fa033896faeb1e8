//! The memory budget through the C API (`tests/c/memory_budget.c`), in a child process whose
//! address space is limited (`RLIMIT_AS`): an 8000² image, whose pad-policy translation would
//! need many GiB, comes back as `P2P_ERR_OUT_OF_MEMORY` with a message giving the estimate and
//! the budget, the process exits normally (no abort), and the model still translates a small
//! image afterwards. With the default budget the limit itself is what the budget is half of.

mod common;

use std::process::Command;

use common::*;

/// Runs the program; returns its `large` and `small` lines.
fn budget_run(budget_mib: u64, rlimit_mib: u64) -> (String, String) {
    let dir = scratch(&format!("c-memory-budget-{budget_mib}"));
    let exe = compile("memory_budget.c", &dir);
    let out = run(Command::new(exe)
        .arg(generator(UNET128))
        .args(["8000", "8000"])
        .arg(budget_mib.to_string())
        .arg(rlimit_mib.to_string()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |p: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("no `{p}` line in {text}"))
            .to_string()
    };
    (line("large "), line("small "))
}

#[test]
fn over_budget_is_a_status_not_an_abort() {
    let (large, small) = budget_run(64, 4096);
    assert!(large.starts_with("P2P_ERR_OUT_OF_MEMORY "), "{large}");
    assert!(large.contains("translating a 8000x8000 image with the pad policy"), "{large}");
    assert!(large.contains("over the memory budget of 64.0 MiB (set by the caller"), "{large}");
    assert!(large.contains("memory_budget_mb"), "{large}");
    assert!(large.contains("the tile policy needs about"), "{large}");
    assert_eq!(small.trim(), "P2P_OK");
}

#[test]
fn default_budget_follows_the_address_space_limit() {
    let (large, small) = budget_run(0, 4096);
    assert!(large.starts_with("P2P_ERR_OUT_OF_MEMORY "), "{large}");
    assert!(
        large.contains("the default: half of the address space left under RLIMIT_AS"),
        "{large}"
    );
    assert_eq!(small.trim(), "P2P_OK");
}
