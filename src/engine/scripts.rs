//! The Lua scripts behind every lock operation. Owner checks happen inside Redis, in one
//! atomic script per node; the scripts run by `EVALSHA` (loaded on connect) and recover
//! from `NOSCRIPT` by loading themselves again.
//!
//! `KEYS` are the resource names; `ARGV[1]` is the lock value, `ARGV[2]` the ttl in ms.

use std::sync::LazyLock;

use crate::engine::sync::Unpoisoned;

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
/// extended; otherwise nothing is written, and it returns 0 when a key is held by another
/// value (another owner), -1 when a key is gone (expired or deleted) and none is held by
/// another value.
pub const EXTEND: &str = r#"
local gone = false
for _, key in ipairs(KEYS) do
  local v = redis.call('get', key)
  if v ~= ARGV[1] then
    if v then return 0 end
    gone = true
  end
end
if gone then return -1 end
for _, key in ipairs(KEYS) do
  redis.call('set', key, ARGV[1], 'PX', ARGV[2])
end
return 1
"#;

/// Deletes the keys that still hold our value; never touches another owner's key. Each
/// deletion is announced on `redlock-rs:released:<key>` (see [`RELEASED_PREFIX`]) with the
/// released value, so that waiters retry at once instead of polling. Returns how many keys were deleted.
/// Failed acquire attempts clean up with it too: when their split vote left the lock
/// free, the other waiters must hear it. With `ARGV[2]` = `quiet` nothing is announced (the
/// cleanup of an attempt that found the lock held by another owner on a quorum).
pub const RELEASE: &str = r#"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('del', key)
    if ARGV[2] ~= 'quiet' then
      redis.pcall('publish', 'redlock-rs:released:' .. key, ARGV[1])
    end
    n = n + 1
  end
end
return n
"#;

/// Moves a lock from one owner of this process to the next (a hand-over): every key must
/// hold the old value (`ARGV[1]`, or already the new one: a resend); each is set to the new
/// value `ARGV[2]` with `PX ARGV[3]`. Returns 0 when any key is not ours; when moved, 1 +
/// the number of connections listening for the first key's release announcements (the
/// waiters' subscriptions: this process's, and any other's).
pub const HANDOVER: &str = r#"
for _, key in ipairs(KEYS) do
  local v = redis.call('get', key)
  if v ~= ARGV[1] and v ~= ARGV[2] then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('set', key, ARGV[2], 'PX', ARGV[3])
end
return 1 + (redis.pcall('pubsub', 'numsub', 'redlock-rs:released:' .. KEYS[1])[2] or 0)
"#;

/// [`ACQUIRE`] that also reads the fencing counters. `KEYS`: the resources, then their
/// counters ([`fence_key`]); `ARGV[3]`: how many resources. Returns 0 when any resource
/// is held by another owner, else `{1, highest counter}` (0 when none was set).
pub const FENCED_ACQUIRE: &str = r#"
local n = tonumber(ARGV[3])
for i = 1, n do
  local v = redis.call('get', KEYS[i])
  if v and v ~= ARGV[1] then return 0 end
