//! The waiting line kept on the nodes, across processes.
//!
//! Within a process, waiters for a lock queue up locally and only the head of that queue
//! tries the nodes (see [`crate::engine::queue`]). Across processes, the heads used to
//! race: a release woke them all, their votes split, and every one of them lost. Now a
//! waiting head takes a *ticket* on every node, in a sorted set next to the lock, ordered
//! by the time its wait began (the tie broken by the ticket). Its retries run
//! [`LINE_ACQUIRE`](crate::engine::scripts::LINE_ACQUIRE), which sets the lock only for
//! the first ticket of the line (or when the line is empty): the other heads take their
//! places and write nothing else, so the oldest waiter wins on every node and nobody has
//! to clean up.
//!
//! Safety does not depend on the line: the lock is still set only where it is free, so
//! there are never two holders. The line is about liveness and fairness:
//! * every node orders the tickets the same way (the order comes from the waiter), so the
//!   nodes agree on the first, unless a ticket is missing on some of them;
//! * a ticket lives [`Seat::ttl_ms`] unless renewed by its head's next attempt (never
//!   longer than the lock waited for), so a dead waiter blocks the line for at most that
//!   long;
//! * a head's ticket leaves the line where its attempt takes the lock (and comes back
//!   with the cleanup of an attempt lost elsewhere, so the nodes keep one line); a head
//!   that stops waiting (won, handed the lock, gave up, aborted) takes its ticket back
//!   from every node;
//! * a release keeps the lock for the first ticket of the line instead of deleting it,
//!   and its announcement wakes only that ticket's head, so newcomers cannot jump the
//!   line and the other heads sleep on;
//! * a lock found free (it expired) while another ticket is first is kept for that ticket
//!   and announced, as a release does: its waiter may be sleeping its retry delay;
//! * the cleanup of a head's lost attempt keeps the lock for its own ticket only where
//!   another ticket waits behind it (a split between waiting heads), and frees it where
//!   the head is alone in the line (an attempt lost to owners that keep their nodes: it
//!   then waits its retry delay, and nothing sits reserved meanwhile); a head whose
//!   cleanup kept the lock for it retries after a short pause that doubles with each such
//!   retry in a row, unless another owner held the lock on a quorum or a node failed
//!   (then it waits for a release or the retry delay, as neither passes in
//!   milliseconds); those retries count against `retryCount` only once the pause is back
//!   to the retry delay, so the retry window stays whole (and bounds them).
//!
//! The order uses the wall clocks of the waiting processes: a process whose clock runs
//! behind comes first more often. That costs fairness, never safety.
//!
//! Only a plain mutex on one resource uses the line (no fencing: the fenced acquire has
//! its own script); its first attempt is still the plain `SET NX PX GET`.

use crate::engine::sync::{Entered, Pending};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::node::Node;
use crate::engine::scripts::{scoped_key, LINE_ACQUIRE_SCRIPT, LINE_LEAVE_SCRIPT};
use crate::engine::timer;
use crate::engine::value::random_value;

/// The shortest pause of a head whose lost attempt's cleanup kept the lock for it.
pub const QUEUED_PAUSE: Duration = Duration::from_millis(2);

/// One waiting head's place in the lines of the nodes.
pub struct Seat {
    pub ticket: String,
    /// When the wait began (ms since the Unix epoch): the place in the line.
    pub order_ms: u64,
    /// How long a ticket stays on a node without being renewed.
    pub ttl_ms: u64,
    /// The lock, the line and the tickets' expiry on the nodes.
    keys: [String; 3],
    /// Whether an attempt went out with the ticket (it may be on any node then).
    used: AtomicBool,
    /// The nodes where the ticket is known to have left the line: those that set the lock
    /// for the winning attempt (see [`Seat::won`]).
    left: Vec<bool>,
    nodes: Arc<Vec<Arc<Node>>>,
    limit: Duration,
    /// Counts the seat while it lives, and then its leave on the nodes: `quit()` waits
    /// for both before it closes the connections (a ticket left in the lines holds the
    /// next waiter back until it expires).
    waiting: Arc<Pending>,
    _seated: Entered,
}

impl Seat {
    /// A seat for a wait on `resource` that began at `order_ms`; `ttl_ms` as above.
    pub fn new(
        resource: &str,
        order_ms: u64,
        ttl_ms: u64,
        nodes: Arc<Vec<Arc<Node>>>,
        limit: Duration,
        waiting: &Arc<Pending>,
    ) -> Self {
        Seat {
            ticket: random_value(),
            order_ms,
            ttl_ms,
            keys: {
                let [line, expiry] = line_keys(resource);
                [resource.to_string(), line, expiry]
            },
            used: AtomicBool::new(false),
            left: vec![false; nodes.len()],
            nodes,
            limit,
            _seated: waiting.enter(),
            waiting: waiting.clone(),
        }
    }

