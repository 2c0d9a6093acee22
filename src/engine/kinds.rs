//! The kinds of hold the engine takes (mutex, semaphore permit, read and write holds of a
//! read-write lock): their keys, the commands of one attempt, and how a node's reply to
//! them reads as a vote.
//!
//! Every kind reduces to the mutex's quorum argument:
//! * a semaphore of `k` permits is `k` mutex slots; a holder owns one slot on a quorum,
//!   so there are never more than `k` holders;
//! * a read hold and the write hold exclude each other on every node (each script refuses
//!   while the other is held there), so a reader's quorum and a writer's quorum, which
//!   share a node, cannot both be held.

use crate::engine::line::{line_keys, Seat};
use crate::engine::quorum::Vote;
use crate::engine::scripts::{
    fence_key, released_channel, scoped_key, LockScript, ACQUIRE_SCRIPT, EXTEND_SCRIPT,
    FENCED_ACQUIRE_SCRIPT, LINE_ACQUIRE_SCRIPT, LINE_RELEASE_SCRIPT, PERMIT_ACQUIRE_SCRIPT,
    READ_ACQUIRE_SCRIPT, READ_EXTEND_SCRIPT, READ_RELEASE_SCRIPT, RELEASE_SCRIPT,
    WRITE_ACQUIRE_SCRIPT,
};
use crate::engine::settings::Settings;
use crate::engine::value::random_unit;
use std::sync::OnceLock;

/// One lock operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Acquire { ttl_ms: u64 },
    Extend { ttl_ms: u64 },
    Release,
}

impl Op {
    pub fn ttl_ms(self) -> Option<u64> {
        match self {
            Op::Acquire { ttl_ms } | Op::Extend { ttl_ms } => Some(ttl_ms),
            Op::Release => None,
        }
    }
}

/// What an operation holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// Every resource, exclusively (node-redlock's lock).
    #[default]
    Mutex,
    /// One of `permits` slots of a semaphore; extends and releases name the `slot` held.
    Permit { permits: u32, slot: u32 },
    /// A read hold of a read-write lock (shared with other readers).
    Read,
    /// The write hold of a read-write lock (exclusive against readers and writers).
    Write,
}

impl Kind {
    /// The kind one attempt of `op` sends: a permit acquire tries the slots from a random
    /// one on (see `PERMIT_ACQUIRE`), every other attempt is `self`.
    pub fn for_attempt(self, op: Op) -> Kind {
        match (op, self) {
            (Op::Acquire { .. }, Kind::Permit { permits, .. }) => Kind::Permit {
                permits,
                slot: ((random_unit() * f64::from(permits)) as u32).min(permits - 1),
            },
            (_, kind) => kind,
        }
    }

    /// Whether holders of this kind share the resource (a process's waiters then do not
    /// wait for each other's release).
    pub fn shared(self) -> bool {
        matches!(self, Kind::Permit { .. } | Kind::Read)
    }

    /// The channels on which the releases that an acquire of this kind on `resources`
    /// waits for are announced.
    pub fn channels(self, resources: &[String]) -> Vec<String> {
        let r = resources.first().map(String::as_str).unwrap_or("");
        match self {
            Kind::Mutex => resources.iter().map(|r| released_channel(r)).collect(),
            Kind::Permit { permits, .. } => slot_keys(r, permits)
                .iter()
                .map(|k| released_channel(k))
                .collect(),
            Kind::Read | Kind::Write => {
                let [w, readers, wait, _] = rw_keys(r);
                let mut channels = vec![released_channel(&w), released_channel(&readers)];
                if self == Kind::Read {
                    // A waiting writer's mark keeps new readers out: its removal (the
                    // writer gave up) lets them in.
                    channels.push(released_channel(&wait));
                }
                channels
            }
        }
    }

    /// The name of the process-local line of waiters for `resources`.
    pub fn line(self, resources: &[String]) -> String {
        let prefix = match self {
            Kind::Mutex => "",
            Kind::Permit { .. } => "permit\u{0}",
            Kind::Read => "read\u{0}",
            Kind::Write => "write\u{0}",
        };
        let len = resources.iter().map(|r| r.len() + 1).sum::<usize>();
        let mut line = String::with_capacity(prefix.len() + len);
        line.push_str(prefix);
        for (i, r) in resources.iter().enumerate() {
            if i > 0 {
                line.push('\u{0}');
            }
            line.push_str(r);
        }
        line
    }
}

