//! Delivers the results of lock operations to JavaScript in batches.
//!
//! A promise per call through napi costs a thread-safe function per call and one wake of
//! the JavaScript thread per result. Instead each `NativeRedlock` owns one thread-safe
//! function: finished operations are queued, and the JavaScript thread is woken once for
//! all the results that are ready, which it settles by id. Results are compact tuples.

use crate::engine::sync::Unpoisoned;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

/// One finished operation (or one attempt of it, with status [`status::PROGRESS`]), as
/// JavaScript receives it: `[id, status, value, expiration, start, attempts, errors, fence,
/// slot]` (`slot`: the semaphore slot of an acquired permit).
///
/// * `status`: see [`status`]. For `acquireLock`: `DONE` is `true`, `LOCKED` `false`,
///   the others `null`.
/// * `attempts`: one string per attempt (the last 100), one character per client:
///   `F` for, `L` locked by another owner, `E` error, `-` no answer needed.
/// * `errors`: the messages of the `E` votes, in order.
/// * `fence`: the fencing token (decimal) of an acquire with `fencing`.
pub type Completion = (
    u32,
    u32,
    Option<String>,
    f64,
    f64,
    Vec<String>,
    Vec<String>,
    Option<String>,
    Option<u32>,
);

/// The statuses of a [`Completion`]; `lib/native.js` reads them by these numbers.
pub mod status {
    pub const DONE: u32 = 0;
    /// Another owner holds a resource.
    pub const LOCKED: u32 = 1;
    /// Too many nodes failed or timed out to decide.
    pub const UNDECIDED: u32 = 2;
    /// The lock had expired.
    pub const EXPIRED: u32 = 3;
    /// An internal error (a panic): the message is in `value`.
    pub const INTERNAL: u32 = 4;
    /// The operation's signal was aborted.
    pub const ABORTED: u32 = 5;
    /// Not a completion: one failed attempt of an operation still running, for events.
    pub const PROGRESS: u32 = 6;
    /// Not a completion: the complete votes of the last attempt of an operation already
    /// completed, whose attempt string marked the votes still coming with `?`.
    pub const LATE: u32 = 7;
}

type Queue = Arc<Mutex<Vec<Completion>>>;
type Tsfn = ThreadsafeFunction<(), (), Vec<Completion>, Status, false, true, 0>;

fn take(queue: &Queue) -> Vec<Completion> {
    std::mem::take(&mut *queue.locked())
}

/// The completion channel of one `NativeRedlock`.
pub struct Completer {
    queue: Queue,
    /// Whether a wake of the JavaScript thread is already on its way.
    scheduled: Arc<AtomicBool>,
    tsfn: Tsfn,
}

impl Completer {
    /// `callback(batch)` runs on the JavaScript thread with every completion ready. The
    /// channel does not keep the process alive (the JavaScript layer does, while
    /// operations are in flight).
    pub fn new(callback: Function<Vec<Completion>, ()>) -> Result<Arc<Completer>> {
        let queue: Queue = Arc::default();
        let scheduled = Arc::new(AtomicBool::new(false));
        let (q, s) = (queue.clone(), scheduled.clone());
        let tsfn: Tsfn = callback
            .build_threadsafe_function::<()>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(move |_ctx| {
                // Cleared before draining: a result queued after this point wakes us again.
                s.store(false, Ordering::Release);
                Ok(take(&q))
            })?;
        Ok(Arc::new(Completer {
            queue,
            scheduled,
            tsfn,
        }))
    }

    pub fn push(&self, c: Completion) {
        self.queue.locked().push(c);
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }

    /// Runs `fut` on the runtime and queues its completion under `id`. A panic becomes
    /// an internal-error completion, so the JavaScript promise always settles.
    pub fn spawn<F>(self: &Arc<Self>, id: u32, fut: F)
    where
        F: Future<Output = Completion> + Send + 'static,
    {
        let this = self.clone();
        napi::bindgen_prelude::spawn(async move {
            let completion = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(c) => c,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_string());
                    (
                        id,
                        status::INTERNAL,
                        Some(format!("redlock-rs internal error: {message}")),
                        0.0,
                        0.0,
                        Vec::new(),
                        Vec::new(),
                        None,
                        None,
                    )
                }
            };
            this.push(completion);
        });
    }
}
