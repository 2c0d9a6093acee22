//! The Redlock algorithm over N nodes: acquire, extend and release with quorum voting,
//! early decisions, validity on a monotonic clock, retries with jitter, and cleanup of
//! failed attempts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{FuturesUnordered, StreamExt};

use crate::engine::error::NodeError;
use crate::engine::node::Node;
use crate::engine::notify::{Signal, Watch};
use crate::engine::queue::Queues;
use crate::engine::quorum::{Decision, FailureKind, Tally};
use crate::engine::scripts::{
    fence_key, released_channel, LockScript, ACQUIRE_SCRIPT, EXTEND_SCRIPT, FENCED_ACQUIRE_SCRIPT,
    FENCE_SCRIPT, RELEASE_SCRIPT,
};
use crate::engine::settings::Settings;
use crate::engine::validity::{attempt_window, validity_ms};
use crate::engine::value::{random_unit, random_value};

/// How many attempts an execution remembers (node-redlock keeps every one, which grows
/// without bound with `retryCount: -1`).
pub const ATTEMPTS_KEPT: usize = 100;

/// One lock operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Acquire { ttl_ms: u64 },
    Extend { ttl_ms: u64 },
    Release,
}

impl Op {
    fn ttl_ms(self) -> Option<u64> {
        match self {
            Op::Acquire { ttl_ms } | Op::Extend { ttl_ms } => Some(ttl_ms),
            Op::Release => None,
        }
    }
}

/// One node's answer in an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    For,
    /// Another owner holds a resource (acquire), or our value is gone (extend).
    Locked,
    Failed(NodeError),
}

/// What one attempt saw: a vote per node (`None` when the attempt was decided before
/// that node answered).
#[derive(Debug, Clone)]
pub struct AttemptStats {
    pub votes: Vec<Option<Vote>>,
    pub tally: Tally,
    /// The fencing token of a won acquire with `fencing` (see [`Quorum::attempt`]).
    pub fence: Option<i64>,
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
}

impl Execution {
    /// An operation that had nothing to do (releasing a lock that is not held).
    pub fn nothing_to_do() -> Self {
        Execution {
            attempts: VecDeque::new(),
            attempt_count: 0,
            start_ms: now_ms(),
            outcome: Ok(0),
            expiration_ms: 0.0,
            fence: None,
        }
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
    nodes: Vec<Arc<Node>>,
    /// Local lines of waiters, so that one waiter per process contends remotely.
    queues: Arc<Queues>,
    stragglers: Arc<Stragglers>,
}

/// The requests of won acquires still under way on slow nodes. A lock may be released
/// before such a request lands (a node that was still connecting, say); the values
/// released meanwhile are noted, and a straggler that lands with one removes it again.
#[derive(Default)]
struct Stragglers {
    running: std::sync::atomic::AtomicUsize,
    released: Mutex<VecDeque<(String, Instant)>>,
}

impl Stragglers {
    fn released(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Instant)>> {
        self.released.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a release of `value` while stragglers run (they live at most `limit`).
    fn note_release(&self, value: &str, limit: Duration) {
        if self.running.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return;
        }
        let now = Instant::now();
        let mut released = self.released();
        while released.front().is_some_and(|(_, at)| now - *at > limit) {
            released.pop_front();
        }
        released.push_back((value.to_string(), now));
    }

    fn was_released(&self, value: &str) -> bool {
        self.released().iter().any(|(v, _)| v == value)
    }
}

impl Quorum {
    pub fn new(nodes: Vec<Arc<Node>>) -> Self {
        Quorum {
            nodes,
            queues: Arc::default(),
            stragglers: Arc::default(),
        }
    }

