//! Opt-in phase timers (`PIX2PIX_KERNELS_PROFILE=1`): where the kernels spend their time, per
//! phase and layer shape, for the benchmark's profile. Off, a timer is one relaxed load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 off, 2 on
static TOTALS: Mutex<BTreeMap<String, (u64, f64, f64)>> = Mutex::new(BTreeMap::new());

pub(crate) fn enabled() -> bool {
    match ON.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var("PIX2PIX_KERNELS_PROFILE").is_ok_and(|v| v != "0");
            ON.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Times `f` under `key` when profiling, counting `flops` against it.
pub(crate) fn timed<R>(key: impl FnOnce() -> String, flops: f64, f: impl FnOnce() -> R) -> R {
    if !enabled() {
        return f();
    }
    let t = Instant::now();
    let r = f();
    let dt = t.elapsed().as_secs_f64();
    let mut m = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let e = m.entry(key()).or_insert((0, 0.0, 0.0));
    e.0 += 1;
    e.1 += dt;
    e.2 += flops;
    r
}

/// The accumulated timings, one line per key (calls, total ms, GFLOP/s where counted), and
/// resets them.
pub fn take_report() -> String {
    let mut m = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    let mut keys: Vec<_> = m.iter().collect();
    keys.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    for (k, (n, t, fl)) in keys {
        let gf = if *fl > 0.0 { format!("{:7.1} GFLOP/s", fl / t / 1e9) } else { String::new() };
        out += &format!("{k:<58} calls {n:5}  {:9.2} ms  {gf}\n", t * 1e3);
    }
    m.clear();
    out
}
