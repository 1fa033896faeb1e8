//! The library's global allocator: blocks of [`MIN`] bytes and more are its own pages, and a
//! few freed ones are kept for reuse once passes repeat; smaller blocks are the system's.
//!
//! Every layer allocates its output and frees its input. Under glibc, multi-megabyte blocks are
//! `mmap`ed and unmapped, or sit in a thread arena's heaps that are trimmed and deleted, pass
//! after pass: page faults, the kernel zeroing pages, TLB-shootdown IPIs between the threads
//! (~13 % of an ngf-32 training step's `perf` samples). A pass repeats its sizes exactly, so a
//! freed block is soon asked for again at the same size: kept here, it comes back with its pages
//! mapped. The cache starts with a model's second translation or a trainer's second step
//! ([`enable`], from `on_pool_after_first`), so a one-shot translation peaks where its blocks in
//! use do; it holds at most [`cap`] bytes (64 MiB, or the pass's peak in use, to which it
//! shrinks as each pass ends) in at most [`SLOTS`] blocks (the oldest go first), reuses exact
//! sizes only, and [`release`] empties it.
//!
//! Large blocks are mapped here (`mmap`, `munmap`), not by glibc: glibc raises its mmap
//! threshold to the size of each mapped block it frees (up to 32 MiB), after which blocks below
//! it come from its heaps, whose holes are not given back. A model on running statistics frees
//! its unfolded weights (blocks of up to 4 MiB) as it opens, and its first translation then
//! peaked at 149 MiB resident against 127 with the threshold fixed (`MALLOC_MMAP_THRESHOLD_=
//! 131072`; the shipped model, `host run`, over the budget of 1.5 × weights + 64 MiB = 146).
//! Mapping them here has that effect for this library's blocks alone: a library does not set
//! its host's malloc options.
//!
//! Measured (kernels bench, ngf 32, 2-thread AVX-512 VM, 2 interleaved runs each, medians; peak
//! resident from `/usr/bin/time`), against glibc's blocks with a 64 MiB cache of 32: training
//! step at batch 1 210–210 → 212–223 ms (minima 190–196 → 185–200), 505 → 425 MiB; at batch 4
//! 637–671 → 639–651 ms, 1058 → 773 MiB; inference at batch 4 73–75 → 73–84 ms (minima 68–69 →
//! 68–70), 240 → 215 MiB. Without the cache's growth to the peak in use ([`cap`]) the batch-1
//! step took 250–253 ms: its blocks were unmapped and mapped again every step.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Blocks from this size are cached.
const MIN: usize = 1 << 20;
/// Blocks held at most.
const SLOTS: usize = 128;
/// Bytes held at most, unless more were in use at once in the pass ([`cap`]).
const CAP: usize = 64 << 20;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Bytes of mapped blocks handed out and not freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most [`LIVE`] has been since the last pass ended ([`end_pass`]) or [`release`].
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// [`PEAK`] of the pass before.
static LAST_PEAK: AtomicUsize = AtomicUsize::new(0);

/// Bytes the cache holds at most: [`CAP`], or the most the library has had in use at once in
/// this pass or the one before, so that a pass whose blocks were all in use together finds all
/// of them again (a training step's: with this pass's peak alone, blocks freed early in a step
/// pushed out the last step's blocks that were still to be taken, and the ngf-32 batch-4 step
/// took 634–662 ms against 528–563). At the end of a pass the cache shrinks to that pass's
/// peak, so that after one huge image the library does not keep its blocks.
fn cap() -> usize {
    CAP.max(PEAK.load(Ordering::Relaxed)).max(LAST_PEAK.load(Ordering::Relaxed))
}

