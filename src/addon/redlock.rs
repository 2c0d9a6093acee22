//! `NativeRedlock`: the native side of the `Redlock` class. Parses arguments, calls the
//! engine, and queues compact completions that the JavaScript layer turns into `Lock`s,
//! `ExecutionStats` and errors. One native call per JavaScript operation; results come
//! back in batches (see [`crate::addon::completion`]).

use crate::engine::sync::Unpoisoned;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi::JsValue;
use napi_derive::napi;

use crate::addon::client::NativeClient;
use crate::addon::completion::{Batch, Completer, Completion, CompletionStatus};
use crate::addon::event_loop;
use crate::addon::js::{self, check, classify, field, opt_bool, opt_number, type_error, Val};
use crate::engine::args;
use crate::engine::error::ArgError;
use crate::engine::error::NodeError;
use crate::engine::kinds::Kind;
use crate::engine::quorum::FailureKind;
use crate::engine::redlock::{
    AttemptStats, Call, Cancel, Execution, LateVotes, Quorum, Redlock, Reports, Vote,
};
use crate::engine::scripts::hash_slot;
use crate::engine::settings::{self, Settings, SettingsPatch};

/// Redlock settings, with node-redlock v5's defaults.
#[napi(object)]
pub struct RedlockSettings {
    /// Clock drift allowance as a fraction of the ttl. Default 0.01.
    pub drift_factor: f64,
    /// Retries after the first attempt; -1 retries until acquired. Default 10.
    pub retry_count: i64,
    /// ms between attempts. Default 200.
    pub retry_delay: i64,
    /// Up to this many ms added to or taken from each delay at random. Default 100.
    pub retry_jitter: i64,
    /// ms before expiry at which `using()` extends the lock. Default 500.
    pub automatic_extension_threshold: i64,
    /// Give every acquired lock a fencing token (`lock.fence`, `redlock.fenceOf`).
    /// Default false.
    pub fencing: bool,
    /// After acquiring, wait (`WAIT`) until this many replicas of each master acknowledged
    /// the lock; fail the acquire when fewer than a quorum of masters got them. Default 0.
    pub wait_replicas: i64,
    /// The longest duration (ms) an acquire or extend may ask for (a `RangeError` above
    /// it: `using()` extends automatically, so long jobs need no long duration). Also how
    /// long a node known to have restarted sits out of acquires. Default 300000.
    pub max_duration: i64,
    /// Whether a node known to have restarted (its run_id changed) sits out of acquires
    /// and fence reads until it has been up for `maxDuration`. Turn off only for nodes
    /// that persist every write (`appendfsync always`). Default true.
    pub restart_quarantine: bool,
}

impl From<&Settings> for RedlockSettings {
    fn from(s: &Settings) -> Self {
        RedlockSettings {
            drift_factor: s.drift_factor,
            retry_count: s.retry_count,
            retry_delay: s.retry_delay_ms as i64,
            retry_jitter: s.retry_jitter_ms as i64,
            automatic_extension_threshold: s.automatic_extension_threshold_ms as i64,
            fencing: s.fencing,
            wait_replicas: s.wait_replicas as i64,
            max_duration: s.max_duration_ms as i64,
            restart_quarantine: s.restart_quarantine,
        }
    }
}

/// The votes of `attempts`, one string per attempt separated by commas (one character
/// per client: `F` for, `L` locked by another owner, `E` error, `-` no answer needed, `?`
/// an answer that comes later: see [`late`]), and the messages of the `E` votes in order.
fn encode_votes<'a>(attempts: impl Iterator<Item = &'a AttemptStats>) -> (String, Vec<String>) {
    let mut errors = Vec::new();
    let mut encoded = String::new();
    for (i, a) in attempts.enumerate() {
        if i > 0 {
            encoded.push(',');
        }
        // (Lower case: a vote against told already, as it came in or with its attempt.)
        let told = |n: usize| a.told.get(n) == Some(&true);
        encoded.extend(a.votes.iter().enumerate().map(|(n, v)| match v {
            None if a.late => '?',
            None => '-',
            Some(Vote::For) => 'F',
            Some(Vote::Locked) if told(n) => 'l',
            Some(Vote::Locked) => 'L',
            Some(Vote::Failed(e)) => {
                errors.push(e.to_string());
                if told(n) {
                    'e'
                } else {
                    'E'
                }
            }
        }));
    }
    (encoded, errors)
}

