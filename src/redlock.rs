//! `NativeRedlock`: the native side of the `Redlock` class. Parses arguments, calls the
//! engine, converts results. One async call per JavaScript operation.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::JsValue;
use napi_derive::napi;

use crate::client::NativeClient;
use crate::engine::args;
use crate::engine::redlock::{Quorum, Redlock};
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

fn resource_arg(env: &Env, v: Option<Unknown>) -> Result<String> {
    match classify(v)? {
        Val::Str(s) => {
            check(env, args::resource("resource", &s))?;
            Ok(s)
        }
        other => Err(type_error(env, "resource", "a non-empty string", &other)),
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
                crate::engine::error::ArgError::type_error(
                    "clients must contain at least one Redis client.",
                ),
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

    /// Resolves `true` when acquired, `false` when another owner holds it, `null` when
    /// too many instances failed to decide.
    #[napi(
        catch_unwind,
        ts_args_type = "resource: string, ttl: number",
        ts_return_type = "Promise<boolean | null>"
    )]
    pub fn acquire_lock<'env>(
        &self,
        env: &'env Env,
        resource: Option<Unknown>,
        ttl: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, Option<bool>>> {
        let resource = resource_arg(env, resource)?;
        let ttl = match classify(ttl)? {
            Val::Num(n) => check(env, args::duration_ms("ttl", n))?,
            other => {
                return Err(type_error(
                    env,
                    "ttl",
                    "an integer number of milliseconds",
                    &other,
                ))
            }
        };
        let inner = self.inner.clone();
        env.spawn_future(async move { Ok(inner.acquire_lock(resource, ttl).await) })
    }

    /// Releases this instance's lock on `resource` when `lockValue` is `true`; does
    /// nothing for `false` / `null`.
    #[napi(
        catch_unwind,
        ts_args_type = "resource: string, lockValue: boolean | null",
        ts_return_type = "Promise<void>"
    )]
    pub fn release_lock<'env>(
        &self,
        env: &'env Env,
        resource: Option<Unknown>,
        lock_value: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, ()>> {
        let resource = resource_arg(env, resource)?;
        let release = match classify(lock_value)? {
            Val::Bool(b) => b,
            Val::Missing => false,
            other => return Err(type_error(env, "lockValue", "a boolean or null", &other)),
        };
        let inner = self.inner.clone();
        env.spawn_future(async move {
            if release {
                inner.release_lock(resource).await.map_err(|_| {
                    Error::from_reason(
                        "The operation was unable to achieve a quorum during its retry window.",
                    )
                })?;
            }
            Ok(())
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
