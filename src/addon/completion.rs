//! Delivers the results of lock operations to JavaScript in batches.
//!
//! A promise per call through napi costs a thread-safe function per call and one wake of
//! the JavaScript thread per result. Instead finished operations are queued, and the
//! JavaScript callback of their `NativeRedlock` gets all the results that are ready in one
//! call, which settles them by id: at the end of the runtime's turn when the engine runs
//! on the JavaScript thread (`event_loop`), else through one thread-safe function, which
//! wakes the JavaScript thread once per batch.

use super::event_loop;
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
/// JavaScript receives it: an array of its fields in this order (`lib/native.js` reads
/// them). An array is made without the property-name lookups and hidden-class changes
/// that an object's ten named fields cost (about a sixth of an in-process acquire+release).
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

impl ToNapiValue for Completion {
    unsafe fn to_napi_value(env: sys::napi_env, c: Self) -> Result<sys::napi_value> {
        /// `v` as a JavaScript value, `undefined` for `None`.
        unsafe fn or_undefined<T: ToNapiValue>(
            env: sys::napi_env,
            v: Option<T>,
        ) -> Result<sys::napi_value> {
            match v {
                Some(v) => T::to_napi_value(env, v),
                None => <()>::to_napi_value(env, ()),
            }
        }
        let fields = [
            u32::to_napi_value(env, c.id)?,
            u32::to_napi_value(env, c.status as u32)?,
            or_undefined(env, c.reason)?,
            or_undefined(env, c.value)?,
            f64::to_napi_value(env, c.expiration)?,
            f64::to_napi_value(env, c.start)?,
            Vec::<String>::to_napi_value(env, c.attempts)?,
            Vec::<String>::to_napi_value(env, c.errors)?,
            or_undefined(env, c.fence)?,
            or_undefined(env, c.slot)?,
        ];
        let mut array = std::ptr::null_mut();
        check_status!(sys::napi_create_array_with_length(
            env,
            fields.len(),
            &mut array
        ))?;
        for (i, v) in fields.into_iter().enumerate() {
            check_status!(sys::napi_set_element(env, array, i as u32, v))?;
        }
        Ok(array)
    }
}

/// The statuses of a [`Completion`] (exported to JavaScript as an object of numbers).
#[napi]
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
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
    /// The callback itself, when the engine runs on the JavaScript thread: results are
    /// then handed to it at the end of the runtime's turn, without the thread-safe
    /// function's wake-up.
    direct: Option<Direct>,
}

/// The callback of a [`Completer`], called from the JavaScript thread that made it.
struct Direct {
    env: sys::napi_env,
    callback: sys::napi_ref,
    context: sys::napi_async_context,
    thread: std::thread::ThreadId,
}

// Only used on `thread`, the JavaScript thread of `env` (checked before each use).
unsafe impl Send for Direct {}
unsafe impl Sync for Direct {}

impl Direct {
    fn new(env: &Env, callback: &Function<Vec<Completion>, ()>) -> Option<Direct> {
        if !event_loop::runs_here() {
            return None;
        }
        let env = env.raw();
        let mut name = std::ptr::null_mut();
        let mut reference = std::ptr::null_mut();
        let mut context = std::ptr::null_mut();
        let label = "redlock-rs";
        unsafe {
            let ok = sys::napi_create_string_utf8(
                env,
                label.as_ptr().cast(),
                label.len() as isize,
                &mut name,
            ) == 0
                && sys::napi_create_reference(env, callback.raw(), 1, &mut reference) == 0
                && sys::napi_async_init(env, std::ptr::null_mut(), name, &mut context) == 0;
            ok.then_some(Direct {
                env,
                callback: reference,
                context,
                thread: std::thread::current().id(),
            })
        }
    }

    /// Calls the callback with `batch` (as Node calls callbacks: its microtasks run after
    /// it; an exception it throws is an uncaught exception).
    fn call(&self, batch: Vec<Completion>) {
        let env = self.env;
        unsafe {
            let mut scope = std::ptr::null_mut();
            if sys::napi_open_handle_scope(env, &mut scope) != 0 {
                return;
            }
            let mut func = std::ptr::null_mut();
            let mut recv = std::ptr::null_mut();
            let mut out = std::ptr::null_mut();
            if let Ok(arg) = Vec::<Completion>::to_napi_value(env, batch) {
                if sys::napi_get_reference_value(env, self.callback, &mut func) == 0
                    && sys::napi_get_global(env, &mut recv) == 0
                {
                    let status =
                        sys::napi_make_callback(env, self.context, recv, func, 1, &arg, &mut out);
                    if status == sys::Status::napi_pending_exception {
                        let mut error = std::ptr::null_mut();
                        sys::napi_get_and_clear_last_exception(env, &mut error);
                        sys::napi_fatal_exception(env, error);
                    }
                }
            }
            sys::napi_close_handle_scope(env, scope);
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        if std::thread::current().id() == self.thread {
            unsafe {
                sys::napi_delete_reference(self.env, self.callback);
                sys::napi_async_destroy(self.env, self.context);
            }
        }
    }
}

impl Completer {
    /// `callback(batch)` runs on the JavaScript thread with every completion ready. The
    /// channel does not keep the process alive (the JavaScript layer does, while
    /// operations are in flight).
    pub fn new(env: &Env, callback: Function<Vec<Completion>, ()>) -> Result<Arc<Completer>> {
        let direct = Direct::new(env, &callback);
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
            direct,
        }))
    }

    pub fn push(self: &Arc<Self>, c: Completion) {
        self.queue.locked().push(c);
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(d) = &self.direct {
            if std::thread::current().id() == d.thread {
                let this = self.clone();
                if event_loop::after_turn(Box::new(move || this.deliver())) {
                    return;
                }
            }
        }
        self.tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
    }

    /// Hands the queued results to the callback directly (at the end of a turn).
    fn deliver(&self) {
        self.scheduled.store(false, Ordering::Release);
        let batch = take(&self.queue);
        if let (Some(d), false) = (&self.direct, batch.is_empty()) {
            d.call(batch);
        }
    }

    /// Runs `fut` on the runtime and queues its completion under `id`. A panic becomes
    /// an internal-error completion, so the JavaScript promise always settles.
    pub fn spawn<F>(self: &Arc<Self>, id: u32, fut: F)
    where
        F: Future<Output = Completion> + Send + 'static,
    {
        let this = self.clone();
        // On the heap at once: the wrappers below then move a pointer, not the operation's
        // future (about 2 KB), each time one wraps it.
        let fut = Box::pin(fut);
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
