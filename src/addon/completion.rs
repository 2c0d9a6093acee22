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
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures::FutureExt;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

/// One finished operation (or one attempt of it, with the status `Progress`). JavaScript
/// receives completions in batches, as the arguments of one call (see [`Batch`]).
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
    /// The attempts (the last 100), separated by commas: one character per client and
    /// attempt, `F` for, `L` locked by another owner, `E` error, `-` no answer needed,
    /// `?` an answer to come; `l` and `e` for votes against already told (events).
    pub attempts: String,
    /// The messages of the `E` votes, in order.
    pub errors: Vec<String>,
    /// The fencing token (decimal) of an acquire with `fencing`.
    pub fence: Option<String>,
    /// The semaphore slot of an acquired permit.
    pub slot: Option<u32>,
}

/// Flags of a completion in a [`Batch`]: which of the optional strings follow its numbers.
const HAS_VALUE: u32 = 1;
const HAS_REASON: u32 = 2;
const HAS_FENCE: u32 = 4;
const HAS_SLOT: u32 = 8;

/// At most this many arguments in one call of the callback (a larger batch is split).
const MAX_ARGS: usize = 4096;

/// Completions as the arguments of one call of the JavaScript callback: for each, in
/// order, the numbers `id, status, flags, expiration, start, slot, errorCount`, then the
/// strings `value` (flag 1), `reason` (flag 2) and `attempts`, an array of the error
/// messages (when `errorCount` is not 0: their number is not bounded, so they never
/// count as arguments one by one), and the string `fence` (flag 4); `slot` counts with
/// flag 8. `lib/native.js` reads them.
///
/// Plain arguments: an array per completion (or an object) cost ten element stores
/// through V8's generic path, the largest item of an acquire+release's CPU on one server
/// (13% of it, profiled); arguments are copied by V8 in one go.
pub struct Batch(pub Vec<Completion>);

impl Batch {
    /// Which of the optional fields `c` has.
    fn flags(c: &Completion) -> u32 {
        [
            (c.value.is_some(), HAS_VALUE),
            (c.reason.is_some(), HAS_REASON),
            (c.fence.is_some(), HAS_FENCE),
            (c.slot.is_some(), HAS_SLOT),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |flags, (_, flag)| flags | flag)
    }

    /// The number of arguments `c` takes (at most 12): the numbers, the attempts, and one
    /// for each optional string and for the errors.
    fn width(c: &Completion) -> usize {
        let strings = Batch::flags(c) & (HAS_VALUE | HAS_REASON | HAS_FENCE);
        7 + 1 + strings.count_ones() as usize + usize::from(!c.errors.is_empty())
    }
}

/// Takes from the front of `queue` the completions of one call: at most [`MAX_ARGS`]
/// arguments.
fn next_call(queue: &mut VecDeque<Completion>) -> Batch {
    let mut width = 0;
    let n = queue
        .iter()
        .take_while(|c| {
            width += Batch::width(c);
            width <= MAX_ARGS
        })
        .count();
    if n == queue.len() {
        // All of it (the usual case): the queue's buffer, without a copy.
        return Batch(std::mem::take(queue).into());
    }
    Batch(queue.drain(..n).collect())
}

/// `s` as a JavaScript string (Latin-1 when ASCII: no UTF-8 decoding).
unsafe fn string(env: sys::napi_env, s: &str) -> Result<sys::napi_value> {
    let mut out = std::ptr::null_mut();
    let (ptr, len) = (s.as_ptr().cast(), s.len() as isize);
    check_status!(if s.is_ascii() {
        sys::napi_create_string_latin1(env, ptr, len, &mut out)
    } else {
        sys::napi_create_string_utf8(env, ptr, len, &mut out)
    })?;
    Ok(out)
}

impl JsValuesTupleIntoVec for Batch {
    fn into_vec(self, env: sys::napi_env) -> Result<Vec<sys::napi_value>> {
        let mut args = Vec::with_capacity(self.0.iter().map(Batch::width).sum());
        for c in self.0 {
            let flags = Batch::flags(&c);
            // SAFETY: `env` is the live environment of the JavaScript thread calling this.
            unsafe {
                args.push(u32::to_napi_value(env, c.id)?);
                args.push(u32::to_napi_value(env, c.status as u32)?);
                args.push(u32::to_napi_value(env, flags)?);
                args.push(f64::to_napi_value(env, c.expiration)?);
                args.push(f64::to_napi_value(env, c.start)?);
                args.push(u32::to_napi_value(env, c.slot.unwrap_or(0))?);
                args.push(u32::to_napi_value(env, c.errors.len() as u32)?);
                for s in [c.value.as_deref(), c.reason].into_iter().flatten() {
                    args.push(string(env, s)?);
                }
                args.push(string(env, &c.attempts)?);
                if !c.errors.is_empty() {
                    args.push(Vec::<String>::to_napi_value(env, c.errors)?);
                }
                if let Some(f) = &c.fence {
                    args.push(string(env, f)?);
                }
            }
        }
        Ok(args)
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
    /// Not a completion: one node's failure in an attempt still under way, for events (its
    /// attempt string has that node's vote alone; the attempt's own report leaves it out).
    Failed = 8,
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
            attempts: String::new(),
            errors: Vec::new(),
            fence: None,
            slot: None,
        }
    }
}