end
for i = 1, n do
  redis.call('set', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
local high = 0
for i = n + 1, #KEYS do
  local c = tonumber(redis.call('get', KEYS[i]) or '0') or 0
  if c > high then high = c end
end
return {1, high}
"#;

/// Claims fencing token `ARGV[1]`: when every counter in `KEYS` is below it, raises them
/// all to it and returns 0; otherwise changes nothing and returns the highest counter (the
/// token was taken, or a later one was).
pub const FENCE: &str = r#"
local f = tonumber(ARGV[1])
local high = 0
for _, key in ipairs(KEYS) do
  local c = tonumber(redis.call('get', key) or '0') or 0
  if c > high then high = c end
end
if high >= f then return high end
for _, key in ipairs(KEYS) do redis.call('set', key, ARGV[1]) end
return 0
"#;

/// The key of the fencing counter of `resource` (see [`scoped_key`]): in the same Redis
/// Cluster slot as the resource, and never expiring.
pub fn fence_key(resource: &str) -> String {
    scoped_key(resource, "fence")
}

/// A key of the library's own for `resource`, `{<resource>}:redlock-rs:<suffix>` with the
/// resource as its hash tag (so every key of one resource is in one Cluster slot), never
/// equal to a mutex key (a resource name). A name with a hash tag of its own is kept as it
/// is, `<resource>:redlock-rs:tagged:<suffix>`: the marker keeps `{x}`'s keys apart from
/// `x`'s. A name with a `}` and no hash tag (`a}b`, `{}x`) cannot be put in a tag: its
/// keys get a tag of the same slot (see [`slot_tag`]),
/// `{<tag>}:redlock-rs:untagged:<length>:<resource>:<suffix>`.
pub fn scoped_key(resource: &str, suffix: &str) -> String {
    let tagged = resource
        .find('{')
        .and_then(|open| resource[open + 1..].find('}').map(|len| len > 0))
        .unwrap_or(false);
    if !tagged && resource.contains('}') {
        let tag = slot_tag(hash_slot(resource));
        return format!(
            "{{{tag}}}:redlock-rs:untagged:{}:{resource}:{suffix}",
            resource.len()
        );
    }
    // (Pushed, not `format!`: two of these are built for every single-resource lock call.)
    let mut key = String::with_capacity(resource.len() + suffix.len() + 14);
    key.push_str(if tagged { "" } else { "{" });
    key.push_str(resource);
    key.push_str(if tagged {
        ":redlock-rs:tagged:"
    } else {
        "}:redlock-rs:"
    });
    key.push_str(suffix);
    key
}

/// A short hash tag whose Cluster slot is `slot`: the first of the `0`-`9a`-`z` strings,
/// by length, then in order, that hashes there (the same in every process). Found when a
/// name first needs it (about 16000 strings tried, a millisecond or two), then kept.
pub fn slot_tag(slot: u16) -> String {
    static FOUND: std::sync::Mutex<Vec<(u16, String)>> = std::sync::Mutex::new(Vec::new());
    let slot = slot % 16384;
    if let Some((_, tag)) = FOUND.locked().iter().find(|(s, _)| *s == slot) {
        return tag.clone();
    }
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut at: Vec<usize> = vec![0];
    let tag = loop {
        let tag: String = at.iter().map(|&d| DIGITS[d] as char).collect();
        if hash_slot(&tag) == slot {
            break tag;
        }
        // The next string of this length (the last digit first), else the first one longer.
        match at.iter().rposition(|&d| d + 1 < DIGITS.len()) {
            Some(i) => {
                at[i] += 1;
                at[i + 1..].fill(0);
            }
            None => at = vec![0; at.len() + 1],
        }
    };
    FOUND.locked().push((slot, tag.clone()));
    tag
}

/// Takes a free slot of a semaphore: the slot already ours (a resend), else the first free
/// one from slot `start` on (wrapping). `KEYS`: the slot keys, then the semaphore's fencing
/// counter; `ARGV`: value, ttl, fenced (`1` reads the counter), start (0-based). Returns
/// `{slot (0-based), counter}`, `{-1, 0}` when every slot is held. Each slot is a mutex: a
/// holder owns one slot on a quorum. Every node of an attempt starts from the same slot
/// (so they agree wherever it is free), and each attempt from a random one (so retries
/// do not split the same way again: a client that reaches another majority than a holder
/// finds a slot free on its own).
pub const PERMIT_ACQUIRE: &str = r#"
local n = #KEYS - 1
local pick = -1
for i = 1, n do
  if redis.call('get', KEYS[i]) == ARGV[1] then pick = i break end
end
if pick < 0 then
  local start = tonumber(ARGV[4] or '0') or 0
  for k = 0, n - 1 do
    local i = (start + k) % n + 1
    if redis.call('exists', KEYS[i]) == 0 then pick = i break end
  end
end
if pick < 0 then return {-1, 0} end
redis.call('set', KEYS[pick], ARGV[1], 'PX', ARGV[2])
local high = 0
if ARGV[3] == '1' then high = tonumber(redis.call('get', KEYS[#KEYS]) or '0') or 0 end
return {pick - 1, high}
"#;

/// The server's time in ms (scripts replicate their effects, so this is safe).
const NOW: &str = "local t = redis.call('time'); local now = t[1] * 1000 + math.floor(t[2] / 1000)";

/// Takes a read hold: refused while another writer holds the write key, or (for a new
/// reader) while a writer waits. `KEYS`: readers (a sorted set of values by expiry), write
/// key, writer-waiting key, fencing counter; `ARGV`: value, ttl, fenced. Returns `{1,
/// counter}` or `{0, 0}`.
pub static READ_ACQUIRE: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
{NOW}
local w = redis.call('get', KEYS[2])
if w and w ~= ARGV[1] then return {{0, 0}} end
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
local mine = redis.call('zscore', KEYS[1], ARGV[1])
if not mine and redis.call('exists', KEYS[3]) == 1 then return {{0, 0}} end
redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then redis.call('pexpire', KEYS[1], ARGV[2]) end
local high = 0
if ARGV[3] == '1' then high = tonumber(redis.call('get', KEYS[4]) or '0') or 0 end
return {{1, high}}
"#
    )
});

/// Extends a read hold that is still ours. `KEYS`: readers; `ARGV`: value, ttl. 1 or 0.
pub static READ_EXTEND: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
{NOW}
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
if not redis.call('zscore', KEYS[1], ARGV[1]) then return -1 end
redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then redis.call('pexpire', KEYS[1], ARGV[2]) end
return 1
"#
    )
});

