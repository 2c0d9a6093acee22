//! Where the engine's futures run: on the JavaScript thread, driven by Node's event loop.
//!
//! A native call that hands its work to an I/O thread pays two thread wake-ups per
//! operation (the I/O thread's, then the JavaScript thread's for the result), and on a
//! virtual machine a wake-up can cost more than the Redis round trip itself
//! (`benchmark/README.md`). So, on Linux, each JavaScript thread that uses the addon gets
//! its own tokio *current-thread* runtime, which Node's event loop (libuv) drives:
//!
//! * libuv watches the runtime's epoll descriptor, which is readable whenever one of the
//!   runtime's sockets has data or a task was woken from another thread; each time it is,
//!   the runtime runs on the JavaScript thread until it has nothing left to do without
//!   waiting ([`turn`]), and returns to libuv;
//! * futures spawned from JavaScript start in a turn run in the loop's check phase, right
//!   after its poll for I/O (or at once, 32 at a time, when more wait), so that the
//!   operations started together write together; one started while nothing else is in
//!   flight (a sequential caller's) starts at once, inside the call, unless an
//!   `AbortSignal` may stop it ([`spawn_abortable`]); there it may also wait for its
//!   replies by polling, for a bounded time, where that measures faster than sleeping in
//!   the event loop (`poll_for_result`, `engine::spin`);
//! * a libuv timer turns it too, when the runtime's next timer is due (retry delays,
//!   time-outs: the engine's timers say when, `engine::timer`), and at least every 25 ms
//!   while an operation is in flight and every 100 ms otherwise, for background work; it
//!   does not keep the process alive.
//!
//! Commands are written, replies read and promises settled on the JavaScript thread, as a
//! JavaScript client does, with no thread hand-off. Elsewhere, with `REDLOCK_RS_IO=thread`,
//! or with `REDLOCK_RS_THREADS=n`, futures run on a tokio runtime with its own I/O
//! thread(s), as before.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures::FutureExt;
use napi::bindgen_prelude::*;

use crate::engine::spin::Spin;

/// Whether futures run on I/O threads: asked with `REDLOCK_RS_IO=thread`, or implied by
/// `REDLOCK_RS_THREADS` (a number of I/O threads).
pub fn on_io_threads() -> bool {
    std::env::var("REDLOCK_RS_IO").is_ok_and(|v| v == "thread")
        || std::env::var("REDLOCK_RS_THREADS").is_ok()
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Sets up this JavaScript thread's runtime (once per thread; falls back to the I/O
/// threads when it cannot). Called by the constructors of the native classes.
pub fn init(env: &Env) {
    MODE.with(|m| {
        if !matches!(*m.borrow(), Mode::Unset) {
            return;
        }
        let mode = if on_io_threads() {
            Mode::Threads
        } else {
            imp::JsLoop::new(env).map_or(Mode::Threads, |l| Mode::Js(Rc::new(l)))
        };
        *m.borrow_mut() = mode;
    });
}

/// Runs `fut` to completion: on this thread's runtime, or on the I/O threads.
///
/// On this thread's runtime the future starts after the event loop's poll for I/O (see
/// `soon`), with every other future started meanwhile, before any of them writes: so
/// the commands of all the operations JavaScript started in one go leave in one write per
/// connection (in writes of [`START_AT`] operations when it started more). A future
/// spawned while nothing else is in flight starts at once: its commands leave during the
/// call (a sequential caller's operation waits for no loop phase; at one server, the
/// sequential p50 went 6-8% down).
pub fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    start(fut, Start::Polled)
}

/// [`spawn`] for work that is no operation a caller waits for (a client's background
/// connect, `connect()`, `quit()`): started inside the call the same way, but never
/// polled for, nor measured as a lone operation (see `poll_for_result`).
pub fn spawn_unpolled<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    start(fut, Start::Now)
}

/// [`spawn`], but never started inside the call when it is alone: an operation that an
/// `AbortSignal` may stop, so that an abort right after the call stops it before it sends
/// anything (as when it starts with others).
pub fn spawn_abortable<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    start(fut, Start::Later)
}

/// How a spawned future starts when nothing else is in flight.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// At once, inside the call, and its result polled for (an operation).
    Polled,
    /// At once, inside the call, not polled for.
    Now,
    /// In the event loop's check phase (an operation an `AbortSignal` may stop).
    Later,
}

