//! Result buffers of the kernels, drawn from the running program's buffer pool.
//!
//! A lowered program frees each value right after its last reader (the liveness plan of
//! `lower`); on the CPU backend the f32 storage of a freed value that nothing else references
//! goes back to the program's [`BufferPool`] instead of the allocator, and the next kernel
//! result of a similar size takes it from there. So a run after the first allocates (almost)
//! nothing for kernel results, whatever the process's allocator: with glibc's malloc, buffers of
//! a few MB otherwise come back as fresh pages every run (page faults, kernel zeroing).
//!
//! The pool of the program running on this thread is installed for the duration of the run
//! ([`install`]); kernels ask for their result buffers through [`zeroed`] and [`for_overwrite`],
//! which fall back to the allocator when no pool is installed (kernels called directly, rayon
//! worker threads).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Freed f32 buffers of one program, by capacity.
///
/// Only buffers the pool handed out come back to it (their addresses are remembered): the
/// results of burn's own operations go back to the allocator, so the pool holds just the
/// buffers kernel results circulate through.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<BTreeMap<usize, Vec<Vec<f32>>>>,
    handed_out: Mutex<HashSet<usize>>,
    held_bytes: AtomicU64,
    limit_bytes: AtomicU64,
    reused: AtomicU64,
    fresh: AtomicU64,
    poison: AtomicBool,
}

/// Counters of a [`BufferPool`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounters {
    /// Kernel result buffers taken from the pool.
    pub reused: u64,
    /// Kernel result buffers the pool could not serve (allocated).
    pub fresh: u64,
    /// Bytes the pool holds now.
    pub held_bytes: u64,
}

impl BufferPool {
    /// An empty pool holding at most `limit_bytes`.
    pub fn new(limit_bytes: u64) -> Self {
        let p = BufferPool::default();
        p.limit_bytes.store(limit_bytes, Ordering::Relaxed);
        p
    }

    /// Change the most bytes the pool holds: the largest buffers beyond it go back to the
    /// allocator now, and later ones are not kept.
    pub fn set_limit(&self, bytes: u64) {
        self.limit_bytes.store(bytes, Ordering::Relaxed);
        let Ok(mut free) = self.free.lock() else {
            return;
        };
        while self.held_bytes.load(Ordering::Relaxed) > bytes {
            let Some(mut entry) = free.last_entry() else {
                break;
            };
            let cap = *entry.key();
            if entry.get_mut().pop().is_some() {
                self.held_bytes.fetch_sub(4 * cap as u64, Ordering::Relaxed);
            }
            if entry.get().is_empty() {
                entry.remove();
            }
        }
    }

    /// Fill every reused buffer with NaN before handing it out: a check, for tests, that
    /// kernels asking for [`for_overwrite`] buffers write every element.
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    /// The counters so far.
    pub fn counters(&self) -> PoolCounters {
        PoolCounters {
            reused: self.reused.load(Ordering::Relaxed),
            fresh: self.fresh.load(Ordering::Relaxed),
            held_bytes: self.held_bytes.load(Ordering::Relaxed),
        }
    }

    /// A buffer of capacity at least `n` and at most `2n` (so a small result does not pin a
    /// large buffer), emptied.
    fn take(&self, n: usize) -> Option<Vec<f32>> {
        let mut free = self.free.lock().ok()?;
        let (&cap, _) = free.range(n..=n.saturating_mul(2)).next()?;
        let list = free.get_mut(&cap)?;
        let mut v = list.pop()?;
        if list.is_empty() {
            free.remove(&cap);
        }
        self.held_bytes
            .fetch_sub(4 * v.capacity() as u64, Ordering::Relaxed);
        v.clear();
        Some(v)
    }

    /// Remember `v` as handed out by the pool (so [`BufferPool::give`] takes it back).
    fn hand_out(&self, v: &[f32]) {
        if v.len() < MIN_POOLED {
            return;
        }
        if let Ok(mut h) = self.handed_out.lock() {
            // Buffers that never come back (program outputs) leave their address here; a cap
            // keeps that bounded over long sessions.
            if h.len() >= 4096 {
                h.clear();
            }
            h.insert(v.as_ptr() as usize);
        }
    }

