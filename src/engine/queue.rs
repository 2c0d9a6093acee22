//! Local first-come-first-served queues: waiters of one process for the same resources
//! line up, and only the head of the line contends with other processes. That keeps the
//! process's own waiters from racing each other (fairness), and keeps the Redis traffic
//! of a contended lock to one waiter per process.

use crate::engine::sync::Unpoisoned;
use crate::engine::timer;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::engine::notify::{Signal, Watch};
use crate::engine::quorum::{AttemptStats, LateVotes};

/// A lock moved to a waiter of this process by its releasing holder (a hand-over).
pub struct Handed {
    /// The lock's value now (the waiter's).
    pub value: String,
    /// The validity left, counted from the start of the hand-over.
    pub validity: i64,
    pub stats: AttemptStats,
}

struct Line {
    /// Waiter ids in arrival order, each with its wake-up for its turn; the first is the
    /// head.
    waiters: VecDeque<(u64, Arc<Notify>)>,
    /// Signalled when a release of the resources is announced.
    released: Arc<Signal>,
    /// The subscriptions behind `released` (kept while the line exists).
    watches: Vec<Watch>,
    /// Whether the previous head left holding the lock (the next waits for its release).
    handoff: bool,
    /// The head's offer to take the lock over directly from a holder of this process.
    offer: Option<(u64, Offer)>,
    /// Hand-overs in a row: after [`MAX_HANDOVERS_IN_ROW`], a release goes to the nodes,
    /// so that waiters of other processes get their chance.
    handovers_in_row: u32,
    /// Set when a release went to the nodes for that reason: the head then lets the
    /// other processes' heads try first (see [`Turn::take_yield`]).
    yielding: bool,
}

/// A waiting head's offer: when a holder of this process releases the lock, it may move
/// the lock to `value` on the nodes instead (see `Quorum::hand_over`) and tell the waiter
/// through `tx`.
pub struct Offer {
    pub value: String,
    pub ttl_ms: u64,
    pub drift_factor: f64,
    pub tx: tokio::sync::oneshot::Sender<Handed>,
    /// Where the waiter's operation takes the complete votes of a hand-over decided before
    /// every node answered (as an attempt's late votes).
    pub late: Option<LateVotes>,
}

/// At most this many hand-overs within the process in a row.
pub const MAX_HANDOVERS_IN_ROW: u32 = 3;

/// How long the subscriptions of a line that emptied are kept for a line that forms
/// again (a contended lock empties its line for a moment at every hand-over).
const KEEP_SUBSCRIBED: Duration = Duration::from_secs(2);
/// At most this many emptied lines keep their subscriptions.
const KEEP_MAX: usize = 1024;

/// A line that emptied, kept for a while with its subscriptions and its count of
/// hand-overs in a row (a line that empties at every hand-over, two workers passing the
/// lock back and forth, must not start the count again each time, or the waiters of
/// other processes never get in).
struct Kept {
    line: Line,
    since: Instant,
    /// Until when the lock is held in this process, when the line emptied because its
    /// head took the lock and no holder of this process released it since: a line that
    /// forms again meanwhile waits for that release (or offers to take the lock over)
    /// before its first attempt, which would find the lock held.
    holding: Option<Instant>,
}

/// The lines of one quorum, by resource set.
#[derive(Default)]
pub struct Queues {
    lines: Mutex<Lines>,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Lines {
    active: HashMap<String, Line>,
    kept: HashMap<String, Kept>,
}

impl Queues {
    /// A holder of this process releases the lock of line `key`. With `offers` (a mutex):
    /// the offer of the head waiting on the line, unless the line has had its share of
    /// hand-overs in a row (then the count starts again and `None` lets the release go to
    /// the nodes). With nobody waiting, an emptied line no longer counts the lock as held
    /// here, and starts its count again (the release goes to the nodes, where the other
    /// processes get their chance).
    pub fn releasing(&self, key: &str, offers: bool) -> Option<Offer> {
        let mut lines = self.lock();
        let Some(line) = lines.active.get_mut(key) else {
            if let Some(k) = lines.kept.get_mut(key) {
                k.holding = None;
                k.line.handovers_in_row = 0;
            }
            return None;
        };
        if !offers || line.offer.is_none() || line.handovers_in_row >= MAX_HANDOVERS_IN_ROW {
            // This release goes to the nodes (and is announced to every process): a head
            // that comes next must not take it for a release that happened before the lock
            // was taken here (see `Quorum::take_turn`).
            line.handoff = false;
            if offers {
                line.yielding = line.offer.is_some();
                line.handovers_in_row = 0;
            }
            return None;
        }
        line.handovers_in_row += 1;
        line.offer.take().map(|(_, o)| o)
    }

