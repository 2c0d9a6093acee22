//! `lockAcquire`, `lockExtend` and `lockRelease`: the lock operations of the v5 API as
//! plain functions of the module, called with their `NativeRedlock`'s `handle` first.
//!
//! They are the calls of every lock cycle, so they skip what napi-rs wraps around a
//! `#[napi]` method: a borrow scope (an allocation, a thread-local stack, and a global
//! lock and map for the receiver's borrow per call) and the check of the class's type tag
//! (a private-symbol lookup). Together those were 4% of the process CPU of an
//! acquire+release on one server (`perf`, 64 loops). The handle is an `External`, checked
//! by napi-rs' own registry of external payloads (a map lookup); arguments are read as
//! the generated glue reads them, errors and panics thrown as it throws them.
//!
//! napi-rs keeps one `module_exports` hook per module: a second one would replace
//! [`define`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use crate::addon::redlock::Ops;

/// What a call does with its arguments after the handle.
type Start = fn(&Arc<Ops>, &Env, &[sys::napi_value; ARGS]) -> Result<()>;

/// The most arguments a call reads after the handle (`lockExtend`'s seven); the ones not
/// given are `undefined`.
const ARGS: usize = 7;

/// `v` as a `T`, as the generated glue converts an argument of type `T`.
fn arg<T: FromNapiValue>(env: &Env, v: sys::napi_value) -> Result<T> {
    // SAFETY: `v` is an argument of the call under way in `env`.
    unsafe { T::from_napi_value(env.raw(), v) }
}

fn acquire(ops: &Arc<Ops>, env: &Env, a: &[sys::napi_value; ARGS]) -> Result<()> {
    // (The resources as given, `null` too: `Option` would read `null` as not given.)
    let (id, resources, duration) = (arg(env, a[0])?, arg::<Unknown>(env, a[1])?, arg(env, a[2])?);
    ops.acquire(
        env,
        id,
        Some(resources),
        duration,
        arg(env, a[3])?,
        arg(env, a[4])?,
    )
}

/// What a call on a held lock reads first: its id, resources, value and expiration.
fn held<'a>(env: &Env, a: &[sys::napi_value; ARGS]) -> Result<Held<'a>> {
    Ok((
        arg(env, a[0])?,
        arg(env, a[1])?,
        arg(env, a[2])?,
        arg(env, a[3])?,
    ))
}

type Held<'a> = (u32, Option<Unknown<'a>>, Option<Unknown<'a>>, f64);

fn extend(ops: &Arc<Ops>, env: &Env, a: &[sys::napi_value; ARGS]) -> Result<()> {
    let (id, resources, value, expiration) = held(env, a)?;
    let (duration, settings, kind) = (arg(env, a[4])?, arg(env, a[5])?, arg(env, a[6])?);
    ops.extend(
        env, id, resources, value, expiration, duration, settings, kind,
    )
}

fn release(ops: &Arc<Ops>, env: &Env, a: &[sys::napi_value; ARGS]) -> Result<()> {
    let (id, resources, value, expiration) = held(env, a)?;
    let (settings, kind) = (arg(env, a[4])?, arg(env, a[5])?);
    ops.release(env, id, resources, value, expiration, settings, kind)
}

/// Runs `start` with the call's handle and arguments; throws its error, or a panic's.
///
/// # Safety
/// `env` and `info` are those of a call of a function made by [`define`].
unsafe fn run(env: sys::napi_env, info: sys::napi_callback_info, start: Start) -> sys::napi_value {
    let mut argv = [std::ptr::null_mut(); ARGS + 1];
    let mut argc = argv.len();
    let (this, data) = (std::ptr::null_mut(), std::ptr::null_mut());
    let status = sys::napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), this, data);
    let js = Env::from_raw(env);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        check_status!(status)?;
        let ops = <External<Arc<Ops>> as FromNapiRef>::from_napi_ref(env, argv[0])?;
        let args: &[sys::napi_value; ARGS] = argv[1..].try_into().expect("ARGS arguments");
        start(ops, &js, args)
    }));
    match outcome.map_err(panic_to_error).and_then(|r| r) {
        Ok(()) => {}
        Err(e) => JsError::from(e).throw_into(env),
    }
    std::ptr::null_mut() // undefined
}

unsafe extern "C" fn lock_acquire(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    run(env, info, acquire)
}

unsafe extern "C" fn lock_extend(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    run(env, info, extend)
}

unsafe extern "C" fn lock_release(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    run(env, info, release)
}

/// Puts the three functions on the module's exports (when the module loads: napi-rs does
/// not register it in a test build, which loads no module).
#[napi(module_exports)]
#[cfg_attr(test, allow(dead_code))]
pub fn define(mut exports: Object, env: Env) -> Result<()> {
    let calls: [(&str, sys::napi_callback); 3] = [
        ("lockAcquire", Some(lock_acquire)),
        ("lockExtend", Some(lock_extend)),
        ("lockRelease", Some(lock_release)),
    ];
    for (name, callback) in calls {
        let mut f = std::ptr::null_mut();
        let (ptr, len) = (name.as_ptr().cast(), name.len() as isize);
        let null = std::ptr::null_mut();
        // SAFETY: `env` is the environment registering the module.
        check_status!(unsafe {
            sys::napi_create_function(env.raw(), ptr, len, callback, null, &mut f)
        })?;
        exports.set_named_property(name, unsafe { Unknown::from_raw_unchecked(env.raw(), f) })?;
    }
    Ok(())
}