/// The key of slot `slot` of semaphore `resource`.
pub fn slot_key(resource: &str, slot: u32) -> String {
    scoped_key(resource, &format!("sem:{slot}"))
}

/// Every slot key of semaphore `resource`.
pub fn slot_keys(resource: &str, permits: u32) -> Vec<String> {
    (0..permits).map(|i| slot_key(resource, i)).collect()
}

/// The keys of read-write lock `resource`: the write key, the readers (a sorted set), the
/// writer-waiting mark and the fencing counter.
pub fn rw_keys(resource: &str) -> [String; 4] {
    [
        scoped_key(resource, "rw:w"),
        scoped_key(resource, "rw:r"),
        scoped_key(resource, "rw:wait"),
        scoped_key(resource, "rw:fence"),
    ]
}

/// How a node's reply to the attempt's command reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `1` for, anything else against (a release: any answer is for).
    Flag,
    /// `{1, counter}` for, `0` or `{0, _}` against.
    Counted,
    /// `{slot, counter}` for (slot >= 0), `{-1, _}` against.
    Slot,
    /// `1` for; against, the holder's value, or `''` when the lock is free but another
    /// waiter is first in the nodes' line (see [`LINE_ACQUIRE`](crate::engine::scripts::LINE_ACQUIRE)).
    Line,
}

/// The commands of one attempt, built once for every node.
pub struct Commands {
    pub script: &'static LockScript,
    pub cmd: redis::Cmd,
    /// A single-resource mutex acquire as a plain `SET NX PX GET` where the server has it.
    pub fast: Option<redis::Cmd>,
    pub value: String,
    pub reply: Reply,
    pub is_acquire: bool,
    /// What removes whatever this attempt set (cleanups, stragglers), on these keys.
    pub release_script: &'static LockScript,
    /// The release of what this attempt set (see [`Commands::release`]): built when a
    /// cleanup or a straggler needs it, which most attempts never do.
    release: OnceLock<redis::Cmd>,
    release_keys: Vec<String>,
    /// What follows the value and `quiet` in the arguments of the release (a line
    /// acquire's ticket: see [`LINE_RELEASE`](crate::engine::scripts::LINE_RELEASE)).
    release_rest: Vec<String>,
    /// The fencing counters a won fenced acquire raises.
    pub fence_keys: Vec<String>,
}

/// What one kind of attempt sends, and what removes what it set.
struct Built {
    script: &'static LockScript,
    cmd: redis::Cmd,
    reply: Reply,
    release_script: &'static LockScript,
    release_keys: Vec<String>,
    fence_keys: Vec<String>,
}

impl Built {
    fn new(
        script: &'static LockScript,
        cmd: redis::Cmd,
        reply: Reply,
        release_script: &'static LockScript,
        release_keys: Vec<String>,
    ) -> Built {
        Built {
            script,
            cmd,
            reply,
            release_script,
            release_keys,
            fence_keys: Vec::new(),
        }
    }
}

impl Commands {
    /// The release of what this attempt set, not announced to the waiters (a plain
    /// mutex's only: see [`RELEASE`](crate::engine::scripts::RELEASE)).
    pub fn quiet_release(&self) -> Option<redis::Cmd> {
        let plain = [&*RELEASE_SCRIPT, &*LINE_RELEASE_SCRIPT];
        plain
            .iter()
            .any(|s| std::ptr::eq(self.release_script, *s))
            .then(|| self.release_cmd("quiet"))
    }

    /// The attempt's commands: one builder per kind of acquire, one for extends and
    /// releases of every kind.
    pub fn build(
        op: Op,
        kind: Kind,
        resources: &[String],
        value: &str,
        settings: &Settings,
    ) -> Self {
        let ttl = op.ttl_ms().map(|t| t.to_string()).unwrap_or_default();
        let r = resources.first().map(String::as_str).unwrap_or("");
        let built = match (kind, op) {
            (Kind::Mutex, Op::Acquire { .. }) => {
                mutex_acquire(resources, value, &ttl, settings.fencing)
            }
            (Kind::Permit { permits, slot }, Op::Acquire { .. }) => {
                permit_acquire(r, permits, slot, value, &ttl, settings.fencing)
            }
            (Kind::Read | Kind::Write, Op::Acquire { .. }) => {
                rw_acquire(kind, r, value, &ttl, settings)
            }
            (kind, op) => held_op(kind, op, resources, value, &ttl),
        };
        Commands {
            script: built.script,
            cmd: built.cmd,
            fast: fast_acquire(op, kind, resources, value, settings),
            value: value.to_string(),
            reply: built.reply,
            is_acquire: matches!(op, Op::Acquire { .. }),
            release_script: built.release_script,
            release: OnceLock::new(),
            release_keys: built.release_keys,
            release_rest: Vec::new(),
            fence_keys: built.fence_keys,
        }
    }
}