    /// Runs `op` with retries per `settings`.
    ///
    /// Acquires wait their turn in the process's line for the resources (first come,
    /// first served), for at most the retry window. Contended, the head of the line
    /// subscribes to the release announcements of the resources and retries as soon as
    /// one arrives, or after the retry delay when none does (so a release is never waited
    /// for longer than the retry delay, and never polled for).
    pub async fn execute(
        &self,
        op: Op,
        resources: &[String],
        value: &str,
        settings: &Settings,
    ) -> Execution {
        let start_ms = now_ms();
        let started = Instant::now();
        let window = settings.retry_window();
        let mut attempts = VecDeque::new();
        let mut attempt_count = 0u64;
        // Attempts that count against retryCount: the first, and each one after a retry
        // delay ran out. Attempts woken by a release announcement are extra, within the
        // retry window.
        let mut counted = 0u64;
        let mut woken = false;
        let mut turn = None;
        if op == Op::Release {
            self.stragglers.note_release(value, self.command_timeout());
        }
        if matches!(op, Op::Acquire { .. }) {
            let deadline = window.map(|w| started + w);
            match self.queues.enter(resources.join("\u{0}"), deadline).await {
                Some(t) => turn = Some(t),
                None => {
                    return Execution {
                        attempts,
                        attempt_count,
                        start_ms,
                        outcome: Err(FailureKind::Locked),
                        expiration_ms: 0.0,
                        fence: None,
                    }
                }
            }
        }
        // Releases of our own value (cleanups of our failed attempts) wake nobody here.
        if let Some(t) = &turn {
            t.released().0.set_own(Some(value.to_string()));
        }
        // The previous head took the lock: its release is what to wait for.
        if let Some(t) = turn.as_ref().filter(|t| t.handoff()) {
            let (released, subscribed) = t.released();
            if subscribed {
                wait_for(&released, settings).await;
            }
        }
        loop {
            attempt_count += 1;
            if !woken {
                counted += 1;
            }
            let (stats, outcome) = self.attempt(op, resources, value, settings).await;
            if attempts.len() == ATTEMPTS_KEPT {
                attempts.pop_front();
            }
            attempts.push_back(stats);
            let last = settings.max_attempts().is_some_and(|m| counted >= m)
                || window.is_some_and(|w| woken && started.elapsed() >= w);
            // Extending a lock that is gone can never succeed: no point retrying.
            let hopeless = matches!(op, Op::Extend { .. }) && outcome == Err(FailureKind::Locked);
            if outcome.is_ok() || last || hopeless {
                let expiration_ms = match (outcome, op) {
                    (Ok(validity), Op::Acquire { .. } | Op::Extend { .. }) => {
                        now_ms() + validity as f64
                    }
                    _ => 0.0,
                };
                if let (Some(t), Ok(_)) = (turn.as_mut(), outcome) {
                    t.acquired();
                }
                let fence = attempts.back().and_then(|a| a.fence);
                return Execution {
                    attempts,
                    attempt_count,
                    start_ms,
                    outcome,
                    expiration_ms,
                    fence,
                };
            }
            match (&turn, outcome) {
                (Some(t), Err(FailureKind::Locked)) => {
                    let (released, subscribed) = t.released();
                    if !subscribed {
                        // First sign of contention: from now on the line hears releases.
                        t.keep_watches(self.watch(resources, released.clone(), settings).await);
                    }
                    woken = wait_for(&released, settings).await;
                }
                _ => {
                    woken = false;
                    tokio::time::sleep(settings.retry_pause(random_unit())).await
                }
            }
        }
    }

    /// Subscribes `signal` to the release announcements of `resources` on every node
    /// that answers within the retry delay (a slow or dead node is not waited for: the
    /// others announce the release too).
    async fn watch(
        &self,
        resources: &[String],
        signal: Arc<Signal>,
        settings: &Settings,
    ) -> Vec<Watch> {
        let channels: Vec<String> = resources.iter().map(|r| released_channel(r)).collect();
        let limit = Duration::from_millis(settings.retry_delay_ms.max(50));
        let watches = self.nodes.iter().map(|node| {
            let (channels, signal) = (&channels, signal.clone());
            tokio::time::timeout(limit.min(node.config().command_timeout), async move {
                node.subscriber().await?.watch(channels, signal).await
            })
        });
        futures::future::join_all(watches)
            .await
            .into_iter()
            .filter_map(|w| w.ok()?.ok())
            .collect()
    }

