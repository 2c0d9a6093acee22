//! The Lua scripts behind every lock operation. Owner checks happen inside Redis, in one
//! atomic script per node; the scripts run by `EVALSHA` (loaded on connect) and recover
//! from `NOSCRIPT` by loading themselves again.
//!
//! `KEYS` are the resource names; `ARGV[1]` is the lock value, `ARGV[2]` the ttl in ms.

use std::sync::LazyLock;

use redis::Script;

/// Sets every key to the value with `PX` ttl if none of them is held by another value.
/// Returns 1 when set, 0 when any key is held by another owner (nothing is written then).
/// Idempotent: running it again with the same value (a resend after a dropped
/// connection) succeeds again.
pub const ACQUIRE: &str = r#"
for _, key in ipairs(KEYS) do
  local v = redis.call('get', key)
  if v and v ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('set', key, ARGV[1], 'PX', ARGV[2])
end
return 1
"#;

/// Resets the ttl of every key if all of them still hold our value. Returns 1 when
/// extended, 0 when any key is gone or held by another value (nothing is written then).
pub const EXTEND: &str = r#"
for _, key in ipairs(KEYS) do
  if redis.call('get', key) ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('set', key, ARGV[1], 'PX', ARGV[2])
end
return 1
"#;

/// Deletes the keys that still hold our value; never touches another owner's key.
/// Returns how many keys were deleted.
pub const RELEASE: &str = r#"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('del', key)
    n = n + 1
  end
end
return n
"#;

pub static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE));
pub static EXTEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(EXTEND));
pub static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

/// Every script's source, for `SCRIPT LOAD` on connect.
pub const SOURCES: [&str; 3] = [ACQUIRE, EXTEND, RELEASE];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_distinct_sha1s() {
        let scripts = [&*ACQUIRE_SCRIPT, &*EXTEND_SCRIPT, &*RELEASE_SCRIPT];
        let hashes: Vec<&str> = scripts.iter().map(|s| s.get_hash()).collect();
        assert!(hashes.iter().all(|h| h.len() == 40));
        assert_ne!(hashes[0], hashes[1]);
        assert_ne!(hashes[1], hashes[2]);
    }
}
