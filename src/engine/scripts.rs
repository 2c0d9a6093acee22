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

/// Deletes the keys that still hold our value; never touches another owner's key. Each
/// deletion is announced on `redlock-rs:released:<key>` (see [`RELEASED_PREFIX`]) with the
/// released value, so that waiters retry at once instead of polling. Returns how many keys were deleted.
/// Failed acquire attempts clean up with it too: when their split vote left the lock
/// free, the other waiters must hear it.
pub const RELEASE: &str = r#"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('del', key)
    redis.call('publish', 'redlock-rs:released:' .. key, ARGV[1])
    n = n + 1
  end
end
return n
"#;

/// The prefix of the channel on which the release of a key is announced.
pub const RELEASED_PREFIX: &str = "redlock-rs:released:";

/// The channel announcing the release of `resource`.
pub fn released_channel(resource: &str) -> String {
    format!("{RELEASED_PREFIX}{resource}")
}

/// A lock script: its source and SHA1, and the `EVALSHA` command for given keys and args.
pub struct LockScript {
    pub source: &'static str,
    pub hash: String,
}

impl LockScript {
    fn new(source: &'static str) -> Self {
        LockScript {
            source,
            hash: Script::new(source).get_hash().to_string(),
        }
    }

    /// `EVALSHA hash #keys keys... args...`, built once and sent to every node.
    pub fn evalsha(&self, keys: &[String], args: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.hash).arg(keys.len()).arg(keys).arg(args);
        cmd
    }

    /// `SCRIPT LOAD source`.
    pub fn load(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(self.source);
        cmd
    }
}

pub static ACQUIRE_SCRIPT: LazyLock<LockScript> = LazyLock::new(|| LockScript::new(ACQUIRE));
pub static EXTEND_SCRIPT: LazyLock<LockScript> = LazyLock::new(|| LockScript::new(EXTEND));
pub static RELEASE_SCRIPT: LazyLock<LockScript> = LazyLock::new(|| LockScript::new(RELEASE));

/// Every script, for `SCRIPT LOAD` on connect.
pub fn all() -> [&'static LockScript; 3] {
    [&ACQUIRE_SCRIPT, &EXTEND_SCRIPT, &RELEASE_SCRIPT]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_distinct_sha1s() {
        let hashes: Vec<&str> = all().iter().map(|s| s.hash.as_str()).collect();
        assert!(hashes.iter().all(|h| h.len() == 40));
        assert_ne!(hashes[0], hashes[1]);
        assert_ne!(hashes[1], hashes[2]);
    }

    #[test]
    fn release_announces_on_the_released_channel() {
        assert!(RELEASE.contains(&format!("'{RELEASED_PREFIX}' .. key")));
        assert_eq!(released_channel("a:b"), "redlock-rs:released:a:b");
    }

    #[test]
    fn evalsha_packs_keys_then_args() {
        let cmd = RELEASE_SCRIPT.evalsha(&["a".to_string(), "b".to_string()], &["v"]);
        let packed = String::from_utf8(cmd.get_packed_command()).unwrap();
        let parts: Vec<&str> = packed
            .split("\r\n")
            .filter(|p| !p.starts_with(['*', '$']))
            .collect();
        assert_eq!(
            parts[..5],
            ["EVALSHA", RELEASE_SCRIPT.hash.as_str(), "2", "a", "b"]
        );
        assert_eq!(parts[5], "v");
    }
}
