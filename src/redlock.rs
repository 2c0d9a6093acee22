//! `NativeRedlock`: the native side of the `Redlock` class. Parses arguments, calls the
//! engine, converts results into reports that the JavaScript layer turns into `Lock`s,
//! `ExecutionStats` and errors. One async call per JavaScript operation.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::JsValue;
use napi_derive::napi;

use crate::client::NativeClient;
use crate::engine::args;
use crate::engine::error::ArgError;
use crate::engine::quorum::FailureKind;
use crate::engine::redlock::{now_ms, Execution, Quorum, Redlock, Vote};
use crate::engine::settings::{Settings, SettingsPatch};
use crate::js::{self, check, classify, opt_number, type_error, Val};

/// Settings as JavaScript sees them.
#[napi(object)]
pub struct RedlockSettings {
    pub drift_factor: f64,
    pub retry_count: i64,
    pub retry_delay: i64,
    pub retry_jitter: i64,
    pub automatic_extension_threshold: i64,
}

impl From<&Settings> for RedlockSettings {
    fn from(s: &Settings) -> Self {
        RedlockSettings {
            drift_factor: s.drift_factor,
            retry_count: s.retry_count,
            retry_delay: s.retry_delay_ms as i64,
            retry_jitter: s.retry_jitter_ms as i64,
            automatic_extension_threshold: s.automatic_extension_threshold_ms as i64,
        }
    }
}

/// One node's vote in an attempt.
#[napi(object)]
pub struct VoteReport {
    /// Index of the client in the list given to the constructor.
    pub client: u32,
    /// `"for"`, `"locked"` (another owner holds a resource, or ours is gone) or
    /// `"error"` (the node failed: connection, time-out, server error).
    pub vote: String,
    pub message: Option<String>,
}

/// One attempt.
#[napi(object)]
pub struct AttemptReport {
    pub membership_size: u32,
    pub quorum_size: u32,
    pub votes: Vec<VoteReport>,
}

/// The result of one operation with its retries.
#[napi(object)]
pub struct ExecutionReport {
    pub ok: bool,
    /// Why it failed: `"locked"` (another owner) or `"undecided"` (too many failures).
    pub failure: Option<String>,
    /// The lock value (acquire).
    pub value: Option<String>,
    /// ms since the epoch when the operation started.
    pub start: f64,
    /// ms since the epoch until which the lock is valid (acquire, extend).
    pub expiration: f64,
    /// The last attempts (at most 100), oldest first.
    pub attempts: Vec<AttemptReport>,
    /// How many attempts were made in all.
    pub attempt_count: f64,
    /// The seed API's answer: `true`, `false` or `null` (acquireLock).
    pub acquired: Option<bool>,
}

fn report(exec: &Execution, requested: usize, value: Option<String>) -> ExecutionReport {
    let attempts = exec
        .attempts
        .iter()
        .map(|a| AttemptReport {
            membership_size: a.tally.n as u32,
            quorum_size: a.tally.quorum as u32,
            votes: a
                .votes
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let (vote, message) = match v.as_ref()? {
                        Vote::For => ("for", None),
                        Vote::Locked => (
                            "locked",
                            Some(format!(
                                "The operation was applied to: 0 of the {requested} requested resources."
                            )),
                        ),
                        Vote::Failed(e) => ("error", Some(e.to_string())),
                    };
                    Some(VoteReport {
                        client: i as u32,
                        vote: vote.to_string(),
                        message,
                    })
                })
                .collect(),
        })
        .collect();
    ExecutionReport {
        ok: exec.outcome.is_ok(),
        failure: exec.outcome.err().map(|k| {
            match k {
                FailureKind::Locked => "locked",
                FailureKind::Undecided => "undecided",
            }
            .to_string()
        }),
        value,
        start: exec.start_ms,
        expiration: exec.expiration_ms,
        attempts,
        attempt_count: exec.attempt_count as f64,
        acquired: None,
    }
}

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
}