/// The completion of an operation (see [`Completion`]): its outcome and reason are the
/// engine's.
fn completion(id: u32, exec: &Execution, value: Option<String>) -> Completion {
    let (attempts, errors) = encode_votes(exec.attempts.iter());
    let status = match exec.outcome {
        Ok(_) => CompletionStatus::Done,
        Err(FailureKind::Locked) => CompletionStatus::Locked,
        Err(FailureKind::Undecided) => CompletionStatus::Undecided,
        Err(FailureKind::Expired) => CompletionStatus::Expired,
        Err(FailureKind::Aborted) => CompletionStatus::Aborted,
    };
    Completion {
        id,
        status,
        reason: exec.outcome.err().map(FailureKind::reason),
        value,
        expiration: exec.expiration_ms,
        start: exec.start_ms,
        attempts,
        errors,
        fence: exec.fence.map(|f| f.to_string()),
        slot: exec.slot,
    }
}

/// An attempt that is not the operation's last, for the events of its votes against.
fn progress(id: u32, stats: &AttemptStats) -> Completion {
    votes_only(
        id,
        CompletionStatus::Progress,
        (stats.votes.clone(), stats.told.clone()),
    )
}

/// Node `i`'s failure (of `n` nodes) in an attempt still under way, for its events.
fn failed(id: u32, n: usize, i: usize, e: &NodeError) -> Completion {
    let mut votes = vec![None; n];
    votes[i] = Some(Vote::Failed(e.clone()));
    votes_only(id, CompletionStatus::Failed, (votes, Vec::new()))
}

/// The complete votes of an operation's last attempt, decided before every node answered.
fn late(id: u32, votes: Vec<Option<Vote>>) -> Completion {
    votes_only(id, CompletionStatus::Late, (votes, Vec::new()))
}

/// A message of `status` that carries one attempt's votes and nothing else.
fn votes_only(
    id: u32,
    status: CompletionStatus,
    (votes, told): (Vec<Option<Vote>>, Vec<bool>),
) -> Completion {
    let stats = AttemptStats {
        tally: crate::engine::quorum::Tally::new(votes.len()),
        votes,
        holders: Vec::new(),
        fence: None,
        late: false,
        slot: None,
        kept: false,
        told,
    };
    let (attempts, errors) = encode_votes(std::iter::once(&stats));
    Completion {
        attempts,
        errors,
        ..Completion::bare(id, status)
    }
}

/// What a semaphore or read-write lock operation holds (`undefined`: a mutex).
#[napi(object)]
pub struct HoldKind {
    /// `"mutex"`, `"permit"`, `"read"` or `"write"`.
    pub kind: String,
    /// A semaphore's permits.
    pub permits: Option<u32>,
    /// The slot a held permit occupies (extend and release).
    pub slot: Option<u32>,
}

/// The message of a semaphore read without a quorum of answers: a line, then a line
/// `index<TAB>message` for each node that failed (the JavaScript layer makes the error's
/// `cause` of them).
fn unavailable(failed: &[(usize, NodeError)]) -> String {
    let mut message =
        String::from("The operation was unable to achieve a quorum during its retry window.");
    for (i, e) in failed {
        let said = e.to_string().replace(['\n', '\t'], " ");
        message.push_str(&format!("\n{i}\t{said}"));
    }
    message
}

thread_local! {
    /// The instances made on this thread whose operations run on the I/O threads (see
    /// [`end_with_environment`]), and whether the environment's teardown ends them.
    static ON_IO_THREADS: std::cell::RefCell<(Vec<std::sync::Weak<Ops>>, bool)> =
        const { std::cell::RefCell::new((Vec::new(), false)) };
}

/// With the engine on the I/O threads, operations outlive the JavaScript environment that
/// started them (a worker terminated): a waiting acquire would take a lock that nobody
/// can release. The environment's teardown ends those of its instances (as on the
/// JavaScript thread, where they go with its runtime).
fn end_with_environment(env: &Env, ops: &Arc<Ops>) {
    let hook = ON_IO_THREADS.with(|o| {
        let mut o = o.borrow_mut();
        o.0.retain(|w| w.strong_count() > 0);
        o.0.push(Arc::downgrade(ops));
        !std::mem::replace(&mut o.1, true)
    });
    if hook {
        let _ = env.add_env_cleanup_hook((), |_| {
            let live = ON_IO_THREADS.with(|o| std::mem::take(&mut *o.borrow_mut()).0);
            for ops in live.iter().filter_map(std::sync::Weak::upgrade) {
                ops.inner.quorum().close_now();
            }
        });
    }
}