fn start<F>(fut: F, how: Start)
where
    F: Future<Output = ()> + Send + 'static,
{
    match current() {
        Some(l) => {
            // Nothing else in flight: this operation is alone (a sequential caller), and
            // nothing would share its writes.
            let alone = IN_FLIGHT.with(|n| {
                n.set(n.get() + 1);
                n.get() == 1
            }) && how != Start::Later
                && !BURST.with(Cell::get);
            // Polled for only when no result of another operation is on its way to
            // JavaScript either (one finished, its caller's next operation yet to start):
            // that caller would wait for this one's poll.
            let lone = alone
                && how == Start::Polled
                && l.undelivered.get() == 0
                && AFTER_TURN.with(|a| a.borrow().is_empty());
            let guard = InFlight;
            let n = STARTING.with(|s| {
                let mut s = s.borrow_mut();
                s.push(Box::pin(async move {
                    let _in_flight = guard;
                    let mut fut = std::pin::pin!(fut);
                    std::future::poll_fn(|cx| {
                        count_poll();
                        fut.as_mut().poll(cx)
                    })
                    .await
                }));
                s.len()
            });
            if !lone {
                l.spin.borrow_mut().forget();
            }
            // An operation a signal may stop never starts inside its own call, not even
            // as the batch's last (found by the full suite in a fresh clone: with 31
            // operations started in the same tick, an acquire with an already-aborted
            // signal ran, and won, before the abort right after its call; 33 of 50).
            if !l.turning.get() {
                if how != Start::Later && (n >= START_AT || (alone && n == 1)) {
                    start_now(&l, lone);
                } else if n == 1 || how == Start::Later {
                    l.soon();
                }
            }
        }
        None => {
            napi::bindgen_prelude::spawn(fut);
        }
    }
}

/// Runs `f` (which hands results to JavaScript) telling [`spawn`] whether it hands over
/// the results of several operations (`burst`): the operations their callers start then
/// start together, even the first, which would otherwise find nothing in flight and start
/// alone.
pub fn handing_over(burst: bool, f: impl FnOnce()) {
    let before = BURST.with(|b| b.replace(burst));
    f();
    BURST.with(|b| b.set(before));
}

/// Whether futures run on this (JavaScript) thread.
pub fn runs_here() -> bool {
    current().is_some()
}

/// Runs `f` on this thread once the runtime's turn in progress ends (outside the runtime,
/// so that it may call JavaScript); `false` when no turn is in progress here.
pub fn after_turn(f: Box<dyn FnOnce()>) -> bool {
    if !current().is_some_and(|l| l.turning.get()) {
        return false;
    }
    AFTER_TURN.with(|a| a.borrow_mut().push(f));
    true
}

/// A promise settled with the outcome of `fut` (a panic rejects it): a command's, polled
/// for when it is alone (see [`spawn`]).
pub fn promise<'env, T, F>(env: &'env Env, fut: F) -> Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    settled_by(env, fut, Start::Polled)
}

/// [`promise`] for work that is not polled for (see [`spawn_unpolled`]).
pub fn promise_unpolled<'env, T, F>(env: &'env Env, fut: F) -> Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    settled_by(env, fut, Start::Now)
}

fn settled_by<'env, T, F>(env: &'env Env, fut: F, how: Start) -> Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    type Resolve<T> = Box<dyn FnOnce(Env) -> Result<T> + Send>;
    let (deferred, promise) = env.create_deferred::<T, Resolve<T>>()?;
    start(
        async move {
            let outcome = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(panic) => Err(Error::from_reason(format!(
                    "redlock-rs internal error: {}",
                    panic_message(&*panic)
                ))),
            };
            // On its way to JavaScript (through the deferred's own channel) until settled.
            let counted = current()
                .inspect(|l| l.undelivered.set(l.undelivered.get() + 1))
                .is_some();
            deferred.resolve(Box::new(move |_| {
                if counted {
                    if let Some(l) = current() {
                        l.undelivered.set(l.undelivered.get().saturating_sub(1));
                    }
                }
                outcome
            }));
        },
        how,
    );
    Ok(PromiseRaw::new(env.raw(), promise.raw()))
}