type Queue = Arc<Mutex<VecDeque<Completion>>>;
type Tsfn = ThreadsafeFunction<(), (), Batch, Status, false, true, 0>;
const NON_BLOCKING: ThreadsafeFunctionCallMode = ThreadsafeFunctionCallMode::NonBlocking;

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
    fn new(env: &Env, callback: &Function<Batch, ()>) -> Option<Direct> {
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
    fn call(&self, batch: Batch) {
        let env = self.env;
        unsafe {
            let mut scope = std::ptr::null_mut();
            if sys::napi_open_handle_scope(env, &mut scope) != 0 {
                return;
            }
            let mut func = std::ptr::null_mut();
            let mut recv = std::ptr::null_mut();
            let mut out = std::ptr::null_mut();
            if let Ok(args) = batch.into_vec(env) {
                if sys::napi_get_reference_value(env, self.callback, &mut func) == 0
                    && sys::napi_get_global(env, &mut recv) == 0
                {
                    let (argc, argv) = (args.len(), args.as_ptr());
                    let status = sys::napi_make_callback(
                        env,
                        self.context,
                        recv,
                        func,
                        argc,
                        argv,
                        &mut out,
                    );
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
    /// `callback(...batch)` runs on the JavaScript thread with the completions ready (see
    /// [`Batch`]). The channel does not keep the process alive (the JavaScript layer does,
    /// while operations are in flight).
    pub fn new(env: &Env, callback: Function<Batch, ()>) -> Result<Arc<Completer>> {
        let direct = Direct::new(env, &callback);
        let queue: Queue = Arc::default();
        let scheduled = Arc::new(AtomicBool::new(false));
        let (q, s) = (queue.clone(), scheduled.clone());
        // The callback calls again when a batch is too large for one call: through the
        // completer, which exists once the callback is made.
        let me: Arc<OnceLock<Weak<Completer>>> = Arc::default();
        let again = me.clone();
        let tsfn: Tsfn = callback
            .build_threadsafe_function::<()>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(move |_ctx| {
                // Cleared before draining: a result queued after this point wakes us again.
                s.store(false, Ordering::Release);
                let (batch, more) = {
                    let mut queue = q.locked();
                    (next_call(&mut queue), !queue.is_empty())
                };
                if more && !s.swap(true, Ordering::AcqRel) {
                    if let Some(c) = again.get().and_then(Weak::upgrade) {
                        c.tsfn.call((), NON_BLOCKING);
                    }
                }
                Ok(batch)
            })?;
        let completer = Arc::new(Completer {
            queue,
            scheduled,
            tsfn,
            direct,
        });
        let _ = me.set(Arc::downgrade(&completer));
        Ok(completer)
    }

    pub fn push(self: &Arc<Self>, c: Completion) {
        self.queue.locked().push_back(c);
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
        self.tsfn.call((), NON_BLOCKING);
    }

    /// Hands the queued results to the callback directly (at the end of a turn).
    fn deliver(&self) {
        self.scheduled.store(false, Ordering::Release);
        let mut batch = std::mem::take(&mut *self.queue.locked());
        if let Some(d) = &self.direct {
            event_loop::handing_over(batch.len() > 1, || {
                while !batch.is_empty() {
                    d.call(next_call(&mut batch));
                }
            });
        }
    }

    /// Runs `fut` on the runtime and queues its completion under `id`. A panic becomes
    /// an internal-error completion, so the JavaScript promise always settles. An
    /// `abortable` operation (one with an `AbortSignal`) never starts inside the call (see
    /// [`event_loop::spawn_abortable`]).
    pub fn spawn<F>(self: &Arc<Self>, id: u32, abortable: bool, fut: F)
    where
        F: Future<Output = Completion> + Send + 'static,
    {
        let this = self.clone();
        // On the heap at once: the wrappers below then move a pointer, not the operation's
        // future (about 2 KB), each time one wraps it.
        let fut = Box::pin(fut);
        let run = async move {
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
        };
        if abortable {
            event_loop::spawn_abortable(run);
        } else {
            event_loop::spawn(run);
        }
    }
}
