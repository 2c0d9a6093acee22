//! The Redlock algorithm over N nodes: acquire, extend and release with quorum voting,
//! early decisions, validity on a monotonic clock, retries with jitter, and cleanup of
//! failed attempts.

use crate::engine::sync::{Entered, Pending, Unpoisoned};
use crate::engine::timer;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::engine::error::NodeError;
use crate::engine::identity::{same_server, LOST_KEY};
use crate::engine::kinds::{rw_keys, Commands, Kind};
use crate::engine::line::{queued_pause, shortened, Seat};
use crate::engine::node::Node;
use crate::engine::notify::{Signal, Watch};
use crate::engine::queue::{Offer, Queues, Turn};
use crate::engine::quorum::{quorum_of, Decision, FailureKind, Tally};
use crate::engine::scripts::{
    LockScript, FENCE_SCRIPT, HANDOVER_SCRIPT, LINE_RELEASE_SCRIPT, RELEASE_SCRIPT,
};
use crate::engine::settings::Settings;
use crate::engine::trust::Trust;
use crate::engine::validity::{attempt_window, validity_ms};
use crate::engine::value::{random_unit, random_value};
use crate::engine::votes::{Answer, Votes, WRONG_TYPE};

/// How many attempts an execution remembers (node-redlock keeps every one, which grows
/// without bound with `retryCount: -1`).
pub const ATTEMPTS_KEPT: usize = 100;

pub use crate::engine::kinds::Op;
pub use crate::engine::queue::Handed;
pub use crate::engine::quorum::{AttemptStats, LateVotes, Vote};

/// What a waiter's wait ended with.
enum Waited {
    /// A release was announced (`true`) or the pause ran out (`false`).
    Woken(bool),
    /// The lock was handed over to it.
    Handed(Handed),
    Aborted,
}

/// The result of an operation with its retries.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The last [`ATTEMPTS_KEPT`] attempts, oldest first.
    pub attempts: VecDeque<AttemptStats>,
    /// How many attempts were made in all.
    pub attempt_count: u64,
    /// Wall-clock start of the operation, ms since the epoch.
    pub start_ms: f64,
    /// `Ok(validity in ms)` (0 for a release), or why it failed.
    pub outcome: Result<i64, FailureKind>,
    /// Wall-clock ms since the epoch until which an acquired or extended lock is valid
    /// (the moment of the decision plus the validity left then); 0 otherwise.
    pub expiration_ms: f64,
    /// The fencing token of an acquire with `fencing`.
    pub fence: Option<i64>,
    /// The slot of an acquired semaphore permit.
    pub slot: Option<u32>,
    /// The value of the last attempt (an acquired lock's value).
    pub value: String,
}

impl Execution {
    /// An operation that had nothing to do (releasing a lock that is not held).
    pub fn nothing_to_do() -> Self {
        Retries::start().finish(Ok(0))
    }

    /// An operation refused before any attempt.
    pub fn failed(kind: FailureKind) -> Self {
        Retries::start().finish(Err(kind))
    }
}

/// Whole milliseconds since the epoch (as JavaScript's `Date.now()`), for times reported
/// to users. Rounded down, so an expiration computed from it is never late.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0)
}

/// A set of independent nodes voting on locks.
#[derive(Clone)]
pub struct Quorum {
    nodes: Arc<Vec<Arc<Node>>>,
    /// Which nodes may vote for acquires (restart safety).
    trust: Arc<Trust>,
    /// Local lines of waiters, so that one waiter per process contends remotely.
    queues: Arc<Queues>,
    stragglers: Arc<Stragglers>,
    /// By node: when (ms after `epoch`, plus one; 0: not since it last answered) a request
    /// of an attempt last timed out there, its whole command time-out (see [`SPLIT_GRACE`]).
    silent: Arc<Vec<std::sync::atomic::AtomicU64>>,
    epoch: Instant,
    /// The waiting heads' seats in the nodes' lines, and their leaves (see [`Seat`]).
    seats: Arc<Pending>,
    /// Operations under way, and the cleanups they left running (see
    /// [`Quorum::spawn_within`]): `quit()` lets them end before it closes the connections.
    working: Arc<Pending>,
    /// Set by `quit()`: every operation under way ends (aborted), and every later one
    /// at once.
    closed: Arc<Cancel>,
    /// Aborts the acquires under way and every later one, and keeps releases from handing
    /// a lock over (see [`Quorum::stop_acquires`]); set by `quit()` too.
    stopping: Arc<Cancel>,
}

/// The requests of won acquires still under way on slow nodes. A lock may be released
/// before such a request lands (a node that was still connecting, say); a release of a
/// value that stragglers run for is noted, and a straggler that lands with it removes it
/// again. Only the values of running stragglers are kept (not every value released while
/// any ran: at 50k releases a second and a 5 s command time-out that was 250k values).
#[derive(Default)]
struct Stragglers {
    running: Arc<Pending>,
    watched: Mutex<HashMap<String, Watched>>,
}

/// The stragglers of one value, and whether it was released since the first began.
#[derive(Default)]
struct Watched {
    stragglers: usize,
    released: bool,
}

/// One straggler task for `value`, counted while it lives (so that a release of its value
/// is noted). Made before the task is spawned and before the lock reaches its caller: a
/// release that comes before the task first runs is noted too.
struct Straggler {
    stragglers: Arc<Stragglers>,
    value: String,
    _running: Entered,
}

impl Straggler {
    fn enter(stragglers: &Arc<Stragglers>, value: &str) -> Straggler {
        let mut watched = stragglers.watched.locked();
        watched.entry(value.to_string()).or_default().stragglers += 1;
        Straggler {
            stragglers: stragglers.clone(),
            value: value.to_string(),
            _running: stragglers.running.enter(),
        }
    }

    /// Whether its value was released since the straggler began.
    fn was_released(&self) -> bool {
        let watched = self.stragglers.watched.locked();
        watched.get(&self.value).is_some_and(|w| w.released)
    }
}

impl Drop for Straggler {
    fn drop(&mut self) {
        let mut watched = self.stragglers.watched.locked();
        if let Some(w) = watched.get_mut(&self.value) {
            w.stragglers -= 1;
            if w.stragglers == 0 {
                watched.remove(&self.value);
            }
        }
    }
}

impl Stragglers {
    /// Notes a release of `value`, if stragglers run for it.
    fn note_release(&self, value: &str) {
        if self.running.running() == 0 {
            return;
        }
        if let Some(w) = self.watched.locked().get_mut(value) {
            w.released = true;
        }
    }

    /// Whether a running straggler's value was released (it has a key to take back).
    fn any_released(&self) -> bool {
        self.watched.locked().values().any(|w| w.released)
    }

    /// Returns once no straggler runs.
    async fn idle(&self) {
        self.running.idle().await
    }
}

/// What an operation tells as it goes (its events): the attempts that are not its last,
/// and each node's failure as its vote comes in.
pub trait Reports: Send + Sync {
    /// An attempt that is not the operation's last, as it ends (a node voted against it);
    /// `true` when its votes against were told (someone listens).
    fn attempt(&self, stats: &AttemptStats) -> bool;
    /// Node `i` failed (`e`): its vote came in, before its attempt ended; `true` when it
    /// was told.
    fn failed(&self, i: usize, e: &NodeError) -> bool;
}

/// What one operation is given besides its arguments.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub settings: &'a Settings,
    /// No attempt runs past this moment (an extend: the lock's expiration), and no retry
    /// starts after it.
    pub deadline: Option<Instant>,
    /// Hears every attempt that is not the operation's last, as it ends (events).
    pub progress: Option<&'a dyn Reports>,
    /// Aborts the operation (`settings.signal`).
    pub cancel: Option<&'a Cancel>,
    /// Aborts every operation of the instance (`quit()`): set by [`Quorum::execute`].
    pub closed: Option<&'a Cancel>,
    /// Makes the sink for the complete votes of an attempt won before every node answered.
    pub late: Option<&'a (dyn Fn() -> LateVotes + Send + Sync)>,
    /// What is held (a mutex unless said otherwise).
    pub kind: Kind,
}

impl<'a> Call<'a> {
    pub fn new(settings: &'a Settings) -> Self {
        Call {
            settings,
            deadline: None,
            progress: None,
            cancel: None,
            closed: None,
            late: None,
            kind: Kind::Mutex,
        }
    }

    /// This call, ending at `at` at the latest.
    fn until(&self, at: Instant) -> Call<'a> {
        Call {
            deadline: Some(self.deadline.map_or(at, |d| d.min(at))),
            ..*self
        }
    }

    fn cancelled(&self) -> bool {
        [self.cancel, self.closed]
            .iter()
            .flatten()
            .any(|c| c.is_cancelled())
    }

    /// Resolves when the operation is aborted, by its signal or by `quit()`.
    async fn aborted(&self) {
        let by = |c: Option<&'a Cancel>| async move {
            match c {
                Some(c) => c.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = by(self.cancel) => {}
            _ = by(self.closed) => {}
        }
    }
}

/// An abort switch for one operation.
#[derive(Default)]
pub struct Cancel {
    flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Cancel {
    pub fn cancel(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::Acquire)
    }

    pub async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// How late a server may end a `WAIT` after its time-out (its cron runs 10 times a second).
const WAIT_LATE: Duration = Duration::from_millis(100);

/// The shortest time worth an attempt: a retry that would have less before the deadline
/// is not started.
const MIN_ATTEMPT: Duration = Duration::from_millis(10);

/// How long the release of an expired lock waits for the nodes: its keys are gone by
/// themselves (its `expiration` had the drift taken off), so the release only tidies up.
const EXPIRED_RELEASE_WINDOW: Duration = Duration::from_millis(100);

/// What paces one operation's retries: the nodes' line keeping the lock for its head
/// (quick retries, see `crate::engine::line`) and splits (see [`WAKE_SPREAD`]).
#[derive(Default)]
struct Pace {
    /// How often in a row the cleanup kept the lock for this head.
    kept: u32,
    /// Attempts lost in a split in a row.
    split_losses: u32,
    /// When the wake-up that started the attempt under way came.
    woken_at: Option<Instant>,
    /// How long the last attempt took, when a wake-up started it: the spread must outlast
    /// it to part the heads.
    took: Duration,
    /// What is left of the retry window (the spread never outlasts it).
    room: Option<Duration>,
}

impl Pace {
    /// Takes in a finished attempt. `true` when its retry comes soon, counted only once
    /// the pause is the retry delay's (the cleanup kept the lock for this head: a tie
    /// lasts the retry window, which bounds the others).
    fn attempted(&mut self, stats: &AttemptStats, retry_delay_ms: u64) -> bool {
        self.kept = (self.kept + 1) * u32::from(stats.kept);
        // (A split: the attempt took some nodes, so others' attempts did too.)
        self.split_losses = (self.split_losses + 1) * u32::from(stats.tally.votes_for > 0);
        self.took = self
            .woken_at
            .take()
            .map_or(Duration::ZERO, |at| at.elapsed());
        shortened(self.kept, Duration::from_millis(retry_delay_ms))
    }

    /// The wait of a head woken by a release before its attempt (see [`WAKE_SPREAD`]),
    /// after `split_losses` (> 0) attempts lost in a split in a row, for a random `unit` in
    /// `[0, 1)`: never past the retry window's `room`.
    fn wake_delay(&self, retry_delay_ms: u64, unit: f64) -> Duration {
        let spread = (self.took.max(WAKE_SPREAD)).saturating_mul(1 << self.split_losses.min(20));
        let delay = spread
            .min(Duration::from_millis(retry_delay_ms).max(WAKE_SPREAD))
            .mul_f64(unit);
        self.room.map_or(delay, |r| delay.min(r))
    }
}

/// The running state of one operation's retries.
struct Retries {
    start_ms: f64,
    started: Instant,
    attempts: VecDeque<AttemptStats>,
    attempt_count: u64,
    /// Attempts that count against retryCount: the first, and each one after a retry
    /// delay ran out. Attempts woken by a release announcement are extra, within the
    /// retry window.
    counted: u64,
    woken: bool,
    /// Set when the next attempt is the last one (see [`Quorum::start`]).
    last: bool,
    /// The value of the last attempt.
    value: String,
}

impl Retries {
    fn start() -> Self {
        Retries {
            start_ms: now_ms(),
            started: Instant::now(),
            attempts: VecDeque::new(),
            attempt_count: 0,
            counted: 0,
            woken: false,
            last: false,
            value: String::new(),
        }
    }

    fn begin_attempt(&mut self) {
        self.attempt_count += 1;
        if !self.woken {
            self.counted += 1;
        }
    }

    fn keep(&mut self, stats: AttemptStats) {
        if self.attempts.len() == ATTEMPTS_KEPT {
            self.attempts.pop_front();
        }
        self.attempts.push_back(stats);
    }

    /// A release done in one attempt by handing the lock over (its votes: `stats`).
    fn handed_over(mut self, stats: AttemptStats, value: &str) -> Execution {
        self.begin_attempt();
        self.keep(stats);
        self.value = value.to_string();
        self.finish(Ok(0))
    }

    /// Tells `call.progress` of the attempt just kept, when a node voted against it: its
    /// votes against are told then (the operation's end, when it ends with this attempt,
    /// does not tell them again).
    fn report(&mut self, call: &Call<'_>, against: bool) {
        if let (Some(progress), true, Some(last)) =
            (call.progress, against, self.attempts.back_mut())
        {
            if progress.attempt(last) {
                last.told = vec![true; last.votes.len()];
            }
        }
    }