/// Releases a read hold (announced on the readers key's channel). `KEYS`: readers;
/// `ARGV`: value. Returns how many were removed.
pub const READ_RELEASE: &str = r#"
local n = redis.call('zrem', KEYS[1], ARGV[1])
if n > 0 then redis.pcall('publish', 'redlock-rs:released:' .. KEYS[1], ARGV[1]) end
return n
"#;

/// Takes the write hold: refused while another writer holds it or readers hold read holds;
/// with readers, marks a writer as waiting (for `ARGV[4]` ms) so that new readers stay out
/// until it is in (a writer that got in clears the mark: its own hold keeps readers out, and
/// writers still waiting mark it again at their next attempt). `KEYS`: write key, readers, writer-waiting key, fencing counter; `ARGV`:
/// value, ttl, fenced, waiting ttl. Returns `{1, counter}` or `{0, 0}`.
pub static WRITE_ACQUIRE: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
local w = redis.call('get', KEYS[1])
if w and w ~= ARGV[1] then return {{0, 0}} end
{NOW}
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
if w ~= ARGV[1] and redis.call('zcard', KEYS[2]) > 0 then
  redis.call('set', KEYS[3], ARGV[1], 'PX', ARGV[4])
  return {{0, 0}}
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('del', KEYS[3])
local high = 0
if ARGV[3] == '1' then high = tonumber(redis.call('get', KEYS[4]) or '0') or 0 end
return {{1, high}}
"#
    )
});