/// A mutex acquire: every resource at once, raising their fencing counters when fenced.
fn mutex_acquire(resources: &[String], value: &str, ttl: &str, fencing: bool) -> Built {
    let (release, release_keys) = mutex_release(resources);
    if !fencing {
        let cmd = ACQUIRE_SCRIPT.evalsha(resources, &[value, ttl]);
        return Built::new(&ACQUIRE_SCRIPT, cmd, Reply::Flag, release, release_keys);
    }
    let fence_keys: Vec<String> = resources.iter().map(|r| fence_key(r)).collect();
    let mut keys = resources.to_vec();
    keys.extend(fence_keys.iter().cloned());
    let n = resources.len().to_string();
    let cmd = FENCED_ACQUIRE_SCRIPT.evalsha(&keys, &[value, ttl, &n]);
    Built {
        fence_keys,
        ..Built::new(
            &FENCED_ACQUIRE_SCRIPT,
            cmd,
            Reply::Counted,
            release,
            release_keys,
        )
    }
}

/// What releases a mutex on `resources`, on which keys: a single resource's release keeps
/// the lock for the first waiter of its line on the nodes, if any (see
/// [`LINE_RELEASE`](crate::engine::scripts::LINE_RELEASE)).
fn mutex_release(resources: &[String]) -> (&'static LockScript, Vec<String>) {
    match resources {
        [r] => {
            let [line, expiry] = line_keys(r);
            (&LINE_RELEASE_SCRIPT, vec![r.clone(), line, expiry])
        }
        _ => (&RELEASE_SCRIPT, resources.to_vec()),
    }
}

/// A semaphore permit: the first free slot of `permits` from slot `start` on.
fn permit_acquire(
    r: &str,
    permits: u32,
    start: u32,
    value: &str,
    ttl: &str,
    fencing: bool,
) -> Built {
    let slots = slot_keys(r, permits);
    let fence_keys = vec![scoped_key(r, "sem:fence")];
    let mut keys = slots.clone();
    keys.extend(fence_keys.iter().cloned());
    let fenced = if fencing { "1" } else { "0" };
    let start = start.to_string();
    let cmd = PERMIT_ACQUIRE_SCRIPT.evalsha(&keys, &[value, ttl, fenced, &start]);
    Built {
        fence_keys,
        ..Built::new(
            &PERMIT_ACQUIRE_SCRIPT,
            cmd,
            Reply::Slot,
            &RELEASE_SCRIPT,
            slots,
        )
    }
}

/// A read or write hold of a read-write lock.
fn rw_acquire(kind: Kind, r: &str, value: &str, ttl: &str, settings: &Settings) -> Built {
    let [w, readers, wait, fence] = rw_keys(r);
    let fenced = if settings.fencing { "1" } else { "0" };
    let fence_keys = vec![fence.clone()];
    let built = if kind == Kind::Read {
        let keys = [readers.clone(), w, wait, fence];
        let cmd = READ_ACQUIRE_SCRIPT.evalsha(&keys, &[value, ttl, fenced]);
        Built::new(
            &READ_ACQUIRE_SCRIPT,
            cmd,
            Reply::Counted,
            &READ_RELEASE_SCRIPT,
            vec![readers],
        )
    } else {
        // A waiting writer keeps new readers out for a little longer than it takes to
        // try again.
        let waiting = (2 * (settings.retry_delay_ms + settings.retry_jitter_ms)).max(100);
        let keys = [w.clone(), readers, wait, fence];
        let cmd = WRITE_ACQUIRE_SCRIPT.evalsha(&keys, &[value, ttl, fenced, &waiting.to_string()]);
        Built::new(
            &WRITE_ACQUIRE_SCRIPT,
            cmd,
            Reply::Counted,
            &RELEASE_SCRIPT,
            vec![w],
        )
    };
    Built {
        fence_keys,
        ..built
    }
}

