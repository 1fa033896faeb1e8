//! Threads are shared by the library, not multiplied per model (`tests/c/shared_threads.c`):
//! four callers translating at once with eight models (default options, and `threads` = the
//! CPU count) add at most one thread per CPU to the process; with `threads = 1` the capped
//! pools add at most one more per CPU; concurrent results equal the serial ones byte for byte
//! (the C program checks that).

mod common;

use std::process::Command;

use common::*;

#[test]
fn four_callers_share_one_pool() {
    let dir = scratch("shared-threads");
    let exe = compile("shared_threads.c", &dir);
    let out = run(Command::new(&exe).arg(generator(UNET256)).args(["256", "256"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> usize {
        let words: Vec<&str> = text.split_whitespace().collect();
        let i = words.iter().position(|w| *w == name).unwrap_or_else(|| panic!("{text}"));
        words[i + 1].parse().unwrap_or_else(|_| panic!("{text}"))
    };
    let (cpus, baseline, shared, capped) =
        (field("cpus"), field("baseline"), field("shared"), field("capped"));
    // One global pool of one thread per CPU; 2 spare for threads a runtime may start.
    assert!(
        shared <= baseline + cpus + 2,
        "{shared} threads with 8 models on {cpus} CPUs (baseline {baseline}): pools multiplied"
    );
    // Plus at most CPU-count pools of one thread for the capped translations.
    assert!(
        capped <= baseline + 2 * cpus + 2,
        "{capped} threads with threads = 1 on {cpus} CPUs (baseline {baseline})"
    );
}