/// The hold an operation is about; semaphores and read-write locks name one resource.
fn kind_arg(env: &Env, kind: Option<HoldKind>, resources: &[String]) -> Result<Kind> {
    let Some(k) = kind else {
        return Ok(Kind::Mutex);
    };
    let kind = match (k.kind.as_str(), k.permits) {
        ("mutex", _) => return Ok(Kind::Mutex),
        ("permit", Some(permits)) if (1..=MAX_PERMITS).contains(&permits) => Kind::Permit {
            permits,
            slot: k.slot.unwrap_or(0).min(permits - 1),
        },
        ("permit", _) => {
            return Err(js::throw(
                env,
                ArgError::range_error(format!(
                    "permits must be an integer from 1 to {MAX_PERMITS}."
                )),
            ))
        }
        ("read", _) => Kind::Read,
        ("write", _) => Kind::Write,
        (other, _) => {
            return Err(js::throw(
                env,
                ArgError::type_error(format!(
                    "kind must be mutex, permit, read or write; got {other}."
                )),
            ))
        }
    };
    if resources.len() != 1 {
        return Err(js::throw(
            env,
            ArgError::type_error("a semaphore or read-write lock has exactly one resource."),
        ));
    }
    Ok(kind)
}

/// The most permits a semaphore may have (each is a key on every node).
pub const MAX_PERMITS: u32 = 10_000;

/// What a call's settings object holds: the settings, and whether it has a `signal`
/// (which the JavaScript layer wires to [`NativeRedlock::abort`]).
pub struct CallSettings {
    pub settings: Settings,
    pub signal: bool,
}

/// Reads a settings object (`undefined` means no changes) and applies it to `base`.
pub fn read_settings(
    env: &Env,
    name: &str,
    v: Option<Unknown>,
    base: &Settings,
    per_call: bool,
) -> Result<CallSettings> {
    let o = match classify(v)? {
        Val::Missing(_) => {
            return Ok(CallSettings {
                settings: *base,
                signal: false,
            })
        }
        Val::Object(o) => o,
        other => return Err(type_error(env, name, "an object", &other)),
    };
    for key in Object::keys(&o)? {
        check(env, settings::check_key(name, &key))?;
    }
    let patch = SettingsPatch {
        drift_factor: opt_number(env, &o, name, "driftFactor")?,
        retry_count: opt_number(env, &o, name, "retryCount")?,
        retry_delay: opt_number(env, &o, name, "retryDelay")?,
        retry_jitter: opt_number(env, &o, name, "retryJitter")?,
        automatic_extension_threshold: opt_number(env, &o, name, "automaticExtensionThreshold")?,
        fencing: opt_bool(env, &o, name, "fencing")?,
        wait_replicas: opt_number(env, &o, name, "waitReplicas")?,
        max_duration: opt_number(env, &o, name, "maxDuration")?,
        restart_quarantine: opt_bool(env, &o, name, "restartQuarantine")?,
    };
    let settings = check(env, base.apply(&patch))?;
    // A call may not raise the instance's maxDuration: restarted nodes sit out for the
    // instance's, so a longer lock could outlive that (two holders after a restart).
    if per_call && settings.max_duration_ms > base.max_duration_ms {
        return Err(js::throw(
            env,
            crate::engine::error::ArgError::range_error(format!(
                "{name}.maxDuration ({} ms) cannot be above the instance's settings.maxDuration ({} ms): restarted nodes sit out for the instance's. Raise it on the Redlock instead.",
                settings.max_duration_ms, base.max_duration_ms
            )),
        ));
    }
    Ok(CallSettings {
        settings,
        signal: !matches!(field(&o, "signal")?, Val::Missing(_)),
    })
}

fn resource_arg(
    env: &Env,
    name: impl std::fmt::Display + Copy,
    v: Option<Unknown>,
) -> Result<String> {
    match classify(v)? {
        Val::Str(s) => {
            check(env, args::resource(name, &s))?;
            Ok(s)
        }
        other => Err(type_error(
            env,
            &name.to_string(),
            "a non-empty string",
            &other,
        )),
    }
}

