//! Where a translation's parallel work runs: threads are shared by the whole library, not
//! multiplied per model.
//!
//! - By default (`threads = 0`) every translation runs on rayon's global pool of this library,
//!   one pool of [`machine_threads`] workers shared by all models (concurrent translations
//!   interleave on it), moved onto one of its workers as a whole
//!   ([`on_pool`](crate::kernels::on_pool)), not only the ops' parallel parts.
//! - `threads = N` below the machine's count caps one translation at N threads: it runs on a
//!   pool of N workers borrowed from a library-wide set for N, which holds at most
//!   `machine / N` such pools (at least one), made on first need and kept. Concurrent
//!   translations with the same cap each borrow their own pool while one is free (so
//!   `threads = 1` with four callers on four cores runs four at once), and wait for one
//!   otherwise. Threads in these pools: at most the machine's count per distinct N.
//!   (rayon cannot cap how many of one pool's workers a job uses, hence pools of N.)
//!   N at or above the machine's count is the default.
//! - A private pool of N threads (N = 0: the machine's count), the model's own, only when
//!   asked ([`Threads::private`]).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::error::{Error, Result};

/// Hardware threads this process may use: `available_parallelism`, which respects the CPU
/// affinity mask and cgroup quotas (also the size of rayon's global pool unless
/// `RAYON_NUM_THREADS` says otherwise).
pub fn machine_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// How one model runs its translations.
pub enum Threads {
    /// The library's global pool.
    Shared,
    /// A pool of this many threads borrowed from the library-wide set for that size.
    Capped(usize),
    /// The model's own pool.
    Private(rayon::ThreadPool),
}

impl Threads {
    /// The shared arrangement for `threads` (0 = all of the machine's).
    pub fn shared(threads: usize) -> Self {
        if threads == 0 || threads >= machine_threads() {
            Threads::Shared
        } else {
            Threads::Capped(threads)
        }
    }

    /// A private pool of `threads` threads (0 = the machine's count).
    pub fn private(threads: usize) -> Result<Self> {
        let n = if threads == 0 { machine_threads() } else { threads };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::invalid("threads", format!("cannot start {n} threads: {e}")))?;
        Ok(Threads::Private(pool))
    }

    /// Runs `f` where this arrangement says.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
        match self {
            Threads::Shared => crate::kernels::on_pool(f),
            Threads::Private(pool) => pool.install(f),
            Threads::Capped(n) => {
                let set = pool_set(*n);
                // Given back when dropped, even if `f` panics (the faces catch panics).
                let borrowed = Borrowed { pool: set.borrow()?, set: &set };
                borrowed.pool.install(f)
            }
        }
    }
}

/// The pools of one size: idle ones, and how many exist.
struct PoolSet {
    threads: usize,
    most: usize,
    state: Mutex<(Vec<Arc<rayon::ThreadPool>>, usize)>,
    freed: Condvar,
}

/// The library-wide set of pools of `threads` threads.
fn pool_set(threads: usize) -> Arc<PoolSet> {
    static SETS: OnceLock<Mutex<HashMap<usize, Arc<PoolSet>>>> = OnceLock::new();
    let mut sets = SETS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    sets.entry(threads)
        .or_insert_with(|| {
            Arc::new(PoolSet {
                threads,
                most: (machine_threads() / threads).max(1),
                state: Mutex::new((Vec::new(), 0)),
                freed: Condvar::new(),
            })
        })
        .clone()
}

impl PoolSet {
    /// An idle pool, a new one while fewer than `most` exist, else the next one freed.
    fn borrow(&self) -> Result<Arc<rayon::ThreadPool>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(pool) = state.0.pop() {
                return Ok(pool);
            }
            if state.1 < self.most {
                state.1 += 1;
                drop(state);
                let built = rayon::ThreadPoolBuilder::new().num_threads(self.threads).build();
                return built.map(Arc::new).map_err(|e| {
                    let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    state.1 -= 1;
                    Error::invalid("threads", format!("cannot start {} threads: {e}", self.threads))
                });
            }
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A pool borrowed from a [`PoolSet`], returned to it on drop.
struct Borrowed<'a> {
    pool: Arc<rayon::ThreadPool>,
    set: &'a PoolSet,
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        let mut state = self.set.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0.push(self.pool.clone());
        drop(state);
        self.set.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_translations_run_on_pools_of_their_size() {
        let n = machine_threads();
        assert!(matches!(Threads::shared(0), Threads::Shared));
        assert!(matches!(Threads::shared(n), Threads::Shared));
        if n > 1 {
            let t = Threads::shared(1);
            let seen = t.install(|| Ok(rayon::current_num_threads())).unwrap();
            assert_eq!(seen, 1);
            // Concurrent capped calls never make more pools than the machine has threads.
            std::thread::scope(|s| {
                for _ in 0..4 * n {
                    s.spawn(|| t.install(|| Ok(rayon::current_num_threads())).unwrap());
                }
            });
            let set = pool_set(1);
            let state = set.state.lock().unwrap();
            assert!(state.1 <= n && state.1 >= 1, "{} pools of 1 on {n} threads", state.1);
            assert_eq!(state.0.len(), state.1, "every pool is given back");
        }
        let p = Threads::private(3).unwrap();
        assert_eq!(p.install(|| Ok(rayon::current_num_threads())).unwrap(), 3);
    }
}