enum Mode {
    Unset,
    Threads,
    Js(Rc<imp::JsLoop>),
}

type Starting = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// What runs when the turn in progress ends (see [`after_turn`]).
    static AFTER_TURN: RefCell<Vec<Box<dyn FnOnce()>>> = const { RefCell::new(Vec::new()) };
    /// Futures spawned since the last turn, which starts them.
    static STARTING: RefCell<Vec<Starting>> = const { RefCell::new(Vec::new()) };
    static MODE: RefCell<Mode> = const { RefCell::new(Mode::Unset) };
    /// Operations and commands spawned on this thread's runtime and not finished.
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
    /// Set while the results of several operations are handed to JavaScript (see
    /// [`handing_over`]).
    static BURST: Cell<bool> = const { Cell::new(false) };
    /// Set by the park hook when the runtime has nothing left to do without waiting.
    static IDLE: Cell<bool> = const { Cell::new(false) };
    /// Set with `IDLE` when a turn was cut short (work remains).
    static CUT: Cell<bool> = const { Cell::new(false) };
    /// The count of lock connections' socket wake-ups at the last park (see
    /// `run_until_idle`).
    static SOCKET_WAKES: Cell<u64> = const { Cell::new(0) };
    /// Whether the turn in progress looked for an engine timer that is due.
    static TIMERS_LOOKED: Cell<bool> = const { Cell::new(false) };
    /// The waker of the turn in progress.
    static TURN: RefCell<Option<Waker>> = const { RefCell::new(None) };
    /// How often the runtime wanted to park during the turn in progress.
    static PARKS: Cell<u32> = const { Cell::new(0) };
    /// How often the turn in progress polled JavaScript's operations.
    static POLLS: Cell<u32> = const { Cell::new(0) };
    /// A timer that never fires (see `JsLoop::push_back_sentinel`).
    static SENTINEL: RefCell<Option<Pin<Box<tokio::time::Sleep>>>> = const { RefCell::new(None) };
    /// Whether the runtime's descriptor is known to be readable (the turn's first park).
    static READY: Cell<bool> = const { Cell::new(false) };
    /// The runtime's epoll descriptor (-1 until known).
    static EPOLL: Cell<i32> = const { Cell::new(-1) };
}

fn current() -> Option<Rc<imp::JsLoop>> {
    MODE.with(|m| match &*m.borrow() {
        Mode::Js(l) => Some(l.clone()),
        _ => None,
    })
}

/// Counts a spawned future in flight until it is dropped (finished or cancelled).
struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        let _ = IN_FLIGHT.try_with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// How many futures spawned from JavaScript wait to start (`soon`) at most: the one that
/// makes them this many starts them at once (`start_now`). With 64 operations resolved in
/// one batch, their continuations then write in two goes and Redis answers the first half
/// while JavaScript runs the second, instead of the two taking turns (64 loops on one
/// server, two builds side by side in one process: +25-45% ops/s).
const START_AT: usize = 32;

/// A turn parks at most this often before it returns to the event loop (which then turns
/// it again at once): JavaScript gets its results even while replies keep coming.
const MAX_PARKS: u32 = 32;

/// A turn polls JavaScript's operations at most this often before it returns to the event
/// loop (which then turns it again at once). Operations whose every step is ready at
/// once (`MemoryStore`s) and that wake each other never let the runtime park: found by an
/// audit, two waiting fenced acquires woke each other for a holder's whole TTL, and the
/// JavaScript thread ran nothing else meanwhile. A turn of 32 operations polls each a few
/// times.
const MAX_POLLS: u32 = 1024;

/// Counts a poll of an operation towards [`MAX_POLLS`]; past it, the turn ends (cut short).
fn count_poll() {
    let polls = POLLS.with(|p| {
        p.set(p.get() + 1);
        p.get()
    });
    if polls == MAX_POLLS {
        IDLE.with(|i| i.set(true));
        CUT.with(|c| c.set(true));
        if let Some(w) = TURN.with(|t| t.borrow_mut().take()) {
            w.wake();
        }
    }
}

/// The future a turn blocks on: ready once the park hook found the runtime idle.
struct Quiesce;