    /// Whether no further attempt may follow the one just made.
    fn exhausted(&self, call: &Call) -> bool {
        let settings = call.settings;
        let window = settings.retry_window();
        self.last
            || settings.max_attempts().is_some_and(|m| self.counted >= m)
            || window.is_some_and(|w| self.woken && self.started.elapsed() >= w)
            || call
                .deadline
                .is_some_and(|d| d.saturating_duration_since(Instant::now()) < MIN_ATTEMPT)
    }

    fn finish(self, outcome: Result<i64, FailureKind>) -> Execution {
        let expiration_ms = match outcome {
            Ok(validity) if validity > 0 => now_ms() + validity as f64,
            _ => 0.0,
        };
        let fence = self.attempts.back().and_then(|a| a.fence);
        let slot = self.attempts.back().and_then(|a| a.slot);
        Execution {
            slot: slot.filter(|_| outcome.is_ok()),
            value: self.value,
            attempts: self.attempts,
            attempt_count: self.attempt_count,
            start_ms: self.start_ms,
            outcome,
            expiration_ms,
            fence: fence.filter(|_| outcome.is_ok()),
        }
    }
}

/// The votes of one attempt as they come in.
struct Ballot {
    tally: Tally,
    votes: Vec<Option<Vote>>,
    /// The fencing counters read by the nodes that voted for a fenced acquire.
    counters: Vec<Option<i64>>,
    /// The semaphore slots the nodes that voted for a permit acquire took.
    slots: Vec<Option<u32>>,
    /// Whether this is a permit acquire: won only with one slot on a quorum.
    by_slot: bool,
    decision: Decision,
    /// Who holds the key where a `SET NX GET` found it held (a hash of the value).
    holders: Vec<Option<u64>>,
    /// By node: whether its failure was told as it came in (events); empty while none was
    /// (no allocation in an attempt that meets no failure, or that nobody listens to).
    told: Vec<bool>,
    /// When the last vote came in: how long the nodes that answered took.
    last_vote: Option<Instant>,
}

impl Ballot {
    fn new(n: usize, by_slot: bool) -> Self {
        Ballot {
            tally: Tally::new(n),
            votes: vec![None; n],
            counters: vec![None; n],
            slots: vec![None; n],
            by_slot,
            decision: Decision::Pending,
            holders: vec![None; n],
            told: Vec::new(),
            last_vote: None,
        }
    }

    /// Whether a node that voted against named another owner (a `SET NX GET` holder, a
    /// line's, or an extend that found another value).
    fn held_by_another(&self) -> bool {
        self.votes
            .iter()
            .zip(&self.holders)
            .any(|(v, h)| matches!(v, Some(Vote::Locked)) && h.is_some())
    }

    /// The nodes that voted against because a lock script met a key of another type: what
    /// the script set before that stays there (see [`WRONG_TYPE`]).
    fn wrong_typed(&self) -> impl Iterator<Item = usize> + '_ {
        let typed = |(i, (v, h)): (usize, (&Option<Vote>, &Option<u64>))| {
            (matches!(v, Some(Vote::Locked)) && *h == Some(WRONG_TYPE)).then_some(i)
        };
        self.votes
            .iter()
            .zip(&self.holders)
            .enumerate()
            .filter_map(typed)
    }

    /// Whether one other owner holds the lock on a quorum of the nodes (as their `SET NX
    /// GET` replies showed): then the lock is not free, whatever this attempt removes.
    fn held_elsewhere(&self) -> bool {
        let mut seen: HashMap<u64, usize> = HashMap::new();
        let quorum = self.votes.len() / 2 + 1;
        self.holders.iter().flatten().any(|h| {
            let n = seen.entry(*h).or_default();
            *n += 1;
            *n >= quorum
        })
    }

    /// Node `i`'s answer came in: counted, its holder kept, and a failure reported at once
    /// (events).
    fn answered(&mut self, i: usize, (vote, counter, slot, holder): Answer, call: &Call<'_>) {
        if let (Vote::Failed(e), Some(reports)) = (&vote, call.progress) {
            if reports.failed(i, e) {
                self.told.resize(self.votes.len(), false);
                self.told[i] = true;
            }
        }
        self.holders[i] = holder;
        self.count(i, vote, counter, slot)
    }

    fn count(&mut self, i: usize, vote: Vote, counter: Option<i64>, slot: Option<u32>) {
        self.last_vote = Some(Instant::now());
        let now = count(&mut self.tally, &vote);
        self.votes[i] = Some(vote);
        self.counters[i] = counter;
        self.slots[i] = slot;
        if self.decision == Decision::Pending {
            self.decision = if self.by_slot {
                self.slot_decision()
            } else {
                now
            };
        }
    }

    /// The slot most nodes took for a permit acquire, and on how many.
    fn best_slot(&self) -> Option<(u32, usize)> {
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for s in self.slots.iter().flatten() {
            *counts.entry(*s).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(slot, n)| (*n, std::cmp::Reverse(*slot)))
    }

    /// A permit acquire is won when one slot is ours on a quorum, lost when no slot can be.
    fn slot_decision(&self) -> Decision {
        let best = self.best_slot().map_or(0, |(_, n)| n);
        if best >= self.tally.quorum {
            Decision::Won
        } else if best + self.tally.outstanding() < self.tally.quorum {
            Decision::Lost
        } else {
            Decision::Pending
        }
    }

    /// For a permit acquire: the votes for another slot than the one won (or than the most
    /// taken, when lost) count against (another holder had that slot there). Returns the
    /// nodes that hold such a slot of ours.
    fn settle_slots(&mut self) -> Vec<usize> {
        if !self.by_slot {
            return Vec::new();
        }
        let best = self.best_slot().map(|(s, _)| s);
        let mut strays = Vec::new();
        let mut tally = Tally::new(self.votes.len());
        for (i, vote) in self.votes.iter_mut().enumerate() {
            if matches!(vote, Some(Vote::For)) && self.slots[i] != best {
                *vote = Some(Vote::Locked);
                strays.push(i);
            }
            if let Some(v) = vote {
                count(&mut tally, v);
            }
        }
        self.tally = tally;
        strays
    }

    /// Every vote still missing fails with `error(i)`; the attempt is then decided.
    fn fail_missing(&mut self, error: impl Fn(usize) -> NodeError) {
        for _ in 0..fill_missing(&mut self.votes, error) {
            self.tally.vote_failed();
        }
        if self.decision == Decision::Pending {
            self.decision = if self.by_slot {
                self.slot_decision()
            } else {
                self.tally.decision()
            };
        }
    }
}

/// How long a restarted node sits out before a [`Redlock`] sets its own `maxDuration`.
const DEFAULT_QUARANTINE: Duration = Duration::from_secs(300);

impl Quorum {
    pub fn new(nodes: Vec<Arc<Node>>) -> Self {
        Quorum {
            trust: Arc::new(Trust::new(nodes.len(), DEFAULT_QUARANTINE)),
            silent: Arc::new(nodes.iter().map(|_| Default::default()).collect()),
            epoch: Instant::now(),
            nodes: Arc::new(nodes),
            queues: Arc::default(),
            stragglers: Arc::default(),
            seats: Arc::default(),
            working: Arc::default(),
            closed: Arc::default(),
            stopping: Arc::default(),
        }
    }

    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    /// Runs `op` with retries per `call.settings`.
    ///
    /// Acquires wait their turn in the process's line for the resources (first come,
    /// first served), for at most the retry window. Contended, the head of the line
    /// subscribes to the release announcements of the resources and retries as soon as
    /// one arrives, or after the retry delay when none does (so a release is never waited
    /// for longer than the retry delay, and never polled for). Retries stop at
    /// `call.deadline`, and at once when the call is aborted.
    ///
    /// A screen: what comes before the first attempt ([`Quorum::start`]), then the retry
    /// loop itself (value, seat, attempt, stop conditions, progress, pause), each step one
    /// call, with its exits in one place.
    pub async fn execute(
        &self,
        op: Op,
        resources: &[String],
        value: &str,
        call: &Call<'_>,
    ) -> Execution {
        let _working = self.working.enter();
        // (An acquire or an extend also ends when acquires are stopped: see
        // `Quorum::stop_acquires`.)
        let stop = match op {
            Op::Acquire { .. } | Op::Extend { .. } => &self.stopping,
            _ => &self.closed,
        };
        let call = &Call {
            closed: Some(stop),
            ..*call
        };
        let (mut run, mut turn, wait_first) = match self.start(op, resources, value, call).await {
            Ok(started) => started,
            Err(done) => return done,
        };
        // Every acquire attempt gets a fresh value: the cleanup of a failed attempt, which
        // can land late on a slow or reconnecting node, must never remove the key a later
        // attempt set there (found by the chaos run: a lock held on a bare quorum lost a
        // node to its own earlier attempt's cleanup).
        let mut value = value.to_string();
        // A waiting head's place in the nodes' line (taken by its first attempt after a
        // wait, else by its second: a first `SET NX` cannot jump the line, as a release
        // keeps the lock for the line's first; left when dropped: see
        // `crate::engine::line`), and what paces its retries.
        let mut seat: Option<Seat> = None;
        let mut pace = Pace::default();
        loop {
            run.begin_attempt();
            if run.attempt_count > 1 && matches!(op, Op::Acquire { .. }) {
                value = fresh_value(&turn);
            }
            if seat.is_none() && (run.attempt_count > 1 || wait_first) {
                seat = self.take_seat(op, resources, call, run.start_ms, &turn);
            }
            let (stats, outcome) = self
                .attempt_in_turn(op, resources, &value, call, (&mut seat, &turn))
                .await;
            let quick = pace.attempted(&stats, call.settings.retry_delay_ms);
            let against = stats.tally.against() > 0;
            run.keep(stats);
            // Extending a lock that is gone can never succeed: no point retrying.
            let hopeless = matches!(op, Op::Extend { .. })
                && matches!(outcome, Err(FailureKind::Locked | FailureKind::Expired));
            let aborted = outcome == Err(FailureKind::Aborted);
            if outcome.is_ok() || aborted || hopeless || run.exhausted(call) {
                if let (Some(t), Ok(validity)) = (turn.as_mut(), outcome) {
                    t.acquired(validity);
                }
                return self.end(run, (op, resources, call), value, outcome);
            }
            run.report(call, against);
            let window = call.settings.retry_window();
            pace.room = window.map(|w| w.saturating_sub(run.started.elapsed()));
            match self
                .pause_before_retry(&turn, op, outcome, resources, call, &pace)
                .await
            {
                Waited::Woken(woken) => {
                    run.woken = woken || quick;
                    pace.woken_at = woken.then(Instant::now);
                }
                Waited::Handed(h) => return self.handed(run, turn, h),
                Waited::Aborted => {
                    return self.end(run, (op, resources, call), value, Err(FailureKind::Aborted))
                }
            }
        }
    }

    /// One attempt of an operation with a `turn` in the process's line and perhaps a
    /// `seat` in the nodes' line: what the line's release signal hears meanwhile is judged
    /// against the attempt's votes when it is lost (see [`Signal::settle`]); a won seat
    /// leaves the nodes' lines only where the attempt did not take the lock.
    async fn attempt_in_turn(
        &self,
        op: Op,
        resources: &[String],
        value: &str,
        call: &Call<'_>,
        (seat, turn): (&mut Option<Seat>, &Option<Turn>),
    ) -> (AttemptStats, Result<i64, FailureKind>) {
        let released = turn.as_ref().map(Turn::signal);
        if let Some(released) = released {
            released.attempting();
        }
        let (stats, outcome) = self
            .attempt(op, resources, value, call, seat.as_ref())
            .await;
        match (released, outcome, seat.as_mut()) {
            (Some(released), Err(_), seat) => {
                released.settle(&stats.votes, &stats.holders, seat.is_some())
            }
            (_, Ok(_), Some(seat)) => {
                seat.won(stats.votes.iter().map(|v| matches!(v, Some(Vote::For))))
            }
            _ => {}
        }
        (stats, outcome)
    }