/// Ends a translation or training step: frees the oldest kept blocks beyond 64 MiB or this
/// pass's peak in use, and starts the next pass's peak from what is in use now.
pub(crate) fn end_pass() {
    let peak = PEAK.load(Ordering::Relaxed);
    let cap = CAP.max(peak);
    let evicted = Evicted::oldest_while(&mut cache(), |c| c.bytes > cap);
    LAST_PEAK.store(peak, Ordering::Relaxed);
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    drop(evicted);
}

/// Counts a mapped block of `size` bytes handed out (`p` non-null) or freed.
fn count(p: *mut u8, size: usize, out: bool) -> *mut u8 {
    match (out, p.is_null()) {
        (true, false) => {
            let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        (false, _) => {
            LIVE.fetch_sub(size, Ordering::Relaxed);
        }
        (true, true) => {}
    }
    p
}

#[derive(Clone, Copy)]
struct Slot {
    ptr: usize,
    size: usize,
}

const EMPTY: Slot = Slot { ptr: 0, size: 0 };

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

/// Kept blocks taken out of the cache, to be freed once its lock is released (unmapping takes a
/// system call).
struct Evicted {
    slots: [Slot; SLOTS],
    n: usize,
}

impl Evicted {
    /// The oldest blocks of `c`, taken while `over(c)` holds.
    fn oldest_while(c: &mut Cache, over: impl Fn(&Cache) -> bool) -> Self {
        let mut e = Evicted { slots: [EMPTY; SLOTS], n: 0 };
        while c.len > 0 && over(c) {
            let (oldest, len) = (c.slots[0], c.len);
            c.slots.copy_within(1..len, 0);
            (c.len, c.bytes) = (len - 1, c.bytes - oldest.size);
            e.slots[e.n] = oldest;
            e.n += 1;
        }
        e
    }
}

impl Drop for Evicted {
    fn drop(&mut self) {
        for s in &self.slots[..self.n] {
            free(*s);
        }
    }
}

/// Starts keeping freed large blocks (see the module doc).
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Frees every kept block.
pub(crate) fn release() {
    let evicted = Evicted::oldest_while(&mut cache(), |_| true);
    LAST_PEAK.store(0, Ordering::Relaxed);
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    drop(evicted);
}

fn free(s: Slot) {
    // SAFETY: only mapped blocks are kept (`dealloc`), with the size they were allocated with,
    // and a block out of the cache is owned by nobody else.
    unsafe { unmap(s.ptr as *mut u8, s.size) }
}

/// Alignment that mapped blocks have (a page) and at most are asked for.
const PAGE: usize = 4096;

/// Whether a block of `layout` is this allocator's own pages rather than System's: decided by
/// the layout alone, so that `dealloc` knows where a block came from.
fn mapped(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= MIN && layout.align() <= PAGE
}

/// Fresh zeroed pages for `size` bytes, or null.
#[cfg(target_os = "linux")]
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory; failure is reported as MAP_FAILED, turned into null.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    match p == libc::MAP_FAILED {
        true => std::ptr::null_mut(),
        false => p as *mut u8,
    }
}

/// # Safety
/// `ptr` and `size` are a block from [`map`] that nobody uses any more.
#[cfg(target_os = "linux")]
unsafe fn unmap(ptr: *mut u8, size: usize) {
    // SAFETY: the caller's contract; munmap of a whole mapping cannot fail but on bad
    // arguments, which that contract rules out, so its result is not needed.
    unsafe { libc::munmap(ptr as *mut libc::c_void, size) };
}

#[cfg(not(target_os = "linux"))]
fn map(_: usize) -> *mut u8 {
    unreachable!("blocks are mapped on Linux only")
}

#[cfg(not(target_os = "linux"))]
unsafe fn unmap(_: *mut u8, _: usize) {
    unreachable!("blocks are mapped on Linux only")
}

