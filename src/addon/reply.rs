//! Redis replies as JavaScript values (for `call`).

use napi::bindgen_prelude::*;

/// A reply: `null`, number, string (Buffer when not UTF-8), boolean or array.
pub enum Reply {
    Nil,
    Int(i64),
    Double(f64),
    Bool(bool),
    Str(String),
    Bytes(Vec<u8>),
    Array(Vec<Reply>),
}

impl Reply {
    /// Converts a reply; a server error becomes `Err` with its message.
    pub fn from_value(v: redis::Value) -> std::result::Result<Reply, String> {
        use redis::Value as V;
        Ok(match v {
            V::Nil => Reply::Nil,
            V::Int(i) => Reply::Int(i),
            V::Double(d) => Reply::Double(d),
            V::Boolean(b) => Reply::Bool(b),
            V::Okay => Reply::Str("OK".into()),
            V::SimpleString(s) => Reply::Str(s),
            V::BulkString(b) => match String::from_utf8(b) {
                Ok(s) => Reply::Str(s),
                Err(e) => Reply::Bytes(e.into_bytes()),
            },
            V::VerbatimString { text, .. } => Reply::Str(text),
            V::BigNumber(n) => Reply::Str(String::from_utf8_lossy(&n).into_owned()),
            V::Array(items) | V::Set(items) => Reply::Array(
                items
                    .into_iter()
                    .map(Reply::from_value)
                    .collect::<std::result::Result<_, _>>()?,
            ),
            V::Map(pairs) => Reply::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [Reply::from_value(k), Reply::from_value(v)])
                    .collect::<std::result::Result<_, _>>()?,
            ),
            V::Attribute { data, .. } => Reply::from_value(*data)?,
            V::Push { data, .. } => Reply::Array(
                data.into_iter()
                    .map(Reply::from_value)
                    .collect::<std::result::Result<_, _>>()?,
            ),
            V::ServerError(e) => return Err(e.to_string()),
            _ => Reply::Nil,
        })
    }
}

impl ToNapiValue for Reply {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        unsafe {
            match val {
                Reply::Nil => Null::to_napi_value(env, Null),
                Reply::Int(i) => i64::to_napi_value(env, i),
                Reply::Double(d) => f64::to_napi_value(env, d),
                Reply::Bool(b) => bool::to_napi_value(env, b),
                Reply::Str(s) => String::to_napi_value(env, s),
                Reply::Bytes(b) => Buffer::to_napi_value(env, Buffer::from(b)),
                Reply::Array(items) => Vec::<Reply>::to_napi_value(env, items),
            }
        }
    }
}
