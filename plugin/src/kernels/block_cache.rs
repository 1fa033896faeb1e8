//! The library's global allocator: the system's, keeping a few freed large blocks for reuse
//! once passes repeat.
//!
//! Every layer allocates its output and frees its input. Under glibc, multi-megabyte blocks are
//! `mmap`ed and unmapped, or sit in a thread arena's heaps that are trimmed and deleted, pass
//! after pass: page faults, the kernel zeroing pages, TLB-shootdown IPIs between the threads
//! (~13 % of an ngf-32 training step's `perf` samples). A pass repeats its sizes exactly, so a
//! freed block is soon asked for again at the same size: kept here, it comes back with its pages
//! mapped. The cache starts with a model's second translation or a trainer's second step
//! ([`enable`], from `on_pool_after_first`), so a one-shot translation peaks where the system
//! allocator alone would; it holds at most [`CAP`] bytes in at most [`SLOTS`] blocks (the
//! oldest go first), reuses exact sizes only, and [`release`] empties it.
//!
//! Measured (kernels bench, 2-thread AVX-512 VM, 2 interleaved runs each, against the system
//! allocator alone): ngf-32 training step at batch 4 576 → 528–533 ms (medians), at batch 1
//! 168–169 → 165; inference at batch 4 68–70 → 64.5–66.7 ms (page faults per run 136 K →
//! 79 K), at batch 1 within 1 %; peak resident +3 MiB (inference, batch 1) to +53 MiB
//! (training, batch 4).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Blocks from this size are cached.
const MIN: usize = 1 << 20;
/// Blocks held at most.
const SLOTS: usize = 32;
/// Bytes held at most.
const CAP: usize = 64 << 20;

static ENABLED: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy)]
struct Slot {
    ptr: usize,
    size: usize,
    align: usize,
}

const EMPTY: Slot = Slot { ptr: 0, size: 0, align: 0 };

/// Kept blocks, oldest first.
struct Cache {
    slots: [Slot; SLOTS],
    len: usize,
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache { slots: [EMPTY; SLOTS], len: 0, bytes: 0 });

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    // Nothing panics while holding it; a poisoned lock still guards consistent data.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts keeping freed large blocks (see the module doc).
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Frees every kept block.
pub(crate) fn release() {
    let mut freed = [EMPTY; SLOTS];
    let n = {
        let mut c = cache();
        let n = c.len;
        freed[..n].copy_from_slice(&c.slots[..n]);
        (c.len, c.bytes) = (0, 0);
        n
    };
    for s in &freed[..n] {
        free(*s);
    }
}

fn free(s: Slot) {
    // SAFETY: s was allocated by System with exactly this size and alignment (`keep` stores
    // the layout it was freed with) and is owned by nobody else once out of the cache.
    unsafe { System.dealloc(s.ptr as *mut u8, Layout::from_size_align_unchecked(s.size, s.align)) }
}

/// A kept block of exactly `layout`'s size and at least its alignment, taken out of the cache.
fn take(layout: Layout) -> Option<*mut u8> {
    let mut c = cache();
    let len = c.len;
    let i =
        c.slots[..len].iter().position(|s| s.size == layout.size() && s.align >= layout.align())?;
    let s = c.slots[i];
    c.slots.copy_within(i + 1..len, i);
    c.len -= 1;
    c.bytes -= s.size;
    Some(s.ptr as *mut u8)
}

/// Keeps the freed block `ptr` (of `layout`) unless it is larger than the cache, making room
/// by freeing the oldest blocks; false if not kept.
fn keep(ptr: *mut u8, layout: Layout) -> bool {
    let size = layout.size();
    if size > CAP {
        return false;
    }
    let mut evicted = [EMPTY; SLOTS];
    let mut n = 0;
    {
        let mut c = cache();
        while c.len > 0 && (c.len == SLOTS || c.bytes + size > CAP) {
            let oldest = c.slots[0];
            let len = c.len;
            c.slots.copy_within(1..len, 0);
            c.len -= 1;
            c.bytes -= oldest.size;
            evicted[n] = oldest;
            n += 1;
        }
        let len = c.len;
        c.slots[len] = Slot { ptr: ptr as usize, size, align: layout.align() };
        c.len += 1;
        c.bytes += size;
    }
    // Freed outside the lock: unmapping takes a system call.
    for s in &evicted[..n] {
        free(*s);
    }
    true
}

fn cached(size: usize) -> bool {
    size >= MIN && ENABLED.load(Ordering::Relaxed)
}

/// The global allocator (see the module doc); installed by `lib.rs` under the default
/// `block-cache` feature.
pub struct BlockCache;

// SAFETY: every block handed out is either fresh from System or a System block of the same size
// and at least the requested alignment that was freed to this allocator and is owned by nobody
// else (taken out of the cache under its lock); blocks are given back to System with the layout
// they were allocated with. Nothing here panics or allocates.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if cached(layout.size()) {
            if let Some(p) = take(layout) {
                return p;
            }
        }
        // SAFETY: the caller's contract (a non-zero size).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if cached(layout.size()) {
            if let Some(p) = take(layout) {
                // SAFETY: p holds layout.size() writable bytes.
                unsafe { p.write_bytes(0, layout.size()) };
                return p;
            }
        }
        // SAFETY: as in alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if cached(layout.size()) && keep(ptr, layout) {
            return;
        }
        // SAFETY: ptr came from System with this layout (alloc hands out only System blocks of
        // exactly the requested size, and the alignment it was made with is at least this one,
        // which glibc's free does not need).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !cached(layout.size()) && !cached(new_size) {
            // SAFETY: the caller's contract.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller's contract: new_size rounded up to the alignment does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a non-zero size (the caller's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks hold at least the copied bytes and do not overlap; ptr is
            // then freed with the layout it was allocated with.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(all(test, feature = "block-cache"))]
mod tests {
    use super::*;

    /// A freed large block comes back for the next request of its size, zeroed when asked
    /// zeroed (it held other bytes), and `release` hands the kept ones back to the system.
    #[test]
    fn freed_large_blocks_are_reused_and_zeroed() {
        enable();
        // A size no other test allocates, so that no concurrent test takes the block.
        const SIZE: usize = (2 << 20) + 4096 + 12;
        let a = vec![7u8; SIZE];
        let at = a.as_ptr();
        drop(a);
        let b = vec![0u8; SIZE];
        assert_eq!(b.as_ptr(), at, "the freed block was not reused");
        assert!(b.iter().all(|&v| v == 0), "a reused block asked zeroed was not zeroed");
        drop(b);
        let kept = |size: usize| {
            let c = cache();
            c.slots[..c.len].iter().any(|s| s.size == size)
        };
        assert!(kept(SIZE), "the freed block was not kept");
        release();
        assert!(!kept(SIZE), "release kept the block");
        // Small blocks are the system's alone.
        let small = vec![1u8; MIN / 2];
        drop(small);
        assert!(!kept(MIN / 2), "a small block was kept");
    }
}
