//! Reused scratch buffers for the column matrices, which never leave a kernel: a fresh 16 MB
//! allocation per layer costs its page faults (and the kernel's zeroing of each page) every
//! time, which showed in the profile as ~10% of an inference.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Buffers kept between calls; the largest is a layer's column matrix (16 MB for unet_256
/// ngf 64 at batch 1, 64 MB at batch 4), so this bounds the memory held to two of those
/// ([`release`] hands them back).
const KEEP: usize = 2;
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// `len` floats of unspecified (but initialised) contents: whoever takes one writes every
/// element it later reads.
pub(crate) struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

impl Scratch {
    pub fn take(len: usize) -> Self {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest buffer that fits, else the largest (grown below).
        let pick = (0..pool.len())
            .filter(|&i| pool[i].len() >= len)
            .min_by_key(|&i| pool[i].len())
            .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
        let mut buf = pick.map(|i| pool.swap_remove(i)).unwrap_or_default();
        drop(pool);
        // The Vec's length is how much of it has ever been initialised; only grow it.
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        Self { buf, len }
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        pool.push(buf);
        if pool.len() > KEEP {
            let smallest = (0..pool.len()).min_by_key(|&i| pool[i].len()).unwrap_or(0);
            pool.swap_remove(smallest);
        }
    }
}

/// The memory of weights packed at every call (training's), kept for the next packing: 32 MB
/// for ngf 64's largest transposed layer, whose fresh allocation's page faults cost as much as
/// a third of its packing.
static PACKING: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// The kept packing memory (empty when none is kept, or while another packing holds it).
pub(crate) fn take_packing() -> Vec<f32> {
    std::mem::take(&mut *PACKING.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Keeps `buf` for the next [`take_packing`].
pub(crate) fn keep_packing(buf: Vec<f32>) {
    *PACKING.lock().unwrap_or_else(|e| e.into_inner()) = buf;
}

/// Frees the kept buffers (after a large batch, say); the next kernels allocate afresh.
pub fn release() {
    POOL.lock().unwrap_or_else(|e| e.into_inner()).clear();
    drop(take_packing());
}