/// An extend or release of a held lock of any kind, on the keys it occupies.
fn held_op(kind: Kind, op: Op, resources: &[String], value: &str, ttl: &str) -> Built {
    let keys = held_keys(kind, resources);
    let (extend, (release, release_keys)) = match kind {
        Kind::Read => (&*READ_EXTEND_SCRIPT, (&*READ_RELEASE_SCRIPT, keys.clone())),
        Kind::Mutex => (&*EXTEND_SCRIPT, mutex_release(resources)),
        _ => (&*EXTEND_SCRIPT, (&*RELEASE_SCRIPT, keys.clone())),
    };
    let (script, cmd) = match op {
        Op::Release => (release, release.evalsha(&release_keys, &[value])),
        _ => (extend, extend.evalsha(&keys, &[value, ttl])),
    };
    Built::new(script, cmd, Reply::Flag, release, release_keys)
}

impl Commands {
    /// This acquire (of a plain mutex on the seat's resource) honouring the nodes' waiting
    /// line, with `seat`'s ticket (see [`crate::engine::line`]); its cleanup puts the
    /// ticket back where the attempt took the lock.
    pub fn in_line(self, seat: &Seat, ttl_ms: u64) -> Self {
        Commands {
            script: &LINE_ACQUIRE_SCRIPT,
            cmd: seat.acquire_cmd(&self.value, &ttl_ms.to_string()),
            reply: Reply::Line,
            fast: None,
            release_rest: seat.rejoin_args(),
            release: OnceLock::new(),
            ..self
        }
    }

    /// What removes whatever this attempt set.
    pub fn release(&self) -> &redis::Cmd {
        self.release.get_or_init(|| {
            if self.release_rest.is_empty() {
                let value: &str = &self.value;
                self.release_script.evalsha(&self.release_keys, &[value])
            } else {
                self.release_cmd("")
            }
        })
    }

    /// The release of what this attempt set, announced unless `quiet` is `"quiet"`.
    fn release_cmd(&self, quiet: &str) -> redis::Cmd {
        let mut args = vec![self.value.as_str(), quiet];
        args.extend(self.release_rest.iter().map(String::as_str));
        self.release_script.evalsha(&self.release_keys, &args)
    }

    /// The Redis Cluster hash slot of the keys (they share one: see `same_slot`).
    pub fn hash_slot(&self) -> u16 {
        self.first_key()
            .map_or(0, |k| crate::engine::scripts::hash_slot(k))
    }

    /// The first key this attempt sets (they share one hash slot).
    pub fn first_key(&self) -> Option<&String> {
        self.release_keys.first()
    }

    /// Releases what a permit acquire took on a node, except slot `kept` (the slot won).
    pub fn release_slots_except(&self, kept: Option<u32>) -> redis::Cmd {
        let keys: Vec<String> = self
            .release_keys
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i as u32) != kept)
            .map(|(_, k)| k.clone())
            .collect();
        self.release_script.evalsha(&keys, &[&self.value])
    }
}

/// The keys a held lock of `kind` occupies (what its extend and release touch).
fn held_keys(kind: Kind, resources: &[String]) -> Vec<String> {
    let r = resources.first().map(String::as_str).unwrap_or("");
    match kind {
        Kind::Mutex => resources.to_vec(),
        Kind::Permit { slot, .. } => vec![slot_key(r, slot)],
        Kind::Read => vec![rw_keys(r)[1].clone()],
        Kind::Write => vec![rw_keys(r)[0].clone()],
    }
}

/// `SET key value NX PX ttl GET` (Redis 7) for a single-resource mutex acquire: the same
/// decision as the script at a fraction of Redis' CPU.
fn fast_acquire(
    op: Op,
    kind: Kind,
    resources: &[String],
    value: &str,
    settings: &Settings,
) -> Option<redis::Cmd> {
    match (op, kind, resources) {
        (Op::Acquire { ttl_ms }, Kind::Mutex, [resource]) if !settings.fencing => {
            Some(set_nx_px_get(resource, value, ttl_ms))
        }
        _ => None,
    }
}

/// `SET key value NX PX ttl_ms GET`.
pub fn set_nx_px_get(key: &str, value: &str, ttl_ms: u64) -> redis::Cmd {
    let mut set = redis::Cmd::with_capacity(7, 32 + key.len() + value.len());
    set.arg("SET")
        .arg(key)
        .arg(value)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms)
        .arg("GET");
    set
}