/// A waiting head's acquire of a single-resource mutex, honouring the waiting line kept on
/// the node (see [`crate::engine::line`]). `KEYS`: the lock, the line (a sorted set of
/// tickets by the time their waits began), the tickets' expiry (a sorted set by server
/// time in ms); `ARGV`: value, ttl, ticket, order, how long a ticket stays without being
/// renewed. Expired tickets at the front of the line are dropped first. The lock is set
/// when it is kept for this ticket by [`LINE_RELEASE`] (even if an older ticket joined
/// the line since: the nodes must not each wait for another ticket), or when it is free
/// and the line is empty or this ticket is its first; the ticket then leaves the line
/// there (an attempt lost elsewhere puts it back with its cleanup, see [`LINE_RELEASE`], so
/// that the nodes keep the same line). Otherwise the ticket joins the line (or stays,
/// renewed) and nothing else is written, unless the lock is free with another ticket first
/// (it expired: its holder never released it): it is then kept for that ticket and
/// announced, as [`LINE_RELEASE`] does (that waiter may be sleeping its retry delay).
/// Returns 1 when set (or already ours: a resend), else the holder's value (or the value
/// kept).
pub static LINE_ACQUIRE: LazyLock<String> = LazyLock::new(|| {
    let keep_for = KEEP_FOR.as_str();
    format!(
        r#"
local v = redis.call('get', KEYS[1])
if v == ARGV[1] then return 1 end
if v == '{RESERVED_PREFIX}' .. ARGV[3] then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('zrem', KEYS[2], ARGV[3])
  redis.call('zrem', KEYS[3], ARGV[3])
  return 1
end
{NOW}
{LINE_HEAD}
if not v and (not head or head == ARGV[3]) then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if head then
    redis.call('zrem', KEYS[2], ARGV[3])
    redis.call('zrem', KEYS[3], ARGV[3])
  end
  return 1
end
if not v then
  v = {keep_for}
  redis.pcall('publish', '{RELEASED_PREFIX}' .. KEYS[1], v)
end
redis.call('zadd', KEYS[2], ARGV[4], ARGV[3])
redis.call('zadd', KEYS[3], now + tonumber(ARGV[5]), ARGV[3])
for i = 2, 3 do
  if redis.call('pttl', KEYS[i]) < tonumber(ARGV[5]) then redis.call('pexpire', KEYS[i], ARGV[5]) end
end
return v or ''
"#
    )
});

/// The first live ticket of the line in `KEYS[2]` (expiries in `KEYS[3]`) as `head`
/// (`nil` when none), the expired ones before it dropped; needs `now`.
const LINE_HEAD: &str = r#"local head
while true do
  head = redis.call('zrange', KEYS[2], 0, 0)[1]
  if not head then break end
  local e = tonumber(redis.call('zscore', KEYS[3], head))
  if e and e > now then break end
  redis.call('zrem', KEYS[2], head)
  redis.call('zrem', KEYS[3], head)
end"#;

/// The value of a lock kept for the first ticket of its line (followed by the ticket).
pub const RESERVED_PREFIX: &str = "redlock-rs:reserved:";

/// Keeps lock `KEYS[1]` for ticket `head` until the ticket expires (by its expiry in
/// `KEYS[3]`; needs `now`), as the value of the expression: the value kept.
static KEEP_FOR: LazyLock<String> = LazyLock::new(|| {
    format!(
        "(function() local kept = '{RESERVED_PREFIX}' .. head; redis.call('set', KEYS[1], kept, 'PX', math.max(1, tonumber(redis.call('zscore', KEYS[3], head)) - now)); return kept end)()"
    )
});

/// The announcement of a lock freed because the ticket it was kept for left the line with
/// no ticket after it (followed by the ticket): it wakes every waiter, and stands for the
/// release of [`RESERVED_PREFIX`] + ticket, the value the lock had.
pub const LEFT_PREFIX: &str = "redlock-rs:left:";