    /// One attempt: all nodes in parallel, decided as soon as the outcome is known.
    pub async fn attempt(
        &self,
        op: Op,
        resources: &[String],
        value: &str,
        settings: &Settings,
    ) -> (AttemptStats, Result<i64, FailureKind>) {
        let n = self.nodes.len();
        let started = Instant::now();
        // One deadline for the whole attempt: no node waits past its command time-out,
        // and past the validity window no lock can be valid.
        let limit = self.command_timeout();
        let window = match op.ttl_ms() {
            Some(ttl) => attempt_window(ttl, settings.drift_factor).min(limit),
            None => limit,
        };
        let mut tally = Tally::new(n);
        let mut votes: Vec<Option<Vote>> = vec![None; n];
        // The fencing counters read by the nodes that voted for a fenced acquire.
        let mut counters: Vec<Option<i64>> = vec![None; n];

        // One command, built once, for every node; the per-node requests own what they
        // use, so that stragglers of a won attempt can finish in the background.
        let (script, cmd) = match op {
            Op::Acquire { ttl_ms } if settings.fencing => {
                let mut keys = resources.to_vec();
                keys.extend(resources.iter().map(|r| fence_key(r)));
                let (ttl, n) = (ttl_ms.to_string(), resources.len().to_string());
                (
                    &*FENCED_ACQUIRE_SCRIPT,
                    FENCED_ACQUIRE_SCRIPT.evalsha(&keys, &[value, &ttl, &n]),
                )
            }
            Op::Acquire { ttl_ms } => (
                &*ACQUIRE_SCRIPT,
                ACQUIRE_SCRIPT.evalsha(resources, &[value, &ttl_ms.to_string()]),
            ),
            Op::Extend { ttl_ms } => (
                &*EXTEND_SCRIPT,
                EXTEND_SCRIPT.evalsha(resources, &[value, &ttl_ms.to_string()]),
            ),
            Op::Release => (
                &*RELEASE_SCRIPT,
                RELEASE_SCRIPT.evalsha(resources, &[value]),
            ),
        };
        // A single-resource acquire is a plain `SET NX PX GET` where the server has it
        // (Redis 7): the same decision as the script, at a fraction of Redis' CPU.
        let fast = match (op, resources) {
            (Op::Acquire { ttl_ms }, [resource]) if !settings.fencing => {
                let mut set = redis::cmd("SET");
                set.arg(resource)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .arg("GET");
                Some(set)
            }
            _ => None,
        };
        let shared = Arc::new((cmd, fast, value.to_string()));
        let mut pending: FuturesUnordered<_> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (node, shared) = (node.clone(), shared.clone());
                async move {
                    let (cmd, fast, value) = &*shared;
                    (
                        i,
                        node_vote(&node, op, script, cmd, fast.as_ref(), value).await,
                    )
                }
            })
            .collect();
        let deadline = tokio::time::sleep(window);
        tokio::pin!(deadline);