impl Future for Quiesce {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let starting = STARTING.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let started = !starting.is_empty();
        for fut in starting {
            tokio::spawn(fut);
        }
        // Idle, unless futures just started (they run before the next park).
        if IDLE.with(|i| i.replace(false)) && !started {
            return Poll::Ready(());
        }
        TURN.with(|t| *t.borrow_mut() = Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// Called by the runtime when it has no task to run and would wait for the next event.
/// It never waits here: the turn's future is woken, so the runtime only takes the events
/// and timers due, without waiting (a wait with nothing to wake it would block the
/// JavaScript thread). When no event was ready before that, the turn ends (and the
/// runtime returns).
fn on_park() {
    let parks = PARKS.with(|p| {
        p.set(p.get() + 1);
        p.get()
    });
    let fd = EPOLL.with(Cell::get);
    let cut = parks > MAX_PARKS;
    // A turn started by readiness has events at its first park (when another turn took
    // them meanwhile, this only costs one more park).
    let ready = READY.with(|r| r.replace(false));
    // A timer of the engine is due: the runtime fires it in this park, and its task runs
    // before the next (looked for once a turn: tokio may fire it up to a millisecond
    // later, and then the turn that the event loop's timer brings runs it).
    let timer_due = !TIMERS_LOOKED.with(|t| t.replace(true))
        && crate::engine::timer::next_due().is_some_and(|at| at <= std::time::Instant::now());
    if fd < 0 || cut || !(ready || timer_due || imp::readable(fd)) {
        IDLE.with(|i| i.set(true));
        CUT.with(|c| c.set(cut));
    }
    SOCKET_WAKES.with(|w| w.set(crate::engine::node::socket_wakes()));
    if let Some(w) = TURN.with(|t| t.borrow_mut().take()) {
        w.wake();
    }
}

/// Runs this thread's runtime until it has nothing left to do without waiting (`false`
/// when a turn is already in progress).
fn run_until_idle(l: &imp::JsLoop) -> bool {
    if l.turning.replace(true) {
        return false;
    }
    PARKS.with(|p| p.set(0));
    POLLS.with(|p| p.set(0));
    IDLE.with(|i| i.set(false));
    CUT.with(|c| c.set(false));
    TIMERS_LOOKED.with(|t| t.set(false));
    l.push_back_sentinel();
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| l.rt.block_on(Quiesce)));
    l.turning.set(false);
    READY.with(|r| r.set(false));
    // The runtime's last look for events, after the park decided that the turn ends, woke
    // a lock connection (a reply came between the descriptor's check and that look): its
    // task waits in the runtime's queue, and the descriptor no longer says so. The next
    // turn comes at once. (A task of another connection, a pub/sub one or a Cluster's,
    // woken there waits for the next event or timer, 25 ms at most.)
    if SOCKET_WAKES.with(Cell::get) != crate::engine::node::socket_wakes() {
        CUT.with(|c| c.set(true));
    }
    true
}

/// Runs this thread's runtime until it has nothing left to do without waiting, then
/// hands the results to JavaScript.
fn turn() {
    let Some(l) = current() else { return };
    if !run_until_idle(&l) {
        return;
    }
    {
        let mut spin = l.spin.borrow_mut();
        if spin.measuring() && result_ready() {
            spin.done(std::time::Instant::now());
        }
    }
    let results = AFTER_TURN.with(|a| std::mem::take(&mut *a.borrow_mut()));
    l.undelivered.set(l.undelivered.get() + results.len());
    for f in results {
        l.undelivered.set(l.undelivered.get().saturating_sub(1));
        let _ = std::panic::catch_unwind(AssertUnwindSafe(f));
    }
    l.retime();
    // Cut short, or results of a turn `start_now` ran meanwhile are waiting.
    if CUT.with(Cell::get) || AFTER_TURN.with(|a| !a.borrow().is_empty()) {
        l.soon();
    }
}

/// Starts the futures spawned so far at once, so that their commands leave now; results
/// that are ready go to JavaScript in the turn that `soon` asks for (this runs inside a
/// call from JavaScript, which it does not call back).
fn start_now(l: &imp::JsLoop, lone: bool) {
    if run_until_idle(l) {
        if lone {
            poll_for_result(l);
        }
        l.retime();
        if CUT.with(Cell::get) || AFTER_TURN.with(|a| !a.borrow().is_empty()) {
            l.soon();
        }
    }
}