/// A non-empty array of non-empty strings.
fn resources_arg(env: &Env, v: Option<Unknown>) -> Result<Vec<String>> {
    let items = match classify(v)? {
        Val::Array(items) if !items.is_empty() => items,
        Val::Array(_) => {
            return Err(js::throw(
                env,
                ArgError::type_error("resources must be a non-empty array of strings."),
            ))
        }
        other => return Err(type_error(env, "resources", "an array of strings", &other)),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| resource_arg(env, format_args!("resources[{i}]"), Some(item)))
        .collect()
}

/// A duration in ms within `settings.maxDuration`: the seed's `ttl`, or node-redlock's
/// `Duration` (whose message is node-redlock's, exactly).
fn duration_arg(env: &Env, name: &str, v: Option<Unknown>, settings: &Settings) -> Result<u64> {
    let ms = match (classify(v)?, name) {
        (Val::Num(n), "Duration") => check(env, args::v5_duration_ms(n))?,
        (Val::Num(n), _) => check(env, args::duration_ms(name, n))?,
        (_, "Duration") => {
            return Err(js::throw(
                env,
                ArgError::type_error("Duration must be an integer value in milliseconds."),
            ))
        }
        (other, _) => {
            return Err(js::throw(
                env,
                ArgError::type_error(format!(
                    "{name} must be an integer value in milliseconds. Got {}.",
                    other.type_name()
                )),
            ))
        }
    };
    check(
        env,
        args::within_max_duration(name, ms, settings.max_duration_ms),
    )
}

fn value_arg(env: &Env, v: Option<Unknown>) -> Result<String> {
    match classify(v)? {
        Val::Str(s) if !s.is_empty() => Ok(s),
        other => Err(type_error(env, "lock.value", "a non-empty string", &other)),
    }
}

#[napi]
pub struct NativeRedlock {
    ops: Arc<Ops>,
}

/// What the operations of one `NativeRedlock` need, shared with the handle through which
/// the JavaScript layer starts acquires, extends and releases (see [`crate::addon::calls`]).
pub struct Ops {
    inner: Arc<Redlock>,
    completer: Arc<Completer>,
    /// Whether anyone listens for `error` / `clientError` events: then every attempt
    /// that is not an operation's last reports its votes as it ends.
    listening: AtomicBool,
    /// The abort switches of operations started with a `signal`, by id.
    cancels: Mutex<HashMap<u32, Arc<Cancel>>>,
    /// Whether a client is a Redis Cluster: the resources of one lock must share a slot.
    cluster: bool,
}

/// With a Redis Cluster among the clients, one lock's keys must be in one hash slot.
fn same_slot(env: &Env, cluster: bool, resources: &[String]) -> Result<()> {
    if !cluster || resources.len() < 2 {
        return Ok(());
    }
    let slots: Vec<u16> = resources.iter().map(|r| hash_slot(r)).collect();
    if slots.iter().all(|s| *s == slots[0]) {
        return Ok(());
    }
    let shown: Vec<String> = resources
        .iter()
        .zip(&slots)
        .map(|(r, s)| format!("{r} -> {s}"))
        .collect();
    Err(js::throw(
        env,
        ArgError::type_error(format!(
            "resources span several Redis Cluster hash slots ({}); give them a common hash tag so that one lock can cover them, e.g. {{order:42}}:items and {{order:42}}:payment.",
            shown.join(", ")
        )),
    ))
}

/// An operation's events, as completions (only while someone listens).
struct Reporter<'a> {
    id: u32,
    ops: &'a Ops,
}

impl Reports for Reporter<'_> {
    fn attempt(&self, stats: &AttemptStats) -> bool {
        let listening = self.ops.listening.load(Ordering::Relaxed);
        if listening {
            self.ops.completer.push(progress(self.id, stats));
        }
        listening
    }

    fn failed(&self, i: usize, e: &NodeError) -> bool {
        let listening = self.ops.listening.load(Ordering::Relaxed);
        if listening {
            let n = self.ops.inner.quorum().nodes().len();
            self.ops.completer.push(failed(self.id, n, i, e));
        }
        listening
    }
}