    /// The operation's end with `outcome`, its last attempt's `value` kept; a write
    /// acquire that failed (aborted, or out of retries) takes its wait mark back first.
    fn end(
        &self,
        mut run: Retries,
        (op, resources, call): (Op, &[String], &Call<'_>),
        value: String,
        outcome: Result<i64, FailureKind>,
    ) -> Execution {
        if outcome.is_err() {
            self.leave_write_wait(op, resources, &value, call);
        }
        run.value = value;
        run.finish(outcome)
    }

    /// A write acquire that failed takes back its mark that keeps new readers out while it
    /// waits (owner-checked, in the background, queued before anything the caller sends
    /// next on the same connections): a failed call removes what it set, and the readers
    /// it kept out hear it. (Another writer still waiting puts its own mark back with its
    /// next attempt.)
    fn leave_write_wait(&self, op: Op, resources: &[String], value: &str, call: &Call<'_>) {
        let (Op::Acquire { .. }, Kind::Write, [resource]) = (op, call.kind, resources) else {
            return;
        };
        let [_, _, wait, _] = rw_keys(resource);
        let leave = RELEASE_SCRIPT.evalsha(&[wait], &[value, ""]);
        self.eval_in_background(&RELEASE_SCRIPT, leave, 0..self.nodes.len());
    }

    /// Spawns `work` (what must reach the nodes: a cleanup, a mark) within `limit`,
    /// counted while it runs: `quit()` waits for it (bounded) before it closes the
    /// connections.
    fn spawn_within(
        &self,
        limit: Duration,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let counted = self.working.enter();
        tokio::spawn(async move {
            let _ = timer::timeout(limit, work).await;
            drop(counted);
        });
    }

    /// Runs `evalsha` (of `script`) on the nodes `on` in the background, each bounded by
    /// the command time-out.
    fn eval_in_background(
        &self,
        script: &'static LockScript,
        evalsha: redis::Cmd,
        on: impl IntoIterator<Item = usize>,
    ) {
        let limit = self.command_timeout();
        let evalsha = Arc::new(evalsha);
        for i in on {
            let (node, evalsha) = (self.nodes[i].clone(), evalsha.clone());
            self.spawn_within(limit, async move {
                let _ = node.eval::<i64>(script, &evalsha).await;
            });
        }
    }

    /// What comes before the first attempt: a release first tries to hand the lock over
    /// within the process; an acquire takes its turn in the process's line and, when the
    /// previous head took the lock, waits for its release (or its hand-over to us).
    /// `Err`: the operation ended there. `Ok`: the retries so far, the turn, and whether
    /// a wait came first.
    async fn start(
        &self,
        op: Op,
        resources: &[String],
        value: &str,
        call: &Call<'_>,
    ) -> Result<(Retries, Option<Turn>, bool), Execution> {
        let run = Retries::start();
        if call.cancelled() {
            return Err(run.finish(Err(FailureKind::Aborted)));
        }
        if op == Op::Release {
            self.stragglers.note_release(value);
            let line = call.kind.line(resources);
            let offered = (!self.stopping.is_cancelled())
                .then(|| self.queues.releasing(&line, call.kind == Kind::Mutex))
                .flatten();
            if let Some(offer) = offered {
                if let Some(stats) = self.hand_over(&line, resources, value, offer).await {
                    return Err(run.handed_over(stats, value));
                }
            }
        }
        if !matches!(op, Op::Acquire { .. }) {
            return Ok((run, None, false));
        }
        let (turn, wait_first) = match self.take_turn(resources, value, call, run.started).await {
            Ok(taken) => taken,
            // The retry window passed while this process's head held the line: one attempt
            // of its own says why it failed (its votes), as every failed acquire's do.
            Err(FailureKind::Locked) => {
                let mut run = run;
                run.last = true;
                return Ok((run, None, false));
            }
            Err(kind) => return Err(run.finish(Err(kind))),
        };
        if wait_first {
            let pause = call.settings.retry_pause(random_unit());
            let lined = lined(op, resources, call);
            match self
                .wait_release(&turn, (op, resources), call, pause, (lined, None))
                .await
            {
                Waited::Handed(h) => return Err(self.handed(run, Some(turn), h)),
                Waited::Aborted => return Err(run.finish(Err(FailureKind::Aborted))),
                Waited::Woken(_) => {}
            }
        }
        Ok((run, Some(turn), wait_first))
    }

    /// A hand-over that reached a waiter whose call was aborted meanwhile (its signal
    /// fired just before a release of this process took its offer): the call ends
    /// aborted, as its signal said, and the lock moved to it goes back (owner-checked, in
    /// the background; its announcement wakes the other waiters).
    fn handed_unless_aborted(&self, h: Handed, resources: &[String], call: &Call<'_>) -> Waited {
        if !call.cancelled() {
            return Waited::Handed(h);
        }
        let give_back = RELEASE_SCRIPT.evalsha(resources, &[h.value.as_str()]);
        self.eval_in_background(&RELEASE_SCRIPT, give_back, 0..self.nodes.len());
        Waited::Aborted
    }

    /// A place in the nodes' line for this acquire (see [`Quorum::seat`]); the turn's
    /// release signal then ignores releases that keep the lock for another ticket.
    fn take_seat(
        &self,
        op: Op,
        resources: &[String],
        call: &Call<'_>,
        start_ms: f64,
        turn: &Option<Turn>,
    ) -> Option<Seat> {
        let seat = self.seat(op, resources, call, start_ms)?;
        if let Some(t) = turn {
            t.signal().set_ticket(Some(seat.ticket.clone()));
        }
        Some(seat)
    }

    /// An acquire that got the lock by a hand-over.
    fn handed(&self, mut run: Retries, mut turn: Option<Turn>, h: Handed) -> Execution {
        run.begin_attempt();
        run.keep(h.stats);
        if let Some(t) = turn.as_mut() {
            t.acquired(h.validity);
        }
        run.value = h.value;
        run.finish(Ok(h.validity))
    }

    /// Waits for a release of the resources (announced, or the pause ran out), or for a
    /// holder of this process to hand the lock over: the head offers to take it over when
    /// the call allows one (a mutex, no fencing, no replica wait).
    /// `lined`: the acquire uses the nodes' line (see [`lined`]); `pace`: what its retries
    /// met so far (a head lost in a split waits a spread when woken: see [`WAKE_SPREAD`]).
    async fn wait_release(
        &self,
        turn: &Turn,
        (op, resources): (Op, &[String]),
        call: &Call<'_>,
        pause: Duration,
        (lined, pace): (bool, Option<&Pace>),
    ) -> Waited {
        // Not `released()`: dropping a subscription that died since the caller subscribed
        // would leave this wait deaf for the whole pause (the death's wake-up is what
        // brings the retry that subscribes again).
        let (released, subscribed) = turn.listening();
        let settings = call.settings;
        let offers = call.kind == Kind::Mutex && !settings.fencing && settings.wait_replicas == 0;
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        if let (true, Some(ttl_ms)) = (offers, op.ttl_ms()) {
            turn.offer(Offer {
                value: random_value(),
                ttl_ms,
                drift_factor: settings.drift_factor,
                tx,
                late: call.late.map(|make| make()),
            });
        }
        let wake = async {
            if subscribed {
                wait_for(&released, pause).await
            } else {
                timer::sleep(pause).await;
                false
            }
        };
        tokio::pin!(wake);
        // A oneshot receiver must not be polled again once it has completed: a releaser
        // that took the offer and dropped it without an answer closes `rx` for good.
        let mut rx_open = true;
        let woken = loop {
            tokio::select! {
                w = &mut wake => break Waited::Woken(w),
                r = &mut rx, if rx_open => match r {
                    Ok(h) => return self.handed_unless_aborted(h, resources, call),
                    Err(_) => rx_open = false,
                },
                _ = call.aborted() => break Waited::Aborted,
            }
        };
        let taken = offers && !turn.withdraw();
        if taken && rx_open {
            // A releaser took the offer: its answer comes within a command time-out.
            if let Ok(Ok(h)) = timer::timeout(self.command_timeout() * 2, rx).await {
                return self.handed_unless_aborted(h, resources, call);
            }
        }
        if matches!(woken, Waited::Woken(true)) && turn.take_yield() && !lined {
            // This process just had its hand-overs in a row: the heads of the other
            // processes, woken by the same release, try first. (With the nodes' line, the
            // release kept the lock for the first of them already.)
            timer::sleep(YIELD_GRACE).await;
        }
        let spread = pace.filter(|p| p.split_losses > 0 && !lined);
        if let (Waited::Woken(true), Some(pace)) = (&woken, spread) {
            let delay = pace.wake_delay(settings.retry_delay_ms, random_unit());
            tokio::select! {
                _ = timer::sleep(delay) => {}
                _ = call.aborted() => return Waited::Aborted,
            }
        }
        woken
    }

    /// A place in the nodes' waiting line for a head of this process that waits for
    /// `resources` since `start_ms`: only a plain mutex on one resource, without fencing
    /// (see `crate::engine::line`).
    fn seat(&self, op: Op, resources: &[String], call: &Call<'_>, start_ms: f64) -> Option<Seat> {
        let settings = call.settings;
        let ([resource], true) = (resources, lined(op, resources, call)) else {
            return None;
        };
        let limit = self.command_timeout();
        let pause = settings.retry_delay_ms + settings.retry_jitter_ms;
        let ttl_ms = ticket_ttl_ms(pause, op.ttl_ms().unwrap_or(0));
        Some(Seat::new(
            resource,
            start_ms as u64,
            ttl_ms,
            self.nodes.clone(),
            limit,
            &self.seats,
        ))
    }

    /// Waits for this acquire's turn in the process's line; once it is the head, sets up
    /// what the waiting needs. `Err` when the retry window passed or the call was aborted
    /// first.
    async fn take_turn(
        &self,
        resources: &[String],
        value: &str,
        call: &Call<'_>,
        started: Instant,
    ) -> Result<(Turn, bool), FailureKind> {
        let deadline = call.settings.retry_window().map(|w| started + w);
        let turn = tokio::select! {
            t = self.queues.enter(call.kind.line(resources), deadline) => t.ok_or(FailureKind::Locked)?,
            _ = call.aborted() => return Err(FailureKind::Aborted),
        };
        // Releases of our own value (cleanups of our failed attempts) wake nobody here.
        let released = turn.signal();
        released.set_own(Some(value.to_string()));
        released.set_ticket(None);
        // The previous head took the lock: wait for its release first (unless holders share
        // the resource, or the line hears no releases).
        let handoff = turn.handoff();
        let wait = handoff && !call.kind.shared() && turn.released().1;
        if handoff {
            // Announcements stored before the lock was taken here are stale: the other
            // nodes' copies of the release that woke the previous head, which would send
            // this one to the nodes at once, where it finds the lock held and takes a
            // place in the line its own process is about to hand it over.
            released.forget();
        }
        Ok((turn, wait))
    }

    /// The wait before the next attempt: for a contended acquire, until a release is
    /// announced (`true`) or the retry delay passed; otherwise the retry delay. Never
    /// past the call's deadline.
    async fn pause_before_retry(
        &self,
        turn: &Option<Turn>,
        op: Op,
        outcome: Result<i64, FailureKind>,
        resources: &[String],
        call: &Call<'_>,
        pace: &Pace,
    ) -> Waited {
        let mut pause = call.settings.retry_pause(random_unit());
        if pace.kept > 0 {
            pause = queued_pause(pace.kept, pause);
        }
        if let Some(d) = call.deadline {
            let room = d.saturating_duration_since(Instant::now());
            pause = pause.min(room.saturating_sub(MIN_ATTEMPT));
        }
        match (turn, outcome) {
            (Some(t), Err(FailureKind::Locked)) => {
                let (released, subscribed) = t.released();
                if !subscribed {
                    // First sign of contention: from now on the line hears releases. (An
                    // abort is heard meanwhile: a slow or paused node's subscription can
                    // take up to the retry delay; found by a soak.)
                    let channels = call.kind.channels(resources);
                    let watches = tokio::select! {
                        biased;
                        _ = call.aborted() => return Waited::Aborted,
                        w = self.watch(&channels, released.clone(), call.settings) => w,
                    };
                    t.keep_watches(watches);
                }
                let wake = (lined(op, resources, call), Some(pace));
                self.wait_release(t, (op, resources), call, pause, wake)
                    .await
            }
            _ => tokio::select! {
                _ = timer::sleep(pause) => Waited::Woken(false),
                _ = call.aborted() => Waited::Aborted,
            },
        }
    }

    /// The moves of a won hand-over still under way: one that did not move the lock there
    /// removes what is left of the old value; one that landed after the new holder already
    /// released takes the new value back.
    /// With `late`, the complete votes then go to the waiter's operation (once it took the
    /// lock).
    fn settle_moves(
        &self,
        mut moves: PendingMoves,
        resources: &[String],
        (old, new): (&str, &str),
        mut votes: Vec<Option<Vote>>,
        late: Option<(LateVotes, tokio::sync::oneshot::Receiver<bool>)>,
    ) {
        let straggler = Straggler::enter(&self.stragglers, new);
        let nodes = self.nodes.clone();
        let (old, new, resources) = (old.to_string(), new.to_string(), resources.to_vec());
        let limit = self.command_timeout();
        tokio::spawn(async move {
            let _ = timer::timeout(limit, async {
                while let Some((i, vote)) = moves.next().await {
                    let stale = match vote {
                        Vote::For if straggler.was_released() => Some(&new),
                        Vote::For => None,
                        _ => Some(&old),
                    };
                    votes[i] = Some(vote);
                    if let Some(stale) = stale {
                        let release = RELEASE_SCRIPT.evalsha(&resources, &[stale]);
                        let _ = nodes[i].eval::<i64>(&RELEASE_SCRIPT, &release).await;
                    }
                }
            })
            .await;
            drop(straggler);
            report_late(late, votes, &nodes, limit).await;
        });
    }

    /// A release that hands the lock over to the head of this process's line, whose
    /// `offer` it took (see [`Queues::releasing`]): one compare-and-set on the nodes (our value to the waiter's,
    /// with the waiter's TTL) replaces the release, its announcement and the waiter's
    /// acquire. Won on a quorum with validity left (counted from the start of the
    /// hand-over), the waiter holds the lock and the release is done (`Some`: its votes);
    /// otherwise what it moved is taken back and the release goes on as usual (`None`).
    /// Steps: send the moves and count them, clean up every node's outcome, deliver.
    async fn hand_over(
        &self,
        line: &str,
        resources: &[String],
        value: &str,
        mut offer: Offer,
    ) -> Option<AttemptStats> {
        let started = Instant::now();
        let (ballot, moves, rivals) = self
            .send_moves(resources, value, (&offer.value, offer.ttl_ms))
            .await;
        let validity = validity_ms(offer.ttl_ms, started.elapsed(), offer.drift_factor);
        let won = ballot.decision == Decision::Won && validity > 0;
        // Decided before every node answered: the waiter's stats get the rest later.
        let late = won && !moves.is_empty() && offer.late.is_some();
        let (delivered_tx, delivered_rx) = tokio::sync::oneshot::channel::<bool>();
        let sink = offer
            .late
            .take()
            .filter(|_| late)
            .map(|s| (s, delivered_rx));
        self.clean_up_moves(resources, (value, &offer.value), &ballot, moves, won, sink)
            .await;
        if !won {
            return None; // dropping the offer tells the waiter: it goes on waiting
        }
        if !rivals {
            // Nobody else listens for this lock's releases: no waiter of another process
            // waits for it, so hand-overs in a row need no bound.
            self.queues.no_rivals(line);
        }
        let Ballot {
            votes,
            tally,
            holders,
            ..
        } = ballot;
        let stats = AttemptStats {
            votes,
            tally,
            holders,
            fence: None,
            late,
            slot: None,
            kept: false,
            told: Vec::new(),
        };
        let delivered = self.deliver(resources, offer, validity, stats.clone());
        let _ = delivered_tx.send(delivered);
        // The late votes go to the waiter's operation only: the release reports what it
        // had when it was decided.
        Some(AttemptStats {
            late: false,
            ..stats
        })
    }

    /// Sends the hand-over's compare-and-set (`value` to `new`, with `ttl_ms`) to every
    /// node and counts the moves until the outcome is known or the command time-out
    /// passes; the moves still under way are returned with the ballot, and whether a node
    /// that moved the lock has listeners of its release announcements besides this process
    /// (a Cluster node is assumed to: its subscribers may be on other nodes).
    async fn send_moves(
        &self,
        resources: &[String],
        value: &str,
        (new, ttl_ms): (&str, u64),
    ) -> (Ballot, PendingMoves, bool) {
        let rivals = Arc::new(AtomicBool::new(false));
        let ttl = ttl_ms.to_string();
        let cmd = Arc::new(HANDOVER_SCRIPT.evalsha(resources, &[value, new, &ttl]));
        let mut ballot = Ballot::new(self.nodes.len(), false);
        let mut moves: PendingMoves = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (node, cmd, rivals) = (node.clone(), cmd.clone(), rivals.clone());
                let fut: BoxFuture<'static, (usize, Vote)> = Box::pin(async move {
                    let vote = match node.eval::<i64>(&HANDOVER_SCRIPT, &cmd).await {
                        Ok(n) if n >= 1 => {
                            // 1 + listeners: this process's one subscription at most.
                            if n > 2 || node.config().cluster.is_some() {
                                rivals.store(true, Ordering::Relaxed);
                            }
                            Vote::For
                        }
                        Ok(_) => Vote::Locked,
                        Err(e) => Vote::Failed(e),
                    };
                    (i, vote)
                });
                fut
            })
            .collect();
        let _ = timer::timeout(self.command_timeout(), async {
            while let Some((i, vote)) = moves.next().await {
                ballot.count(i, vote, None, None);
                if ballot.decision != Decision::Pending {
                    break;
                }
            }
        })
        .await;
        let rivals = rivals.load(Ordering::Relaxed);
        (ballot, moves, rivals)
    }

    /// Every node's outcome of a hand-over: where the lock did not move (or nowhere, when
    /// it was not won), what is left of `old` goes, in the background; where a lost
    /// hand-over moved it, `new` is taken back before the release goes on; won, the moves
    /// still under way finish in the background (see [`Quorum::settle_moves`]).
    async fn clean_up_moves(
        &self,
        resources: &[String],
        (old, new): (&str, &str),
        ballot: &Ballot,
        moves: PendingMoves,
        won: bool,
        late: Option<(LateVotes, tokio::sync::oneshot::Receiver<bool>)>,
    ) {
        let limit = self.command_timeout();
        let mut moved_back = Vec::new();
        for (i, vote) in ballot.votes.iter().enumerate() {
            let node = self.nodes[i].clone();
            if won && matches!(vote, Some(Vote::For) | None) {
                continue;
            }
            let release = RELEASE_SCRIPT.evalsha(resources, &[old]);
            self.spawn_within(limit, async move {
                let _ = node.eval::<i64>(&RELEASE_SCRIPT, &release).await;
            });
            if !won && vote != &Some(Vote::Locked) {
                let release = RELEASE_SCRIPT.evalsha(resources, &[new]);
                let node = self.nodes[i].clone();
                moved_back.push(async move {
                    let _ = node.eval::<i64>(&RELEASE_SCRIPT, &release).await;
                });
            }
        }
        if won && !moves.is_empty() {
            self.settle_moves(moves, resources, (old, new), ballot.votes.clone(), late);
        }
        if !won {
            let _ = timer::timeout(limit, futures::future::join_all(moved_back)).await;
        }
    }

    /// Gives the waiter the lock it now holds (`true`); a waiter that is gone (aborted)
    /// leaves a lock it does not know of, which is released.
    fn deliver(
        &self,
        resources: &[String],
        offer: Offer,
        validity: i64,
        stats: AttemptStats,
    ) -> bool {
        let handed = Handed {
            value: offer.value,
            validity,
            stats,
        };
        let Err(h) = offer.tx.send(handed) else {
            return true;
        };
        let release = RELEASE_SCRIPT.evalsha(resources, &[&h.value]);
        let nodes = self.nodes.clone();
        let limit = self.command_timeout();
        self.spawn_within(limit, async move {
            futures::future::join_all(
                nodes
                    .iter()
                    .map(|n| n.eval::<i64>(&RELEASE_SCRIPT, &release)),
            )
            .await;
        });
        false
    }

    /// Subscribes `signal` to the release announcements of `resources` on every node
    /// that answers within the retry delay (a slow or dead node is not waited for: the
    /// others announce the release too).
    async fn watch(
        &self,
        channels: &[String],
        signal: Arc<Signal>,
        settings: &Settings,
    ) -> Vec<Watch> {
        let limit = Duration::from_millis(settings.retry_delay_ms.max(50));
        let watches = self.nodes.iter().enumerate().map(|(i, node)| {
            let signal = signal.clone();
            timer::timeout(limit.min(node.config().command_timeout), async move {
                node.subscriber().await?.watch(channels, signal, i).await
            })
        });
        futures::future::join_all(watches)
            .await
            .into_iter()
            .filter_map(|w| w.ok()?.ok())
            .collect()
    }

    /// One attempt: all nodes in parallel, decided as soon as the outcome is known.
    /// A screen of named steps in the algorithm's order (build and send the commands,
    /// collect the votes, settle stragglers and stray slots, confirm the win, decide,
    /// clean up a loss); splitting it further would only pass the ballot around.
    pub async fn attempt(
        &self,
        op: Op,
        resources: &[String],
        value: &str,
        call: &Call<'_>,
        seat: Option<&Seat>,
    ) -> (AttemptStats, Result<i64, FailureKind>) {
        let settings = call.settings;
        let started = Instant::now();
        let window = self.attempt_window(op, call, started);
        let commands = attempt_commands(op, resources, value, call, seat);
        let mut pending = self.send_votes(op, &commands, settings);
        let by_slot = matches!((op, call.kind), (Op::Acquire { .. }, Kind::Permit { .. }));
        let mut ballot = Ballot::new(self.nodes.len(), by_slot);
        let mut aborted = self
            .collect_votes(op, &mut pending, &mut ballot, window, started, call)
            .await;
        self.note_silence(&ballot.votes);
        let late = ballot.decision == Decision::Won && !pending.is_empty();
        let won_slot = ballot.best_slot().map(|(s, _)| s).filter(|_| by_slot);
        let mut strays = ballot.settle_slots();
        strays.extend(ballot.wrong_typed());
        // The complete votes go out only if this attempt is the operation's win (they then
        // complete its last attempt's stats).
        let (final_tx, final_rx) = tokio::sync::oneshot::channel::<bool>();
        if ballot.decision == Decision::Won {
            let sink = call.late.filter(|_| late).map(|make| (make(), final_rx));
            self.settle_stragglers(&commands, pending, &ballot, won_slot, sink);
            self.release_strays(&commands, &strays, won_slot);
        } else {
            // Stop waiting. Requests already sent stay ordered before anything sent later
            // on the same connection, so the cleanup lands after them.
            drop(pending);
        }
        // (`None`: aborted while confirmed; what it set is removed below.)
        let confirmation = (&mut ballot, &mut strays);
        let (confirmed, fence) = self
            .confirm_win(op, &commands, confirmation, call, (window, started))
            .await
            .unwrap_or_else(|| {
                aborted = true;
                (false, None)
            });
        let outcome = if aborted {
            Err(FailureKind::Aborted)
        } else {
            decide(op, &ballot, confirmed, started, settings)
        };
        let _ = final_tx.send(outcome.is_ok());
        let kept = match outcome {
            Err(kind) if matches!(op, Op::Acquire { .. }) => {
                self.clean_up_loss(kind, (&ballot, &strays), &commands, started)
                    .await
            }
            _ => false,
        };
        let Ballot {
            votes,
            tally,
            holders,
            told,
            ..
        } = ballot;
        (
            AttemptStats {
                votes,
                tally,
                holders,
                fence: fence.filter(|_| outcome.is_ok()),
                late: late && call.late.is_some() && outcome.is_ok(),
                slot: won_slot.filter(|_| outcome.is_ok()),
                kept,
                told,
            },
            outcome,
        )
    }

    /// Confirms a won attempt (see [`Quorum::confirm`]): whether it is confirmed, and its
    /// fence. A node whose part failed (a fence claim, too few replicas in time) fails
    /// its vote, saying why; it set the lock there all the same, so the cleanup of a loss
    /// goes there (`strays`).
    ///
    /// `None` when the call is aborted (or `quit()` ends it) while the confirmation asks
    /// the nodes (found by an audit: a fenced acquire resolved its Lock after `quit()`,
    /// and left its keys). A plain acquire's costs nothing to wait for: it is not raced,
    /// which would be paid on every lock.
    async fn confirm_win(
        &self,
        op: Op,
        commands: &Commands,
        (ballot, strays): (&mut Ballot, &mut Vec<usize>),
        call: &Call<'_>,
        (window, started): (Duration, Instant),
    ) -> Option<(bool, Option<i64>)> {
        if ballot.decision != Decision::Won {
            return Some((false, None));
        }
        let settings = call.settings;
        let asks =
            matches!(op, Op::Acquire { .. }) && (settings.fencing || settings.wait_replicas > 0);
        let confirmed = tokio::select! {
            biased;
            _ = call.aborted(), if asks => return None,
            confirmed = self.confirm(op, commands, ballot, settings, window, started) => confirmed,
        };
        match confirmed {
            Ok(fence) => Some((true, fence)),
            Err(failed) => {
                for (i, e) in failed {
                    if matches!(ballot.votes[i], Some(Vote::For)) {
                        strays.push(i);
                    }
                    ballot.votes[i] = Some(Vote::Failed(e));
                }
                Some((false, None))
            }
        }
    }

    /// Removes what a lost acquire attempt set (an aborted one's: see
    /// [`Quorum::clean_up_abort`]). `true` when the line kept the lock for this head and a
    /// quick retry is worth it (see `crate::engine::line`).
    async fn clean_up_loss(
        &self,
        kind: FailureKind,
        (ballot, strays): (&Ballot, &[usize]),
        commands: &Commands,
        started: Instant,
    ) -> bool {
        if kind == FailureKind::Aborted {
            self.clean_up_abort(ballot, strays, commands, started).await;
            return false;
        }
        // With the lock held by another owner on a quorum, the release of what this
        // attempt set frees nothing: it is not announced (it would wake every waiter for
        // an attempt bound to fail).
        let quiet = ballot.held_elsewhere();
        let kept_here = self.cleanup(&ballot.votes, strays, commands, quiet).await;
        // The lock kept for this head is worth a quick retry after a split between waiting
        // heads, not while another owner holds it on a quorum or nodes fail: neither
        // passes in milliseconds (the head then waits for a release).
        kept_here && !quiet && ballot.tally.failed == 0
    }

    /// Removes what an aborted acquire attempt set, as a loss's cleanup does, but waits for
    /// it no longer than the nodes took to answer the attempt (a round trip,
    /// [`ABORT_GRACE`] at least; not the time since, which a stall fills: found by a
    /// regression hunt): an abort rejects at once. The removal goes on in the background
    /// where a node is slow (found by an audit: a node that voted for the lock and then
    /// stalled, or a `WAIT` of `waitReplicas` on the connection, held the rejection for
    /// the command time-out); `quit()` still waits for it.
    async fn clean_up_abort(
        &self,
        ballot: &Ballot,
        strays: &[usize],
        commands: &Commands,
        started: Instant,
    ) {
        let limit = self.command_timeout();
        let quiet = ballot.held_elsewhere();
        let (script, release, answered) =
            self.cleanup_targets(&ballot.votes, strays, commands, quiet);
        let done: Vec<_> = answered
            .into_iter()
            .map(|node| {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let (node, release) = (node.clone(), release.clone());
                self.spawn_within(limit, async move {
                    let _ = node.eval::<i64>(script, &release).await;
                    let _ = tx.send(());
                });
                rx
            })
            .collect();
        let answered_in = ballot
            .last_vote
            .map(|t| t.saturating_duration_since(started));
        let grace = answered_in.unwrap_or_default().max(ABORT_GRACE).min(limit);
        let _ = timer::timeout(grace, futures::future::join_all(done)).await;
    }

    /// One deadline for the whole attempt: no node waits past its command time-out, past
    /// the validity window no lock can be valid, and nothing runs past the call's deadline.
    fn attempt_window(&self, op: Op, call: &Call<'_>, started: Instant) -> Duration {
        let limit = self.command_timeout();
        let mut window = match op.ttl_ms() {
            Some(ttl) => attempt_window(ttl, call.settings.drift_factor).min(limit),
            None => limit,
        };
        if let Some(d) = call.deadline {
            window = window.min(d.saturating_duration_since(started));
        }
        window
    }

    /// Sends the attempt's command to every node. Acquires go only to nodes trusted not
    /// to have forgotten locks (see [`Trust`]). The requests own what they use, so that
    /// the stragglers of a won attempt can finish in the background.
    fn send_votes(&self, op: Op, commands: &Arc<Commands>, settings: &Settings) -> Votes {
        let checked = matches!(op, Op::Acquire { .. }) && settings.restart_quarantine;
        Votes::send(&self.nodes, &self.trust, op, commands, checked)
    }

    /// Collects votes until the outcome (and, for a loss, its reason) is known, `window`
    /// ends, or the call is aborted (`true`). A lost acquire also waits (within the window)
    /// for the nodes still answering, so that whatever they set is removed before the
    /// attempt reports; a won fenced acquire waits a little for the other counters (see
    /// [`FENCE_GRACE`]).
    async fn collect_votes(
        &self,
        op: Op,
        pending: &mut Votes,
        ballot: &mut Ballot,
        window: Duration,
        started: Instant,
        call: &Call<'_>,
    ) -> bool {
        let deadline = timer::sleep(window);
        tokio::pin!(deadline);
        let is_acquire = matches!(op, Op::Acquire { .. });
        let fenced = is_acquire && call.settings.fencing;
        let mut grace: Option<Instant> = None;
        let mut settle: Option<Instant> = None;
        let mut split: Option<Instant> = None;
        let early = self.own_deadlines(window, started);
        loop {
            let own = self.time_out_own(&early, ballot);
            let splitting = is_acquire && self.cut_split(ballot, &mut split, started);
            // A decided attempt still waits a little for the other nodes (see `grace_wait`).
            let draining = ballot.decision == Decision::Lost;
            let counting = ballot.decision == Decision::Won && fenced;
            if (draining || counting) && grace.is_none() {
                grace = Some(Instant::now() + grace_wait(counting, started.elapsed(), window));
            }
            // A lost acquire or extend whose reason the votes still out decide (another
            // owner's, or ours behind the failures) waits for them a while (see
            // [`SETTLE_GRACE`]): a node that answers a few milliseconds later must not
            // change what it reports. (A release never meets another owner's vote; a
            // permit acquire's votes are recounted by slot after.)
            let open = ballot.decision == Decision::Lost
                && matches!(op, Op::Acquire { .. } | Op::Extend { .. })
                && !ballot.by_slot
                && !ballot.tally.failure_known();
            if open && settle.is_none() {
                settle = Some(Instant::now() + SETTLE_GRACE.max(started.elapsed() * 2));
            }
            // The clock is read only while a grace or settling wait runs.
            let now = (grace.is_some() || settle.is_some()).then(Instant::now);
            // (Nothing to wait for once every node voted or timed out at its own time-out.)
            let all_in = own.is_none() && ballot.votes.iter().all(Option::is_some);
            let in_grace = grace.filter(|g| !all_in && now.is_some_and(|n| n < *g));
            let settling = settle.filter(|u| open && now.is_some_and(|n| n < *u));
            if ballot.decision != Decision::Pending && in_grace.is_none() && settling.is_none() {
                if open {
                    // Given up on: they count as failed (timed out), as at the deadline.
                    ballot.fail_missing(timed_out(&self.nodes, started.elapsed()));
                }
                return false;
            }
            let until = in_grace.max(settling).max(split.filter(|_| splitting));
            let until = until.map(|u| u.min(started + window));
            let until = until.into_iter().chain(own).min();
            // An abort is heard before any answer that came with it: an operation aborted
            // right after it started (its commands already sent) is aborted, not won.
            tokio::select! {
                biased;
                _ = call.aborted() => {
                    ballot.fail_missing(|i| NodeError::Aborted { addr: self.nodes[i].addr() });
                    ballot.decision = Decision::Lost;
                    return true;
                }
                next = pending.next() => match next {
                    // (Not a node already timed out at its own time-out.)
                    Some((i, answer)) if ballot.votes[i].is_none() => ballot.answered(i, answer, call),
                    Some(_) => {}
                    None => return false,
                },
                _ = timer::sleep_until_some(until) => {}
                _ = &mut deadline => {
                    ballot.fail_missing(timed_out(&self.nodes, window));
                    return false;
                }
            }
        }
    }

    /// Whether the votes of a pending acquire split between contenders with nodes still
    /// silent (see [`SPLIT_GRACE`]): `split` is when they count as timed out, which makes
    /// the attempt lost once it passed.
    fn cut_split(
        &self,
        ballot: &mut Ballot,
        split: &mut Option<Instant>,
        started: Instant,
    ) -> bool {
        let t = &ballot.tally;
        if ballot.decision != Decision::Pending || t.votes_for == 0 || t.locked == 0 {
            return false;
        }
        // Only nodes that timed out last time too are given up on early: a node that is
        // only slow (a remote one) is waited for, as it may decide the attempt.
        let now = self.silence_clock();
        let silent = |i: usize| {
            let at = self.silent[i].load(std::sync::atomic::Ordering::Relaxed);
            at != 0 && now.saturating_sub(at) < SILENT_FOR.as_millis() as u64
        };
        if !(0..ballot.votes.len()).all(|i| ballot.votes[i].is_some() || silent(i)) {
            return false;
        }
        let now = Instant::now();
        let until = *split.get_or_insert(now + SPLIT_GRACE.max(started.elapsed() * 4));
        if now < until {
            return true;
        }
        ballot.fail_missing(timed_out(&self.nodes, started.elapsed()));
        false
    }

    /// Notes which nodes let an attempt's request time out (their whole command time-out:
    /// one given up on early says nothing new), and which answered (see [`SPLIT_GRACE`]).
    /// (Every attempt comes here: an answer reads the flag and writes nothing unless it
    /// was set, and the clock is read only for a time-out.)
    fn note_silence(&self, votes: &[Option<Vote>]) {
        use std::sync::atomic::Ordering::Relaxed;
        for (i, (flag, vote)) in self.silent.iter().zip(votes).enumerate() {
            match vote {
                Some(Vote::Failed(NodeError::Timeout { ms, .. }))
                    if Duration::from_millis(*ms) >= self.nodes[i].config().command_timeout =>
                {
                    flag.store(self.silence_clock(), Relaxed)
                }
                // (Given up on early: no news.)
                Some(Vote::Failed(NodeError::Timeout { .. })) | None => {}
                Some(_) if flag.load(Relaxed) != 0 => flag.store(0, Relaxed),
                Some(_) => {}
            }
        }
    }

    /// The clock of `silent`: ms after `epoch`, plus one (0 stands for none).
    fn silence_clock(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// When the nodes whose own `commandTimeout` ends before the attempt's `window` time
    /// out: their votes fail then, as their commands would (the window is the longest
    /// time-out among the nodes).
    fn own_deadlines(&self, window: Duration, started: Instant) -> Vec<(Instant, usize)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.config().command_timeout < window)
            .map(|(i, n)| (started + n.config().command_timeout, i))
            .collect()
    }

    /// Fails the votes of the nodes of `early` (see [`Quorum::own_deadlines`]) whose own
    /// time-out passed with no answer; returns the next such time-out.
    fn time_out_own(&self, early: &[(Instant, usize)], ballot: &mut Ballot) -> Option<Instant> {
        if early.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut next = None;
        for &(at, i) in early {
            if ballot.votes[i].is_some() {
                continue;
            }
            if at <= now {
                let waited = self.nodes[i].config().command_timeout;
                let error = timed_out(&self.nodes, waited)(i);
                ballot.count(i, Vote::Failed(error), None, None);
            } else {
                next = next.into_iter().chain(Some(at)).min();
            }
        }
        next
    }

    /// Lets the requests of a won attempt still under way finish in the background (a
    /// lock on more nodes survives more crashes). One that lands after its lock was
    /// released takes its key back.
    fn settle_stragglers(
        &self,
        commands: &Arc<Commands>,
        mut pending: Votes,
        ballot: &Ballot,
        won_slot: Option<u32>,
        sink: Option<(LateVotes, tokio::sync::oneshot::Receiver<bool>)>,
    ) {
        if pending.is_empty() {
            return;
        }
        let straggler = Straggler::enter(&self.stragglers, &commands.value);
        let nodes = self.nodes.clone();
        let commands = commands.clone();
        let mut votes = ballot.votes.clone();
        let limit = self.command_timeout();
        tokio::spawn(async move {
            let _ = timer::timeout(limit, async {
                while let Some((i, (vote, _, slot, _))) = pending.next().await {
                    let c = &*commands;
                    if c.is_acquire && vote == Vote::For {
                        if straggler.was_released() {
                            let _ = nodes[i].eval::<i64>(c.release_script, c.release()).await;
                        } else if slot != won_slot {
                            let stray = c.release_slots_except(won_slot);
                            let _ = nodes[i].eval::<i64>(c.release_script, &stray).await;
                        }
                    }
                    votes[i] = Some(if slot != won_slot && vote == Vote::For {
                        Vote::Locked
                    } else {
                        vote
                    });
                }
            })
            .await;
            drop(straggler);
            report_late(sink, votes, &nodes, limit).await;
        });
    }

    /// A won permit acquire: the nodes that gave us another slot than the one won give it
    /// back (in the background).
    fn release_strays(&self, commands: &Arc<Commands>, strays: &[usize], won_slot: Option<u32>) {
        if strays.is_empty() {
            return;
        }
        let stray = commands.release_slots_except(won_slot);
        self.eval_in_background(commands.release_script, stray, strays.iter().copied());
    }

    /// What a won acquire still needs before it counts: its fencing token written to a
    /// quorum, and with `waitReplicas` a quorum of masters whose replicas acknowledged it.
    async fn confirm(
        &self,
        op: Op,
        commands: &Commands,
        ballot: &Ballot,
        settings: &Settings,
        window: Duration,
        started: Instant,
    ) -> Result<Option<i64>, Vec<(usize, NodeError)>> {
        if !matches!(op, Op::Acquire { .. }) {
            return Ok(None);
        }
        let mut fence = None;
        if settings.fencing {
            let keys = &commands.fence_keys;
            let left = window.saturating_sub(started.elapsed());
            let relearn = match settings.restart_quarantine {
                true => self.known_counters(&ballot.counters, keys, left).await?,
                false => Vec::new(),
            };
            let first = next_fence(&ballot.counters);
            let claimed = self.claim_fence(keys, first, left).await?;
            self.relearned(&relearn, keys, claimed);
            fence = Some(claimed);
        }
        if settings.wait_replicas > 0 {
            let left = window.saturating_sub(started.elapsed());
            let key = commands.first_key().map_or("", String::as_str);
            self.wait_replicas(&ballot.votes, (settings.wait_replicas, key), left)
                .await?;
        }
        Ok(fence)
    }

    /// Removes what a failed acquire may have set: waits for the nodes that voted for it
    /// (they answer), and sends the release in the background to nodes that never
    /// answered (it is queued behind the acquire on the same connection). `true` when a
    /// node kept the lock for this waiter's own ticket (see
    /// [`LINE_RELEASE`](crate::engine::scripts::LINE_RELEASE)).
    async fn cleanup(
        &self,
        votes: &[Option<Vote>],
        strays: &[usize],
        commands: &Commands,
        quiet: bool,
    ) -> bool {
        let limit = self.command_timeout();
        let (script, release, answered) = self.cleanup_targets(votes, strays, commands, quiet);
        let released = timer::timeout(
            limit,
            futures::future::join_all(
                answered
                    .into_iter()
                    .map(|node| node.eval::<i64>(script, &release)),
            ),
        )
        .await;
        // Only the line's release says "kept for your ticket"; the others count the keys
        // they deleted (two, for a lock on two resources).
        let line = std::ptr::eq(script, &*LINE_RELEASE_SCRIPT);
        line && released.is_ok_and(|r| r.iter().any(|r| matches!(r, Ok(KEPT_FOR_OWN))))
    }

    /// What removes what a failed acquire may have set, and where: the release (`quiet`:
    /// not announced), sent at once in the background to the nodes that never answered,
    /// and the nodes that did answer, for the caller to send it to (see
    /// [`Quorum::cleanup`]).
    fn cleanup_targets<'n>(
        &'n self,
        votes: &[Option<Vote>],
        strays: &[usize],
        commands: &Commands,
        quiet: bool,
    ) -> (&'static LockScript, Arc<redis::Cmd>, Vec<&'n Arc<Node>>) {
        let limit = self.command_timeout();
        let release = match commands.quiet_release().filter(|_| quiet) {
            Some(r) => r,
            None => commands.release().clone(),
        };
        let (script, release) = (commands.release_script, Arc::new(release));
        let mut answered = Vec::new();
        for (i, (node, vote)) in self.nodes.iter().zip(votes).enumerate() {
            let unanswered = match vote {
                // A quarantined node checked after it answered may hold our key too, and
                // a node that gave a permit acquire another slot holds that one.
                Some(Vote::For) | Some(Vote::Failed(NodeError::Quarantined { .. })) => {
                    answered.push(node);
                    false
                }
                Some(Vote::Locked | Vote::Failed(_)) if strays.contains(&i) => {
                    answered.push(node);
                    false
                }
                Some(Vote::Failed(e)) => e.may_have_executed(),
                Some(Vote::Locked) => false,
                None => true,
            };
            if unanswered {
                let (node, release) = (node.clone(), release.clone());
                self.spawn_within(limit, async move {
                    let _ = node.eval::<i64>(script, &release).await;
                });
            }
        }
        (script, release, answered)
    }

    /// `WAIT replicas` on the nodes that voted for the lock (on the connection that wrote
    /// it, on a cluster that of the master of `key`, the lock's first key): `Ok` when a
    /// quorum of them had it acknowledged by enough replicas in time, else the nodes that
    /// did not, and why.
    async fn wait_replicas(
        &self,
        votes: &[Option<Vote>],
        (replicas, key): (u64, &str),
        within: Duration,
    ) -> Result<(), Vec<(usize, NodeError)>> {
        // (A server ends a WAIT up to a cron tick, 100 ms, after its time-out: asked for
        // that much less, it answers how many replicas acknowledged within the window.)
        let ms = within.saturating_sub(WAIT_LATE).as_millis().max(1) as u64;
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(ms);
        let waits = self
            .nodes
            .iter()
            .zip(votes)
            .enumerate()
            .filter(|(_, (_, v))| matches!(v, Some(Vote::For)))
            .map(|(i, (node, _))| {
                let cmd = &cmd;
                async move {
                    let acked = timer::timeout(within + Duration::from_millis(50), node.send_at::<u64>(cmd, key)).await;
                    let failed = match acked {
                        Ok(Ok(n)) if n >= replicas => return None,
                        Ok(Ok(n)) => NodeError::Command {
                            addr: node.addr(),
                            reason: format!("{n} of the {replicas} replicas asked for (waitReplicas) acknowledged the lock within {ms} ms"),
                        },
                        Ok(Err(e)) => e,
                        Err(_) => timed_out(&self.nodes, within)(i),
                    };
                    Some((i, failed))
                }
            });
        let results = futures::future::join_all(waits).await;
        let asked = results.len();
        let failed: Vec<(usize, NodeError)> = results.into_iter().flatten().collect();
        if asked - failed.len() >= quorum_of(self.nodes.len()) {
            Ok(())
        } else {
            Err(failed)
        }
    }

    /// Whether the fencing counters read (`counters`, by node) are enough to stay above
    /// every earlier token. A node that lost its data (a restart without persistence, or a
    /// replica promoted in its place: see [`Trust::lost`], which also names nodes whose
    /// mark could not be read on connecting) may lack a counter or hold a stale one: its
    /// mark is read (one `HMGET`, asked only of such nodes), and its reading counts only
    /// where there is no mark, or the mark names every counter of `keys` as rewritten on
    /// this server (see [`mark_of`]). The others must make a quorum. When the nodes without
    /// a mark read cannot (half the nodes or more lost their data), nothing is kept to
    /// read: the counters are read as they are. `Ok`: the nodes that may be marked and do
    /// not know the counters yet (they do once the token is claimed there, see
    /// [`Quorum::relearned`]); `Err`: the nodes whose reading does not count, and why.
    async fn known_counters(
        &self,
        counters: &[Option<i64>],
        keys: &[String],
        within: Duration,
    ) -> Result<Vec<usize>, Vec<(usize, NodeError)>> {
        let n = self.nodes.len();
        // Marked, or not known to be unmarked (the check on connecting did not tell): the
        // marks of those that voted are read now, with the attempt's time.
        let marked: Vec<usize> = (0..n).filter(|&i| self.trust.lost(i)).collect();
        let suspects: Vec<usize> = marked
            .iter()
            .copied()
            .filter(|&i| counters[i].is_some())
            .collect();
        if suspects.is_empty() {
            return Ok(marked);
        }
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(LOST_KEY).arg("run_id").arg(keys);
        let hmget = &hmget;
        let reads = suspects.iter().map(|&i| {
            let node = &self.nodes[i];
            async move {
                let read = timer::timeout(within, node.send::<Vec<Option<String>>>(hmget)).await;
                (i, mark_of(node, read.ok().and_then(Result::ok)))
            }
        });
        let marks = futures::future::join_all(reads).await;
        let of = |mark: Mark| -> Vec<usize> {
            marks
                .iter()
                .filter(|(_, m)| *m == mark)
                .map(|(i, _)| *i)
                .collect()
        };
        let (lost, unread) = (of(Mark::Lost), of(Mark::Unread));
        let quorum = quorum_of(n);
        let known = (0..n)
            .filter(|i| counters[*i].is_some() && !lost.contains(i) && !unread.contains(i))
            .count();
        // (Only marks read count as lost data here: a mark that could not be read must
        // not make the counters be read as they are.)
        if n - lost.len() < quorum || known >= quorum {
            // Those whose marks were read and need nothing: no mark, or the counters named.
            let settled = |i: &usize| {
                marks
                    .iter()
                    .any(|(j, m)| j == i && matches!(m, Mark::None | Mark::Known))
            };
            return Ok(marked.into_iter().filter(|i| !settled(i)).collect());
        }
        let reason = "restarted without its data (or replaced by a replica): its fencing counter of this resource is unknown until a token is claimed there again, and too few other nodes answered with theirs".to_string();
        Err(lost
            .into_iter()
            .chain(unread)
            .map(|i| {
                let addr = self.nodes[i].addr();
                (
                    i,
                    NodeError::Command {
                        addr,
                        reason: reason.clone(),
                    },
                )
            })
            .collect())
    }

    /// Names the counters of `keys` as known again in the marks of the nodes of `relearn`,
    /// once each has raised its counters to `fence` (the token just claimed, above every
    /// earlier one: it was read from a quorum of known counters): the claim is sent there
    /// again (it only ever raises counters; a resend finds them raised), then the mark, if
    /// there is one, names them. In the background.
    fn relearned(&self, relearn: &[usize], keys: &[String], fence: i64) {
        if relearn.is_empty() {
            return;
        }
        let claim = Arc::new(FENCE_SCRIPT.evalsha(keys, &[&fence.to_string()]));
        let limit = self.command_timeout();
        let single = keys.len() == 1;
        for &i in relearn {
            // Named under the identity the claim meets: a server that restarted since
            // does not match it.
            let Some(run_id) = self.nodes[i].identity().map(|id| id.run_id) else {
                continue;
            };
            // (With the mark's own field: were the server replaced meanwhile, the new one
            // is still marked, and names nothing under its own `run_id`.)
            let mut hset = redis::cmd("HSET");
            hset.arg(LOST_KEY).arg("run_id").arg(&run_id);
            for key in keys {
                hset.arg(key).arg(&run_id);
            }
            let (node, claim) = (self.nodes[i].clone(), claim.clone());
            self.spawn_within(limit, async move {
                // Raised now (0), or by the claim itself (the token: for one counter; the
                // highest of several says nothing of the others).
                let raised = match node.eval::<i64>(&FENCE_SCRIPT, &claim).await {
                    Ok(high) => high == 0 || (high == fence && single),
                    Err(_) => false,
                };
                // Only where the mark is (a node not known to be unmarked may have none:
                // naming counters would make one).
                let mut marked = redis::cmd("HGET");
                marked.arg(LOST_KEY).arg("run_id");
                if raised && matches!(node.send::<Option<String>>(&marked).await, Ok(Some(_))) {
                    let _ = node.send::<redis::Value>(&hset).await;
                }
            });
        }
    }

    /// Claims fencing token `fence` (or the next one free) on a quorum within `within`:
    /// each node raises its counters to it only when they are all below it, so two
    /// concurrent holders (semaphore permits, readers) never get the same token; a claim
    /// refused by a quorum is tried again above the highest counter seen. `Err` when no
    /// quorum confirmed in time: the nodes that failed or did not answer, and why.
    async fn claim_fence(
        &self,
        keys: &[String],
        mut fence: i64,
        within: Duration,
    ) -> Result<i64, Vec<(usize, NodeError)>> {
        let deadline = Instant::now() + within;
        loop {
            let cmd = FENCE_SCRIPT.evalsha(keys, &[&fence.to_string()]);
            let mut tally = Tally::new(self.nodes.len());
            let mut higher = fence;
            let mut failed: Vec<(usize, NodeError)> = Vec::new();
            let mut answered = vec![false; self.nodes.len()];
            let mut claims: FuturesUnordered<_> = self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    let cmd = &cmd;
                    async move { (i, node.eval::<i64>(&FENCE_SCRIPT, cmd).await) }
                })
                .collect();
            let decided = timer::timeout_at(deadline, async {
                while let Some((i, result)) = claims.next().await {
                    answered[i] = true;
                    let now = match result {
                        Ok(0) => tally.vote_for(),
                        Ok(high) => {
                            higher = higher.max(high);
                            tally.vote_locked()
                        }
                        Err(e) => {
                            failed.push((i, e));
                            tally.vote_failed()
                        }
                    };
                    if now != Decision::Pending {
                        return now;
                    }
                }
                Decision::Lost
            })
            .await;
            match decided {
                Ok(Decision::Won) => return Ok(fence),
                Ok(_) if tally.failure_kind() == FailureKind::Locked => fence = higher + 1,
                _ => {
                    // The nodes that failed, and those that did not answer in time.
                    let late = timed_out(&self.nodes, within);
                    let silent = (0..self.nodes.len()).filter(|i| !answered[*i]);
                    failed.extend(silent.map(|i| (i, late(i))));
                    return Err(failed);
                }
            }
        }
    }

    /// The longest command time-out among the nodes: no attempt waits longer.
    fn command_timeout(&self) -> Duration {
        self.nodes
            .iter()
            .map(|n| n.config().command_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// How many holders semaphore `resource` of `permits` has as a quorum sees them: the
    /// slots whose value is the same on a quorum of the nodes. `None` when fewer than a
    /// quorum of nodes answered.
    /// Decided once a quorum answered, as an attempt is: the other nodes get twice as long
    /// as that took ([`DRAIN_GRACE`] at least), so a stopped node does not hold the call
    /// for its whole command time-out.
    pub async fn holders(
        &self,
        resource: &str,
        permits: u32,
    ) -> Result<u32, Vec<(usize, NodeError)>> {
        let mut mget = redis::cmd("MGET");
        mget.arg(crate::engine::kinds::slot_keys(resource, permits));
        let limit = self.command_timeout();
        let started = Instant::now();
        let mut reads: FuturesUnordered<_> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let mget = &mget;
                async move {
                    let read = timer::timeout(limit, node.send::<Vec<Option<String>>>(mget))
                        .await
                        .unwrap_or_else(|_| Err(timed_out(&self.nodes, limit)(i)));
                    (i, read)
                }
            })
            .collect();
        let quorum = quorum_of(self.nodes.len());
        let mut answers: Vec<Vec<Option<String>>> = Vec::with_capacity(self.nodes.len());
        let mut failed = Vec::new();
        while answers.len() < quorum {
            match reads.next().await {
                Some((_, Ok(answer))) => answers.push(answer),
                Some((i, Err(e))) => failed.push((i, e)),
                None => return Err(failed),
            }
        }
        let grace = (started.elapsed() * 2).max(DRAIN_GRACE);
        let _ = timer::timeout(grace, async {
            while let Some((_, answer)) = reads.next().await {
                answers.extend(answer.ok());
            }
        })
        .await;
        Ok(count_held(&answers, permits as usize, quorum))
    }

    /// Ends the operations under way, and every later one, at once (the environment that
    /// started them is gone: nobody can hear their results, nor release what they take).
    pub fn close_now(&self) {
        self.stopping.cancel();
        self.closed.cancel();
    }

    /// Ends the acquires under way and every later one (they clean up what they set, and
    /// leave the nodes' waiting lines), and keeps releases from handing a lock over to a
    /// waiter: `quit()` first, so that the locks it releases then go, not to a waiter it
    /// is about to end. The extends under way end too: `quit()` ends every operation but
    /// the releases it waits for, and one of them must not give a new Lock meanwhile.
    pub fn stop_acquires(&self) {
        self.stopping.cancel();
    }

    /// Ends the operations under way, lets the requests of won acquires still under way
    /// finish when a lock was released meanwhile (within the command time-out: one that
    /// lands after its lock's release takes it away again, which it cannot do on a closed
    /// connection; a CLI run that released and quit at once left its lock on a node that
    /// was still connecting), and closes every node's connection but those at the indices
    /// `keep` (shared with other instances).
    ///
    /// All of it within one command time-out (and [`QUIT_LEAST`] more at worst): the
    /// `QUIT`s get what the stragglers left of it (a connection whose `QUIT` is cut short
    /// is closed all the same, see `Server::quit`).
    pub async fn quit(&self, keep: &[usize]) {
        self.stopping.cancel();
        self.closed.cancel();
        let limit = self.command_timeout();
        let started = Instant::now();
        // The waiting heads end (aborted) and take their tickets out of the nodes' lines.
        let _ = timer::timeout(limit, self.seats.idle()).await;
        // The operations under way end (aborted) and clean up what they set; the writers
        // among them take their marks back. A second at most: on a connection that is up
        // that takes a round trip; one still connecting gets its queued commands (the
        // cleanup behind the acquire) out when it comes, within a second, at its `quit()`.
        let left = limit.saturating_sub(started.elapsed()).min(QUIT_WORK_WAIT);
        let _ = timer::timeout(left, self.working.idle()).await;
        if self.stragglers.any_released() {
            let left = limit.saturating_sub(started.elapsed());
            let _ = timer::timeout(left, self.stragglers.idle()).await;
        }
        let left = limit.saturating_sub(started.elapsed()).max(QUIT_LEAST);
        let _ = timer::timeout(
            left,
            futures::future::join_all(
                self.nodes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !keep.contains(i))
                    .map(|(_, n)| n.quit()),
            ),
        )
        .await;
    }
}