/// A kept block of exactly `layout`'s size (mapped, so page-aligned: at least any alignment a
/// mapped layout asks), taken out of the cache.
fn take(layout: Layout) -> Option<*mut u8> {
    let mut c = cache();
    let len = c.len;
    let i = c.slots[..len].iter().position(|s| s.size == layout.size())?;
    let s = c.slots[i];
    c.slots.copy_within(i + 1..len, i);
    c.len -= 1;
    c.bytes -= s.size;
    Some(s.ptr as *mut u8)
}

/// Keeps the freed block `ptr` (of `layout`) unless it is larger than the cache, making room
/// by freeing the oldest blocks; false if not kept.
fn keep(ptr: *mut u8, layout: Layout) -> bool {
    let (size, cap) = (layout.size(), cap());
    if size > cap {
        return false;
    }
    let mut c = cache();
    let evicted = Evicted::oldest_while(&mut c, |c| c.len == SLOTS || c.bytes + size > cap);
    let len = c.len;
    c.slots[len] = Slot { ptr: ptr as usize, size };
    (c.len, c.bytes) = (len + 1, c.bytes + size);
    drop(c);
    // Freed outside the lock.
    drop(evicted);
    true
}

fn cached(size: usize) -> bool {
    size >= MIN && ENABLED.load(Ordering::Relaxed)
}

/// The global allocator (see the module doc); installed by `lib.rs` under the default
/// `block-cache` feature.
pub struct BlockCache;

// SAFETY: a block of a layout that is `mapped` is a fresh mapping of exactly its size (page
// aligned, so at least the requested alignment) or such a block freed to this allocator and
// owned by nobody else (taken out of the cache under its lock), and goes back to the cache or
// to munmap with that size; every other block is System's, allocated and freed with the same
// layout. `mapped` depends on the layout alone, so a block is freed where it came from. Nothing
// here panics or allocates.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !mapped(layout) {
            // SAFETY: the caller's contract (a non-zero size).
            return unsafe { System.alloc(layout) };
        }
        let size = layout.size();
        let p = match cached(size).then(|| take(layout)).flatten() {
            Some(p) => p,
            None => map(size),
        };
        count(p, size, true)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !mapped(layout) {
            // SAFETY: as in alloc.
            return unsafe { System.alloc_zeroed(layout) };
        }
        let size = layout.size();
        let p = match cached(size).then(|| take(layout)).flatten() {
            Some(p) => {
                // SAFETY: p holds size writable bytes.
                unsafe { p.write_bytes(0, size) };
                p
            }
            // Fresh pages are zero.
            None => map(size),
        };
        count(p, size, true)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !mapped(layout) {
            // SAFETY: ptr came from System with this layout (the caller's contract and
            // `mapped`'s being false for it then too).
            return unsafe { System.dealloc(ptr, layout) };
        }
        count(ptr, layout.size(), false);
        if cached(layout.size()) && keep(ptr, layout) {
            return;
        }
        // SAFETY: a mapped block of this size (see alloc), no longer used (the caller's
        // contract).
        unsafe { unmap(ptr, layout.size()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract: new_size rounded up to the alignment does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !mapped(layout) && !mapped(new_layout) {
            // SAFETY: the caller's contract.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
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

    /// Large blocks are pages of their own (glibc's mapped chunks start 16 bytes into a page),
    /// and a block grown across the size that separates System's from mapped ones, or shrunk
    /// back, keeps its contents.
    #[test]
    #[cfg(target_os = "linux")]
    fn large_blocks_are_mapped_and_keep_contents_across_reallocation() {
        let big = vec![3u8; MIN + 100];
        assert_eq!(big.as_ptr() as usize % PAGE, 0, "a large block is not a mapping of its own");
        let mut v: Vec<u32> = (0..1000).collect();
        v.reserve_exact(MIN); // System → mapped
        assert_eq!(v.as_ptr() as usize % PAGE, 0);
        v.extend(0..MIN as u32 / 4);
        v.truncate(500);
        v.shrink_to_fit(); // mapped → System
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32), "contents lost");
        assert!(big.iter().all(|&b| b == 3));
    }
}
