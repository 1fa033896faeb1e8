//! The memory budget of a request, checked before anything of the request's size is allocated:
//! the estimate of a translation (the image buffers of the size policy's path plus the
//! network's peak, [`crate::nets::memory`]), the budget it is checked against, and fallible
//! allocation of buffers whose size a caller's input decides. Over budget, or when the system
//! refuses the memory, the request fails with [`Error::OutOfMemory`] (`P2P_ERR_OUT_OF_MEMORY`)
//! instead of aborting the process.
//!
//! The default budget is half of the memory the process may use: the least of the physical
//! memory (`MemTotal` of `/proc/meminfo`), the cgroup's limit (v2 `memory.max`, v1
//! `memory.limit_in_bytes`) and, under `RLIMIT_AS`, the address space left below that limit.
//! Half, because the estimate is of one request and the process has other needs (the model's
//! weights, the host's decoded images, other requests in flight); a caller that knows better
//! sets the budget itself (`memory_budget_mb`; `--memory-budget` in `host`), up to all of the
//! memory the process may use: a larger setting is capped there.

use crate::error::{Error, Result};
use crate::filter::model::Options;
use crate::filter::size_policy::SizePolicy;
use crate::filter::tiling::{self, Grid};
use crate::nets::generator::GeneratorConfig;
use crate::nets::memory::forward_peak;

const MIB: u64 = 1 << 20;

/// How a face names the budget option, for the error message.
pub const HOW_TO_SET: &str =
    "set the memory budget to change it: `--memory-budget <MiB>` in host, `memory_budget_mb` in p2p_options and OpenOptions, `train.memory_budget_mb` in a training config";

/// The budget in bytes for a setting in MiB (0: the default), and how it was chosen.
pub fn budget(memory_budget_mb: u64) -> (u64, String) {
    let (limit, source) = memory_limit();
    if memory_budget_mb != 0 {
        let set = memory_budget_mb.saturating_mul(MIB);
        // Beyond what the process may use, the allocation would fail inside an infallible
        // kernel (an abort): a caller's budget is capped there.
        if set > limit {
            return (limit, format!("set by the caller to {}, capped at {source}", human(set)));
        }
        return (set, "set by the caller".into());
    }
    (limit / 2, format!("the default: half of {source}"))
}