    /// Take back `v` for a later result when the pool handed it out (dropped when the pool is
    /// full, and other buffers are not kept).
    pub fn give(&self, v: Vec<f32>) {
        let ours = self
            .handed_out
            .lock()
            .is_ok_and(|mut h| h.remove(&(v.as_ptr() as usize)));
        let bytes = 4 * v.capacity() as u64;
        if !ours
            || self.held_bytes.load(Ordering::Relaxed) + bytes
                > self.limit_bytes.load(Ordering::Relaxed)
        {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            free.entry(v.capacity()).or_default().push(v);
            self.held_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// Results smaller than this (in elements) are the allocator's business: its size classes
/// reuse them well.
const MIN_POOLED: usize = 16 * 1024;

thread_local! {
    static CURRENT: RefCell<Option<Arc<BufferPool>>> = const { RefCell::new(None) };
}

/// Restores the previously installed pool when dropped.
pub struct PoolGuard {
    previous: Option<Arc<BufferPool>>,
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        let prev = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}

/// Make `pool` the pool of kernel results on this thread until the guard drops (nested runs,
/// such as a `call`'s callee, install theirs and restore the caller's).
pub fn install(pool: Arc<BufferPool>) -> PoolGuard {
    let previous = CURRENT.with(|c| c.borrow_mut().replace(pool));
    PoolGuard { previous }
}

/// A buffer of `n` elements from the installed pool (filled with `fill`, or NaN when the pool
/// poisons), or a fresh one of zeros; either way remembered by the pool.
fn pooled(n: usize, fill: f32) -> Vec<f32> {
    CURRENT.with(|c| {
        let c = c.borrow();
        let Some(pool) = c.as_ref().filter(|_| n >= MIN_POOLED) else {
            return vec![0f32; n];
        };
        let v = match pool.take(n) {
            Some(mut v) => {
                pool.reused.fetch_add(1, Ordering::Relaxed);
                let poison = pool.poison.load(Ordering::Relaxed);
                // Filling is a memset: `Vec` cannot expose the stale values without unsafe
                // code, and the cost is small next to the page faults it replaces.
                v.resize(n, if poison && fill != 0.0 { f32::NAN } else { 0.0 });
                v
            }
            None => {
                pool.fresh.fetch_add(1, Ordering::Relaxed);
                vec![0f32; n]
            }
        };
        pool.hand_out(&v);
        v
    })
}

/// A result buffer of `n` zeros.
pub fn zeroed(n: usize) -> Vec<f32> {
    pooled(n, 0.0)
}

/// A result buffer of `n` elements whose values are unspecified (zeros, or NaN when the pool
/// poisons reused buffers): for kernels that write every element.
pub fn for_overwrite(n: usize) -> Vec<f32> {
    pooled(n, f32::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_from_the_installed_pool_only() {
        let pool = Arc::new(BufferPool::new(1 << 30));
        // Without a pool: plain allocations.
        assert_eq!(zeroed(3), vec![0.0; 3]);
        {
            let _g = install(pool.clone());
            let a = zeroed(100_000);
            assert_eq!(pool.counters().fresh, 1);
            let cap = a.capacity();
            pool.give(a);
            assert_eq!(pool.counters().held_bytes, 4 * cap as u64);
            // A result of a similar size takes it, zeroed.
            let b = zeroed(90_000);
            assert_eq!(b.len(), 90_000);
            assert!(b.iter().all(|&x| x == 0.0));
            assert_eq!(pool.counters().reused, 1);
            assert_eq!(pool.counters().held_bytes, 0);
            pool.give(b);
            // Less than half the size: a fresh buffer, the big one stays.
            let c = zeroed(20_000);
            assert_eq!(pool.counters().fresh, 2);
            drop(c);
            pool.set_poison(true);
            let d = for_overwrite(100_000);
            assert!(d.iter().all(|x| x.is_nan()));
        }
        // The guard uninstalled the pool.
        let _e = zeroed(100_000);
        assert_eq!(pool.counters().fresh, 2);
    }

    /// A buffer as if the pool had handed it out.
    fn ours(pool: &BufferPool, n: usize) -> Vec<f32> {
        let v = vec![0f32; n];
        pool.hand_out(&v);
        v
    }

    #[test]
    fn the_pool_keeps_its_own_buffers_up_to_its_limit() {
        let pool = BufferPool::new(4 * 100_000);
        pool.give(ours(&pool, 100));
        assert_eq!(pool.counters().held_bytes, 0);
        // A buffer the pool did not hand out (a burn result) is not kept.
        pool.give(vec![0f32; 60_000]);
        assert_eq!(pool.counters().held_bytes, 0);
        pool.give(ours(&pool, 60_000));
        pool.give(ours(&pool, 60_000));
        assert_eq!(pool.counters().held_bytes, 4 * 60_000);
        pool.give(ours(&pool, 20_000));
        assert_eq!(pool.counters().held_bytes, 4 * 80_000);
        // Lowering the limit drops the largest first.
        pool.set_limit(4 * 70_000);
        assert_eq!(pool.counters().held_bytes, 4 * 20_000);
        pool.set_limit(1000);
        assert_eq!(pool.counters().held_bytes, 0);
    }
}
