//! `NativeRedlock`: the native side of the `Redlock` class. Parses arguments, calls the
//! engine, and queues compact completions that the JavaScript layer turns into `Lock`s,
//! `ExecutionStats` and errors. One native call per JavaScript operation; results come
//! back in batches (see [`crate::completion`]).

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::JsValue;
use napi_derive::napi;

use crate::client::NativeClient;
use crate::completion::{Completer, Completion};
use crate::engine::args;
use crate::engine::error::ArgError;
use crate::engine::quorum::FailureKind;
use crate::engine::redlock::{now_ms, Execution, Quorum, Redlock, Vote};
use crate::engine::scripts::hash_slot;
use crate::engine::settings::{Settings, SettingsPatch};
use crate::js::{self, check, classify, opt_bool, opt_number, type_error, Val};

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
        }
    }
}

/// The compact completion of an operation (see [`Completion`]).
fn completion(id: u32, exec: &Execution, value: Option<String>) -> Completion {
    let mut errors = Vec::new();
    let attempts = exec
        .attempts
        .iter()
        .map(|a| {
            a.votes
                .iter()
                .map(|v| match v {
                    None => '-',
                    Some(Vote::For) => 'F',
                    Some(Vote::Locked) => 'L',
                    Some(Vote::Failed(e)) => {
                        errors.push(e.to_string());
                        'E'
                    }
                })
                .collect::<String>()
        })
        .collect();
    let status = match exec.outcome {
        Ok(_) => 0,
        Err(FailureKind::Locked) => 1,
        Err(FailureKind::Undecided) => 2,
    };
    (
        id,
        status,
        value,
        exec.expiration_ms,
        exec.start_ms,
        attempts,
        errors,
        exec.attempt_count as f64,
        exec.fence.map(|f| f.to_string()),
    )
}

/// Status of an extend refused because the lock had expired.
const EXPIRED: u32 = 3;

/// Reads a settings object (`undefined` means no changes) and applies it to `base`.
pub fn read_settings(
    env: &Env,
    name: &str,
    v: Option<Unknown>,
    base: &Settings,
) -> Result<Settings> {
    let o = match classify(v)? {
        Val::Missing => return Ok(*base),
        Val::Object(o) => o,
        other => return Err(type_error(env, name, "an object", &other)),
    };
    let patch = SettingsPatch {
        drift_factor: opt_number(env, &o, name, "driftFactor")?,
        retry_count: opt_number(env, &o, name, "retryCount")?,
        retry_delay: opt_number(env, &o, name, "retryDelay")?,
        retry_jitter: opt_number(env, &o, name, "retryJitter")?,
        automatic_extension_threshold: opt_number(env, &o, name, "automaticExtensionThreshold")?,
        fencing: opt_bool(env, &o, name, "fencing")?,
        wait_replicas: opt_number(env, &o, name, "waitReplicas")?,
    };
    check(env, base.apply(&patch))
}

