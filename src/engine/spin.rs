//! Whether a lone operation waits for its replies by polling, and for how long.
//!
//! A thread that sleeps while a reply is on its way pays for being woken when it comes:
//! on a virtual machine the wake-up of an idle core can cost more than a round trip to a
//! local Redis. So a thread that has nothing else to do (one operation in flight, a
//! sequential caller's, and no other result on its way to JavaScript) may poll for the
//! reply instead, for a bounded time. Whether that
//! pays depends on the machine and on the servers' distance, so [`Spin`] measures it: it
//! keeps the time from the start of a lone operation to its result with polling and
//! without, uses the faster way, tries the other one every [`EXPLORE`]th operation to keep
//! its estimate fresh, and never polls for servers that answer slower than [`WORTH`]
//! (a remote server: the wake-up is then a small part of the wait).
//!
//! Pure bookkeeping: the event loop (`src/addon/event_loop.rs`) does the polling.

use std::time::{Duration, Instant};

/// One operation in this many uses the way that measured slower, so that a change (the
/// machine's load, a server moved) is seen.
pub const EXPLORE: u32 = 16;

/// Polling is used only while the measured wait is at most this long.
pub const WORTH: Duration = Duration::from_micros(300);

/// The longest a poll lasts (it blocks the thread's event loop meanwhile).
pub const CAP: Duration = Duration::from_micros(400);

/// Polling must measure at least this much faster than sleeping to be kept.
const GAIN: f64 = 0.9;

/// A moving average of waits, in µs (weight 1/8 for the newest), each counted as [`CAP`]
/// at most: an operation that waited for a retry delay or another owner's release says
/// only that the wait was long, and must not hold the average up for hundreds of
/// operations.
#[derive(Clone, Copy, Debug, Default)]
struct Average(Option<f64>);

impl Average {
    fn add(&mut self, d: Duration) {
        let us = micros(d.min(CAP));
        self.0 = Some(match self.0 {
            Some(avg) => avg + (us - avg) / 8.0,
            None => us,
        });
    }
}

/// The measured waits of lone operations on one thread, and the one being measured.
#[derive(Debug, Default)]
pub struct Spin {
    polled: Average,
    slept: Average,
    count: u32,
    /// The operation being measured: when it started, and whether it polls.
    current: Option<(Instant, bool)>,
}

impl Spin {
    pub const fn new() -> Spin {
        Spin {
            polled: Average(None),
            slept: Average(None),
            count: 0,
            current: None,
        }
    }

    /// A lone operation starts at `now`: how long to poll for its result (`None`: sleep).
    pub fn start(&mut self, now: Instant) -> Option<Duration> {
        self.count = self.count.wrapping_add(1);
        let explore = self.count.is_multiple_of(EXPLORE);
        // Too far away: the wait is mostly the network.
        let far = self.slept.0.is_some_and(|s| s > micros(WORTH));
        let faster = match (self.polled.0, self.slept.0) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(polled), Some(slept)) => polled < slept * GAIN,
        };
        let poll = !far && (faster ^ explore);
        self.current = Some((now, poll));
        poll.then(|| self.budget())
    }

    /// How long a poll may last: twice the usual wait (the shorter of the two estimates:
    /// a poll that tries the slower way costs no more than a wait would), at most [`CAP`].
    fn budget(&self) -> Duration {
        let usual = match (self.polled.0, self.slept.0) {
            (Some(p), Some(s)) => p.min(s),
            (p, s) => p.or(s).unwrap_or(micros(CAP)),
        };
        Duration::from_secs_f64((2.0 * usual / 1e6).min(CAP.as_secs_f64()))
    }

    /// The operation being measured has its result at `now`.
    pub fn done(&mut self, now: Instant) {
        if let Some((at, polled)) = self.current.take() {
            let wait = now.saturating_duration_since(at);
            if polled {
                self.polled.add(wait)
            } else {
                self.slept.add(wait)
            }
        }
    }

    /// The operation being measured is no longer alone (another one started): its wait
    /// says nothing about a lone one's.
    pub fn forget(&mut self) {
        self.current = None;
    }

    /// Whether an operation is being measured.
    pub fn measuring(&self) -> bool {
        self.current.is_some()
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Runs `n` lone operations that take `polled` when polling and `slept` when not;
    /// returns how many polled.
    fn run(spin: &mut Spin, n: u32, polled: u64, slept: u64) -> u32 {
        let mut t = Instant::now();
        let mut polls = 0;
        for _ in 0..n {
            let poll = spin.start(t).is_some();
            polls += poll as u32;
            t += us(if poll { polled } else { slept });
            spin.done(t);
        }
        polls
    }

    #[test]
    fn polls_first_then_keeps_the_faster_way() {
        let mut spin = Spin::default();
        assert!(
            spin.start(Instant::now()).is_some(),
            "the first operation polls"
        );
        let mut spin = Spin::default();
        // Polling is faster: nearly every operation polls, one in EXPLORE sleeps.
        let polls = run(&mut spin, 160, 40, 100);
        assert!((145..=155).contains(&polls), "{polls}");
        // Sleeping is as fast: polling stops but for the explorations.
        let mut spin = Spin::default();
        let polls = run(&mut spin, 160, 60, 60);
        assert!(polls <= 12, "{polls}");
    }

    #[test]
    fn follows_a_change_of_machine() {
        let mut spin = Spin::default();
        run(&mut spin, 100, 40, 100);
        // Now polling does not pay (the poll takes as long as the wait): it stops.
        run(&mut spin, 200, 100, 90);
        let polls = run(&mut spin, 160, 100, 90);
        assert!(polls <= 12, "{polls}");
    }

    #[test]
    fn never_polls_for_a_far_server() {
        let mut spin = Spin::default();
        // The first poll runs out and the result comes later; afterwards the wait
        // without polling is measured above WORTH, and nothing polls again.
        run(&mut spin, 20, 900, 800);
        assert_eq!(run(&mut spin, 200, 900, 800), 0);
    }

    #[test]
    fn the_budget_is_twice_the_usual_wait_and_capped() {
        let mut spin = Spin::default();
        assert_eq!(spin.start(Instant::now()), Some(CAP));
        spin.forget();
        assert!(!spin.measuring());
        run(&mut spin, 15, 50, 120);
        let t = Instant::now();
        let budget = (0..EXPLORE).find_map(|_| {
            let b = spin.start(t);
            spin.done(t + us(50));
            b
        });
        assert_eq!(budget, Some(us(100)));
        let mut slow = Spin::default();
        run(&mut slow, 14, 250, 290);
        assert_eq!(slow.start(Instant::now()).map(|b| b <= CAP), Some(true));
    }

    #[test]
    fn one_long_wait_is_soon_forgotten() {
        let mut spin = Spin::default();
        run(&mut spin, 100, 40, 100);
        // One lone operation waits 200 ms for a retry.
        let t = Instant::now();
        let polled = spin.start(t).is_some();
        spin.done(t + Duration::from_millis(200));
        assert!(polled);
        run(&mut spin, 100, 40, 100);
        assert!(run(&mut spin, 32, 40, 100) >= 28);
    }

    #[test]
    fn an_operation_no_longer_alone_is_not_counted() {
        let mut spin = Spin::default();
        let t = Instant::now();
        spin.start(t);
        spin.forget();
        spin.done(t + us(5000));
        assert!(spin.polled.0.is_none() && spin.slept.0.is_none());
    }
}