/// Whether the lone operation in flight finished (its result, if it has one for
/// JavaScript, waits for the end of the turn). The late votes of an operation already
/// settled are not operations in flight.
fn result_ready() -> bool {
    IN_FLIGHT.with(Cell::get) == 0
}

/// A lone operation has written its commands: polls for its result, when this thread's
/// measurements say that polling gets it sooner than sleeping in the event loop (see
/// `engine::spin`), for a bounded time; the result goes to JavaScript in the turn that
/// `soon` asks for. Turned off with `REDLOCK_RS_SPIN=0`.
fn poll_for_result(l: &imp::JsLoop) {
    // (An operation that finished in its first turn, a MemoryStore's, reads no clock.)
    if result_ready() {
        return;
    }
    let fd = EPOLL.with(Cell::get);
    if fd < 0 || !spin_allowed() {
        return;
    }
    let now = std::time::Instant::now();
    let Some(budget) = l.spin.borrow_mut().start(now) else {
        return;
    };
    loop {
        // (A turn cut short, or whose last look for events woke a connection, left work
        // in the runtime's queue that the descriptor no longer shows.)
        if imp::readable(fd) || CUT.with(Cell::get) {
            READY.with(|r| r.set(true));
            run_until_idle(l);
            if result_ready() {
                l.spin.borrow_mut().done(std::time::Instant::now());
                return;
            }
        }
        if now.elapsed() > budget {
            return;
        }
        std::hint::spin_loop();
    }
}

