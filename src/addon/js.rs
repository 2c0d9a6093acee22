//! Reading JavaScript values with errors that name the argument, and throwing
//! `TypeError` / `RangeError`.

use napi::bindgen_prelude::*;
use napi::{JsValue, ValueType};

use crate::engine::error::{ArgError, ArgErrorKind};

/// A JavaScript value, classified.
pub enum Val<'env> {
    /// `undefined` or `null` (named so in messages).
    Missing(&'static str),
    Bool(bool),
    Num(f64),
    Str(String),
    Buf(Vec<u8>),
    Array(Vec<Unknown<'env>>),
    Object(Object<'env>),
    Other(&'static str),
}

impl Val<'_> {
    /// The JavaScript type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Missing(name) => name,
            Val::Bool(_) => "boolean",
            Val::Num(_) => "number",
            Val::Str(_) => "string",
            Val::Buf(_) => "Buffer",
            Val::Array(_) => "array",
            Val::Object(_) => "object",
            Val::Other(t) => t,
        }
    }
}

/// The longest array an argument may be (a lock of a million resources is no lock anyone
/// means; the JavaScript layer checks the same bound, `MAX_ARRAY` in lib/lock.js).
pub const MAX_ARRAY: u32 = 1 << 20;

/// Classifies `v`; `undefined` and `null` are both [`Val::Missing`]; an array longer than
/// [`MAX_ARRAY`] is [`Val::Other`].
pub fn classify<'env>(v: Option<Unknown<'env>>) -> Result<Val<'env>> {
    let Some(v) = v else {
        return Ok(Val::Missing("undefined"));
    };
    let env = v.value().env;
    let raw = v.raw();
    // SAFETY: every cast below follows the type check that makes it valid.
    unsafe {
        Ok(match v.get_type()? {
            ValueType::Undefined => Val::Missing("undefined"),
            ValueType::Null => Val::Missing("null"),
            ValueType::Boolean => Val::Bool(bool::from_napi_value(env, raw)?),
            ValueType::Number => Val::Num(f64::from_napi_value(env, raw)?),
            ValueType::String => Val::Str(string(env, raw)?),
            ValueType::Object if v.is_buffer()? => {
                Val::Buf(Buffer::from_napi_value(env, raw)?.to_vec())
            }
            ValueType::Object if v.is_array()? => {
                let mut len = 0;
                check_status!(napi::sys::napi_get_array_length(env, raw, &mut len))?;
                if len > MAX_ARRAY {
                    // (A sparse `new Array(5e8)` read element by element would take
                    // gigabytes and seconds before its first hole is refused.)
                    Val::Other("an array of more than 1048576 elements")
                } else {
                    Val::Array(Vec::<Unknown>::from_napi_value(env, raw)?)
                }
            }
            ValueType::Object => Val::Object(Object::from_napi_value(env, raw)?),
            ValueType::BigInt => Val::Other("bigint"),
            ValueType::Symbol => Val::Other("symbol"),
            ValueType::Function => Val::Other("function"),
            _ => Val::Other("unknown"),
        })
    }
}

/// The JavaScript string `raw` as UTF-8. A short one (a lock's key or value) is read in
/// one call, through a buffer on the stack; a longer one asks for its length first.
///
/// # Safety
/// `raw` is a string of the live environment `env`.
unsafe fn string(env: napi::sys::napi_env, raw: napi::sys::napi_value) -> Result<String> {
    let mut buf = [0u8; 256];
    let mut len = 0;
    check_status!(napi::sys::napi_get_value_string_utf8(
        env,
        raw,
        buf.as_mut_ptr().cast(),
        buf.len(),
        &mut len
    ))?;
    // A cut copy fills the buffer but for its terminating zero and at most the 3 bytes of
    // a character that did not fit: with more room left, the whole string was copied.
    if len + 4 < buf.len() {
        if let Ok(s) = std::str::from_utf8(&buf[..len]) {
            return Ok(s.to_owned());
        }
    }
    String::from_napi_value(env, raw)
}

/// Throws `e` as a `TypeError` or `RangeError`; returns the error to propagate.
pub fn throw(env: &Env, e: ArgError) -> Error {
    let thrown = match e.kind {
        ArgErrorKind::Type => env.throw_type_error(&e.message, None),
        ArgErrorKind::Range => env.throw_range_error(&e.message, None),
    };
    match thrown {
        Ok(()) => Error::new(Status::PendingException, e.message),
        Err(err) => err,
    }
}

/// Throws a `TypeError` saying what `name` must be and what it was.
pub fn type_error(env: &Env, name: &str, expected: &str, got: &Val) -> Error {
    throw(
        env,
        ArgError::type_error(format!(
            "{name} must be {expected}; got {}.",
            got.type_name()
        )),
    )
}

/// A field of an options object (`ctx` names the object in messages).
pub fn field<'env>(obj: &Object<'env>, name: &str) -> Result<Val<'env>> {
    classify(obj.get::<Unknown>(name)?)
}

/// An optional field of kind `expected`: `pick` takes the value out of the kinds it
/// accepts; `undefined` / `null` are `None`; anything else is a `TypeError`.
fn opt<T>(
    env: &Env,
    obj: &Object,
    ctx: &str,
    name: &str,
    expected: &str,
    pick: fn(Val) -> std::result::Result<T, Val>,
) -> Result<Option<T>> {
    match field(obj, name)? {
        Val::Missing(_) => Ok(None),
        v => pick(v)
            .map(Some)
            .map_err(|other| type_error(env, &format!("{ctx}.{name}"), expected, &other)),
    }
}

pub fn opt_number(env: &Env, obj: &Object, ctx: &str, name: &str) -> Result<Option<f64>> {
    opt(env, obj, ctx, name, "a number", |v| match v {
        Val::Num(n) => Ok(n),
        other => Err(other),
    })
}

pub fn opt_string(env: &Env, obj: &Object, ctx: &str, name: &str) -> Result<Option<String>> {
    opt(env, obj, ctx, name, "a string", |v| match v {
        Val::Str(s) => Ok(s),
        other => Err(other),
    })
}

pub fn opt_bool(env: &Env, obj: &Object, ctx: &str, name: &str) -> Result<Option<bool>> {
    opt(env, obj, ctx, name, "a boolean", |v| match v {
        Val::Bool(b) => Ok(b),
        other => Err(other),
    })
}

/// Maps an engine argument check to a thrown JavaScript error.
pub fn check<T>(env: &Env, r: std::result::Result<T, ArgError>) -> Result<T> {
    r.map_err(|e| throw(env, e))
}

/// A Redis key or argument: string, number or Buffer, as bytes.
pub fn bytes_arg(env: &Env, name: &str, v: Val) -> Result<Vec<u8>> {
    match v {
        Val::Str(s) => Ok(s.into_bytes()),
        Val::Buf(b) => Ok(b),
        Val::Num(n) if n.is_finite() => Ok(crate::engine::args::show(n).into_bytes()),
        other => Err(type_error(
            env,
            name,
            "a string, a finite number or a Buffer",
            &other,
        )),
    }
}