/// Releases lock `KEYS[1]` when it holds `mine`: when its line (`KEYS[2]`, expiries in
/// `KEYS[3]`) has a live first ticket, the lock is kept for it (set to
/// [`RESERVED_PREFIX`] + ticket until the ticket expires) instead of deleted, so that only
/// that waiter can take it next (a `SET NX` of anyone else finds it held). Announced: with
/// the value kept (which wakes only that waiter), even when `quiet` is `'quiet'` (that
/// waiter needs the wake-up, whoever holds the other nodes), or, unless quiet, with
/// `freed` when the lock is free (which wakes every waiter but the one it names). Returns 1 when released, 2 when the lock was kept for `own`
/// (the releasing waiter's own ticket: not announced, the waiter retries soon on its own
/// and must not wake itself into retries that do not count), else 0. A lock is kept for
/// `own` only when another ticket waits behind it: alone in the line, it is freed (the
/// cleanup of an attempt lost to owners that keep their nodes, after which the waiter
/// waits its retry delay: the retry window stays whole, and nothing sits reserved).
static PASS_ON: LazyLock<String> = LazyLock::new(|| {
    let keep_for = KEEP_FOR.as_str();
    format!(
        r#"
if redis.call('get', KEYS[1]) ~= mine then return 0 end
local said, kept_for = freed, nil
if redis.call('exists', KEYS[2]) == 0 then
  redis.call('del', KEYS[1])
else
  {NOW}
  {LINE_HEAD}
  if head and head == own and redis.call('zcard', KEYS[2]) == 1 then head = nil end
  kept_for = head
  if head then
    said = {keep_for}
  else
    redis.call('del', KEYS[1])
  end
end
if own and kept_for == own then return 2 end
if quiet ~= 'quiet' or said ~= freed then
  redis.pcall('publish', '{RELEASED_PREFIX}' .. KEYS[1], said)
end
return 1
"#
    )
});

/// [`RELEASE`] of a single-resource mutex, which may have a waiting line: see
/// [`PASS_ON`]. `KEYS`: the lock, the line, the tickets' expiry; `ARGV`: value, `quiet`
/// (as for [`RELEASE`]), and for the cleanup of a lost [`LINE_ACQUIRE`]: its ticket, order
/// and ticket lifetime, which take the ticket's place in the line again where the attempt
/// had taken the lock (and left the line) before the lock is passed on. Returns 1 when
/// released, else 0.
pub static LINE_RELEASE: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"local mine, quiet, own = ARGV[1], ARGV[2], ARGV[3]
local freed = mine
if ARGV[3] and redis.call('get', KEYS[1]) == mine then
  {NOW}
  redis.call('zadd', KEYS[2], ARGV[4], ARGV[3])
  redis.call('zadd', KEYS[3], now + tonumber(ARGV[5]), ARGV[3])
  for i = 2, 3 do
    if redis.call('pttl', KEYS[i]) < tonumber(ARGV[5]) then redis.call('pexpire', KEYS[i], ARGV[5]) end
  end
end
{}"#,
        *PASS_ON
    )
});

/// Takes a ticket out of the waiting line (its head stopped waiting), and passes on the
/// lock if it was kept for that ticket (see [`PASS_ON`]; freed, it is announced with
/// [`LEFT_PREFIX`] + ticket unless `quiet`). `KEYS`: the lock, the line, the tickets'
/// expiry; `ARGV`: the ticket, and `quiet` (`'quiet'` from a head that won the lock: the
/// other waiters are woken by its release).
pub static LINE_LEAVE: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('zrem', KEYS[3], ARGV[1])
local mine, quiet, own = '{RESERVED_PREFIX}' .. ARGV[1], ARGV[2] or '', nil
local freed = '{LEFT_PREFIX}' .. ARGV[1]
{}"#,
        *PASS_ON
    )
});

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the text
/// between the first `{` and the next `}`, when not empty) or of the whole key, mod 16384.
pub fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for b in hashed {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

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
        // Sized up front: no reallocation while the arguments go in.
        let data = keys.iter().map(String::len).sum::<usize>()
            + args.iter().map(|a| a.len()).sum::<usize>();
        let mut cmd = redis::Cmd::with_capacity(3 + keys.len() + args.len(), 64 + data);
        cmd.arg("EVALSHA")
            .arg(&self.hash)
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        cmd
    }

    /// `SCRIPT LOAD source`.
    pub fn load(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(self.source);
        cmd
    }
}

/// The identity of the server that runs it (as
/// [`crate::engine::identity::Identity::run_id`]): sent with a key (`KEYS[1]`), on a Redis
/// Cluster it runs on that key's master, whichever it is now (MOVED is followed).
const SERVER_RUN_ID: &str = r#"
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local replication = redis.call('INFO', 'replication')
local replid = string.match(replication, 'master_replid:(%x+)')
local promoted = string.match(replication, 'second_repl_offset:(%-?%d+)')
if run_id and replid and promoted and promoted ~= '-1' then
  return run_id .. '/' .. replid