/// How long a waiting head's ticket lives on a node without being renewed: past its
/// head's next attempt, which starts within a retry pause (`pause`, delay and jitter) of
/// the last one's end (twice that, and a second for the attempt itself), but never longer
/// than the lock it waits for (`ttl_ms`), and 100 ms at least: a waiter that died holds a
/// released lock back no longer than a holder that died would.
fn ticket_ttl_ms(pause: u64, ttl_ms: u64) -> u64 {
    (2 * pause + 1_000).min(ttl_ms).max(100)
}

/// A fresh value for an acquire's next attempt; releases of it (its own cleanups) wake
/// nobody in its turn's line.
fn fresh_value(turn: &Option<Turn>) -> String {
    let value = random_value();
    if let Some(t) = turn {
        t.signal().set_own(Some(value.clone()));
    }
    value
}

/// What the line's release answers when it kept the lock for the releasing waiter's own
/// ticket (see [`LINE_RELEASE`](crate::engine::scripts::LINE_RELEASE)).
const KEPT_FOR_OWN: i64 = 2;

/// Whether `op` on `resources` waits in the nodes' line (see `crate::engine::line`): an
/// acquire of a plain mutex on one resource, without fencing.
fn lined(op: Op, resources: &[String], call: &Call<'_>) -> bool {
    matches!(op, Op::Acquire { .. })
        && resources.len() == 1
        && call.kind == Kind::Mutex
        && !call.settings.fencing
}