    /// A hand-over on line `key` found no listener of another process: it does not
    /// count towards the bound of hand-overs in a row.
    pub fn no_rivals(&self, key: &str) {
        if let Some(line) = self.lock().active.get_mut(key) {
            line.handovers_in_row = 0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.lines.locked()
    }

    /// Joins the line for `key` and waits for the turn, until `deadline`. `None` when
    /// the deadline passed first.
    pub async fn enter(self: &Arc<Self>, key: String, deadline: Option<Instant>) -> Option<Turn> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let my_turn = Arc::new(Notify::new());
        let (head, signal) = self.join(&key, id, &my_turn);
        let turn = Turn {
            queues: self.clone(),
            key,
            id,
            held_until: None,
            signal,
        };
        if head {
            return Some(turn);
        }
        loop {
            let wait = my_turn.notified();
            let woke = match deadline {
                Some(d) => timer::timeout_at(d, wait).await.is_ok(),
                None => {
                    wait.await;
                    true
                }
            };
            if turn.is_head() {
                return Some(turn);
            }
            if !woke {
                return None; // dropping `turn` leaves the line
            }
        }
    }

    /// Puts waiter `id` at the end of the line for `key` (made, or brought back with the
    /// subscriptions kept for it, when needed); `true` when it is the head at once.
    /// Subscriptions kept too long go on the way (dropped outside the lock).
    fn join(&self, key: &str, id: u64, my_turn: &Arc<Notify>) -> (bool, Arc<Signal>) {
        let (head, signal, expired) = {
            let mut lines = self.lock();
            let Lines { active, kept } = &mut *lines;
            // (The clock is read only when a line is kept: most joins find none.)
            let now = (!kept.is_empty()).then(Instant::now);
            let stale: Vec<String> = kept
                .iter()
                .filter(|(_, k)| {
                    now.is_some_and(|now| now - k.since > KEEP_SUBSCRIBED) || kept.len() > KEEP_MAX
                })
                .map(|(key, _)| key.clone())
                .collect();
            let expired: Vec<Kept> = stale.iter().filter_map(|key| kept.remove(key)).collect();
            let line = active.entry(key.to_string()).or_insert_with(|| {
                let Some(Kept {
                    mut line, holding, ..
                }) = kept.remove(key)
                else {
                    return Line {
                        waiters: VecDeque::new(),
                        released: Arc::default(),
                        watches: Vec::new(),
                        handoff: false,
                        offer: None,
                        handovers_in_row: 0,
                        yielding: false,
                    };
                };
                // The head forgets the releases announced before (`Quorum::take_turn`).
                line.handoff = holding.is_some_and(|until| now.is_some_and(|now| now < until));
                line
            });
            line.waiters.push_back((id, my_turn.clone()));
            (line.waiters.len() == 1, line.released.clone(), expired)
        };
        drop(expired);
        (head, signal)
    }
}

/// A place in a line; the holder is the head once `enter` returns it. Dropping it leaves
/// the line and gives the turn to the next waiter.
pub struct Turn {
    queues: Arc<Queues>,
    key: String,
    id: u64,
    /// Set when this head leaves holding the lock: until when it is valid.
    held_until: Option<Instant>,
    /// The line's release signal (the line keeps it for as long as it lives).
    signal: Arc<Signal>,
}

impl Turn {
    fn is_head(&self) -> bool {
        self.queues
            .lock()
            .active
            .get(&self.key)
            .is_some_and(|l| l.waiters.front().is_some_and(|(w, _)| *w == self.id))
    }

    /// The line's release signal, whatever the state of its subscriptions (see
    /// [`Turn::released`]): for what an attempt hears (see [`Signal::settle`]).
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }

    /// Whether the previous head left holding the lock: then its release is worth
    /// waiting for before the first attempt.
    pub fn handoff(&self) -> bool {
        self.queues
            .lock()
            .active
            .get(&self.key)
            .is_some_and(|l| l.handoff)
    }

    /// The line's release signal, and whether the line holds subscriptions for it, as they
    /// are: one whose connection died has woken the signal, and the retry that follows
    /// subscribes again (see [`Turn::released`]). For a wait, which must not drop them.
    pub fn listening(&self) -> (Arc<Signal>, bool) {
        let lines = self.queues.lock();
        let line = lines.active.get(&self.key).expect("a turn's line exists");
        (self.signal.clone(), !line.watches.is_empty())
    }

    /// The line's release signal, and whether the line is subscribed to it (on a
    /// pub/sub connection that still delivers; dead subscriptions are dropped, so that
    /// the caller subscribes again).
    pub fn released(&self) -> (Arc<Signal>, bool) {
        let mut lines = self.queues.lock();
        let line = lines
            .active
            .get_mut(&self.key)
            .expect("a turn's line exists");
        let dead: Vec<Watch> = if line.watches.iter().all(Watch::is_alive) {
            Vec::new()
        } else {
            std::mem::take(&mut line.watches)
        };
        let answer = (self.signal.clone(), !line.watches.is_empty());
        drop(lines);
        drop(dead);
        answer
    }

