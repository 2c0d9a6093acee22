//! `MemoryStore`: an in-process lock node behind the same interface as a Redis server (the
//! node `Backend` trait, through `node::in_memory::MemoryBackend`). It answers the commands the engine
//! sends (its lock scripts by SHA, `SET NX PX GET`, the identity and record commands) and a
//! client's basic commands, with TTLs on the monotonic clock, release announcements to the
//! process's waiters, and fault injection for users' tests: down, paused, cleared (a
//! restart that lost its data).

use crate::engine::sync::Unpoisoned;
use crate::engine::timer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;

use crate::engine::error::NodeError;
use crate::engine::identity::{LOST_KEY, RECORDS_KEY};
use crate::engine::notify::Subscriber;
use crate::engine::scripts::{
    LockScript, ACQUIRE_SCRIPT, EXTEND_SCRIPT, FENCED_ACQUIRE_SCRIPT, FENCE_SCRIPT,
    HANDOVER_SCRIPT, LEFT_PREFIX, LINE_ACQUIRE_SCRIPT, LINE_LEAVE_SCRIPT, LINE_RELEASE_SCRIPT,
    PERMIT_ACQUIRE_SCRIPT, READ_ACQUIRE_SCRIPT, READ_EXTEND_SCRIPT, READ_RELEASE_SCRIPT,
    RELEASED_PREFIX, RELEASE_SCRIPT, RESERVED_PREFIX, WRITE_ACQUIRE_SCRIPT,
};
use crate::engine::value::random_value;

/// A stored value.
#[derive(Debug, Clone)]
enum Data {
    Str(String),
    /// A sorted set of members by score (the readers of a read-write lock, by expiry in ms
    /// on the store's clock).
    ZSet(HashMap<String, i64>),
    Hash(HashMap<String, String>),
}

#[derive(Debug, Clone)]
struct Entry {
    data: Data,
    expires: Option<Instant>,
}

/// The state behind the lock.
struct State {
    keys: HashMap<String, Entry>,
    down: bool,
    paused_until: Option<Instant>,
    /// Delays only the next call (tests of requests that arrive late).
    delay_next: Option<Duration>,
    closed: bool,
    run_id: String,
    started: Instant,
}

/// One in-process lock node.
pub struct MemoryStore {
    name: String,
    state: Mutex<State>,
    /// Bumped by `clear()` (a restart): the node's identity changed.
    epoch: AtomicU64,
    /// Release announcements go to the waiters of this process.
    subscriber: Arc<Subscriber>,
    /// Tells the calls waiting out a pause that it changed (`pause(0)` ends it, as SIGCONT).
    pause_changed: tokio::sync::Notify,
}

type Outcome = Result<Value, NodeError>;

fn ok() -> Value {
    Value::Okay
}

fn int(n: i64) -> Value {
    Value::Int(n)
}

fn bulk(s: &str) -> Value {
    Value::BulkString(bytes_of(s))
}

/// Bytes as the store's text, losslessly: valid UTF-8 as it is, each byte of an invalid
/// sequence as a private-use character (U+10FF80 to U+10FFFF), and a real character of
/// that range (or [`ESCAPE`]) after [`ESCAPE`], so that binary keys and values stay apart
/// from every text and come back as they went in (see [`bytes_of`]).
fn text_of(mut bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    let push_valid = |text: &mut String, valid: &str| {
        for c in valid.chars() {
            if (ESCAPE..=0x10_FFFF).contains(&u32::from(c)) {
                text.push(char::from_u32(ESCAPE).unwrap_or('\u{FFFD}'));
            }
            text.push(c);
        }
    };
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                push_valid(&mut text, valid);
                return text;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                push_valid(&mut text, std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    text.push(char::from_u32(0x10_FF00 + u32::from(*b)).unwrap_or('\u{FFFD}'));
                }
                bytes = &rest[bad..];
            }
        }
    }
}

/// What marks the next character of the store's text as itself (see [`text_of`]).
const ESCAPE: u32 = 0x10_FF7F;

