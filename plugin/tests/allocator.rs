//! The library's allocator across passes (a translation or a training step each): a freed large
//! block is kept for the next pass, and given back once a pass ends that did not need it. Alone
//! in its test binary: it reads the process's resident memory.

use pix2pix::kernels;

/// Resident memory of this process, bytes.
fn resident() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kib: usize = line["VmRSS:".len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

#[test]
#[cfg(all(target_os = "linux", feature = "block-cache"))]
fn a_large_block_is_kept_for_the_next_pass_and_given_back_after_a_smaller_one() {
    const BIG: usize = 200 << 20;
    // A pass that fills a block of BIG bytes (every page touched) and frees it; its address.
    let big_pass = || {
        kernels::on_pool_after_first(false, || {
            let v = std::hint::black_box(vec![1u8; BIG]);
            v.as_ptr() as usize
        })
    };
    kernels::on_pool_after_first(true, || ());
    let base = resident();
    let first = big_pass();
    assert!(resident() >= base + BIG / 2, "the freed block was not kept after its pass");
    assert_eq!(big_pass(), first, "the next pass did not get the kept block back");
    // A pass that needs nothing large: the cache shrinks to its peak.
    kernels::on_pool_after_first(false, || ());
    let after = resident();
    assert!(
        after + BIG / 2 <= base + BIG,
        "the block was kept after a smaller pass: {after} vs {base}"
    );
}