#[napi]
impl NativeRedlock {
    /// `clients`: an array of `Redis` / `RedisJsClient` instances, one vote each.
    #[napi(
        constructor,
        catch_unwind,
        ts_args_type = "clients: Array<NativeClient>, settings?: Partial<RedlockSettings>"
    )]
    pub fn new(env: Env, clients: Option<Unknown>, settings: Option<Unknown>) -> Result<Self> {
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
        let mut nodes = Vec::with_capacity(items.len());
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
        Ok(NativeRedlock {
            inner: Arc::new(Redlock::new(Quorum::new(nodes), settings)),
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

    /// The seed's acquireLock; the report's `acquired` is `true`, `false` or `null`.
    #[napi(
        catch_unwind,
        ts_args_type = "resource: string, ttl: number",
        ts_return_type = "Promise<ExecutionReport>"
    )]
    pub fn acquire_lock<'env>(
        &self,
        env: &'env Env,
        resource: Option<Unknown>,
        ttl: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, ExecutionReport>> {
        let resource = resource_arg(env, "resource", resource)?;
        let ttl = duration_arg(env, "ttl", ttl)?;
        let inner = self.inner.clone();
        env.spawn_future(async move {
            let (acquired, exec) = inner.acquire_lock(resource, ttl).await;
            Ok(ExecutionReport {
                acquired,
                ..report(&exec, 1, None)
            })
        })
    }

    /// The seed's releaseLock: releases this instance's lock on `resource` when
    /// `lockValue` is `true`; does nothing for `false` / `null`.
    #[napi(
        catch_unwind,
        ts_args_type = "resource: string, lockValue: boolean | null",
        ts_return_type = "Promise<ExecutionReport>"
    )]
    pub fn release_lock<'env>(
        &self,
        env: &'env Env,
        resource: Option<Unknown>,
        lock_value: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, ExecutionReport>> {
        let resource = resource_arg(env, "resource", resource)?;
        let release = match classify(lock_value)? {
            Val::Bool(b) => b,
            Val::Missing => false,
            other => return Err(type_error(env, "lockValue", "a boolean or null", &other)),
        };
        let inner = self.inner.clone();
        env.spawn_future(async move {
            let exec = if release {
                inner.release_lock(resource).await
            } else {
                Execution::nothing_to_do()
            };
            Ok(report(&exec, 1, None))
        })
    }

    /// Locks every resource, all or nothing.
    #[napi(
        catch_unwind,
        ts_args_type = "resources: string[], duration: number, settings?: Partial<RedlockSettings>",
        ts_return_type = "Promise<ExecutionReport>"
    )]
    pub fn acquire<'env>(
        &self,
        env: &'env Env,
        resources: Option<Unknown>,
        duration: Option<Unknown>,
        settings: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, ExecutionReport>> {
        let resources = resources_arg(env, resources)?;
        let ttl = duration_arg(env, "Duration", duration)?;
        let settings = read_settings(env, "settings", settings, self.inner.settings())?;
        let inner = self.inner.clone();
        env.spawn_future(async move {
            let (value, exec) = inner.acquire(&resources, ttl, &settings).await;
            Ok(report(&exec, resources.len(), Some(value)))
        })
    }

    /// Resets the ttl of a held lock. A lock whose `expiration` (ms since the epoch) has
    /// passed is not extended: the report fails with `failure: "expired"`.
    #[napi(
        catch_unwind,
        ts_args_type = "resources: string[], value: string, expiration: number, duration: number, settings?: Partial<RedlockSettings>",
        ts_return_type = "Promise<ExecutionReport>"
    )]
    pub fn extend<'env>(
        &self,
        env: &'env Env,
        resources: Option<Unknown>,
        value: Option<Unknown>,
        expiration: f64,
        duration: Option<Unknown>,
        settings: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, ExecutionReport>> {
        let resources = resources_arg(env, resources)?;
        let value = value_arg(env, value)?;
        let ttl = duration_arg(env, "Duration", duration)?;
        let settings = read_settings(env, "settings", settings, self.inner.settings())?;
        let inner = self.inner.clone();
        env.spawn_future(async move {
            if expiration.is_nan() || expiration < now_ms() {
                return Ok(ExecutionReport {
                    ok: false,
                    failure: Some("expired".to_string()),
                    ..report(&Execution::nothing_to_do(), resources.len(), None)
                });
            }
            let exec = inner.extend(&resources, &value, ttl, &settings).await;
            Ok(report(&exec, resources.len(), None))
        })
    }

    /// Removes a lock's keys (owner-checked, idempotent).
    #[napi(
        catch_unwind,
        ts_args_type = "resources: string[], value: string, settings?: Partial<RedlockSettings>",
        ts_return_type = "Promise<ExecutionReport>"
    )]
    pub fn release<'env>(
        &self,
        env: &'env Env,
        resources: Option<Unknown>,
        value: Option<Unknown>,
        settings: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, ExecutionReport>> {
        let resources = resources_arg(env, resources)?;
        let value = value_arg(env, value)?;
        let settings = read_settings(env, "settings", settings, self.inner.settings())?;
        let inner = self.inner.clone();
        env.spawn_future(async move {
            let exec = inner.release(&resources, &value, &settings).await;
            Ok(report(&exec, resources.len(), None))
        })
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
