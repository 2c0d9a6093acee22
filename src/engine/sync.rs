//! Locks that survive a panic: every critical section in the engine leaves its data
//! consistent at each step (single assignments, whole-entry inserts), so a lock poisoned by
//! a panic elsewhere is still safe to use, and using it keeps the process serving locks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `lock()` / `read()` / `write()` that recover a poisoned lock.
pub trait Unpoisoned<T> {
    type Guard<'a>
    where
        Self: 'a;
    fn locked(&self) -> Self::Guard<'_>;
}

impl<T> Unpoisoned<T> for Mutex<T> {
    type Guard<'a>
        = MutexGuard<'a, T>
    where
        T: 'a;
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reading and writing a `RwLock`, recovering a poisoned one.
pub trait UnpoisonedRw<T> {
    fn read_now(&self) -> RwLockReadGuard<'_, T>;
    fn write_now(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> UnpoisonedRw<T> for RwLock<T> {
    fn read_now(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write_now(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Tasks counted while they live, and a wait for the last to end (`quit()` waits, for a
/// bounded time, for work that must reach the nodes before their connections close).
#[derive(Default)]
pub struct Pending {
    running: AtomicUsize,
    /// Told when the last task ends.
    idle: tokio::sync::Notify,
}

/// One task of a [`Pending`], counted until it is dropped.
pub struct Entered(Arc<Pending>);

impl Pending {
    /// Counts a task until the guard returned is dropped.
    pub fn enter(self: &Arc<Self>) -> Entered {
        self.running.fetch_add(1, Ordering::AcqRel);
        Entered(self.clone())
    }

    /// How many tasks are counted now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Returns once no task is counted.
    pub async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_usable() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
        let rw = RwLock::new(1);
        *rw.write_now() = 3;
        assert_eq!(*rw.read_now(), 3);
    }
}