end
return run_id
"#;

pub static SERVER_RUN_ID_SCRIPT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::new(SERVER_RUN_ID));
pub static ACQUIRE_SCRIPT: LazyLock<LockScript> = LazyLock::new(|| LockScript::new(ACQUIRE));
pub static EXTEND_SCRIPT: LazyLock<LockScript> = LazyLock::new(|| LockScript::new(EXTEND));
pub static RELEASE_SCRIPT: LazyLock<LockScript> = LazyLock::new(|| LockScript::new(RELEASE));
pub static FENCED_ACQUIRE_SCRIPT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::new(FENCED_ACQUIRE));
pub static FENCE_SCRIPT: LazyLock<LockScript> = LazyLock::new(|| LockScript::new(FENCE));
pub static HANDOVER_SCRIPT: LazyLock<LockScript> = LazyLock::new(|| LockScript::new(HANDOVER));
pub static PERMIT_ACQUIRE_SCRIPT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::new(PERMIT_ACQUIRE));
pub static READ_ACQUIRE_SCRIPT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::new(built(&READ_ACQUIRE)));
pub static READ_EXTEND_SCRIPT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::new(built(&READ_EXTEND)));
pub static READ_RELEASE_SCRIPT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::new(READ_RELEASE));
pub static WRITE_ACQUIRE_SCRIPT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::new(built(&WRITE_ACQUIRE)));
pub static LINE_ACQUIRE_SCRIPT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::new(built(&LINE_ACQUIRE)));
pub static LINE_LEAVE_SCRIPT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::new(built(&LINE_LEAVE)));
pub static LINE_RELEASE_SCRIPT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::new(built(&LINE_RELEASE)));

/// For the `EVALSHA` of a single resource's [`LINE_RELEASE`] (`evalsha` of `script`):
/// the [`RELEASE`] of its lock key alone, with the same value and `quiet` (what a release
/// does where the resource has no waiting line; a lost acquire's ticket is then not put
/// back in the line). `None` for any other script.
pub fn first_key_release(script: &LockScript, evalsha: &redis::Cmd) -> Option<redis::Cmd> {
    if script.hash != LINE_RELEASE_SCRIPT.hash {
        return None;
    }
    // EVALSHA hash numkeys key line expiry value quiet [ticket order lifetime]
    let args: Vec<&[u8]> = evalsha
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let text = |i: usize| args.get(i).and_then(|a| std::str::from_utf8(a).ok());
    let (key, value, quiet) = (text(3)?, text(6)?, text(7).unwrap_or(""));
    Some(RELEASE_SCRIPT.evalsha(&[key.to_string()], &[value, quiet]))
}