/// The bytes of the store's text (see [`text_of`]).
fn bytes_of(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut literal = false;
    for c in text.chars() {
        match u32::from(c) {
            ESCAPE if !literal => literal = true,
            b @ 0x10_FF80..=0x10_FFFF if !literal => bytes.push((b - 0x10_FF00) as u8),
            _ => {
                literal = false;
                bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
        }
    }
    bytes
}

fn pair(a: i64, b: i64) -> Value {
    Value::Array(vec![int(a), int(b)])
}

impl MemoryStore {
    pub fn new(name: String, command_timeout: Duration) -> Arc<Self> {
        Arc::new(MemoryStore {
            name,
            state: Mutex::new(State {
                keys: HashMap::new(),
                down: false,
                paused_until: None,
                delay_next: None,
                closed: false,
                run_id: random_value(),
                started: Instant::now(),
            }),
            epoch: AtomicU64::new(1),
            subscriber: Subscriber::local(command_timeout),
            pause_changed: tokio::sync::Notify::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.locked()
    }

    /// How errors name the store.
    pub fn addr(&self) -> String {
        format!("MemoryStore '{}'", self.name)
    }

    /// The pub/sub side: waiters register here; releases announce here.
    pub fn subscriber(&self) -> Arc<Subscriber> {
        self.subscriber.clone()
    }

    /// Calls fail at once, like a dead node, until [`MemoryStore::up`]: those waiting out a
    /// pause too (a frozen server that dies resets its connections).
    pub fn down(&self) {
        self.lock().down = true;
        self.pause_changed.notify_waiters();
    }

    pub fn up(&self) {
        self.lock().down = false;
    }

    /// Calls wait `ms` before they are answered, like a node under SIGSTOP: the callers'
    /// time-outs end them first when they are shorter. It applies to the calls already
    /// waiting too: `pause(0)` ends the pause for them (as SIGCONT would).
    pub fn pause(&self, ms: u64) {
        self.lock().paused_until = Some(Instant::now() + Duration::from_millis(ms));
        self.pause_changed.notify_waiters();
    }

    /// Waits while the store is paused (a pause changed meanwhile counts from then on).
    async fn wait_out_pause(&self) -> Result<(), NodeError> {
        let paused = |until: Option<Instant>| until.filter(|u| *u > Instant::now());
        if paused(self.lock().paused_until).is_none() {
            return Ok(());
        }
        loop {
            let changed = self.pause_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (until, down) = {
                let st = self.lock();
                (paused(st.paused_until), st.down)
            };
            let Some(until) = until.filter(|_| !down) else {
                break;
            };
            tokio::select! {
                _ = timer::sleep_until(until) => {}
                _ = changed => {}
            }
        }
        self.check()
    }

    /// Delays the next call only by `ms` (a request that arrives late, overtaken by later
    /// ones on other connections).
    pub fn delay_next(&self, ms: u64) {
        self.lock().delay_next = Some(Duration::from_millis(ms));
    }

    /// Loses every key, like a restart without persistence (a new identity too).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.keys.clear();
        st.run_id = random_value();
        st.started = Instant::now();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The lock keys held now, sorted (for assertions): mutex keys, semaphore slots and
    /// read-write holds, without the library's bookkeeping (fencing counters, node records).
    pub fn keys(&self) -> Vec<String> {
        let mut st = self.lock();
        let now = Instant::now();
        st.keys.retain(|_, e| e.expires.is_none_or(|x| x > now));
        let bookkeeping = |k: &str| {
            k == RECORDS_KEY || k == LOST_KEY || k.ends_with("fence") && k.contains(":redlock-rs:")
        };
        let mut keys: Vec<String> = st
            .keys
            .keys()
            .filter(|k| !bookkeeping(k))
            .map(|k| String::from_utf8_lossy(&bytes_of(k)).into_owned())
            .collect();
        keys.sort();
        keys
    }

    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Whether calls can be made now (`Err`: down or closed).
    pub fn check(&self) -> Result<(), NodeError> {
        let st = self.lock();
        if st.closed {
            return Err(NodeError::Closed { addr: self.addr() });
        }
        if st.down {
            return Err(NodeError::Connect {
                addr: self.addr(),
                reason: "the store is down (store.down())".into(),
            });
        }
        Ok(())
    }

    /// The identity a restart changes, and the uptime.
    pub fn identity(&self) -> (String, Duration) {
        let st = self.lock();
        (st.run_id.clone(), st.started.elapsed())
    }

    pub fn identity_epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Answers `cmd` as Redis would (after a pause, if any).
    pub async fn execute(&self, cmd: &redis::Cmd) -> Outcome {
        self.check()?;
        let delay = self.lock().delay_next.take();
        if let Some(d) = delay {
            timer::sleep(d).await;
        }
        self.wait_out_pause().await?;
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        let args: Vec<String> = args.iter().map(|a| text_of(a)).collect();
        let (published, reply) = {
            let mut st = self.lock();
            let mut published = Vec::new();
            let reply = run(&mut st, &args, &mut published);
            (published, reply)
        };
        for (channel, value) in published {
            self.subscriber.dispatch(&channel, &bytes_of(&value));
        }
        reply.map_err(|line| NodeError::Reply {
            addr: self.addr(),
            line,
        })
    }
}

impl State {
    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    fn live(&mut self, key: &str) -> Option<&mut Entry> {
        let now = Instant::now();
        if self
            .keys
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|x| x <= now))
        {
            self.keys.remove(key);
        }
        self.keys.get_mut(key)
    }

    fn get(&mut self, key: &str) -> Option<String> {
        match self.live(key).map(|e| &e.data) {
            Some(Data::Str(s)) => Some(s.clone()),
            _ => None,
        }
    }

    fn exists(&mut self, key: &str) -> bool {
        self.live(key).is_some()
    }

    /// The string at `key`, as `GET` reads it: `WRONGTYPE` for a key of another type.
    fn string(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.live(key).map(|e| &e.data) {
            Some(Data::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(WRONGTYPE.into()),
            None => Ok(None),
        }
    }

    fn set(&mut self, key: &str, value: &str, px: Option<u64>) {
        let expires = px.map(|ms| Instant::now() + Duration::from_millis(ms));
        self.keys.insert(
            key.to_string(),
            Entry {
                data: Data::Str(value.to_string()),
                expires,
            },
        );
    }

    fn counter(&mut self, key: &str) -> i64 {
        self.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    fn pttl(&mut self, key: &str) -> i64 {
        match self.live(key) {
            None => -2,
            Some(Entry { expires: None, .. }) => -1,
            Some(Entry {
                expires: Some(x), ..
            }) => x.saturating_duration_since(Instant::now()).as_millis() as i64,
        }
    }

    /// The readers of a read-write lock, expired ones dropped.
    fn readers(&mut self, key: &str) -> &mut HashMap<String, i64> {
        let now = self.now_ms();
        let z = self.zset(key);
        z.retain(|_, expiry| *expiry > now);
        z
    }

    /// The sorted set at `key` (made empty when missing, expired or of another type).
    fn zset(&mut self, key: &str) -> &mut HashMap<String, i64> {
        let entry = self.keys.entry(key.to_string()).or_insert(Entry {
            data: Data::ZSet(HashMap::new()),
            expires: None,
        });
        if !matches!(entry.data, Data::ZSet(_))
            || entry.expires.is_some_and(|x| x <= Instant::now())
        {
            *entry = Entry {
                data: Data::ZSet(HashMap::new()),
                expires: None,
            };
        }
        let Data::ZSet(z) = &mut entry.data else {
            unreachable!("just made a sorted set")
        };
        z
    }

    /// Puts `ticket` in waiting line `line` at `order`, expiring `hold` ms from now
    /// (`expiry`), both keys living at least that long.
    fn join_line(&mut self, [line, expiry]: [&String; 2], ticket: &str, order: i64, hold: u64) {
        let until = self.now_ms() + hold as i64;
        self.zset(line).insert(ticket.to_string(), order);
        self.zset(expiry).insert(ticket.to_string(), until);
        self.raise_ttl(line, hold);
        self.raise_ttl(expiry, hold);
    }

    /// The first live ticket of waiting line `line` (expiries in `expiry`), the expired
    /// ones before it dropped.
    fn line_head(&mut self, line: &str, expiry: &str) -> Option<String> {
        let now = self.now_ms();
        loop {
            let head = self.first(line)?;
            if self.zset(expiry).get(&head).is_some_and(|e| *e > now) {
                self.tidy(expiry);
                return Some(head);
            }
            for k in [line, expiry] {
                self.zset(k).remove(&head);
                self.tidy(k);
            }
        }
    }

    /// As the scripts' `PASS_ON`: releases `lock` if it holds `mine`, keeping it for the
    /// first ticket of its line if there is one; announced when kept for a ticket other
    /// than `own`, or, unless `quiet`, with `freed` when freed. 1 when released, 2 when
    /// kept for `own` (not announced), 0 when not ours.
    fn pass_on(
        &mut self,
        [lock, line, expiry]: [&String; 3],
        (mine, freed): (&str, &str),
        (quiet, own): (bool, Option<&str>),
        published: &mut Vec<(String, String)>,
    ) -> i64 {
        if self.get(lock).as_deref() != Some(mine) {
            return 0;
        }
        let head = self.line_head(line, expiry);
        let alone = self.zset(line).len() == 1;
        self.tidy(line);
        let head = head.filter(|h| !(alone && Some(h.as_str()) == own));
        let for_own = own.is_some() && head.as_deref() == own;
        let said = match head {
            Some(head) => self.keep_for(lock, expiry, &head),
            None => {
                self.keys.remove(lock);
                freed.to_string()
            }
        };
        if for_own {
            return 2;
        }
        if !quiet || said != freed {
            published.push((format!("{RELEASED_PREFIX}{lock}"), said));
        }
        1
    }

    /// Keeps `lock` for ticket `head` until the ticket expires (its expiry in `expiry`):
    /// the value kept (see `scripts::KEEP_FOR`).
    fn keep_for(&mut self, lock: &str, expiry: &str, head: &str) -> String {
        let left = self.zset(expiry).get(head).copied().unwrap_or(0) - self.now_ms();
        let kept = format!("{RESERVED_PREFIX}{head}");
        self.set(lock, &kept, Some(left.max(1) as u64));
        kept
    }

    /// The first member of sorted set `key` (by score, then member, as Redis orders).
    fn first(&mut self, key: &str) -> Option<String> {
        let z = self.zset(key);
        let first = z.iter().min_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        let first = first.map(|(m, _)| m.clone());
        self.tidy(key);
        first
    }

    /// Drops an emptied readers set (Redis deletes empty sets).
    fn tidy(&mut self, key: &str) {
        if matches!(self.keys.get(key), Some(Entry { data: Data::ZSet(z), .. }) if z.is_empty()) {
            self.keys.remove(key);
        }
    }

    /// `ZADD key now+ttl value` with the key's TTL raised to `ttl`.
    fn add_reader(&mut self, key: &str, value: &str, ttl: u64) {
        let expiry = self.now_ms() + ttl as i64;
        self.readers(key).insert(value.to_string(), expiry);
        self.raise_ttl(key, ttl);
    }

    /// Raises the TTL of `key` to `ttl` ms when it is shorter (or there is none).
    fn raise_ttl(&mut self, key: &str, ttl: u64) {
        let until = Instant::now() + Duration::from_millis(ttl);
        if let Some(e) = self.keys.get_mut(key) {
            e.expires = Some(e.expires.map_or(until, |x| x.max(until)));
        }
    }
}

/// Runs one command; `published` collects release announcements. Long on purpose: one
/// short arm per Redis command the store answers, side by side.
/// `HSET key field value [field value ...]`, or `HSETNX key field value` (`only_new`):
/// how many fields were added.
fn hash_set(st: &mut State, only_new: bool, args: &[String]) -> Result<Value, String> {
    let entry = st.keys.entry(args[0].clone()).or_insert(Entry {
        data: Data::Hash(HashMap::new()),
        expires: None,
    });
    let Data::Hash(h) = &mut entry.data else {
        return Err("WRONGTYPE Operation against a key holding the wrong kind of value".into());
    };
    // Field and value pairs, as many as given (one for HSETNX).
    let pairs = args[1..]
        .chunks_exact(2)
        .take(if only_new { 1 } else { usize::MAX });
    let added = pairs
        .filter(|p| {
            if only_new && h.contains_key(&p[0]) {
                return false;
            }
            h.insert(p[0].clone(), p[1].clone()).is_none()
        })
        .count();
    Ok(int(added as i64))
}

fn run(
    st: &mut State,
    args: &[String],
    published: &mut Vec<(String, String)>,
) -> Result<Value, String> {
    let name = args
        .first()
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    arity(&name, args.len() - 1)?;
    match name.as_str() {
        "EVALSHA" => {
            let n: usize = arg(2).parse().map_err(|_| "ERR bad number of keys".to_string())?;
            let keys = args.get(3..3 + n).ok_or("ERR bad number of keys")?;
            let argv = &args[(3 + n).min(args.len())..];
            script(st, arg(1), keys, argv, published)
        }
        "SET" => set_command(st, args),
        "GET" => Ok(st.string(arg(1))?.map_or(Value::Nil, |v| bulk(&v))),
        "MGET" => Ok(Value::Array(
            args[1..]
                .iter()
                .map(|k| st.get(k).map_or(Value::Nil, |v| bulk(&v)))
                .collect(),
        )),
        "DEL" => {
            let mut deleted = 0;
            for k in &args[1..] {
                if st.exists(k) {
                    st.keys.remove(k);
                    deleted += 1;
                }
            }
            Ok(int(deleted))
        }
        "EXISTS" => Ok(int(args[1..].iter().filter(|k| st.exists(k)).count() as i64)),
        "PTTL" => Ok(int(st.pttl(arg(1)))),
        "HGET" => Ok(match st.live(arg(1)).map(|e| &e.data) {
            Some(Data::Hash(h)) => h.get(arg(2)).map_or(Value::Nil, |v| bulk(v)),
            Some(_) => return Err(WRONGTYPE.into()),
            None => Value::Nil,
        }),
        "HMGET" => {
            let hash = match st.live(arg(1)).map(|e| &e.data) {
                Some(Data::Hash(h)) => Some(h),
                Some(_) => return Err(WRONGTYPE.into()),
                None => None,
            };
            Ok(Value::Array(
                args.iter()
                    .skip(2)
                    .map(|f| hash.and_then(|h| h.get(f)).map_or(Value::Nil, |v| bulk(v)))
                    .collect(),
            ))
        }
        "HSET" | "HSETNX" => hash_set(st, name == "HSETNX", &args[1..]),
        "INFO" => Ok(bulk(&format!(
            "# Server\r\nredis_version:memory\r\nrun_id:{}\r\nuptime_in_seconds:{}\r\n",
            st.run_id,
            st.started.elapsed().as_secs()
        ))),
        "PING" if args.len() == 2 => Ok(bulk(arg(1))),
        "PING" => Ok(Value::SimpleString("PONG".into())),
        "QUIT" => Ok(ok()),
        // No replicas: none acknowledged.
        "WAIT" => Ok(int(0)),
        "SCRIPT" => Ok(bulk("")),
        _ => Err(format!("ERR unknown command '{name}' (MemoryStore answers the lock commands and GET, SET, DEL, MGET, EXISTS, PTTL, HGET, HMGET, HSET, HSETNX, INFO, PING)")),
    }
}

/// Redis' reply to a command on a key of another type.
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// Refuses a call of `name` with `n` arguments that Redis refuses (as it says it).
fn arity(name: &str, n: usize) -> Result<(), String> {
    let (least, most) = match name {
        "GET" | "PTTL" => (1, 1),
        "SET" => (2, usize::MAX),
        "MGET" | "DEL" | "EXISTS" => (1, usize::MAX),
        "HMGET" => (2, usize::MAX),
        "HGET" => (2, 2),
        "PING" => (0, 1),
        _ => return Ok(()),
    };
    if (least..=most).contains(&n) {
        Ok(())
    } else {
        Err(format!(
            "ERR wrong number of arguments for '{}' command",
            name.to_ascii_lowercase()
        ))
    }
}

/// When a key set now expires: `SET`'s `EX`, `PX`, `EXAT` or `PXAT` and its number.
/// `Ok(None)`: already past (an `EXAT` / `PXAT` before now: the key goes).
fn expiry(flag: &str, value: &str) -> Result<Option<Instant>, String> {
    let n: i64 = value
        .parse()
        .map_err(|_| "ERR value is not an integer or out of range".to_string())?;
    if n <= 0 {
        return Err("ERR invalid expire time in 'set' command".into());
    }
    let ms = match flag {
        "EX" | "EXAT" => n.checked_mul(1000),
        _ => Some(n),
    }
    .ok_or("ERR invalid expire time in 'set' command")?;
    let left = if flag.ends_with("AT") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        ms - now
    } else {
        ms
    };
    Ok((left > 0).then(|| Instant::now() + Duration::from_millis(left as u64)))
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]`, with
/// Redis' replies and errors.
fn set_command(st: &mut State, args: &[String]) -> Result<Value, String> {
    let (key, value) = (args[1].as_str(), args[2].as_str());
    let (mut only, mut get, mut ttl, mut keep) = (None, false, None, false);
    let syntax = || "ERR syntax error".to_string();
    let mut i = 3;
    while i < args.len() {
        let flag = args[i].to_ascii_uppercase();
        match flag.as_str() {
            "NX" | "XX" if only.is_none() => only = Some(flag == "NX"),
            "GET" => get = true,
            "KEEPTTL" if ttl.is_none() => keep = true,
            "EX" | "PX" | "EXAT" | "PXAT" if ttl.is_none() && !keep => {
                i += 1;
                ttl = Some(expiry(&flag, args.get(i).ok_or_else(syntax)?)?);
            }
            _ => return Err(syntax()),
        }
        i += 1;
    }
    let old = if get { st.string(key)? } else { None };
    let exists = st.exists(key);
    let stored = only.is_none_or(|nx| nx != exists);
    if stored {
        let expires = match ttl {
            Some(at) => at,
            None if keep => st.live(key).and_then(|e| e.expires),
            None => None,
        };
        if ttl == Some(None) {
            st.keys.remove(key);
        } else {
            st.keys.insert(
                key.to_string(),
                Entry {
                    data: Data::Str(value.to_string()),
                    expires,
                },
            );
        }
    }
    Ok(match (get, old, stored) {
        (true, Some(v), _) => bulk(&v),
        (true, None, _) | (false, _, false) => Value::Nil,
        (false, _, true) => ok(),
    })
}

/// The lock scripts, natively, with the Lua scripts' exact decisions: one function per
/// script of `scripts.rs`, each readable against its Lua original.
fn script(
    st: &mut State,
    sha: &str,
    keys: &[String],
    argv: &[String],
    published: &mut Vec<(String, String)>,
) -> Result<Value, String> {
    let native: [(&LockScript, Native); 14] = [
        (&ACQUIRE_SCRIPT, acquire),
        (&FENCED_ACQUIRE_SCRIPT, acquire),
        (&HANDOVER_SCRIPT, handover),
        (&EXTEND_SCRIPT, extend),
        (&RELEASE_SCRIPT, release),
        (&FENCE_SCRIPT, fence),
        (&PERMIT_ACQUIRE_SCRIPT, permit_acquire),
        (&READ_ACQUIRE_SCRIPT, read_acquire),
        (&READ_EXTEND_SCRIPT, read_extend),
        (&READ_RELEASE_SCRIPT, read_release),
        (&WRITE_ACQUIRE_SCRIPT, write_acquire),
        (&LINE_ACQUIRE_SCRIPT, line_acquire),
        (&LINE_LEAVE_SCRIPT, line_leave),
        (&LINE_RELEASE_SCRIPT, line_release),
    ];
    let Some((lua, run)) = native.into_iter().find(|(s, _)| s.hash == sha) else {
        return Err("NOSCRIPT No matching script (MemoryStore runs the lock scripts only)".into());
    };
    let call = Call {
        fenced_acquire: lua.hash == FENCED_ACQUIRE_SCRIPT.hash,
        keys,
        argv,
    };
    run(st, &call, published)
}

/// One lock script's native version.
type Native = fn(&mut State, &Call, &mut Vec<(String, String)>) -> Result<Value, String>;

/// The arguments of one script call.
struct Call<'a> {
    /// `ACQUIRE` and `FENCED_ACQUIRE` share one function.
    fenced_acquire: bool,
    keys: &'a [String],
    argv: &'a [String],
}

impl Call<'_> {
    fn a(&self, i: usize) -> &str {
        self.argv.get(i).map(String::as_str).unwrap_or("")
    }

    fn ms(&self, i: usize) -> u64 {
        self.a(i).parse().unwrap_or(0)
    }

    /// The lock value (`ARGV[1]`).
    fn value(&self) -> &str {
        self.a(0)
    }

    /// The fencing counter in `key`, if `ARGV[3]` asks for it (0 otherwise).
    fn fence_of(&self, st: &mut State, key: Option<&String>) -> i64 {
        match key {
            Some(k) if self.a(2) == "1" => st.counter(k),
            _ => 0,
        }
    }
}

fn acquire(st: &mut State, c: &Call, _: &mut Vec<(String, String)>) -> Result<Value, String> {
    let (keys, value) = (c.keys, c.value());
    let n = if c.fenced_acquire {
        c.a(2).parse().unwrap_or(keys.len())
    } else {
        keys.len()
    };
    let (locks, counters) = keys.split_at(n.min(keys.len()));
    if locks.iter().any(|k| st.get(k).is_some_and(|v| v != value)) {
        return Ok(int(0));
    }
    locks.iter().for_each(|k| st.set(k, value, Some(c.ms(1))));
    if !c.fenced_acquire {
        return Ok(int(1));
    }
    let high = counters.iter().map(|k| st.counter(k)).max().unwrap_or(0);
    Ok(pair(1, high))
}

fn handover(st: &mut State, c: &Call, _: &mut Vec<(String, String)>) -> Result<Value, String> {
    let (value, new) = (c.value(), c.a(1));
    if c.keys
        .iter()
        .any(|k| st.get(k).is_none_or(|v| v != value && v != new))
    {
        return Ok(int(0));
    }
    c.keys.iter().for_each(|k| st.set(k, new, Some(c.ms(2))));
    // As the script: 1 + the listeners of the release announcements. The store does not
    // tell its subscribers apart, so it says two (this process and another): the
    // hand-overs in a row stay bounded.
    Ok(int(3))
}

fn extend(st: &mut State, c: &Call, _: &mut Vec<(String, String)>) -> Result<Value, String> {
    let value = c.value();
    let held: Vec<Option<String>> = c.keys.iter().map(|k| st.get(k)).collect();
    if held.iter().flatten().any(|v| v != value) {
        return Ok(int(0));
    }
    if held.iter().any(Option::is_none) {
        return Ok(int(-1));
    }
    c.keys.iter().for_each(|k| st.set(k, value, Some(c.ms(1))));
    Ok(int(1))
}

fn release(
    st: &mut State,
    c: &Call,
    published: &mut Vec<(String, String)>,
) -> Result<Value, String> {
    let value = c.value();
    let mut n = 0;
    for k in c.keys {
        if st.get(k).as_deref() == Some(value) {
            st.keys.remove(k);
            if c.a(1) != "quiet" {
                published.push((format!("{RELEASED_PREFIX}{k}"), value.to_string()));
            }
            n += 1;
        }
    }
    Ok(int(n))
}

fn fence(st: &mut State, c: &Call, _: &mut Vec<(String, String)>) -> Result<Value, String> {
    let f: i64 = c.a(0).parse().unwrap_or(0);
    let high = c.keys.iter().map(|k| st.counter(k)).max().unwrap_or(0);
    if high >= f {
        return Ok(int(high));
    }
    c.keys.iter().for_each(|k| st.set(k, &f.to_string(), None));
    Ok(int(0))
}

fn permit_acquire(
    st: &mut State,
    c: &Call,
    _: &mut Vec<(String, String)>,
) -> Result<Value, String> {
    let value = c.value();
    let (slots, fence) = c.keys.split_at(c.keys.len().saturating_sub(1));
    let start = c.ms(3) as usize;
    let pick = slots
        .iter()
        .position(|k| st.get(k).as_deref() == Some(value))
        .or_else(|| {
            (0..slots.len())
                .map(|k| (start + k) % slots.len())
                .find(|&i| !st.exists(&slots[i]))
        });
    let Some(pick) = pick else {
        return Ok(pair(-1, 0));
    };
    st.set(&slots[pick], value, Some(c.ms(1)));
    Ok(pair(pick as i64, c.fence_of(st, fence.first())))
}

fn read_acquire(st: &mut State, c: &Call, _: &mut Vec<(String, String)>) -> Result<Value, String> {
    let [readers, w, wait, fence] = c.keys else {
        return Err("ERR keys".into());
    };
    let value = c.value();
    if st.get(w).is_some_and(|v| v != value) {
        return Ok(pair(0, 0));
    }
    let mine = st.readers(readers).contains_key(value);
    if !mine && st.exists(wait) {
        st.tidy(readers);
        return Ok(pair(0, 0));
    }
    st.add_reader(readers, value, c.ms(1));
    Ok(pair(1, c.fence_of(st, Some(fence))))
}

fn read_extend(st: &mut State, c: &Call, _: &mut Vec<(String, String)>) -> Result<Value, String> {
    let readers = c.keys.first().map(String::as_str).unwrap_or("");
    if !st.readers(readers).contains_key(c.value()) {
        st.tidy(readers);
        return Ok(int(-1));
    }
    st.add_reader(readers, c.value(), c.ms(1));
    Ok(int(1))
}

fn read_release(
    st: &mut State,
    c: &Call,
    published: &mut Vec<(String, String)>,
) -> Result<Value, String> {
    let readers = c.keys.first().map(String::as_str).unwrap_or("");
    let removed = st.readers(readers).remove(c.value()).is_some();
    st.tidy(readers);
    if removed {
        published.push((format!("{RELEASED_PREFIX}{readers}"), c.value().to_string()));
    }
    Ok(int(removed as i64))
}

fn line_acquire(
    st: &mut State,
    c: &Call,
    published: &mut Vec<(String, String)>,
) -> Result<Value, String> {
    let [lock, line, expiry] = line_script_keys(c)?;
    let (value, ticket, hold) = (c.value(), c.a(2), c.ms(4));
    let held = st.get(lock);
    if held.as_deref() == Some(value) {
        return Ok(int(1));
    }
    let reserved = held
        .as_deref()
        .and_then(|v| v.strip_prefix(RESERVED_PREFIX))
        .is_some_and(|t| t == ticket);
    let head = if reserved {
        None
    } else {
        st.line_head(line, expiry)
    };
    if reserved || held.is_none() && head.as_deref().is_none_or(|h| h == ticket) {
        st.set(lock, value, Some(c.ms(1)));
        for k in [line, expiry] {
            st.zset(k).remove(ticket);
            st.tidy(k);
        }
        return Ok(int(1));
    }
    let held = match (held, head) {
        // Free, another ticket first (the lock expired): kept for it, and announced.
        (None, Some(head)) => {
            let kept = st.keep_for(lock, expiry, &head);
            published.push((format!("{RELEASED_PREFIX}{lock}"), kept.clone()));
            Some(kept)
        }
        (held, _) => held,
    };
    st.join_line([line, expiry], ticket, c.a(3).parse().unwrap_or(0), hold);
    Ok(bulk(held.as_deref().unwrap_or("")))
}

/// The keys of a line script: the lock, the line, the tickets' expiry.
fn line_script_keys<'a>(c: &Call<'a>) -> Result<[&'a String; 3], String> {
    match c.keys {
        [lock, line, expiry] => Ok([lock, line, expiry]),
        _ => Err("ERR keys".into()),
    }
}

fn line_release(
    st: &mut State,
    c: &Call,
    published: &mut Vec<(String, String)>,
) -> Result<Value, String> {
    let [lock, line, expiry] = line_script_keys(c)?;
    let ticket = c.a(2);
    if !ticket.is_empty() && st.get(lock).as_deref() == Some(c.value()) {
        // The cleanup of a lost line acquire: its ticket takes its place again.
        st.join_line([line, expiry], ticket, c.a(3).parse().unwrap_or(0), c.ms(4));
    }
    let passed = st.pass_on(
        [lock, line, expiry],
        (c.value(), c.value()),
        (c.a(1) == "quiet", Some(ticket).filter(|t| !t.is_empty())),
        published,
    );
    Ok(int(passed))
}

fn line_leave(
    st: &mut State,
    c: &Call,
    published: &mut Vec<(String, String)>,
) -> Result<Value, String> {
    let [lock, line, expiry] = line_script_keys(c)?;
    for k in [line, expiry] {
        st.zset(k).remove(c.value());
        st.tidy(k);
    }
    // Freed (no other ticket left), the lock is announced as left by the ticket, which
    // wakes every waiter (the reservation of a ticket that left would wake nobody).
    let kept = format!("{RESERVED_PREFIX}{}", c.value());
    let left = format!("{LEFT_PREFIX}{}", c.value());
    let passed = st.pass_on(
        [lock, line, expiry],
        (&kept, &left),
        (c.a(1) == "quiet", None),
        published,
    );
    Ok(int(passed))
}

fn write_acquire(st: &mut State, c: &Call, _: &mut Vec<(String, String)>) -> Result<Value, String> {
    let [w, readers, wait, fence] = c.keys else {
        return Err("ERR keys".into());
    };
    let value = c.value();
    let held = st.get(w);
    if held.as_deref().is_some_and(|v| v != value) {
        return Ok(pair(0, 0));
    }
    let others = !st.readers(readers).is_empty();
    st.tidy(readers);
    if held.as_deref() != Some(value) && others {
        st.set(wait, value, Some(c.ms(3)));
        return Ok(pair(0, 0));
    }
    st.set(w, value, Some(c.ms(1)));
    st.keys.remove(wait);
    Ok(pair(1, c.fence_of(st, Some(fence))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Arc<MemoryStore> {
        MemoryStore::new("t".into(), Duration::from_millis(100))
    }

    /// A call waiting out a 5 s pause, and what `end` (called 50 ms in) made of it: its
    /// reply, and how long after `end` that came.
    async fn waiting_out_a_pause(end: impl FnOnce(&MemoryStore)) -> (Outcome, Duration) {
        let m = store();
        m.pause(5_000);
        let waiting = {
            let m = m.clone();
            tokio::spawn(async move { m.execute(&redis::cmd("PING")).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "paused");
        let ended = Instant::now();
        end(&m);
        let reply = waiting.await.unwrap();
        (reply, ended.elapsed())
    }

    #[tokio::test]
    async fn pause_0_ends_a_pause_for_the_calls_already_waiting() {
        let (reply, after) = waiting_out_a_pause(|m| m.pause(0)).await;
        assert!(reply.is_ok(), "{reply:?}");
        assert!(after < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn down_fails_the_calls_waiting_out_a_pause_at_once() {
        let (reply, after) = waiting_out_a_pause(MemoryStore::down).await;
        assert!(reply.is_err(), "{reply:?}");
        assert!(after < Duration::from_millis(500));
    }

    #[test]
    fn binary_text_comes_back_as_it_went_in_and_stays_apart() {
        for bytes in [
            &b"plain"[..],
            &[0xff],
            &[0xfe],
            &[0x61, 0xfe, 0x62],
            &[0xe2, 0x82],
            "é€".as_bytes(),
            "x\u{10FFFF}\u{10FF7F}\u{10FF80}y".as_bytes(),
        ] {
            assert_eq!(bytes_of(&text_of(bytes)), bytes);
        }
        assert_ne!(text_of(&[0xff]), text_of(&[0xfe]));
        assert_ne!(text_of(&[0xff]), text_of("\u{10FFFF}".as_bytes()));
        assert_eq!(text_of(b"plain"), "plain");
    }

    #[test]
    fn hset_takes_field_value_pairs_and_hmget_reads_several_fields() {
        // The restart records: one field per sentinel of a Sentinel group.
        let m = store();
        let cmd = |args: &[&str]| {
            let mut c = redis::cmd(args[0]);
            for a in &args[1..] {
                c.arg(*a);
            }
            c
        };
        let (r, _) = run_cmd(&m, &cmd(&["HSET", "h", "a", "1", "b", "2"]));
        assert_eq!(r, Ok(Value::Int(2)));
        let (r, _) = run_cmd(&m, &cmd(&["HMGET", "h", "a", "x", "b"]));
        assert_eq!(r, Ok(Value::Array(vec![bulk("1"), Value::Nil, bulk("2")])));
        let (r, _) = run_cmd(&m, &cmd(&["HMGET", "missing", "a"]));
        assert_eq!(r, Ok(Value::Array(vec![Value::Nil])));
        // HSETNX sets only a field that is not there.
        let (r, _) = run_cmd(&m, &cmd(&["HSETNX", "h", "a", "9"]));
        assert_eq!(r, Ok(Value::Int(0)));
        let (r, _) = run_cmd(&m, &cmd(&["HSETNX", "h", "c", "3"]));
        assert_eq!(r, Ok(Value::Int(1)));
        let (r, _) = run_cmd(&m, &cmd(&["HMGET", "h", "a", "c"]));
        assert_eq!(r, Ok(Value::Array(vec![bulk("1"), bulk("3")])));
    }

    fn eval(s: &LockScript, keys: &[&str], argv: &[&str]) -> redis::Cmd {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        s.evalsha(&keys, argv)
    }

    /// Runs `cmd` on `m` as `execute` does; the reply and the announcements.
    fn run_cmd(
        m: &MemoryStore,
        cmd: &redis::Cmd,
    ) -> (Result<Value, String>, Vec<(String, String)>) {
        let args: Vec<String> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => text_of(b),
                _ => String::new(),
            })
            .collect();
        let mut published = Vec::new();
        let reply = run(&mut m.lock(), &args, &mut published);
        (reply, published)
    }

    #[test]
    fn a_quiet_release_that_keeps_the_lock_for_the_head_still_wakes_it() {
        let m = store();
        let [line, expiry] = crate::engine::line::line_keys("r");
        let keys = ["r", line.as_str(), expiry.as_str()];
        let kept = format!("{RESERVED_PREFIX}w-ticket");
        let channel = format!("{RELEASED_PREFIX}r");
        // Held by `h`; the waiter `w` joins the line.
        run_cmd(&m, &eval(&ACQUIRE_SCRIPT, &["r"], &["h", "10000"]))
            .0
            .unwrap();
        let line_acquire = || {
            let acquire = eval(
                &LINE_ACQUIRE_SCRIPT,
                &keys,
                &["w", "10000", "w-ticket", "1", "5000"],
            );
            run_cmd(&m, &acquire).0
        };
        assert_eq!(line_acquire(), Ok(Value::BulkString(b"h".to_vec())));
        // A quiet release (a cleanup that saw another owner on a quorum) keeps the lock
        // for `w` and tells it so.
        let (reply, published) = run_cmd(&m, &eval(&LINE_RELEASE_SCRIPT, &keys, &["h", "quiet"]));
        assert_eq!(reply, Ok(int(1)));
        assert_eq!(published, vec![(channel.clone(), kept.clone())]);
        // `w` takes it; its quiet release with an empty line frees it silently.
        assert_eq!(line_acquire(), Ok(int(1)));
        let (reply, published) = run_cmd(&m, &eval(&LINE_RELEASE_SCRIPT, &keys, &["w", "quiet"]));
        assert_eq!(reply, Ok(int(1)));
        assert!(published.is_empty(), "{published:?}");
        // Kept for `w` again; `w` leaves the line with nobody after it: the lock is freed,
        // announced as left by the ticket (which wakes every waiter without a ticket).
        run_cmd(&m, &eval(&ACQUIRE_SCRIPT, &["r"], &["h", "10000"]))
            .0
            .unwrap();
        line_acquire().unwrap();
        run_cmd(&m, &eval(&LINE_RELEASE_SCRIPT, &keys, &["h"]))
            .0
            .unwrap();
        let (reply, published) = run_cmd(&m, &eval(&LINE_LEAVE_SCRIPT, &keys, &["w-ticket"]));
        assert_eq!(reply, Ok(int(1)));
        let left = format!("{LEFT_PREFIX}w-ticket");
        assert_eq!(published, vec![(channel.clone(), left)]);
        assert_eq!(m.lock().get("r"), None);
        // The leave of a head that won elsewhere frees it quietly.
        run_cmd(&m, &eval(&ACQUIRE_SCRIPT, &["r"], &["h", "10000"]))
            .0
            .unwrap();
        line_acquire().unwrap();
        run_cmd(&m, &eval(&LINE_RELEASE_SCRIPT, &keys, &["h"]))
            .0
            .unwrap();
        let quiet_leave = eval(&LINE_LEAVE_SCRIPT, &keys, &["w-ticket", "quiet"]);
        let (reply, published) = run_cmd(&m, &quiet_leave);
        assert_eq!(reply, Ok(int(1)));
        assert!(published.is_empty(), "{published:?}");
        assert_eq!(m.lock().get("r"), None);
    }

    #[tokio::test]
    async fn acquire_extend_release_as_the_scripts_do() {
        let m = store();
        assert_eq!(
            m.execute(&eval(&ACQUIRE_SCRIPT, &["a", "b"], &["v", "1000"]))
                .await,
            Ok(int(1))
        );
        assert_eq!(
            m.execute(&eval(&ACQUIRE_SCRIPT, &["b"], &["w", "1000"]))
                .await,
            Ok(int(0))
        );
        assert_eq!(
            m.execute(&eval(&ACQUIRE_SCRIPT, &["a"], &["v", "1000"]))
                .await,
            Ok(int(1)),
            "idempotent"
        );
        assert_eq!(
            m.execute(&eval(&EXTEND_SCRIPT, &["a", "b"], &["v", "2000"]))
                .await,
            Ok(int(1))
        );
        assert_eq!(
            m.execute(&eval(&EXTEND_SCRIPT, &["a"], &["w", "2000"]))
                .await,
            Ok(int(0)),
            "held by another value"
        );
        assert_eq!(
            m.execute(&eval(&EXTEND_SCRIPT, &["a", "gone"], &["v", "2000"]))
                .await,
            Ok(int(-1)),
            "a key is gone"
        );
        assert_eq!(m.keys(), vec!["a", "b"]);
        assert_eq!(
            m.execute(&eval(&RELEASE_SCRIPT, &["a", "b"], &["w"])).await,
            Ok(int(0))
        );
        assert_eq!(
            m.execute(&eval(&RELEASE_SCRIPT, &["a", "b"], &["v"])).await,
            Ok(int(2))
        );
        assert!(m.keys().is_empty());
    }

    #[tokio::test]
    async fn keys_expire_on_the_monotonic_clock() {
        let m = store();
        m.execute(&eval(&ACQUIRE_SCRIPT, &["a"], &["v", "30"]))
            .await
            .unwrap();
        assert_eq!(m.keys(), vec!["a"]);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(m.keys().is_empty());
        assert_eq!(
            m.execute(&eval(&ACQUIRE_SCRIPT, &["a"], &["w", "30"]))
                .await,
            Ok(int(1))
        );
    }

    #[tokio::test]
    async fn set_nx_px_get_and_fences() {
        let m = store();
        let set = crate::engine::kinds::set_nx_px_get("k", "v", 1000);
        assert_eq!(m.execute(&set).await, Ok(Value::Nil));
        assert_eq!(m.execute(&set).await, Ok(bulk("v")));
        assert_eq!(
            m.execute(&eval(&FENCE_SCRIPT, &["f"], &["3"])).await,
            Ok(int(0))
        );
        assert_eq!(
            m.execute(&eval(&FENCE_SCRIPT, &["f"], &["3"])).await,
            Ok(int(3)),
            "taken"
        );
        assert_eq!(
            m.execute(&eval(
                &FENCED_ACQUIRE_SCRIPT,
                &["x", "f"],
                &["v", "100", "1"]
            ))
            .await,
            Ok(pair(1, 3))
        );
    }

    #[tokio::test]
    async fn faults_down_clear_and_closed() {
        let m = store();
        m.execute(&eval(&ACQUIRE_SCRIPT, &["a"], &["v", "1000"]))
            .await
            .unwrap();
        m.down();
        assert!(matches!(
            m.execute(&redis::cmd("PING")).await,
            Err(NodeError::Connect { .. })
        ));
        m.up();
        let (before, _) = m.identity();
        m.clear();
        assert!(m.keys().is_empty());
        assert_ne!(m.identity().0, before);
        assert_eq!(m.identity_epoch(), 2);
        m.close();
        assert!(matches!(
            m.execute(&redis::cmd("PING")).await,
            Err(NodeError::Closed { .. })
        ));
    }

    #[tokio::test]
    async fn read_write_holds_exclude_each_other() {
        let m = store();
        let rkeys = ["r", "w", "wait", "f"];
        let read = |v: &'static str| eval(&READ_ACQUIRE_SCRIPT, &rkeys, &[v, "1000", "0"]);
        let write = |v: &'static str| {
            eval(
                &WRITE_ACQUIRE_SCRIPT,
                &["w", "r", "wait", "f"],
                &[v, "1000", "0", "500"],
            )
        };
        assert_eq!(m.execute(&read("r1")).await, Ok(pair(1, 0)));
        assert_eq!(m.execute(&read("r2")).await, Ok(pair(1, 0)));
        assert_eq!(m.execute(&write("w1")).await, Ok(pair(0, 0)), "readers in");
        assert_eq!(
            m.execute(&read("r3")).await,
            Ok(pair(0, 0)),
            "a writer waits"
        );
        assert_eq!(
            m.execute(&read("r1")).await,
            Ok(pair(1, 0)),
            "a reader in stays in"
        );
        m.execute(&eval(&READ_RELEASE_SCRIPT, &["r"], &["r1"]))
            .await
            .unwrap();
        m.execute(&eval(&READ_RELEASE_SCRIPT, &["r"], &["r2"]))
            .await
            .unwrap();
        assert_eq!(m.execute(&write("w1")).await, Ok(pair(1, 0)));
        assert_eq!(
            m.execute(&read("r4")).await,
            Ok(pair(0, 0)),
            "the writer holds"
        );
        assert_eq!(m.keys(), vec!["w"]);
    }

    #[tokio::test]
    async fn permits_take_the_first_free_slot() {
        let m = store();
        let slots = ["s0", "s1", "f"];
        let take = |v: &'static str| eval(&PERMIT_ACQUIRE_SCRIPT, &slots, &[v, "1000", "0"]);
        assert_eq!(m.execute(&take("a")).await, Ok(pair(0, 0)));
        assert_eq!(m.execute(&take("b")).await, Ok(pair(1, 0)));
        assert_eq!(m.execute(&take("c")).await, Ok(pair(-1, 0)));
        assert_eq!(
            m.execute(&take("a")).await,
            Ok(pair(0, 0)),
            "a resend finds its own slot"
        );
        let slots = ["t0", "t1", "t2", "f"];
        let from = |v: &'static str, start: &'static str| {
            eval(&PERMIT_ACQUIRE_SCRIPT, &slots, &[v, "1000", "0", start])
        };
        assert_eq!(m.execute(&from("a", "2")).await, Ok(pair(2, 0)));
        assert_eq!(m.execute(&from("b", "2")).await, Ok(pair(0, 0)), "wraps");
        assert_eq!(m.execute(&from("c", "0")).await, Ok(pair(1, 0)));
    }
}