/// Everything an operation's future needs.
struct Op {
    id: u32,
    ops: Arc<Ops>,
    settings: Settings,
    /// Its abort switch, when it has a `signal`.
    cancel: Option<Arc<Cancel>>,
    kind: Kind,
}

impl Op {
    /// Whether an `AbortSignal` may stop it.
    fn abortable(&self) -> bool {
        self.cancel.is_some()
    }

    /// Runs `f` with the operation's [`Call`]: its settings, its progress reports (only
    /// while someone listens) and its abort switch.
    async fn run<T, F>(self, f: F) -> T
    where
        F: AsyncFnOnce(&Redlock, &Call<'_>) -> T,
    {
        let (id, ops) = (self.id, &*self.ops);
        let late_votes = || -> LateVotes {
            let completer = ops.completer.clone();
            Box::new(move |votes| completer.push(late(id, votes)))
        };
        let reports = Reporter { id, ops };
        let call = Call {
            progress: Some(&reports),
            late: Some(&late_votes),
            cancel: self.cancel.as_deref(),
            kind: self.kind,
            ..Call::new(&self.settings)
        };
        let out = f(&ops.inner, &call).await;
        if self.cancel.is_some() {
            ops.cancels.locked().remove(&id);
        }
        out
    }
}

#[napi]
impl NativeRedlock {
    /// `clients`: an array of `Redis` / `RedisJsClient` instances, one vote each.
    /// `complete(...batch)` receives the completions of the operations started with an id
    /// (see `Batch`).
    #[napi(
        constructor,
        catch_unwind,
        ts_args_type = "clients: Array<NativeClient>, settings: Partial<RedlockSettings> | undefined | null, complete: (...batch: Array<number | string>) => void"
    )]
    pub fn new(
        env: Env,
        clients: Option<Unknown>,
        settings: Option<Unknown>,
        complete: Function<Batch, ()>,
    ) -> Result<Self> {
        event_loop::init(&env);
        let items = match classify(clients)? {
            Val::Array(items) => items,
            other => {
                return Err(type_error(
                    &env,
                    "clients",
                    "an array of Redis clients",
                    &other,
                ))
            }
        };
        if items.is_empty() {
            return Err(js::throw(
                &env,
                ArgError::type_error(
                    "Redlock must be instantiated with at least one redis client.",
                ),
            ));
        }
        let mut nodes: Vec<Arc<crate::engine::node::Node>> = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            // The class's type tag is checked here, so a look-alike object is refused.
            let client = match unsafe {
                ClassInstance::<NativeClient>::from_napi_value(env.raw(), item.raw())
            } {
                Ok(c) => c,
                Err(_) => {
                    let got = classify(Some(item))?;
                    return Err(type_error(
                        &env,
                        &format!("clients[{i}]"),
                        "a Redis, RedisJsClient, ioredis or node-redis client",
                        &got,
                    ));
                }
            };
            nodes.push(client.node.clone());
        }
        let settings =
            read_settings(&env, "settings", settings, &Settings::default(), false)?.settings;
        let cluster = nodes.iter().any(|n| n.config().cluster.is_some());
        let ops = Arc::new(Ops {
            inner: Arc::new(Redlock::new(Quorum::new(nodes), settings)),
            completer: Completer::new(&env, complete)?,
            listening: AtomicBool::default(),
            cancels: Mutex::default(),
            cluster,
        });
        if !event_loop::runs_here() {
            end_with_environment(&env, &ops);
        }
        Ok(NativeRedlock { ops })
    }

    #[napi(getter)]
    pub fn settings(&self) -> RedlockSettings {
        self.ops.inner.settings().into()
    }

    /// The handle to pass to `lockAcquire`, `lockExtend` and `lockRelease`.
    #[napi(getter, ts_return_type = "ExternalObject<unknown>")]
    pub fn handle(&self) -> External<Arc<Ops>> {
        External::new(self.ops.clone())
    }

    /// This instance's settings with `overrides` applied and validated.
    #[napi(catch_unwind, ts_args_type = "overrides?: Partial<RedlockSettings>")]
    pub fn resolve_settings(
        &self,
        env: Env,
        overrides: Option<Unknown>,
    ) -> Result<RedlockSettings> {
        Ok(
            (&read_settings(&env, "settings", overrides, self.ops.inner.settings(), true)?
                .settings)
                .into(),
        )
    }

    /// Whether anyone listens for `error` / `clientError` events (then failed attempts
    /// report their votes as they end, not only when the operation settles).
    #[napi]
    pub fn set_listening(&self, listening: bool) {
        self.ops.listening.store(listening, Ordering::Relaxed);
    }

    /// Aborts operation `id` (its `signal` fired): it completes at once with status
    /// `ABORTED`, after removing any keys its attempt set.
    #[napi]
    pub fn abort(&self, id: u32) {
        let cancel = self.ops.cancels.locked().remove(&id);
        if let Some(c) = cancel {
            c.cancel();
        }
    }

    /// The seed's acquireLock; completes with status 0 (`true`), 1 (`false`) or 2 (`null`).
    #[napi(
        catch_unwind,
        ts_args_type = "id: number, resource: string, ttl: number"
    )]
    pub fn acquire_lock(&self, env: Env, id: u32, resource: Unknown, ttl: Unknown) -> Result<()> {
        let resource = resource_arg(&env, "resource", Some(resource))?;
        // (Taken as it is: an optional argument would make `null` look like `undefined`.)
        let ttl = duration_arg(&env, "ttl", Some(ttl), self.ops.inner.settings())?;
        let op = self.seed_op(id);
        self.ops.completer.spawn(id, op.abortable(), async move {
            let exec = op
                .run(async |r: &Redlock, call: &Call<'_>| {
                    r.acquire_lock(resource, ttl, call).await.1
                })
                .await;
            completion(id, &exec, None)
        });
        Ok(())
    }

    /// A seed API operation: a mutex, with this instance's settings, no signal.
    fn seed_op(&self, id: u32) -> Op {
        let settings = CallSettings {
            settings: *self.ops.inner.settings(),
            signal: false,
        };
        self.ops.op(id, settings, Kind::Mutex)
    }

    /// The fencing token (decimal) of the lock this instance holds on `resource` (seed
    /// API, with `fencing`), if any.
    #[napi(catch_unwind, ts_args_type = "resource: string")]
    pub fn fence_of(&self, env: Env, resource: Unknown) -> Result<Option<String>> {
        let resource = resource_arg(&env, "resource", Some(resource))?;
        Ok(self.ops.inner.fence_of(&resource).map(|f| f.to_string()))
    }

    /// The seed's releaseLock: releases this instance's lock on `resource` when
    /// `lockValue` is `true`; does nothing for `false` / `null`.
    #[napi(
        catch_unwind,
        ts_args_type = "id: number, resource: string, lockValue: boolean | null"
    )]
    pub fn release_lock(
        &self,
        env: Env,
        id: u32,
        resource: Unknown,
        lock_value: Option<Unknown>,
    ) -> Result<()> {
        let resource = resource_arg(&env, "resource", Some(resource))?;
        let release = match classify(lock_value)? {
            Val::Bool(b) => b,
            Val::Missing(_) => false,
            other => return Err(type_error(&env, "lockValue", "a boolean or null", &other)),
        };
        let op = self.seed_op(id);
        self.ops.completer.spawn(id, false, async move {
            let exec = if release {
                op.run(async |r: &Redlock, call: &Call<'_>| r.release_lock(resource, call).await)
                    .await
            } else {
                Execution::nothing_to_do()
            };
            completion(id, &exec, None)
        });
        Ok(())
    }

    /// How many holders semaphore `resource` of `permits` has as a quorum sees them;
    /// rejects when fewer than a quorum of nodes answer.
    #[napi(catch_unwind, ts_return_type = "Promise<number>")]
    pub fn holders<'env>(
        &self,
        env: &'env Env,
        resource: String,
        permits: u32,
    ) -> Result<PromiseRaw<'env, u32>> {
        let inner = self.ops.inner.clone();
        event_loop::promise(env, async move {
            inner
                .quorum()
                .holders(&resource, permits)
                .await
                .map_err(|failed| Error::from_reason(unavailable(&failed)))
        })
    }

    /// Ends the acquires under way and every later one, and keeps releases from handing a
    /// lock over (the start of `quit()`).
    #[napi(catch_unwind)]
    pub fn stop_acquires(&self) {
        self.ops.inner.quorum().stop_acquires();
    }

    /// Closes the connections of every client of this instance but those at the indices
    /// `keep` (connections other instances share).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn quit<'env>(
        &self,
        env: &'env Env,
        keep: Option<Vec<u32>>,
    ) -> Result<PromiseRaw<'env, ()>> {
        let inner = self.ops.inner.clone();
        let keep: Vec<usize> = keep
            .unwrap_or_default()
            .into_iter()
            .map(|i| i as usize)
            .collect();
        event_loop::promise_unpolled(env, async move {
            inner.quorum().quit(&keep).await;
            Ok(())
        })
    }
}