/// The memory this process may use, and where that figure comes from.
fn memory_limit() -> (u64, String) {
    let mut best = (u64::MAX, "an unknown amount (no /proc/meminfo)".to_string());
    let mut consider = |v: Option<u64>, what: &str| {
        if let Some(v) = v.filter(|&v| v < best.0) {
            best = (v, format!("{what} ({})", human(v)));
        }
    };
    consider(meminfo_kib("MemTotal:").map(|k| k * 1024), "physical memory");
    consider(read_u64("/sys/fs/cgroup/memory.max"), "the cgroup's memory.max");
    consider(read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes"), "the cgroup's memory limit");
    consider(address_space_left(), "the address space left under RLIMIT_AS");
    if best.0 == u64::MAX {
        // No figure at all: a budget that refuses nothing is no worse than before.
        best.0 = u64::MAX / 2;
    }
    best
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `/proc/self/status` or `/proc/meminfo` line's value in KiB.
fn kib_line(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn meminfo_kib(key: &str) -> Option<u64> {
    kib_line(&std::fs::read_to_string("/proc/meminfo").ok()?, key)
}

/// `RLIMIT_AS` minus the address space already mapped, if there is a limit.
fn address_space_left() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `getrlimit` writes one `rlimit` to the pointer, which points to a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mapped = kib_line(&status, "VmSize:").unwrap_or(0) * 1024;
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    Some((r.rlim_cur as u64).saturating_sub(mapped))
}

/// `n` bytes as MiB or GiB, one decimal.
pub fn human(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    }
}

/// Refuses `what`, estimated at `estimate` bytes, when it exceeds the budget of `memory_budget_mb`
/// (0: the default); `hint` (may be empty) says how to need less, made only on refusal.
pub fn check(
    what: &str,
    estimate: u64,
    memory_budget_mb: u64,
    hint: impl FnOnce() -> String,
) -> Result<()> {
    let (budget, source) = budget(memory_budget_mb);
    if estimate <= budget {
        return Ok(());
    }
    let hint = hint();
    let hint = if hint.is_empty() { String::new() } else { format!("; {hint}") };
    Err(Error::OutOfMemory(format!(
        "{what} needs about {} (estimate), over the memory budget of {} ({source}; {HOW_TO_SET}){hint}",
        human(estimate),
        human(budget)
    )))
}

/// The estimated peak bytes of translating a `w`×`h` image with `config` under `options`: the
/// buffers of the size policy's path (input and output samples, the padded or resized copy,
/// the tensors in and out, the tile blend) plus the network's forward peak on what it is given.
pub fn translate_bytes(config: &GeneratorConfig, options: &Options, w: usize, h: usize) -> u64 {
    let (cin, cout) = config.channels();
    let (w, h) = (w as u128, h as u128);
    let (ci, co) = (cin as u128, cout as u128);
    let stride = config.stride() as u128;
    let dropout = options.dropout_seed.is_some();
    // Always alive: the input in f32, the output in f32 and as written (≤ 4 bytes a sample,
    // alpha included).
    let ends = w * h * ci + w * h * co + w * h * (co + 1);
    let net = |n: u128, side_h: u128, side_w: u128| -> u128 {
        forward_peak(
            config,
            n as usize,
            side_h as usize,
            side_w as usize,
            dropout,
            options.precision,
        ) as u128
    };
    let whole = |pw: u128, ph: u128| -> u128 {
        // The (padded) input, its tensor, the output tensor's copy and its image.
        4 * (pw * ph * ci * 2 + pw * ph * co * 2) + net(1, ph, pw)
    };
    let stride_multiple = w % stride == 0 && h % stride == 0;
    let bytes = match options.size_policy {
        SizePolicy::Tile => tile_bytes(config, options, w, h, &net),
        _ if stride_multiple => whole(w, h),
        SizePolicy::Pad => whole(w.div_ceil(stride) * stride, h.div_ceil(stride) * stride),
        SizePolicy::Resize => {
            let n = config.native_size() as u128;
            // Resizing one channel plane at a time: the plane, the image crate's intermediate
            // pass and its result, each way.
            let planes = w * h + n.max(w) * n.max(h) * 2;
            whole(n, n) + 4 * planes
        }
    };
    u64::try_from(4 * ends + bytes).unwrap_or(u64::MAX)
}

/// [`translate_bytes`] of the tile policy: the padded image, one batch of tiles through the
/// network, and the blend (a band of one tile row, or the whole image with shared statistics).
fn tile_bytes(
    config: &GeneratorConfig,
    options: &Options,
    w: u128,
    h: u128,
    net: &dyn Fn(u128, u128, u128) -> u128,
) -> u128 {
    let (ci, co) = (config.channels().0 as u128, config.channels().1 as u128);
    let g = tiling::geometry(config, options);
    let t = g.tile;
    let align = tiling::alignment(t, g.stride) as u128;
    let (pw, ph) =
        (w.max(t as u128).next_multiple_of(align), h.max(t as u128).next_multiple_of(align));
    let grid = Grid::new(pw as usize, ph as usize, t, g.overlap.min(t / 2), align as usize);
    let (per_batch, band) = match g.shared_stats {
        true => (tiling::SHARED_STATS_PIXELS / (t * t), ph),
        false => (tiling::CHUNK_PIXELS / (t * t), t as u128),
    };
    let tiles = match g.shared_stats {
        true => grid.xs.len() * grid.ys.len(),
        false => grid.xs.len(),
    };
    let n = per_batch.max(1).min(tiles.max(1)) as u128;
    let t = t as u128;
    // The tile batch in, its output flattened and split per tile.
    let batch = n * t * t * (ci + 2 * co);
    let blend = pw * band * (co + 1);
    // The padded copy, the blended image and its crop.
    let images = pw * ph * ci + pw * ph * co * 2;
    4 * (batch + blend + images) + net(n, t, t)
}

/// `n` copies of `v`, or [`Error::OutOfMemory`] naming `what` when the system refuses the memory.
pub fn try_vec<T: Clone>(n: usize, v: T, what: &str) -> Result<Vec<T>> {
    let mut out = try_with_capacity(n, what)?;
    out.resize(n, v);
    Ok(out)
}

/// An empty vector with room for `n` elements, or [`Error::OutOfMemory`] naming `what`.
pub fn try_with_capacity<T>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| {
        let bytes = (n as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        Error::OutOfMemory(format!("cannot allocate {} for {what}", human(bytes)))
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_budget_is_capped_at_the_memory_the_process_may_use() {
        let (limit, _) = memory_limit();
        let (b, source) = budget(u64::MAX / MIB);
        assert_eq!(b, limit, "{source}");
        assert!(source.contains("capped"), "{source}");
        assert_eq!(budget(64), (64 * MIB, "set by the caller".to_string()));
    }
}