/// What one attempt of `op` sends (in the waiting line's order when it has a `seat`).
fn attempt_commands(
    op: Op,
    resources: &[String],
    value: &str,
    call: &Call<'_>,
    seat: Option<&Seat>,
) -> Arc<Commands> {
    let kind = call.kind.for_attempt(op);
    let mut commands = Commands::build(op, kind, resources, value, call.settings);
    if let (Some(seat), Some(ttl)) = (seat, op.ttl_ms()) {
        seat.attempted();
        commands = commands.in_line(seat, ttl);
    }
    Arc::new(commands)
}

/// Waits for a release announcement (`true`), or `pause` when none comes.
async fn wait_for(released: &Signal, pause: Duration) -> bool {
    timer::timeout(pause, released.notified()).await.is_ok()
}

/// The compare-and-sets of a hand-over still under way, by node index.
type PendingMoves = FuturesUnordered<BoxFuture<'static, (usize, Vote)>>;

/// A release wakes every waiting head that hears it, in every process and instance. Where
/// no line on the nodes orders them (fenced and multi-resource mutexes, permits, read-write
/// locks) and the head's last attempt was lost in a split (it took some nodes, so others
/// took the rest: the wake-ups are then the cleanups' announcements), it waits a random
/// part of a spread before its next attempt: that attempt's duration when a wake-up
/// started it (this much at least), doubled for each such loss in a row, up to the retry
/// delay. A loss to a holder of a quorum starts again without a wait (a release's first
/// wake-up is not delayed: the heads woken would lose to any acquire that comes without
/// one). Found by audits: heads woken together split the nodes together, again and again
/// (for ever with `retryJitter: 0`); permit heads whose attempts split the slots woke
/// each other with their cleanups, an attempt every 0.5 ms. (With a node paused, each
/// split also lasted its command time-out: see [`SPLIT_GRACE`].)
const WAKE_SPREAD: Duration = Duration::from_millis(2);