/// A node's vote from its reply to an attempt's command: the vote, the fencing counter it
/// read, and the slot it took. `None`: not a reply these scripts give.
pub fn read_reply(
    op: Op,
    reply: Reply,
    v: &redis::Value,
) -> Option<(Vote, Option<i64>, Option<u32>)> {
    use redis::Value::{Array, Int};
    Some(match (reply, v) {
        (Reply::Flag, Int(_)) if op == Op::Release => (Vote::For, None, None),
        (Reply::Flag, Int(1)) => (Vote::For, None, None),
        (Reply::Flag, Int(_)) => (Vote::Locked, None, None),
        (Reply::Counted, Int(0)) => (Vote::Locked, None, None),
        (Reply::Counted, Array(a)) => match a.as_slice() {
            [Int(1), Int(high)] => (Vote::For, Some(*high), None),
            [Int(0), _] => (Vote::Locked, None, None),
            _ => return None,
        },
        (Reply::Slot, Array(a)) => match a.as_slice() {
            [Int(slot), Int(high)] if *slot >= 0 => {
                (Vote::For, Some(*high), Some(u32::try_from(*slot).ok()?))
            }
            [Int(_), _] => (Vote::Locked, None, None),
            _ => return None,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::scripts::hash_slot;
    use redis::Value::{Array, Int};

    #[test]
    fn keys_never_collide_with_mutex_keys_and_share_the_slot() {
        for r in ["jobs", "{user:1}:cart"] {
            let mut keys = slot_keys(r, 3);
            keys.extend(rw_keys(r));
            keys.push(fence_key(r));
            let distinct: std::collections::HashSet<_> = keys.iter().collect();
            assert_eq!(distinct.len(), keys.len());
            for k in &keys {
                assert_ne!(k, r);
                assert_eq!(hash_slot(k), hash_slot(&keys[0]), "{k}");
            }
        }
        assert_eq!(slot_key("jobs", 2), "{jobs}:redlock-rs:sem:2");
    }

    #[test]
    fn replies_read_as_votes() {
        let acquire = Op::Acquire { ttl_ms: 1 };
        assert_eq!(
            read_reply(acquire, Reply::Slot, &Array(vec![Int(2), Int(7)])),
            Some((Vote::For, Some(7), Some(2)))
        );
        assert_eq!(
            read_reply(acquire, Reply::Slot, &Array(vec![Int(-1), Int(0)])),
            Some((Vote::Locked, None, None))
        );
        assert_eq!(
            read_reply(acquire, Reply::Counted, &Array(vec![Int(1), Int(3)])),
            Some((Vote::For, Some(3), None))
        );
        assert_eq!(
            read_reply(acquire, Reply::Counted, &Int(0)),
            Some((Vote::Locked, None, None))
        );
        assert_eq!(
            read_reply(Op::Release, Reply::Flag, &Int(0)),
            Some((Vote::For, None, None))
        );
        assert_eq!(
            read_reply(acquire, Reply::Flag, &Int(0)),
            Some((Vote::Locked, None, None))
        );
        assert_eq!(read_reply(acquire, Reply::Slot, &Int(1)), None);
    }

    #[test]
    fn each_kind_has_its_own_line_for_the_same_resources() {
        let r = ["a".to_string(), "b".to_string()];
        assert_eq!(Kind::Mutex.line(&r), "a\u{0}b");
        assert_eq!(Kind::Mutex.line(&r[..1]), "a");
        assert_eq!(Kind::Read.line(&r[..1]), "read\u{0}a");
        assert_eq!(Kind::Write.line(&r[..1]), "write\u{0}a");
        let permit = Kind::Permit {
            permits: 2,
            slot: 0,
        };
        assert_eq!(permit.line(&r[..1]), "permit\u{0}a");
    }

    #[test]
    fn a_held_permit_is_extended_and_released_on_its_slot_only() {
        let s = Settings::default();
        let r = ["sem".to_string()];
        let kind = Kind::Permit {
            permits: 4,
            slot: 2,
        };
        let c = Commands::build(Op::Release, kind, &r, "v", &s);
        let packed = String::from_utf8(c.cmd.get_packed_command()).unwrap();
        assert!(packed.contains("{sem}:redlock-rs:sem:2"));
        assert!(!packed.contains("{sem}:redlock-rs:sem:1"));
        let c = Commands::build(Op::Acquire { ttl_ms: 10 }, kind, &r, "v", &s);
        assert_eq!(kind.channels(&r).len(), 4);
        let (read, write) = (Kind::Read.channels(&r), Kind::Write.channels(&r));
        assert_eq!(read[..2], write[..]);
        assert_eq!(read[2], released_channel(&rw_keys("sem")[2]));
        assert_eq!(c.reply, Reply::Slot);
        assert!(Kind::Read.shared() && !Kind::Write.shared());
    }
}