        // Collect votes until the outcome is known. A lost acquire also waits (within the
        // deadline) for the nodes still answering, so that whatever they set is removed
        // before the attempt reports.
        let is_acquire = matches!(op, Op::Acquire { .. });
        let mut decision = Decision::Pending;
        loop {
            let draining = decision == Decision::Lost && is_acquire;
            if decision != Decision::Pending && !draining {
                break;
            }
            tokio::select! {
                next = pending.next() => match next {
                    Some((i, (vote, counter))) => {
                        let now = count(&mut tally, &vote);
                        if decision == Decision::Pending {
                            decision = now;
                        }
                        votes[i] = Some(vote);
                        counters[i] = counter;
                    }
                    None => break,
                },
                _ = &mut deadline => {
                    for (i, v) in votes.iter_mut().enumerate() {
                        if v.is_none() {
                            *v = Some(Vote::Failed(NodeError::Timeout {
                                addr: self.nodes[i].addr().to_string(),
                                ms: window.as_millis() as u64,
                            }));
                            tally.vote_failed();
                        }
                    }
                    if decision == Decision::Pending {
                        // Every vote is in now, so this is Won or Lost.
                        decision = tally.decision();
                    }
                    break;
                }
            }
        }
        if decision == Decision::Won {
            // Let the stragglers set the key too (a lock on more nodes survives more
            // crashes), without waiting for them.
            if !pending.is_empty() {
                let stragglers = self.stragglers.clone();
                let nodes = self.nodes.clone();
                let (resources, value) = (resources.to_vec(), value.to_string());
                let acquire = matches!(op, Op::Acquire { .. });
                stragglers
                    .running
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(limit, async {
                        while let Some((i, (vote, _))) = pending.next().await {
                            // Landed after the lock was released: take it back.
                            if acquire && vote == Vote::For && stragglers.was_released(&value) {
                                let release = RELEASE_SCRIPT.evalsha(&resources, &[&value]);
                                let _ = nodes[i].eval::<i64>(&RELEASE_SCRIPT, &release).await;
                            }
                        }
                    })
                    .await;
                    stragglers
                        .running
                        .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                });
            }
        } else {
            // Stop waiting. Requests already sent stay ordered before anything sent later
            // on the same connection, so the cleanup lands after them.
            drop(pending);
        }

        // Fencing: the successor of the highest counter a quorum holds, written back to a
        // quorum before the lock counts as acquired (and before its validity is measured).
        let mut fence = None;
        if decision == Decision::Won && settings.fencing && matches!(op, Op::Acquire { .. }) {
            let next = counters.iter().flatten().max().copied().unwrap_or(0) + 1;
            let left = window.saturating_sub(started.elapsed());
            if self.write_fence(resources, next, left).await {
                fence = Some(next);
            } else {
                decision = Decision::Lost;
            }
        }
        // Replication: a quorum of masters must have had the lock acknowledged by
        // `waitReplicas` replicas each, so that one failover cannot lose it.
        if decision == Decision::Won
            && settings.wait_replicas > 0
            && matches!(op, Op::Acquire { .. })
        {
            let left = window.saturating_sub(started.elapsed());
            if !self
                .wait_replicas(&votes, settings.wait_replicas, left)
                .await
            {
                decision = Decision::Lost;
            }
        }
        let mut outcome = match decision {
            Decision::Won => Ok(match op.ttl_ms() {
                Some(ttl) => validity_ms(ttl, started.elapsed(), settings.drift_factor),
                None => 0,
            }),
            // A lost fence write leaves the outcome to failures, not to another owner.
            _ if decision == Decision::Lost && tally.decision() == Decision::Won => {
                Err(FailureKind::Undecided)
            }
            _ => Err(tally.failure_kind()),
        };
        if let Ok(v) = outcome {
            if op.ttl_ms().is_some() && v <= 0 {
                outcome = Err(FailureKind::Undecided);
            }
        }
        if outcome.is_err() && matches!(op, Op::Acquire { .. }) {
            self.cleanup(&votes, resources, value).await;
        }
        let fence = fence.filter(|_| outcome.is_ok());
        (
            AttemptStats {
                votes,
                tally,
                fence,
            },
            outcome,
        )
    }

    /// Removes what a failed acquire may have set: waits for the nodes that voted for it
    /// (they answer), and sends the release in the background to nodes that never
    /// answered (it is queued behind the acquire on the same connection).
    async fn cleanup(&self, votes: &[Option<Vote>], resources: &[String], value: &str) {
        let limit = self.command_timeout();
        let release = Arc::new(RELEASE_SCRIPT.evalsha(resources, &[value]));
        let mut answered = Vec::new();
        for (node, vote) in self.nodes.iter().zip(votes) {
            let unanswered = match vote {
                Some(Vote::For) => {
                    answered.push(node);
                    false
                }
                Some(Vote::Failed(e)) => e.may_have_executed(),
                Some(Vote::Locked) => false,
                None => true,
            };
            if unanswered {
                let (node, release) = (node.clone(), release.clone());
                tokio::spawn(tokio::time::timeout(limit, async move {
                    let _ = node.eval::<i64>(&RELEASE_SCRIPT, &release).await;
                }));
            }
        }
        let _ = tokio::time::timeout(
            limit,
            futures::future::join_all(
                answered
                    .into_iter()
                    .map(|node| node.eval::<i64>(&RELEASE_SCRIPT, &release)),
            ),
        )
        .await;
    }

    /// `WAIT replicas` on the nodes that voted for the lock (on the connection that wrote
    /// it); `true` when a quorum of them had it acknowledged by enough replicas in time.
    async fn wait_replicas(&self, votes: &[Option<Vote>], replicas: u64, within: Duration) -> bool {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(within.as_millis().max(1) as u64);
        let acked = futures::future::join_all(
            self.nodes
                .iter()
                .zip(votes)
                .filter(|(_, v)| matches!(v, Some(Vote::For)))
                .map(|(node, _)| node.send::<u64>(&cmd)),
        );
        match tokio::time::timeout(within + Duration::from_millis(50), acked).await {
            Ok(results) => {
                let enough = results
                    .into_iter()
                    .filter(|r| matches!(r, Ok(n) if *n >= replicas))
                    .count();
                enough >= crate::engine::quorum::quorum_of(self.nodes.len())
            }
            Err(_) => false,
        }
    }

    /// Raises the fencing counters of `resources` to `fence` on every node; `true` once a
    /// quorum confirmed within `within`.
    async fn write_fence(&self, resources: &[String], fence: i64, within: Duration) -> bool {
        let keys: Vec<String> = resources.iter().map(|r| fence_key(r)).collect();
        let cmd = FENCE_SCRIPT.evalsha(&keys, &[&fence.to_string()]);
        let mut tally = Tally::new(self.nodes.len());
        let mut writes: FuturesUnordered<_> = self
            .nodes
            .iter()
            .map(|node| node.eval::<i64>(&FENCE_SCRIPT, &cmd))
            .collect();
        let decided = tokio::time::timeout(within, async {
            while let Some(result) = writes.next().await {
                let now = match result {
                    Ok(_) => tally.vote_for(),
                    Err(_) => tally.vote_failed(),
                };
                if now != Decision::Pending {
                    return now;
                }
            }
            Decision::Lost
        })
        .await;
        decided == Ok(Decision::Won)
    }

    /// The longest command time-out among the nodes: no attempt waits longer.
    fn command_timeout(&self) -> Duration {
        self.nodes
            .iter()
            .map(|n| n.config().command_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Closes every node's connection.
    pub async fn quit(&self) {
        futures::future::join_all(self.nodes.iter().map(|n| n.quit())).await;
    }
}

/// Waits for a release announcement (`true`), or the retry delay when none comes.
async fn wait_for(released: &Signal, settings: &Settings) -> bool {
    let pause = settings.retry_pause(random_unit());
    tokio::time::timeout(pause, released.notified())
        .await
        .is_ok()
}

/// Counts one vote.
fn count(tally: &mut Tally, vote: &Vote) -> Decision {
    match vote {
        Vote::For => tally.vote_for(),
        Vote::Locked => tally.vote_locked(),
        Vote::Failed(_) => tally.vote_failed(),
    }
}

/// One node's vote on `op`: the prebuilt `cmd` of `script`, or the `SET NX GET` of a
/// single-resource acquire (`fast`) where the node supports it. A fenced acquire also
/// returns the highest fencing counter the node holds.
async fn node_vote(
    node: &Node,
    op: Op,
    script: &LockScript,
    cmd: &redis::Cmd,
    fast: Option<&redis::Cmd>,
    value: &str,
) -> (Vote, Option<i64>) {
    if let Some(set) = fast.filter(|_| node.has_set_nx_get()) {
        match node.send::<Option<Vec<u8>>>(set).await {
            // Set, or already ours (a resend after a dropped connection).
            Ok(None) => return (Vote::For, None),
            Ok(Some(v)) if v == value.as_bytes() => return (Vote::For, None),
            Ok(Some(_)) => return (Vote::Locked, None),
            Err(e) if e.is_syntax_error() => node.lacks_set_nx_get(),
            Err(e) => return (Vote::Failed(e), None),
        }
    }
    if std::ptr::eq(script, &*FENCED_ACQUIRE_SCRIPT) {
        return match node.eval::<redis::Value>(script, cmd).await {
            Ok(redis::Value::Array(reply)) => match reply.as_slice() {
                [redis::Value::Int(1), redis::Value::Int(high)] => (Vote::For, Some(*high)),
                _ => (
                    Vote::Failed(unexpected(node, "a fenced acquire reply")),
                    None,
                ),
            },
            Ok(_) => (Vote::Locked, None),
            Err(e) => (Vote::Failed(e), None),
        };
    }
    let vote = match (op, node.eval::<i64>(script, cmd).await) {
        // Any answer to a release is a success: nothing of ours is left on that node.
        (Op::Release, Ok(_)) | (_, Ok(1)) => Vote::For,
        (_, Ok(_)) => Vote::Locked,
        (_, Err(e)) => Vote::Failed(e),
    };
    (vote, None)
}

fn unexpected(node: &Node, what: &str) -> NodeError {
    NodeError::Protocol {
        addr: node.addr().to_string(),
        reason: format!("not {what}"),
    }
}

/// Redlock over a [`Quorum`]: node-redlock's operations (`acquire`, `extend`, `release`
/// with per-call settings) and the seed API, which keeps one random value per held
/// resource inside the instance.
pub struct Redlock {
    quorum: Quorum,
    settings: Settings,
    /// The seed API's held locks: resource -> (value, fence).
    held: Mutex<HashMap<String, (String, Option<i64>)>>,
}

impl Redlock {
    pub fn new(quorum: Quorum, settings: Settings) -> Self {
        Redlock {
            quorum,
            settings,
            held: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Option<i64>)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks every resource (all or nothing) with a fresh random value.
    pub async fn acquire(
        &self,
        resources: &[String],
        ttl_ms: u64,
        settings: &Settings,
    ) -> (String, Execution) {
        let value = random_value();
        let exec = self
            .quorum
            .execute(Op::Acquire { ttl_ms }, resources, &value, settings)
            .await;
        (value, exec)
    }

    /// Resets the ttl of a lock we hold.
    pub async fn extend(
        &self,
        resources: &[String],
        value: &str,
        ttl_ms: u64,
        settings: &Settings,
    ) -> Execution {
        self.quorum
            .execute(Op::Extend { ttl_ms }, resources, value, settings)
            .await
    }

    /// Removes our keys; idempotent, succeeds once a quorum answered.
    pub async fn release(
        &self,
        resources: &[String],
        value: &str,
        settings: &Settings,
    ) -> Execution {
        self.quorum
            .execute(Op::Release, resources, value, settings)
            .await
    }

    /// The seed's `acquireLock`: `Some(true)`: acquired; `Some(false)`: another owner
    /// holds it; `None`: too many nodes failed to decide.
    pub async fn acquire_lock(&self, resource: String, ttl_ms: u64) -> (Option<bool>, Execution) {
        let resources = [resource];
        let (value, exec) = self.acquire(&resources, ttl_ms, &self.settings).await;
        let [resource] = resources;
        let result = match exec.outcome {
            Ok(_) => {
                self.held().insert(resource, (value, exec.fence));
                Some(true)
            }
            Err(FailureKind::Locked) => Some(false),
            Err(FailureKind::Undecided) => None,
        };
        (result, exec)
    }

    /// The fencing token of the lock this instance holds on `resource` (seed API, with
    /// `fencing`).
    pub fn fence_of(&self, resource: &str) -> Option<i64> {
        self.held().get(resource).and_then(|(_, fence)| *fence)
    }

    /// The seed's `releaseLock(resource, true)`: releases the lock this instance holds
    /// on `resource`, owner-checked. Nothing held: nothing to do. The execution's outcome
    /// is an error only when too many nodes could not be reached.
    pub async fn release_lock(&self, resource: String) -> Execution {
        let Some((value, _)) = self.held().get(&resource).cloned() else {
            return Execution::nothing_to_do();
        };
        let resources = [resource];
        let exec = self.release(&resources, &value, &self.settings).await;
        if exec.outcome.is_ok() {
            let [resource] = resources;
            let mut held = self.held();
            if held.get(&resource).is_some_and(|(v, _)| *v == value) {
                held.remove(&resource);
            }
        }
        exec
    }
}