/// How long a head whose process just had its hand-overs in a row lets the other
/// processes' heads try first, after the release that ended them.
const YIELD_GRACE: Duration = Duration::from_millis(3);

/// The least an aborted acquire waits for the removal of what it set before it rejects
/// (see [`Quorum::clean_up_abort`]): a local node's round trip, with room.
const ABORT_GRACE: Duration = Duration::from_millis(50);

/// A lock the seed API holds: its value, fence, expiration, and when its keys are gone
/// from every node for sure (ms since the epoch).
#[derive(Debug, Clone)]
struct HeldLock {
    value: String,
    fence: Option<i64>,
    expiration_ms: f64,
    gone_ms: f64,
}

/// The seed API's locks held, by resource. A lock that expires unreleased is forgotten
/// once its keys are gone (a sweep when the map has doubled since the last one), so that
/// `acquireLock` used as a TTL guard, never released, does not grow it without bound.
#[derive(Debug, Default)]
struct Held {
    locks: HashMap<String, HeldLock>,
    sweep_at: usize,
}

/// The fewest locks held before a sweep of the forgotten ones.
const HELD_SWEEP_LEAST: usize = 1024;

impl Held {
    fn insert(&mut self, resource: String, lock: HeldLock) {
        if self.locks.len() >= self.sweep_at.max(HELD_SWEEP_LEAST) {
            let now = now_ms();
            self.locks.retain(|_, l| l.gone_ms > now);
            self.sweep_at = self.locks.len() * 2;
        }
        self.locks.insert(resource, lock);
    }
}