    /// The `EVALSHA` of a line-honouring acquire of the seat's resource with `value`.
    pub fn acquire_cmd(&self, value: &str, ttl: &str) -> redis::Cmd {
        let (order, ttl_ms) = (self.order_ms.to_string(), self.ttl_ms.to_string());
        LINE_ACQUIRE_SCRIPT.evalsha(&self.keys, &[value, ttl, &self.ticket, &order, &ttl_ms])
    }

    /// What the cleanup of a lost attempt adds to its release to put the ticket back in
    /// the line: ticket, order, lifetime.
    pub fn rejoin_args(&self) -> Vec<String> {
        vec![
            self.ticket.clone(),
            self.order_ms.to_string(),
            self.ttl_ms.to_string(),
        ]
    }

    /// An attempt goes out with the ticket.
    pub fn attempted(&self) {
        self.used.store(true, Ordering::Relaxed);
    }

    /// The attempt with the ticket won; `set[i]`: node `i` set the lock for it, and so took
    /// the ticket out of its line ([`LINE_ACQUIRE`](crate::engine::scripts::LINE_ACQUIRE)
    /// does both at once). The ticket then leaves only the other nodes' lines (a contended
    /// lock moved to another process cost every node a script more per move).
    pub fn won(&mut self, set: impl IntoIterator<Item = bool>) {
        for (left, set) in self.left.iter_mut().zip(set) {
            *left |= set;
        }
    }
}

impl Drop for Seat {
    /// The wait is over: the ticket leaves every node, passing on the lock where it was
    /// kept for it (in the background, each within the command time-out).
    fn drop(&mut self) {
        if !self.used.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime left: the tickets expire on their own
        };
        if self.left.iter().all(|l| *l) {
            return;
        }
        // A head that won leaves quietly: a lock kept for its ticket on a node it did not
        // get is freed there without waking every waiter (its release will).
        let won = self.left.iter().any(|l| *l);
        let args: &[&str] = if won {
            &[&self.ticket, "quiet"]
        } else {
            &[&self.ticket]
        };
        let leave = Arc::new(LINE_LEAVE_SCRIPT.evalsha(&self.keys, args));
        for (node, _) in self.nodes.iter().zip(&self.left).filter(|(_, l)| !**l) {
            let (node, leave) = (node.clone(), leave.clone());
            let leaving = self.waiting.enter();
            runtime.spawn(timer::timeout(self.limit, async move {
                let _ = node.eval::<i64>(&LINE_LEAVE_SCRIPT, &leave).await;
                drop(leaving);
            }));
        }
    }
}

/// The keys of `resource`'s waiting line: the tickets by order, and by expiry (in the
/// resource's Cluster slot).
pub fn line_keys(resource: &str) -> [String; 2] {
    [
        scoped_key(resource, "line"),
        scoped_key(resource, "line:exp"),
    ]
}

/// The pause of a head whose cleanup kept the lock for it `streak` times in a row:
/// [`QUEUED_PAUSE`], doubling, never over `pause` (the retry delay).
pub fn queued_pause(streak: u32, pause: Duration) -> Duration {
    QUEUED_PAUSE
        .saturating_mul(1 << streak.saturating_sub(1).min(16))
        .min(pause)
}

/// Whether the pause of a streak of `streak` retries soon is shorter than `pause` (the
/// retry delay).
pub fn shortened(streak: u32, pause: Duration) -> bool {
    streak > 0 && queued_pause(streak, pause) < pause
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_pauses_double_up_to_the_retry_delay() {
        let delay = Duration::from_millis(50);
        let pauses: Vec<u64> = (1..=7)
            .map(|s| queued_pause(s, delay).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [2, 4, 8, 16, 32, 50, 50]);
        assert_eq!(queued_pause(100, delay), delay);
        let shorter: Vec<bool> = (0..=7).map(|s| shortened(s, delay)).collect();
        assert_eq!(shorter, [false, true, true, true, true, true, false, false]);
        assert!(!shortened(1, Duration::ZERO));
    }

    #[test]
    fn line_keys_share_the_resource_slot() {
        use crate::engine::scripts::hash_slot;
        for r in ["jobs", "{user:1}:cart"] {
            for k in line_keys(r) {
                assert_eq!(hash_slot(&k), hash_slot(r));
                assert_ne!(k, r);
            }
        }
    }
}