fn resource_arg(env: &Env, name: &str, v: Option<Unknown>) -> Result<String> {
    match classify(v)? {
        Val::Str(s) => {
            check(env, args::resource(name, &s))?;
            Ok(s)
        }
        other => Err(type_error(env, name, "a non-empty string", &other)),
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
        .map(|(i, item)| resource_arg(env, &format!("resources[{i}]"), Some(item)))
        .collect()
}

/// A duration in ms; `name` is "Duration" or "ttl".
fn duration_arg(env: &Env, name: &str, v: Option<Unknown>) -> Result<u64> {
    match classify(v)? {
        Val::Num(n) => check(env, args::duration_ms(name, n)),
        other => Err(js::throw(
            env,
            ArgError::type_error(format!(
                "{name} must be an integer value in milliseconds. Got {}.",
                other.type_name()
            )),
        )),
    }
}

fn value_arg(env: &Env, v: Option<Unknown>) -> Result<String> {
    match classify(v)? {
        Val::Str(s) if !s.is_empty() => Ok(s),
        other => Err(type_error(env, "lock.value", "a non-empty string", &other)),
    }
}

#[napi]
pub struct NativeRedlock {
    inner: Arc<Redlock>,
    completer: Arc<Completer>,
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

#[napi]
impl NativeRedlock {
    /// `clients`: an array of `Redis` / `RedisJsClient` instances, one vote each.
    /// `complete(batch)` receives the completions of the operations started with an id.
    #[napi(
        constructor,
        catch_unwind,
        ts_args_type = "clients: Array<NativeClient>, settings: Partial<RedlockSettings> | undefined | null, complete: (batch: Array<[number, number, string | null, number, number, string[], string[], number, string | null]>) => void"
    )]
    pub fn new(
        env: Env,
        clients: Option<Unknown>,
        settings: Option<Unknown>,
        complete: Function<Vec<Completion>, ()>,
    ) -> Result<Self> {
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
                ArgError::type_error("clients must contain at least one Redis client."),
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
        let settings = read_settings(&env, "settings", settings, &Settings::default())?;
        let cluster = nodes.iter().any(|n| n.config().cluster.is_some());
        Ok(NativeRedlock {
            inner: Arc::new(Redlock::new(Quorum::new(nodes), settings)),
            completer: Completer::new(complete)?,
            cluster,
        })
    }

    #[napi(getter)]
    pub fn settings(&self) -> RedlockSettings {
        self.inner.settings().into()
    }

    /// This instance's settings with `overrides` applied and validated.
    #[napi(catch_unwind, ts_args_type = "overrides?: Partial<RedlockSettings>")]
    pub fn resolve_settings(
        &self,
        env: Env,
        overrides: Option<Unknown>,
    ) -> Result<RedlockSettings> {
        Ok((&read_settings(&env, "settings", overrides, self.inner.settings())?).into())
    }

    /// The seed's acquireLock; completes with status 0 (`true`), 1 (`false`) or 2 (`null`).
    #[napi(
        catch_unwind,
        ts_args_type = "id: number, resource: string, ttl: number"
    )]
    pub fn acquire_lock(
        &self,
        env: Env,
        id: u32,
        resource: Option<Unknown>,
        ttl: Option<Unknown>,
    ) -> Result<()> {
        let resource = resource_arg(&env, "resource", resource)?;
        let ttl = duration_arg(&env, "ttl", ttl)?;
        let inner = self.inner.clone();
        self.completer.spawn(id, async move {
            completion(id, &inner.acquire_lock(resource, ttl).await.1, None)
        });
        Ok(())
    }

    /// The fencing token (decimal) of the lock this instance holds on `resource` (seed
    /// API, with `fencing`), if any.
    #[napi(catch_unwind, ts_args_type = "resource: string")]
    pub fn fence_of(&self, env: Env, resource: Option<Unknown>) -> Result<Option<String>> {
        let resource = resource_arg(&env, "resource", resource)?;
        Ok(self.inner.fence_of(&resource).map(|f| f.to_string()))
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
        resource: Option<Unknown>,
        lock_value: Option<Unknown>,
    ) -> Result<()> {
        let resource = resource_arg(&env, "resource", resource)?;
        let release = match classify(lock_value)? {
            Val::Bool(b) => b,
            Val::Missing => false,
            other => return Err(type_error(&env, "lockValue", "a boolean or null", &other)),
        };
        let inner = self.inner.clone();
        self.completer.spawn(id, async move {
            let exec = if release {
                inner.release_lock(resource).await
            } else {
                Execution::nothing_to_do()
            };
            completion(id, &exec, None)
        });
        Ok(())
    }

    /// Locks every resource, all or nothing; the completion carries the lock value.
    #[napi(
        catch_unwind,
        ts_args_type = "id: number, resources: string[], duration: number, settings?: Partial<RedlockSettings>"
    )]
    pub fn acquire(
        &self,
        env: Env,
        id: u32,
        resources: Option<Unknown>,
        duration: Option<Unknown>,
        settings: Option<Unknown>,
    ) -> Result<()> {
        let resources = resources_arg(&env, resources)?;
        same_slot(&env, self.cluster, &resources)?;
        let ttl = duration_arg(&env, "Duration", duration)?;
        let settings = read_settings(&env, "settings", settings, self.inner.settings())?;
        let inner = self.inner.clone();
        self.completer.spawn(id, async move {
            let (value, exec) = inner.acquire(&resources, ttl, &settings).await;
            completion(id, &exec, Some(value))
        });
        Ok(())
    }

    /// Resets the ttl of a held lock. A lock whose `expiration` (ms since the epoch) has
    /// passed is not extended: it completes with status 3.
    #[napi(
        catch_unwind,
        ts_args_type = "id: number, resources: string[], value: string, expiration: number, duration: number, settings?: Partial<RedlockSettings>"
    )]
    #[allow(clippy::too_many_arguments)]
    pub fn extend(
        &self,
        env: Env,
        id: u32,
        resources: Option<Unknown>,
        value: Option<Unknown>,
        expiration: f64,
        duration: Option<Unknown>,
        settings: Option<Unknown>,
    ) -> Result<()> {
        let resources = resources_arg(&env, resources)?;
        let value = value_arg(&env, value)?;
        let ttl = duration_arg(&env, "Duration", duration)?;
        let settings = read_settings(&env, "settings", settings, self.inner.settings())?;
        let inner = self.inner.clone();
        self.completer.spawn(id, async move {
            if expiration.is_nan() || expiration < now_ms() {
                let mut c = completion(id, &Execution::nothing_to_do(), None);
                c.1 = EXPIRED;
                return c;
            }
            completion(
                id,
                &inner.extend(&resources, &value, ttl, &settings).await,
                None,
            )
        });
        Ok(())
    }

    /// Removes a lock's keys (owner-checked, idempotent).
    #[napi(
        catch_unwind,
        ts_args_type = "id: number, resources: string[], value: string, settings?: Partial<RedlockSettings>"
    )]
    pub fn release(
        &self,
        env: Env,
        id: u32,
        resources: Option<Unknown>,
        value: Option<Unknown>,
        settings: Option<Unknown>,
    ) -> Result<()> {
        let resources = resources_arg(&env, resources)?;
        let value = value_arg(&env, value)?;
        let settings = read_settings(&env, "settings", settings, self.inner.settings())?;
        let inner = self.inner.clone();
        self.completer.spawn(id, async move {
            completion(
                id,
                &inner.release(&resources, &value, &settings).await,
                None,
            )
        });
        Ok(())
    }

    /// Closes the connections of every client of this instance.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn quit<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let inner = self.inner.clone();
        env.spawn_future(async move {
            inner.quorum().quit().await;
            Ok(())
        })
    }
}