/// How long `quit()` lets its `QUIT`s go on at least, however long the stragglers took.
const QUIT_LEAST: Duration = Duration::from_millis(20);

/// How long `quit()` waits for the operations under way and their cleanups.
const QUIT_WORK_WAIT: Duration = Duration::from_secs(1);

/// How long a won fenced acquire waits at least for the counters of the nodes that have
/// not answered yet (or twice the time the quorum took). The token is the successor of the
/// highest counter read; reading more than a quorum keeps it above earlier tokens even
/// when a node of the quorum that wrote them lost its data (a restart without
/// persistence), as long as one of the others answers in time.
const FENCE_GRACE: Duration = Duration::from_millis(5);

/// How long an attempt decided `elapsed` into its `window` still waits for the nodes that
/// have not answered: a won fenced one (`counting`) for more counters, at most half of
/// what is left (the token is still to be written); a lost one for the nodes still
/// answering (an acquire's keys are then removed before it reports, and the stats have
/// every vote, as node-redlock's do). A stopped node is not waited for then (a cleanup is
/// queued behind the request), only a little longer while its vote decides the reason
/// (`SETTLE_GRACE`).
fn grace_wait(counting: bool, elapsed: Duration, window: Duration) -> Duration {
    if counting {
        FENCE_GRACE
            .max(elapsed * 2)
            .min(window.saturating_sub(elapsed) / 2)
    } else {
        DRAIN_GRACE.max(elapsed)
    }
}

/// How long a lost acquire waits at least for the nodes that have not answered yet (or as
/// long as the decision took), before it cleans up and reports.
const DRAIN_GRACE: Duration = Duration::from_millis(5);

/// How long an acquire whose votes split between contenders (some for it, some for another
/// owner) waits at least (or four times as long as its votes so far took) for the nodes
/// still silent, when each of them let a request time out in the last [`SILENT_FOR`] and
/// has not answered since, before it counts them as timed out and is lost: a node that stopped answering would
/// otherwise hold every contender's attempt, and the key each took on the others, for its
/// whole command time-out, and the contenders, retrying together, split again (found by an
/// audit: with one of three nodes paused, fenced and multi-resource mutexes and permits
/// across processes stalled for good). A node that answers, however slowly, is waited for
/// (a review found a plain mutex failing with one stale key and a healthy node 30 ms
/// away).
const SPLIT_GRACE: Duration = Duration::from_millis(5);

/// How long after a node let a request time out [`SPLIT_GRACE`] gives up on it early in a
/// split. After that it is waited for again (its whole command time-out, if it is still
/// stopped): a node that had one hiccup and is only slow now is not cut off for good.
const SILENT_FOR: Duration = Duration::from_secs(1);

/// How long a lost acquire or extend waits at least (or twice as long as the decision
/// took) for the votes that decide whether it was lost to another owner or to failures;
/// the nodes still silent then count as timed out. Long enough for a node that is only
/// slow (a busy machine), short enough that a stopped one does not hold every attempt for
/// its whole window.
const SETTLE_GRACE: Duration = Duration::from_millis(200);

/// Hands the complete votes of an operation's last attempt, decided before every node
/// answered, to its late report (`sink`), once that attempt turned out to be the
/// operation's win; the votes still missing after `limit` count as time-outs.
async fn report_late(
    sink: Option<(LateVotes, tokio::sync::oneshot::Receiver<bool>)>,
    mut votes: Vec<Option<Vote>>,
    nodes: &[Arc<Node>],
    limit: Duration,
) {
    let Some((sink, won)) = sink else { return };
    if won.await != Ok(true) {
        return;
    }
    fill_missing(&mut votes, timed_out(nodes, limit));
    sink(votes);
}

/// Fills the votes still missing with the failure `error` gives for each node; how many.
fn fill_missing(votes: &mut [Option<Vote>], error: impl Fn(usize) -> NodeError) -> usize {
    let mut n = 0;
    for (i, v) in votes.iter_mut().enumerate() {
        if v.is_none() {
            *v = Some(Vote::Failed(error(i)));
            n += 1;
        }
    }
    n
}

/// The failure of a node of `nodes` that gave no reply within `after`.
fn timed_out(nodes: &[Arc<Node>], after: Duration) -> impl Fn(usize) -> NodeError + '_ {
    let ms = after.as_millis() as u64;
    move |i| NodeError::Timeout {
        addr: nodes[i].addr(),
        ms,
    }
}

/// What a fence read learns from a node's mark (see [`Quorum::known_counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// No mark: the server never lost its data (as far as any client found).
    None,
    /// Marked, and it names every counter read as rewritten on this server.
    Known,
    /// Marked, and some counter read is not named for this server: unknown.
    Lost,
    /// Not read in time (or no identity to judge it by): unknown.
    Unread,
}

/// The [`Mark`] of `node` from its `HMGET` of the mark's `run_id` and the counters'
/// fields (`None`: not read). A counter is named for the server it was rewritten on: a
/// mark restored from a snapshot, or replicated to a replica promoted later, names
/// another server's.
fn mark_of(node: &Node, read: Option<Vec<Option<String>>>) -> Mark {
    let (Some(fields), Some(run_id)) = (read, node.identity().map(|id| id.run_id)) else {
        return Mark::Unread;
    };
    match fields.split_first() {
        Some((None, _)) => Mark::None,
        Some((Some(_), named))
            if named
                .iter()
                .all(|f| f.as_deref().is_some_and(|f| same_server(f, &run_id))) =>
        {
            Mark::Known
        }
        _ => Mark::Lost,
    }
}

/// The fencing token of a won fenced acquire: the successor of the highest counter read.
fn next_fence(counters: &[Option<i64>]) -> i64 {
    counters.iter().flatten().max().copied().unwrap_or(0) + 1
}

/// The outcome of an attempt from its votes: won (with the validity left), or why not.
fn decide(
    op: Op,
    ballot: &Ballot,
    confirmed: bool,
    started: Instant,
    settings: &Settings,
) -> Result<i64, FailureKind> {
    if ballot.decision != Decision::Won {
        let kind = ballot.tally.failure_kind();
        // An extend refused only where the lock is gone (no other owner holds a key): the
        // lock expired on the nodes (or its keys were deleted).
        if kind == FailureKind::Locked
            && matches!(op, Op::Extend { .. })
            && !ballot.held_by_another()
        {
            return Err(FailureKind::Expired);
        }
        return Err(kind);
    }
    // A lost fence write or replica wait leaves the outcome to failures, not to another
    // owner.
    if !confirmed {
        return Err(FailureKind::Undecided);
    }
    match op.ttl_ms() {
        Some(ttl) => {
            let v = validity_ms(ttl, started.elapsed(), settings.drift_factor);
            if v > 0 {
                Ok(v)
            } else {
                Err(FailureKind::Undecided)
            }
        }
        None => Ok(0),
    }
}

/// The slots held on a quorum: per slot, the most common value across the nodes' answers
/// (`answers[node][slot]`) is there on at least `quorum` nodes.
fn count_held(answers: &[Vec<Option<String>>], slots: usize, quorum: usize) -> u32 {
    (0..slots)
        .filter(|&s| {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for a in answers {
                if let Some(Some(v)) = a.get(s) {
                    *counts.entry(v.as_str()).or_default() += 1;
                }
            }
            counts.values().any(|&n| n >= quorum)
        })
        .count() as u32
}

/// Counts one vote.
fn count(tally: &mut Tally, vote: &Vote) -> Decision {
    match vote {
        Vote::For => tally.vote_for(),
        Vote::Locked => tally.vote_locked(),
        Vote::Failed(_) => tally.vote_failed(),
    }
}

/// Redlock over a [`Quorum`]: node-redlock's operations (`acquire`, `extend`, `release`
/// with per-call settings) and the seed API, which keeps one random value per held
/// resource inside the instance.
pub struct Redlock {
    quorum: Quorum,
    settings: Settings,
    /// The seed API's held locks: resource -> (value, fence).
    held: Mutex<Held>,
}

