//! Delivers the results of lock operations to JavaScript in batches.
//!
//! A promise per call through napi costs a thread-safe function per call and one wake of
//! the JavaScript thread per result. Instead each `NativeRedlock` owns one thread-safe
//! function: finished operations are queued, and the JavaScript thread is woken once for
//! all the results that are ready, which it settles by id.

use crate::engine::sync::Unpoisoned;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

/// One finished operation (or one attempt of it, with the status `Progress`), as
/// JavaScript receives it.
#[napi(object, object_from_js = false)]
pub struct Completion {
    /// The operation's id, given by the JavaScript layer.
    pub id: u32,
    pub status: CompletionStatus,
    /// Why it failed, as the engine decided ('locked', 'quorum-unavailable', 'expired',
    /// 'aborted', 'internal'); `None` when it succeeded (or for the progress statuses).
    pub reason: Option<&'static str>,
    /// The lock value of an acquire, or the message of an internal error.
    pub value: Option<String>,
    /// Wall-clock ms until which an acquired or extended lock is valid; 0 otherwise.
    pub expiration: f64,
    /// Wall-clock ms at which the operation started.
    pub start: f64,
    /// One string per attempt (the last 100), one character per client: `F` for, `L`
    /// locked by another owner, `E` error, `-` no answer needed, `?` an answer to come.
    pub attempts: Vec<String>,
    /// The messages of the `E` votes, in order.
    pub errors: Vec<String>,
    /// The fencing token (decimal) of an acquire with `fencing`.
    pub fence: Option<String>,
    /// The semaphore slot of an acquired permit.
    pub slot: Option<u32>,
}

/// The statuses of a [`Completion`] (exported to JavaScript as an object of numbers).
#[napi]
#[derive(Debug, PartialEq, Eq)]
pub enum CompletionStatus {
    Done = 0,
    /// Another owner holds a resource.
    Locked = 1,
    /// Too many nodes failed or timed out to decide.
    Undecided = 2,
    /// The lock had expired.
    Expired = 3,
    /// An internal error (a panic): the message is in `value`.
    Internal = 4,
    /// The operation's signal was aborted.
    Aborted = 5,
    /// Not a completion: one failed attempt of an operation still running, for events.
    Progress = 6,
    /// Not a completion: the complete votes of the last attempt of an operation already
    /// completed, whose attempt string marked the votes still coming with `?`.
    Late = 7,
}

impl Completion {
    /// A completion with nothing but `id` and `status`.
    pub fn bare(id: u32, status: CompletionStatus) -> Completion {
        Completion {
            id,
            status,
            reason: None,
            value: None,
            expiration: 0.0,
            start: 0.0,
            attempts: Vec::new(),
            errors: Vec::new(),
            fence: None,
            slot: None,
        }
    }
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
        super::event_loop::spawn(async move {
            let completion = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(c) => c,
                Err(panic) => {
                    let message = super::event_loop::panic_message(&*panic);
                    Completion {
                        reason: Some("internal"),
                        value: Some(format!("redlock-rs internal error: {message}")),
                        ..Completion::bare(id, CompletionStatus::Internal)
                    }
                }
            };
            this.push(completion);
        });
    }
}