    /// Keeps `watches` (the subscriptions behind the release signal) with the line.
    pub fn keep_watches(&self, watches: Vec<Watch>) {
        if let Some(line) = self.queues.lock().active.get_mut(&self.key) {
            line.watches.extend(watches);
        }
    }

    /// Offers to take the lock over from a holder of this process (see [`Offer`]).
    pub fn offer(&self, offer: Offer) {
        if let Some(line) = self.queues.lock().active.get_mut(&self.key) {
            line.offer = Some((self.id, offer));
        }
    }

    /// Whether the release this head was woken by went to the nodes after the line's
    /// share of hand-overs in a row (then the head lets the other processes try first);
    /// clears it.
    pub fn take_yield(&self) -> bool {
        self.queues
            .lock()
            .active
            .get_mut(&self.key)
            .is_some_and(|l| std::mem::take(&mut l.yielding))
    }

    /// Withdraws this head's offer; `false` when a releaser took it already (its answer is
    /// then on the way).
    pub fn withdraw(&self) -> bool {
        let mut lines = self.queues.lock();
        let Some(line) = lines.active.get_mut(&self.key) else {
            return true;
        };
        match &line.offer {
            Some((id, _)) if *id == self.id => {
                line.offer = None;
                true
            }
            _ => false,
        }
    }

    /// Marks that this head leaves holding the lock, valid for `validity_ms`.
    pub fn acquired(&mut self, validity_ms: i64) {
        let validity = Duration::from_millis(validity_ms.max(0) as u64);
        self.held_until = Some(Instant::now() + validity);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut lines = self.queues.lock();
        let Lines { active, kept } = &mut *lines;
        let Some(line) = active.get_mut(&self.key) else {
            return;
        };
        let was_head = line.waiters.front().is_some_and(|(w, _)| *w == self.id);
        if line.offer.as_ref().is_some_and(|(id, _)| *id == self.id) {
            line.offer = None;
        }
        line.waiters.retain(|(w, _)| *w != self.id);
        if line.waiters.is_empty() {
            // The line goes; its subscriptions stay a while for the next line.
            if let Some(line) = active.remove(&self.key) {
                if !line.watches.is_empty() {
                    let kept_line = Kept {
                        line,
                        since: Instant::now(),
                        holding: self.held_until.filter(|_| was_head),
                    };
                    kept.insert(self.key.clone(), kept_line);
                }
            }
            return;
        }
        if was_head {
            line.handoff = self.held_until.is_some();
            if let Some((_, next)) = line.waiters.front() {
                next.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_come_first_served() {
        let q = Arc::new(Queues::default());
        let first = q.enter("r".into(), None).await.expect("head at once");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (q, order) = (q.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let turn = q.enter("r".into(), None).await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(turn);
            }));
            // Arrive in order.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert!(
            q.lock().active.is_empty(),
            "the line is gone once everyone left"
        );
    }

    #[tokio::test]
    async fn deadline_leaves_the_line_and_handoff_is_passed_on() {
        let q = Arc::new(Queues::default());
        let mut head = q.enter("r".into(), None).await.unwrap();
        let late = q
            .enter("r".into(), Some(Instant::now() + Duration::from_millis(20)))
            .await;
        assert!(late.is_none(), "timed out while the head held its turn");
        let q2 = q.clone();
        let next = tokio::spawn(async move {
            let t = q2.enter("r".into(), None).await.unwrap();
            t.handoff()
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        head.acquired(5_000);
        drop(head);
        assert!(
            next.await.unwrap(),
            "the next head knows the lock was taken"
        );
    }

    #[tokio::test]
    async fn a_release_to_the_nodes_is_no_hand_off_to_wait_for() {
        let q = Arc::new(Queues::default());
        let mut head = q.enter("r".into(), None).await.unwrap();
        let q2 = q.clone();
        let next = tokio::spawn(async move { q2.enter("r".into(), None).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(5)).await;
        head.acquired(5_000);
        drop(head);
        // The holder releases to the nodes (no offer) before the next head looks.
        assert!(q.releasing("r", true).is_none());
        let next = next.await.unwrap();
        assert!(!next.handoff(), "the lock is on its way to the nodes");
        drop(next);
        // A head that leaves holding the lock is a hand-off again.
        let mut head = q.enter("r".into(), None).await.unwrap();
        let q3 = q.clone();
        let next = tokio::spawn(async move { q3.enter("r".into(), None).await.unwrap().handoff() });
        tokio::time::sleep(Duration::from_millis(5)).await;
        head.acquired(5_000);
        drop(head);
        assert!(next.await.unwrap());
    }

    #[tokio::test]
    async fn separate_keys_do_not_wait_for_each_other() {
        let q = Arc::new(Queues::default());
        let _a = q.enter("a".into(), None).await.unwrap();
        let b = tokio::time::timeout(Duration::from_millis(50), q.enter("b".into(), None)).await;
        assert!(b.unwrap().is_some());
    }
}