/// The lock operations of the v5 API, started through a `NativeRedlock`'s handle (see
/// [`crate::addon::calls`], which gives them their JavaScript arguments).
impl Ops {
    /// An operation `id` with `settings`, abortable when they have a `signal`.
    fn op(self: &Arc<Self>, id: u32, call: CallSettings, kind: Kind) -> Op {
        let cancel = call.signal.then(|| {
            let c = Arc::new(Cancel::default());
            self.cancels.locked().insert(id, c.clone());
            c
        });
        Op {
            id,
            ops: self.clone(),
            settings: call.settings,
            cancel,
            kind,
        }
    }

    /// Locks every resource, all or nothing; the completion carries the lock value.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn acquire(
        self: &Arc<Self>,
        env: &Env,
        id: u32,
        resources: Option<Unknown>,
        duration: Option<Unknown>,
        settings: Option<Unknown>,
        kind: Option<HoldKind>,
    ) -> Result<()> {
        let resources = resources_arg(env, resources)?;
        same_slot(env, self.cluster, &resources)?;
        let kind = kind_arg(env, kind, &resources)?;
        let call = read_settings(env, "settings", settings, self.inner.settings(), true)?;
        let ttl = duration_arg(env, "Duration", duration, &call.settings)?;
        let op = self.op(id, call, kind);
        self.completer.spawn(id, op.abortable(), async move {
            let (value, exec) = op
                .run(async |r: &Redlock, call: &Call<'_>| r.acquire(&resources, ttl, call).await)
                .await;
            completion(id, &exec, Some(value))
        });
        Ok(())
    }

    /// Resets the ttl of a held lock. A lock whose `expiration` (ms since the epoch) has
    /// passed is not extended (status `EXPIRED`); retries stop when it expires.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn extend(
        self: &Arc<Self>,
        env: &Env,
        id: u32,
        resources: Option<Unknown>,
        value: Option<Unknown>,
        expiration: f64,
        duration: Option<Unknown>,
        settings: Option<Unknown>,
        kind: Option<HoldKind>,
    ) -> Result<()> {
        let resources = resources_arg(env, resources)?;
        let value = value_arg(env, value)?;
        let kind = kind_arg(env, kind, &resources)?;
        let call = read_settings(env, "settings", settings, self.inner.settings(), true)?;
        let ttl = duration_arg(env, "Duration", duration, &call.settings)?;
        let op = self.op(id, call, kind);
        self.completer.spawn(id, op.abortable(), async move {
            let exec = op
                .run(async |r: &Redlock, call: &Call<'_>| {
                    r.extend(&resources, &value, ttl, expiration, call).await
                })
                .await;
            completion(id, &exec, None)
        });
        Ok(())
    }

    /// Removes a lock's keys (owner-checked, idempotent); retries stop once the lock has
    /// expired at `expiration` (ms since the epoch; NaN: unknown), when nothing is left to
    /// protect.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn release(
        self: &Arc<Self>,
        env: &Env,
        id: u32,
        resources: Option<Unknown>,
        value: Option<Unknown>,
        expiration: f64,
        settings: Option<Unknown>,
        kind: Option<HoldKind>,
    ) -> Result<()> {
        let resources = resources_arg(env, resources)?;
        let value = value_arg(env, value)?;
        let kind = kind_arg(env, kind, &resources)?;
        // A release is not aborted by a signal: it is what cleans up.
        let call = CallSettings {
            signal: false,
            ..read_settings(env, "settings", settings, self.inner.settings(), true)?
        };
        let op = self.op(id, call, kind);
        self.completer.spawn(id, op.abortable(), async move {
            let exec = op
                .run(async |r: &Redlock, call: &Call<'_>| {
                    r.release_by(&resources, &value, expiration, call).await
                })
                .await;
            completion(id, &exec, None)
        });
        Ok(())
    }
}