impl Redlock {
    /// A Redlock over `quorum`'s nodes: restarted nodes sit out for the instance's
    /// `maxDuration` (a call's lower `maxDuration` bounds only that call's durations).
    pub fn new(mut quorum: Quorum, settings: Settings) -> Self {
        let quarantine = Duration::from_millis(settings.max_duration_ms);
        quorum.trust = Arc::new(Trust::new(quorum.nodes.len(), quarantine));
        Redlock {
            quorum,
            settings,
            held: Mutex::new(Held::default()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.locked()
    }

    /// Locks every resource (all or nothing) with a fresh random value.
    pub async fn acquire(
        &self,
        resources: &[String],
        ttl_ms: u64,
        call: &Call<'_>,
    ) -> (String, Execution) {
        let exec = self
            .quorum
            .execute(Op::Acquire { ttl_ms }, resources, &random_value(), call)
            .await;
        (exec.value.clone(), exec)
    }

    /// Resets the ttl of a lock we hold that is valid until `expiration_ms` (ms since the
    /// epoch). An expired lock is not extended (`FailureKind::Expired`, no network call);
    /// retries stop when the lock expires, since it cannot be extended after that.
    pub async fn extend(
        &self,
        resources: &[String],
        value: &str,
        ttl_ms: u64,
        expiration_ms: f64,
        call: &Call<'_>,
    ) -> Execution {
        let left = expiration_ms - now_ms();
        if left.is_nan() || left <= 0.0 {
            return Execution::failed(FailureKind::Expired);
        }
        let call = call.until(Instant::now() + Duration::from_millis(left as u64));
        self.quorum
            .execute(Op::Extend { ttl_ms }, resources, value, &call)
            .await
    }

    /// Removes our keys; idempotent, succeeds once a quorum answered.
    pub async fn release(&self, resources: &[String], value: &str, call: &Call<'_>) -> Execution {
        self.quorum
            .execute(Op::Release, resources, value, call)
            .await
    }

    /// [`Self::release`] of a lock valid until `expiration_ms` (ms since the epoch; not a
    /// finite number: unknown, as for a Lock invalidated by its extend, whose keys live on
    /// under the new Lock). Once the lock has expired there is nothing left to
    /// protect: retries stop then (an expired lock gets one attempt of at most
    /// [`EXPIRED_RELEASE_WINDOW`]), and a release that found no quorum by then succeeds:
    /// its keys expire on the nodes by themselves, within the drift after `expiration_ms`.
    pub async fn release_by(
        &self,
        resources: &[String],
        value: &str,
        expiration_ms: f64,
        call: &Call<'_>,
    ) -> Execution {
        if !expiration_ms.is_finite() {
            return self.release(resources, value, call).await;
        }
        let left = Duration::from_millis((expiration_ms - now_ms()).max(0.0) as u64);
        let call = call.until(Instant::now() + left.max(EXPIRED_RELEASE_WINDOW));
        let mut exec = self.release(resources, value, &call).await;
        if exec.outcome != Err(FailureKind::Undecided) {
            return exec;
        }
        let short_ms = expiration_ms - now_ms();
        if short_ms <= MIN_ATTEMPT.as_millis() as f64 + 1.0 {
            // The retries stop short of the expiration (no attempt starts with less than
            // MIN_ATTEMPT left, and the deadline is in whole ms): the rest is waited out.
            if short_ms > 0.0 {
                timer::sleep(Duration::from_secs_f64(short_ms / 1000.0)).await;
            }
            exec.outcome = Ok(0);
        }
        exec
    }

    /// The seed's `acquireLock`: `Some(true)`: acquired; `Some(false)`: another owner
    /// holds it; `None`: too many nodes failed to decide.
    pub async fn acquire_lock(
        &self,
        resource: String,
        ttl_ms: u64,
        call: &Call<'_>,
    ) -> (Option<bool>, Execution) {
        let resources = [resource];
        let (value, exec) = self.acquire(&resources, ttl_ms, call).await;
        let [resource] = resources;
        let result = match exec.outcome {
            Ok(_) => {
                // Every key was set before now, for ttl_ms at most.
                let gone_ms = now_ms() + ttl_ms as f64;
                let lock = HeldLock {
                    value,
                    fence: exec.fence,
                    expiration_ms: exec.expiration_ms,
                    gone_ms,
                };
                self.held().insert(resource, lock);
                Some(true)
            }
            Err(FailureKind::Locked) => Some(false),
            Err(_) => None,
        };
        (result, exec)
    }

    /// The fencing token of the lock this instance holds on `resource` (seed API, with
    /// `fencing`).
    pub fn fence_of(&self, resource: &str) -> Option<i64> {
        self.held().locks.get(resource).and_then(|l| l.fence)
    }

    /// The seed's `releaseLock(resource, true)`: releases the lock this instance holds
    /// on `resource`, owner-checked. Nothing held: nothing to do. The execution's outcome
    /// is an error only when too many nodes could not be reached.
    pub async fn release_lock(&self, resource: String, call: &Call<'_>) -> Execution {
        let Some(HeldLock {
            value,
            expiration_ms,
            ..
        }) = self.held().locks.get(&resource).cloned()
        else {
            return Execution::nothing_to_do();
        };
        let resources = [resource];
        // As a Lock's release: retried while the lock is valid; once expired, one short
        // attempt, and no quorum is no failure (its keys expire by themselves).
        let exec = self
            .release_by(&resources, &value, expiration_ms, call)
            .await;
        if exec.outcome.is_ok() {
            let [resource] = resources;
            let mut held = self.held();
            if held.locks.get(&resource).is_some_and(|l| l.value == value) {
                held.locks.remove(&resource);
            }
        }
        exec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_api_forgets_locks_whose_keys_are_gone_once_many_are_held() {
        let lock = |gone_ms: f64| HeldLock {
            value: "v".into(),
            fence: None,
            expiration_ms: gone_ms,
            gone_ms,
        };
        let mut held = Held::default();
        let (past, future) = (now_ms() - 1.0, now_ms() + 60_000.0);
        for i in 0..HELD_SWEEP_LEAST - 10 {
            held.insert(format!("gone:{i}"), lock(past));
        }
        for i in 0..10 {
            held.insert(format!("live:{i}"), lock(future));
        }
        assert_eq!(
            held.locks.len(),
            HELD_SWEEP_LEAST,
            "no sweep below the least"
        );
        held.insert("new".into(), lock(future));
        assert_eq!(
            held.locks.len(),
            11,
            "the gone ones forgotten, the live ones kept"
        );
        assert!(held.locks.contains_key("live:9") && held.locks.contains_key("new"));
        // The next sweep waits for the map to double (at least the least).
        for i in 0..100 {
            held.insert(format!("more:{i}"), lock(past));
        }
        assert_eq!(held.locks.len(), 111);
    }

    #[tokio::test]
    async fn idle_returns_once_the_last_straggler_ends() {
        let stragglers = Arc::new(Stragglers::default());
        stragglers.idle().await; // none running
        let (a, b) = (
            Straggler::enter(&stragglers, "v"),
            Straggler::enter(&stragglers, "w"),
        );
        let waiting = tokio::spawn({
            let s = stragglers.clone();
            async move { s.idle().await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiting.is_finished(), "one straggler still runs");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("idle once none runs")
            .unwrap();
    }

    #[test]
    fn releases_are_noted_only_for_the_values_of_running_stragglers() {
        let stragglers = Arc::new(Stragglers::default());
        stragglers.note_release("v");
        let first = Straggler::enter(&stragglers, "v");
        assert!(!first.was_released(), "released before it began");
        let other = Straggler::enter(&stragglers, "w");
        for i in 0..1_000 {
            stragglers.note_release(&format!("x{i}"));
        }
        assert!(!first.was_released() && !other.was_released());
        assert!(!stragglers.any_released());
        assert_eq!(
            stragglers.watched.locked().len(),
            2,
            "nothing kept for others"
        );
        let second = Straggler::enter(&stragglers, "v");
        stragglers.note_release("v");
        assert!(first.was_released() && second.was_released() && !other.was_released());
        assert!(stragglers.any_released());
        drop(first);
        assert!(
            second.was_released(),
            "kept while one of its stragglers runs"
        );
        drop((second, other));
        assert!(stragglers.watched.locked().is_empty());
        assert!(!stragglers.any_released());
        assert_eq!(stragglers.running.running(), 0);
    }

    fn permit_ballot(votes: &[(Vote, Option<u32>)], n: usize) -> Ballot {
        let mut b = Ballot::new(n, true);
        for (i, (v, slot)) in votes.iter().enumerate() {
            b.count(i, v.clone(), None, *slot);
        }
        b
    }

    #[test]
    fn the_wake_spread_outlasts_the_last_attempt_and_doubles_up_to_the_retry_delay() {
        let ms = Duration::from_millis;
        let wake_delay = |(split_losses, took), retry_delay_ms, unit| {
            let pace = Pace {
                split_losses,
                took,
                ..Pace::default()
            };
            pace.wake_delay(retry_delay_ms, unit)
        };
        // At least WAKE_SPREAD; the last attempt's duration when longer; doubled per loss.
        assert_eq!(wake_delay((1, ms(0)), 1_000, 0.5), WAKE_SPREAD);
        assert_eq!(wake_delay((1, ms(30)), 1_000, 0.5), ms(30));
        assert_eq!(wake_delay((3, ms(30)), 1_000, 0.5), ms(120));
        // Never past the retry delay, however many losses.
        assert_eq!(wake_delay((40, ms(30)), 200, 0.999), ms(200).mul_f64(0.999));
        assert_eq!(wake_delay((2, ms(1)), 200, 0.0), Duration::ZERO);
    }

    #[test]
    fn an_extend_refused_where_the_lock_is_gone_is_expired_not_locked() {
        let settings = Settings::default();
        let extend = Op::Extend { ttl_ms: 1_000 };
        let ballot = |holders: [Option<u64>; 3]| {
            let mut b = Ballot::new(3, false);
            for (i, h) in holders.into_iter().enumerate() {
                b.holders[i] = h;
                b.count(i, Vote::Locked, None, None);
            }
            b
        };
        let decided = |b: &Ballot, op| decide(op, b, true, Instant::now(), &settings);
        let gone = ballot([None, None, None]);
        assert_eq!(decided(&gone, extend), Err(FailureKind::Expired));
        // One node found another owner's value (named by a holder hash): locked.
        let taken = ballot([None, Some(0), None]);
        assert_eq!(decided(&taken, extend), Err(FailureKind::Locked));
        // An acquire refused is locked, whoever holds the keys.
        let acquire = Op::Acquire { ttl_ms: 1_000 };
        assert_eq!(decided(&gone, acquire), Err(FailureKind::Locked));
    }

    #[test]
    fn tickets_outlive_two_retry_pauses_and_never_the_lock() {
        assert_eq!(ticket_ttl_ms(300, 10_000), 1_600);
        assert_eq!(ticket_ttl_ms(300, 1_000), 1_000);
        assert_eq!(ticket_ttl_ms(0, 50), 100);
    }

    #[test]
    fn a_permit_is_won_with_one_slot_on_a_quorum() {
        let b = permit_ballot(&[(Vote::For, Some(0)), (Vote::For, Some(0))], 3);
        assert_eq!(b.decision, Decision::Won);
        let mut b = permit_ballot(
            &[
                (Vote::For, Some(0)),
                (Vote::For, Some(1)),
                (Vote::For, Some(1)),
            ],
            3,
        );
        assert_eq!(b.decision, Decision::Won);
        assert_eq!(b.best_slot(), Some((1, 2)));
        // The node that gave us slot 0 holds a stray: it counts against and is cleaned up.
        assert_eq!(b.settle_slots(), vec![0]);
        assert_eq!(b.votes[0], Some(Vote::Locked));
        assert_eq!(b.tally.votes_for, 2);
    }

    #[test]
    fn split_slots_lose_as_soon_as_no_slot_can_reach_a_quorum() {
        let b = permit_ballot(&[(Vote::For, Some(0)), (Vote::For, Some(1))], 3);
        assert_eq!(
            b.decision,
            Decision::Pending,
            "the third vote can still decide"
        );
        let b = permit_ballot(
            &[
                (Vote::For, Some(0)),
                (Vote::For, Some(1)),
                (Vote::Locked, None),
            ],
            3,
        );
        assert_eq!(b.decision, Decision::Lost);
        // Even when the for votes alone would make a quorum of a mutex.
        let b = permit_ballot(
            &[
                (Vote::For, Some(0)),
                (Vote::For, Some(1)),
                (Vote::For, Some(2)),
                (Vote::For, Some(0)),
            ],
            4,
        );
        assert_eq!(b.decision, Decision::Lost);
    }

    #[test]
    fn holders_are_the_slots_with_one_value_on_a_quorum() {
        let v = |s: &str| Some(s.to_string());
        let answers = vec![
            vec![v("a"), v("b"), None],
            vec![v("a"), v("c"), None],
            vec![v("a"), v("b"), v("d")],
        ];
        // slot 0: a on 3; slot 1: b on 2; slot 2: d on 1.
        assert_eq!(count_held(&answers, 3, 2), 2);
        assert_eq!(count_held(&answers, 3, 3), 1);
        assert_eq!(count_held(&[], 3, 2), 0);
    }
}