/// Whether polling is allowed (not turned off with `REDLOCK_RS_SPIN=0`).
fn spin_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var("REDLOCK_RS_SPIN").map_or(true, |v| v != "0"))
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use std::collections::HashSet;
    use std::os::raw::{c_int, c_void};
    use std::sync::Mutex;

    type Handle = *mut c_void;
    const UV_CHECK: c_int = 2;
    const UV_IDLE: c_int = 6;
    const UV_POLL: c_int = 8;
    const UV_TIMER: c_int = 13;
    const UV_READABLE: c_int = 1;

    /// The longest the event loop goes without turning the runtime while operations are
    /// in flight (see `JsLoop::retime`), in ms.
    const IN_FLIGHT_LOOK: u64 = 25;
    /// The same while only the runtime's tasks (connections, background work) are alive.
    const BACKGROUND_LOOK: u64 = 100;

    // libuv, as the node executable exports it.
    extern "C" {
        fn uv_handle_size(kind: c_int) -> usize;
        fn uv_poll_init(lp: *mut c_void, handle: Handle, fd: c_int) -> c_int;
        fn uv_poll_start(
            handle: Handle,
            events: c_int,
            cb: extern "C" fn(Handle, c_int, c_int),
        ) -> c_int;
        fn uv_timer_init(lp: *mut c_void, handle: Handle) -> c_int;
        fn uv_timer_start(
            handle: Handle,
            cb: extern "C" fn(Handle),
            timeout: u64,
            repeat: u64,
        ) -> c_int;
        fn uv_timer_stop(handle: Handle) -> c_int;
        fn uv_check_init(lp: *mut c_void, handle: Handle) -> c_int;
        fn uv_check_start(handle: Handle, cb: extern "C" fn(Handle)) -> c_int;
        fn uv_check_stop(handle: Handle) -> c_int;
        fn uv_idle_init(lp: *mut c_void, handle: Handle) -> c_int;
        fn uv_idle_start(handle: Handle, cb: extern "C" fn(Handle)) -> c_int;
        fn uv_idle_stop(handle: Handle) -> c_int;
        fn uv_unref(handle: Handle);
        fn uv_close(handle: Handle, cb: Option<extern "C" fn(Handle)>);
    }

    extern "C" fn on_poll(_: Handle, _: c_int, _: c_int) {
        // The descriptor is readable: the first park takes its events without asking.
        READY.with(|r| r.set(true));
        turn();
    }

    extern "C" fn on_timer(_: Handle) {
        turn();
    }

    /// The turn asked for with `soon`, after this iteration's poll for I/O.
    extern "C" fn on_check(_: Handle) {
        if let Some(l) = current() {
            unsafe {
                uv_check_stop(l.check);
                uv_idle_stop(l.idle);
            }
        }
        turn();
    }

    /// An active idle handle only makes the iteration's poll for I/O not wait.
    extern "C" fn on_idle(_: Handle) {}

    extern "C" fn free_handle(handle: Handle) {
        unsafe { libc::free(handle) }
    }

    /// Whether `fd` has an event ready (without taking it).
    pub(super) fn readable(fd: i32) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        unsafe { libc::poll(&mut p, 1, 0) > 0 }
    }

    /// The open epoll descriptors of this process.
    fn epoll_fds() -> HashSet<i32> {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return HashSet::new();
        };
        dir.flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|t| t.to_string_lossy() == "anon_inode:[eventpoll]")
            })
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Serializes runtime creation, so that the new epoll descriptor is the runtime's.
    static BUILDING: Mutex<()> = Mutex::new(());

    pub(super) struct JsLoop {
        pub(super) rt: tokio::runtime::Runtime,
        pub(super) turning: Cell<bool>,
        /// The measured waits of lone operations (see `poll_for_result`).
        pub(super) spin: RefCell<Spin>,
        /// Results of finished operations not handed to JavaScript yet (see `start`).
        pub(super) undelivered: Cell<usize>,
        poll: Handle,
        timer: Handle,
        check: Handle,
        idle: Handle,
        /// Whether only background work was alive at the last turn (no operation in
        /// flight).
        background: Cell<bool>,
    }

    impl JsLoop {
        pub(super) fn new(env: &Env) -> Option<JsLoop> {
            let (rt, new) = {
                let _g = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
                let before = epoll_fds();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .on_thread_park(on_park)
                    .build()
                    .ok()?;
                let new: Vec<i32> = epoll_fds().difference(&before).copied().collect();
                (rt, new)
            };
            // The runtime's descriptor is a new one that a task spawned from outside the
            // runtime makes readable, and the turn that runs the task makes quiet again
            // (the runtime keeps a duplicate of it: either will do).
            rt.spawn(async {});
            let woken: Vec<i32> = new.into_iter().filter(|fd| readable(*fd)).collect();
            IDLE.with(|i| i.set(false));
            rt.block_on(Quiesce);
            let fd = *woken.first()?;
            if woken.iter().any(|fd| readable(*fd)) {
                return None;
            }
            EPOLL.with(|e| e.set(fd));
            let mut lp = std::ptr::null_mut();
            if unsafe { napi::sys::napi_get_uv_event_loop(env.raw(), &mut lp) } != 0 {
                return None;
            }
            let lp = lp.cast::<c_void>();
            unsafe {
                let poll = libc::calloc(1, uv_handle_size(UV_POLL));
                let timer = libc::calloc(1, uv_handle_size(UV_TIMER));
                let check = libc::calloc(1, uv_handle_size(UV_CHECK));
                let idle = libc::calloc(1, uv_handle_size(UV_IDLE));
                let handles = [poll, timer, check, idle];
                if handles.iter().any(|h| h.is_null()) || uv_poll_init(lp, poll, fd) != 0 {
                    handles.into_iter().for_each(|h| libc::free(h));
                    return None;
                }
                uv_poll_start(poll, UV_READABLE, on_poll);
                uv_unref(poll);
                uv_timer_init(lp, timer);
                uv_unref(timer);
                uv_check_init(lp, check);
                uv_unref(check);
                uv_idle_init(lp, idle);
                uv_unref(idle);
                // At the environment's teardown: the handles are closed and the runtime
                // dropped (with its connections).
                let _ = env.add_env_cleanup_hook((), |_| {
                    // Results not handed over and futures not started hold their
                    // callbacks' references: released here, while the environment is.
                    drop(AFTER_TURN.with(|a| std::mem::take(&mut *a.borrow_mut())));
                    drop(STARTING.with(|s| std::mem::take(&mut *s.borrow_mut())));
                    let old = MODE.with(|m| std::mem::replace(&mut *m.borrow_mut(), Mode::Threads));
                    drop(old);
                });
                crate::engine::timer::track_here();
                Some(JsLoop {
                    rt,
                    turning: Cell::new(false),
                    spin: RefCell::new(Spin::new()),
                    undelivered: Cell::new(0),
                    poll,
                    timer,
                    check,
                    idle,
                    background: Cell::new(false),
                })
            }
        }

        /// Sets the timer for the turn that fires the runtime's next timer (a millisecond
        /// after its deadline: tokio rounds up to its next millisecond; libuv counts from
        /// its loop's time, which may lag, so that turn may come early and set it again),
        /// but
        /// [`IN_FLIGHT_LOOK`] ms away at most while operations are in flight (for the
        /// timers of the libraries under the engine, which it does not see) and
        /// [`BACKGROUND_LOOK`] ms while the runtime has tasks (connections, background
        /// work); stopped otherwise. Set again after every turn.
        ///
        /// It used to tick every millisecond while an operation was in flight: then every
        /// wait of the event loop for I/O had a time-out of a millisecond at most, which
        /// cost a sequential acquire+release on one server 14 µs of CPU (78 -> 65 µs, most
        /// of it in the kernel, setting up and cancelling the wait's timer).
        pub(super) fn retime(&self) {
            let now = std::time::Instant::now();
            let look = if IN_FLIGHT.with(Cell::get) > 0 {
                Some(IN_FLIGHT_LOOK)
            } else if self.rt.metrics().num_alive_tasks() > 0 {
                Some(BACKGROUND_LOOK)
            } else {
                None
            };
            crate::engine::timer::forget_before(now);
            // In whole ms, rounded up (libuv's timers count whole ms).
            let due = crate::engine::timer::next_due().map(|at| {
                let left = (at + crate::engine::timer::SLACK).saturating_duration_since(now);
                u64::try_from(left.as_micros())
                    .unwrap_or(u64::MAX)
                    .div_ceil(1000)
                    .max(1)
            });
            let want = due.into_iter().chain(look).min();
            self.background.set(look == Some(BACKGROUND_LOOK));
            // (Stopping a timer that is not running does nothing.)
            unsafe {
                match want {
                    Some(ms) => uv_timer_start(self.timer, on_timer, ms, 0),
                    None => uv_timer_stop(self.timer),
                };
            }
        }

        /// The runtime's time driver writes to its wake-up descriptor whenever a timer is
        /// set earlier than the earliest one it knows of (to wake a thread waiting for
        /// it); here that would cost a write and a needless turn per operation (each
        /// attempt sets a deadline). So a timer sits a little ahead (4 ms; 400 ms while
        /// only background work is alive), pushed back at every turn, and is the earliest
        /// the driver knows of.
        pub(super) fn push_back_sentinel(&self) {
            let ahead = std::time::Duration::from_millis(if self.background.get() {
                4 * BACKGROUND_LOOK
            } else {
                4
            });
            let at = tokio::time::Instant::now() + ahead;
            let _g = self.rt.enter();
            SENTINEL.with(|s| {
                let mut s = s.borrow_mut();
                match s.as_mut() {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => *s = Some(Box::pin(tokio::time::sleep_until(at))),
                }
            });
        }

        /// Turns the runtime again after this iteration's poll for I/O (in the check
        /// phase, where `setImmediate` callbacks run; the next iteration's when that
        /// phase is running). Not with a timer due at once: libuv 1.46 runs a timer
        /// restarted in its own callback again in the same pass, so operations that
        /// finish without waiting for I/O (a `MemoryStore`'s) kept the loop in its timers
        /// phase, and JavaScript's timers and immediates never ran.
        pub(super) fn soon(&self) {
            unsafe {
                uv_idle_start(self.idle, on_idle);
                uv_check_start(self.check, on_check);
            }
        }
    }

    impl Drop for JsLoop {
        fn drop(&mut self) {
            unsafe {
                for handle in [self.poll, self.timer, self.check, self.idle] {
                    uv_close(handle, Some(free_handle));
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    pub(super) fn readable(_fd: i32) -> bool {
        false
    }

    /// Not available: the I/O threads run everything.
    pub(super) struct JsLoop {
        pub(super) rt: tokio::runtime::Runtime,
        pub(super) turning: Cell<bool>,
        pub(super) spin: RefCell<Spin>,
        pub(super) undelivered: Cell<usize>,
    }

    impl JsLoop {
        pub(super) fn new(_env: &Env) -> Option<JsLoop> {
            None
        }
        pub(super) fn retime(&self) {}
        pub(super) fn soon(&self) {}
        pub(super) fn push_back_sentinel(&self) {}
    }
}
