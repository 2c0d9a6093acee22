//! The engine's timers (tokio's), each of which says when it is due.
//!
//! Where the engine runs on a JavaScript thread, nothing waits in the runtime's driver, so
//! the runtime's timers fire only when something turns the runtime: the event loop sets
//! its own timer for the earliest of them (`src/addon/event_loop.rs`). A thread that
//! [`track_here`]s keeps the deadlines of the live timers made on it, which
//! [`next_due`] reads; a timer's deadline leaves when the timer is dropped. Elsewhere
//! (the I/O threads) nothing is kept: the runtime's driver waits for its timers itself.
//!
//! Every timer of the engine comes from here; the tests' own pauses may use tokio's.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

thread_local! {
    /// The deadlines of the live timers made on this thread, when it tracks them.
    static DUE: RefCell<Option<BTreeSet<(Instant, u64)>>> = const { RefCell::new(None) };
}

/// Tells the deadlines apart (unique in the process: a timer dropped on another thread
/// cannot take another timer's deadline out of that thread's set).
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Keeps the deadlines of the timers made on this thread from now on.
pub fn track_here() {
    DUE.with(|d| {
        d.borrow_mut().get_or_insert_with(BTreeSet::new);
    });
}

/// How long after its deadline a timer is sure to fire at the runtime's next look at its
/// clock: tokio rounds deadlines up to the next whole millisecond of its clock.
pub const SLACK: Duration = Duration::from_millis(1);

/// A deadline this long past is forgotten though its timer lives (a timer dropped on
/// another thread than the one it was made on never leaves that thread's set).
const FORGOTTEN: Duration = Duration::from_secs(1);

/// The earliest deadline of a live timer made on this thread (`None` when there is none,
/// or when the thread does not track them): it may be past, for a timer that fired and
/// whose task has not run yet.
pub fn next_due() -> Option<Instant> {
    DUE.with(|d| d.borrow().as_ref()?.first().map(|(at, _)| *at))
}

/// Forgets the deadlines [`FORGOTTEN`] before `now` (the turn that ran their tasks is
/// long over).
pub fn forget_before(now: Instant) {
    DUE.with(|d| {
        if let Some(set) = d.borrow_mut().as_mut() {
            while set.first().is_some_and(|(at, _)| *at + FORGOTTEN <= now) {
                set.pop_first();
            }
        }
    })
}

/// A deadline kept while its timer lives.
struct Due(Option<(Instant, u64)>);

impl Due {
    fn at(at: Instant) -> Due {
        let kept = DUE.try_with(|d| {
            let mut d = d.try_borrow_mut().ok()?;
            let set = d.as_mut()?;
            let key = (at, NEXT.fetch_add(1, Ordering::Relaxed));
            set.insert(key);
            Some(key)
        });
        Due(kept.ok().flatten())
    }
}

impl Drop for Due {
    fn drop(&mut self) {
        if let Some(key) = self.0 {
            let _ = DUE.try_with(|d| {
                if let Ok(mut d) = d.try_borrow_mut() {
                    if let Some(set) = d.as_mut() {
                        set.remove(&key);
                    }
                }
            });
        }
    }
}

/// A tokio timer future and its kept deadline.
pub struct Timed<F> {
    inner: F,
    _due: Due,
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is pinned with `self` and never moved out of it.
        unsafe { self.map_unchecked_mut(|t| &mut t.inner) }.poll(cx)
    }
}

fn timed<F>(at: Instant, inner: F) -> Timed<F> {
    Timed {
        inner,
        _due: Due::at(at),
    }
}

/// [`tokio::time::sleep`].
pub fn sleep(d: Duration) -> Timed<tokio::time::Sleep> {
    sleep_until(Instant::now() + d)
}

/// [`tokio::time::sleep_until`].
pub fn sleep_until(at: Instant) -> Timed<tokio::time::Sleep> {
    timed(at, tokio::time::sleep_until(at.into()))
}

/// [`sleep_until`] `at`, or never when `None` (no timer is made then: a timer never
/// polled in a disabled branch of a `select!` would still count as due).
pub async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// [`tokio::time::timeout`].
pub fn timeout<F: IntoFuture>(d: Duration, f: F) -> Timed<tokio::time::Timeout<F::IntoFuture>> {
    timeout_at(Instant::now() + d, f)
}

/// [`tokio::time::timeout_at`].
pub fn timeout_at<F: IntoFuture>(at: Instant, f: F) -> Timed<tokio::time::Timeout<F::IntoFuture>> {
    timed(at, tokio::time::timeout_at(at.into(), f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracking_thread_knows_the_earliest_live_deadline() {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let _g = rt.enter();
            let now = Instant::now();
            // Not tracked yet.
            let untracked = sleep(Duration::from_millis(5));
            assert_eq!(next_due(), None);
            track_here();
            assert_eq!(next_due(), None);
            let late = sleep(Duration::from_secs(9));
            let soon = timeout(Duration::from_secs(2), std::future::pending::<()>());
            let due = next_due().unwrap();
            assert!(due > now + Duration::from_millis(1900) && due < now + Duration::from_secs(3));
            drop(soon);
            assert!(next_due().unwrap() > now + Duration::from_secs(8));
            // A past deadline is kept while its timer lives (its task may not have run),
            // and forgotten once long past.
            let passed = sleep_until(now);
            assert_eq!(next_due(), Some(now));
            forget_before(now + FORGOTTEN / 2);
            assert_eq!(next_due(), Some(now));
            forget_before(now + FORGOTTEN);
            assert!(next_due().unwrap() > now + Duration::from_secs(8));
            drop((late, passed, untracked));
            assert_eq!(next_due(), None);
        })
        .join()
        .unwrap();
    }

    #[tokio::test]
    async fn timed_futures_behave_as_tokios() {
        assert!(
            timeout(Duration::from_millis(5), std::future::pending::<()>())
                .await
                .is_err()
        );
        assert_eq!(
            timeout(Duration::from_secs(5), async { 7 }).await.unwrap(),
            7
        );
        let at = Instant::now() + Duration::from_millis(10);
        sleep_until(at).await;
        assert!(Instant::now() >= at);
    }
}