/// A script source built once at start-up, for the program's lifetime.
fn built(source: &'static LazyLock<String>) -> &'static str {
    source.as_str()
}

/// Every script, for `SCRIPT LOAD` on connect.
pub fn all() -> [&'static LockScript; 14] {
    [
        &HANDOVER_SCRIPT,
        &ACQUIRE_SCRIPT,
        &EXTEND_SCRIPT,
        &RELEASE_SCRIPT,
        &FENCED_ACQUIRE_SCRIPT,
        &FENCE_SCRIPT,
        &PERMIT_ACQUIRE_SCRIPT,
        &READ_ACQUIRE_SCRIPT,
        &READ_EXTEND_SCRIPT,
        &READ_RELEASE_SCRIPT,
        &WRITE_ACQUIRE_SCRIPT,
        &LINE_ACQUIRE_SCRIPT,
        &LINE_LEAVE_SCRIPT,
        &LINE_RELEASE_SCRIPT,
    ]
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
        assert_eq!(
            hashes
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            hashes.len()
        );
    }

    #[test]
    fn hash_slots_match_redis() {
        // Values from CLUSTER KEYSLOT on a real server.
        assert_eq!(hash_slot("foo"), 12182);
        assert_eq!(hash_slot("bar"), 5061);
        assert_eq!(hash_slot("{}foo"), 9500);
        assert_eq!(
            hash_slot("{user1000}.following"),
            hash_slot("{user1000}.followers")
        );
    }

    #[test]
    fn fence_keys_share_the_resource_slot() {
        // Every name without a '}' outside a hash tag (a '}' can never be inside one).
        for r in ["orders:42", "{user:1}:cart", "a{b", "{a}b}", "plain"] {
            assert_eq!(
                hash_slot(&fence_key(r)),
                hash_slot(r),
                "{r} -> {}",
                fence_key(r)
            );
            assert_ne!(fence_key(r), r);
        }
        assert_eq!(fence_key("orders:42"), "{orders:42}:redlock-rs:fence");
        assert_eq!(
            fence_key("{user:1}:cart"),
            "{user:1}:cart:redlock-rs:tagged:fence"
        );
        // A name that is all hash tag, and the name inside it: two resources.
        assert_ne!(scoped_key("{x}", "line"), scoped_key("x", "line"));
        assert_eq!(scoped_key("{x}", "line"), "{x}:redlock-rs:tagged:line");
    }

    #[test]
    fn release_announces_on_the_released_channel() {
        assert!(RELEASE.contains(&format!("'{RELEASED_PREFIX}' .. key")));
        assert_eq!(released_channel("a:b"), "redlock-rs:released:a:b");
    }

    #[test]
    fn every_slot_has_a_tag_and_every_name_keeps_its_keys_in_its_slot() {
        // (Every 97th slot and the ends: each is a search of its own.)
        for slot in (0..16384u16).step_by(97).chain([1, 16383]) {
            let tag = slot_tag(slot);
            assert!(!tag.is_empty() && tag.len() <= 4, "{slot}: {tag}");
            assert_eq!(hash_slot(&tag), slot);
        }
        let names = [
            "jobs", "a}b", "{}x", "u{}v", "}", "}{", "a}{b}", "{t}x", "x{", "{q",
        ];
        let mut keys = std::collections::HashSet::new();
        for name in names {
            for suffix in ["line", "line:exp", "fence", "sem:fence", "rw:w"] {
                let key = scoped_key(name, suffix);
                assert_eq!(hash_slot(&key), hash_slot(name), "{name} {suffix}: {key}");
                assert_ne!(key, name);
                assert!(keys.insert(key), "{name} {suffix}");
            }
        }
        // A name's length keeps names and suffixes apart.
        assert_ne!(
            scoped_key("a}b:sem", "fence"),
            scoped_key("a}b", "sem:fence")
        );
    }

    #[test]
    fn a_line_release_falls_back_to_its_lock_key_alone() {
        let keys = ["job".to_string(), "l".to_string(), "e".to_string()];
        let line = LINE_RELEASE_SCRIPT.evalsha(&keys, &["v", "quiet", "t", "3", "900"]);
        let alone = first_key_release(&LINE_RELEASE_SCRIPT, &line).unwrap();
        let expected = RELEASE_SCRIPT.evalsha(&["job".to_string()], &["v", "quiet"]);
        assert_eq!(alone.get_packed_command(), expected.get_packed_command());
        let plain = LINE_RELEASE_SCRIPT.evalsha(&keys, &["v", ""]);
        let alone = first_key_release(&LINE_RELEASE_SCRIPT, &plain).unwrap();
        let expected = RELEASE_SCRIPT.evalsha(&["job".to_string()], &["v", ""]);
        assert_eq!(alone.get_packed_command(), expected.get_packed_command());
        // Any other script has no such fallback.
        let release = RELEASE_SCRIPT.evalsha(&["a".to_string(), "b".to_string()], &["v", ""]);
        assert!(first_key_release(&RELEASE_SCRIPT, &release).is_none());
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
