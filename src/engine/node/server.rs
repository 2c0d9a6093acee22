//! A Redis deployment over the network as a [`Backend`]: one server, the master the
//! sentinels name, or a Redis Cluster, through a single multiplexed (pipelining)
//! connection shared by every caller: made on first need by one attempt that concurrent
//! callers share, given up after a drop and made again by the next command, with a
//! back-off for a host that does not answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::ConnectionLike;
use redis::{Client, Cmd, RedisError, Value};

use super::backend::{within, Backend, Reply, Sent};
use super::cluster::{self, connect_cluster};
use super::connection::pubsub;
use super::connection::{connect_to, Conn, Connected};
use super::lean::Lean;
use super::plain;
use super::sentinel::{connect_master, MasterWatch};
use super::tls::build_client;
use crate::engine::config::NodeConfig;
use crate::engine::error::{server_line, NodeError};
use crate::engine::identity::Identity;
use crate::engine::notify::Subscriber;
use crate::engine::scripts::{first_key_release, hash_slot, LockScript, RELEASE_SCRIPT};
use crate::engine::shards::Shard;
use crate::engine::sync::{Unpoisoned, UnpoisonedRw};
use crate::engine::timer;

/// A Redis server (or Sentinel master, or Cluster) and the connection to it.
pub(super) struct Server {
    pub(super) config: NodeConfig,
    /// How errors name the node (for Sentinel: the current master, once found).
    pub(super) addr: RwLock<String>,
    /// The client of the node (for Sentinel: of the current master).
    pub(super) client: RwLock<Client>,
    pub(super) state: Mutex<State>,
    /// Whether the server takes `SET key value NX PX ms GET` (Redis >= 7.0); learnt from
    /// its first refusal.
    set_nx_get: AtomicBool,
    /// The pub/sub connection for release notifications, made on first need.
    subscriber: tokio::sync::Mutex<Option<Arc<Subscriber>>>,
    /// Notified by `quit()`: the commands waiting for a connection fail then.
    closing: tokio::sync::Notify,
    /// The identity of the server behind the current connection, and a counter bumped
    /// whenever it is read again (each new connection).
    pub(super) identity: Mutex<Option<Identity>>,
    pub(super) identity_epoch: AtomicU64,
    /// For a cluster: bumped whenever one of its connections drops (a shard's master may
    /// have restarted, and the cluster connection reconnects by itself). Part of
    /// [`Backend::identity_epoch`].
    pub(super) drops: Arc<AtomicU64>,
    /// For Sentinel: whether the master connected to is still the one the sentinels name.
    master_watch: Arc<MasterWatch>,
}

impl Server {
    /// The server `config` names. Nothing is connected until a command or
    /// [`Backend::ensure_connected`].
    pub(super) fn new(config: NodeConfig) -> Result<Server, NodeError> {
        let client = build_client(&config)?;
        Ok(Server {
            addr: RwLock::new(config.addr()),
            config,
            client: RwLock::new(client),
            state: Mutex::new(State::new()),
            set_nx_get: AtomicBool::new(true),
            subscriber: tokio::sync::Mutex::new(None),
            closing: tokio::sync::Notify::new(),
            identity: Mutex::new(None),
            identity_epoch: AtomicU64::new(0),
            drops: Arc::new(AtomicU64::new(0)),
            master_watch: Arc::default(),
        })
    }

    pub(super) fn client(&self) -> Client {
        self.client.read_now().clone()
    }
}

/// The reply to `cmd` on `c`, a server error in it as an error (as `query_async` reads it).
async fn request(c: &mut Conn, cmd: &Cmd) -> redis::RedisResult<Value> {
    match c {
        // Its own future, not boxed.
        Conn::Lean(l) => l.send_one(cmd).await,
        _ => c.req_packed_command(cmd).await,
    }
    .and_then(Value::extract_error)
}

/// The `EVALSHA` of `script`, loading it first when the server answers `NOSCRIPT`.
async fn eval(c: &mut Conn, script: &LockScript, evalsha: &Cmd) -> redis::RedisResult<Value> {
    match request(c, evalsha).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load().query_async::<()>(c).await?;
            request(c, evalsha).await
        }
        other => other,
    }
}

impl Backend for Server {
    fn addr(&self) -> String {
        self.addr.read_now().clone()
    }

    fn ensure_connected(&self) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move { self.connection().await.map(|_| ()) })
    }

    fn connect_waiting(&self) -> BoxFuture<'_, Result<(), NodeError>> {
        // (Found by an audit: a client listening for 'ready' while its server was still
        // starting heard 'error' at once, and its process exited.)
        let end = Instant::now() + self.config.connect_timeout;
        Box::pin(async move { self.until_listening(end).await.map(|_| ()) })
    }

    fn identity(&self) -> Option<Identity> {
        self.identity.locked().clone()
    }

    fn identity_epoch(&self) -> u64 {
        self.identity_epoch.load(Ordering::Acquire) + self.drops.load(Ordering::Acquire)
    }

    fn cluster_shards(&self) -> BoxFuture<'_, Result<Option<Vec<Shard>>, NodeError>> {
        Box::pin(async move {
            let (Conn::Cluster(mut c), _) = self.connection().await? else {
                return Ok(Some(Vec::new()));
            };
            cluster::read_shards(&mut c, self.config.command_timeout)
                .await
                .map_err(|reason| NodeError::Command {
                    addr: self.addr(),
                    reason,
                })
        })
    }

    fn command<'a>(
        &'a self,
        cmd: &'a Cmd,
        wait: Option<Duration>,
        reply: Reply<'a>,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(self.run(wait, reply, move |mut c| async move {
            request(&mut c, cmd).await
        }))
    }

    fn command_at<'a>(
        &'a self,
        cmd: &'a Cmd,
        key: &'a str,
        reply: Reply<'a>,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        Box::pin(self.run(None, reply, move |mut c| async move {
            match &mut c {
                Conn::Cluster(cluster) => {
                    let at = Route::new(hash_slot(key), SlotAddr::Master);
                    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(at));
                    cluster
                        .route_command(cmd.clone(), routing)
                        .await
                        .and_then(Value::extract_error)
                }
                _ => request(&mut c, cmd).await,
            }
        }))
    }

    fn script<'a>(
        &'a self,
        script: &'a LockScript,
        evalsha: &'a Cmd,
        reply: Reply<'a>,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(self.run(None, reply, move |mut c| async move {
            match eval(&mut c, script, evalsha).await {
                // A Cluster slot in migration refuses a script on several keys while they
                // are not all on one side (TRYAGAIN, until the migration ends): a
                // single-resource release then releases its lock key alone (see
                // `first_key_release`), as any other command on one key follows the slot.
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain) =>
                {
                    match first_key_release(script, evalsha) {
                        Some(alone) => eval(&mut c, &RELEASE_SCRIPT, &alone).await,
                        None => Err(e),
                    }
                }
                other => other,
            }
        }))
    }

    fn send_now(&self, cmd: &Cmd) -> Option<Sent> {
        let mut st = self.lock_state();
        if !self.watch_master(&mut st) {
            return None;
        }
        match &st.slot {
            // (A stuck connection is for `run` to probe.)
            Slot::Ready(Conn::Lean(l)) => l.send_unless_stuck(cmd).map(|reply| Sent {
                generation: st.generation,
                reply,
            }),
            _ => None,
        }
    }

    fn landed(
        &self,
        sent: &Sent,
        result: redis::RedisResult<Value>,
        reply: Reply<'_>,
    ) -> Option<Result<(), NodeError>> {
        match result.and_then(Value::extract_error) {
            // `script` loads it, then sends the `EVALSHA` again.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                None
            }
            result => self.settle_try(sent.generation, result, reply),
        }
    }

    fn has_set_nx_get(&self) -> bool {
        self.set_nx_get.load(Ordering::Relaxed)
    }

    fn lacks_set_nx_get(&self) {
        self.set_nx_get.store(false, Ordering::Relaxed);
    }

    fn subscriber(&self) -> BoxFuture<'_, Result<Arc<Subscriber>, NodeError>> {
        Box::pin(async move {
            let mut slot = self.subscriber.lock().await;
            if let Some(s) = slot.as_ref().filter(|s| s.is_alive()) {
                return Ok(s.clone());
            }
            if self.is_closed() {
                return Err(NodeError::Closed { addr: self.addr() });
            }
            if self.config.cluster.is_some() {
                // No release notifications through a cluster (yet): waiters use the retry
                // delay.
                return Err(NodeError::Connect {
                    addr: self.addr(),
                    reason: "release notifications are not used with Redis Cluster".into(),
                });
            }
            let client = self.client();
            let s = Subscriber::connect(pubsub(&client, &self.config), &self.config).await?;
            if self.is_closed() {
                // `quit()` came while this connected: nothing may stay open after it.
                s.close();
                return Err(NodeError::Closed { addr: self.addr() });
            }
            *slot = Some(s.clone());
            Ok(s)
        })
    }

    /// `QUIT`, bounded by the command time-out; then the connection closes, and every
    /// command still waiting (for its reply, or for a connection) fails. Commands issued
    /// before, while the connection was being made, still go first, as an ioredis
    /// client's queued commands do, when it comes within [`QUIT_CONNECT_WAIT`] (or the
    /// connect time-out).
    fn quit(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let previous = {
                let mut st = self.lock_state();
                st.probe = None;
                if let Some(Conn::Lean(stuck)) = st.stuck.take() {
                    stuck.close();
                }
                std::mem::replace(&mut st.slot, Slot::Closed)
            };
            let previous = match previous {
                Slot::Connecting(connecting) => {
                    let wait = self.config.connect_timeout.min(QUIT_CONNECT_WAIT);
                    match timer::timeout(wait, connecting).await {
                        Ok(Ok((conn, _, _))) => {
                            // The commands that waited for it write theirs first.
                            tokio::task::yield_now().await;
                            Slot::Ready(conn)
                        }
                        _ => Slot::Idle,
                    }
                }
                other => other,
            };
            self.closing.notify_waiters();
            if let Some(subscriber) = self.subscriber.lock().await.take() {
                subscriber.close();
            }
            if let Slot::Ready(mut c @ Conn::Lean(_)) = previous {
                // Closed when this ends, or when the wait for `QUIT` is cut short (by
                // `Redlock.quit()`'s own limit): whoever else still holds the connection.
                let _closing = CloseOnDrop(match &c {
                    Conn::Lean(lean) => Some(lean.clone()),
                    _ => None,
                });
                let _ = timer::timeout(
                    self.config.command_timeout,
                    redis::cmd("QUIT").query_async::<()>(&mut c),
                )
                .await;
            }
        })
    }

    fn is_closed(&self) -> bool {
        matches!(self.lock_state().slot, Slot::Closed)
    }
}

/// The longest `quit()` waits for a connection being made, for the commands issued
/// before it (a local server connects in a millisecond; a silent one does not keep
/// `quit()` waiting for the whole connect time-out).
const QUIT_CONNECT_WAIT: Duration = Duration::from_secs(1);

/// Closes a lean connection when dropped (see [`Server::quit`]).
struct CloseOnDrop(Option<Lean>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(lean) = &self.0 {
            lean.close();
        }
    }
}

type ConnectFuture = Shared<BoxFuture<'static, Result<Connected, NodeError>>>;

pub(super) enum Slot {
    Idle,
    Connecting(ConnectFuture),
    Ready(Conn),
    Closed,
}

/// How long a command that finds its connection stuck waits for the fresh connection tried
/// in its place (see [`Server::replace_stuck`]) before it goes on the stuck one.
const PROBE_LOOK: Duration = Duration::from_millis(10);

pub(super) struct State {
    /// Bumped whenever the slot changes, so a stale failure never drops a newer connection.
    generation: u64,
    pub(super) slot: Slot,
    /// A host that did not answer within the connect time-out is not tried again until
    /// `until` (doubling, up to [`MAX_BACKOFF`]): calls meanwhile fail at once with the
    /// last error instead of each waiting the whole time-out. The first call after it
    /// probes. A refused connection is cheap and is retried at once.
    down: Option<Down>,
    /// Whether a connection was made once: a command waits for a reconnection no longer
    /// than its own time-out (as a command of ioredis, queued while it reconnects, does);
    /// only the first connection has the whole connect time-out.
    connected: bool,
    /// A fresh connection tried in place of a stuck one (see [`Server::replace_stuck`]).
    probe: Option<ConnectFuture>,
    /// The last stuck connection replaced, kept open for the commands still waiting on it
    /// (closed when the next one is replaced, or at `quit()`).
    stuck: Option<Conn>,
}

impl State {
    /// Not connected, nothing tried yet.
    pub(super) fn new() -> State {
        State {
            generation: 0,
            slot: Slot::Idle,
            down: None,
            connected: false,
            probe: None,
            stuck: None,
        }
    }
}

struct Down {
    until: Instant,
    backoff: Duration,
    error: NodeError,
}

/// How long a user's command waits before it tries again a server not listening.
const FIRST_LISTEN_PAUSE: Duration = Duration::from_millis(10);
const MAX_LISTEN_PAUSE: Duration = Duration::from_millis(200);

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Server {
    pub(super) fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent (every
        // update is a single assignment), so a poisoned lock is still usable.
        self.state.locked()
    }

    /// The shared connection when it is up (no waiting, nothing started).
    fn ready(&self) -> Option<(Conn, u64)> {
        let mut st = self.lock_state();
        if !self.watch_master(&mut st) {
            return None;
        }
        let Slot::Ready(c) = &st.slot else {
            return None;
        };
        let c = c.clone();
        // A fresh connection tried while this one was stuck, which answers again: not
        // needed (see `replace_stuck`).
        if st.probe.as_ref().is_some_and(|p| p.peek().is_some()) && !c.stuck() {
            st.probe = None;
        }
        Some((c, st.generation))
    }

    /// For Sentinel: waits for the sentinels' answer when it is due (see `MasterWatch`),
    /// before a command uses the connection.
    async fn confirm_master(&self) {
        let Some(sentinel) = &self.config.sentinel else {
            return;
        };
        if !self.master_watch.due() {
            return;
        }
        let generation = {
            let st = self.lock_state();
            if !matches!(st.slot, Slot::Ready(_)) {
                return; // (connecting finds the master the sentinels name)
            }
            st.generation
        };
        self.master_watch
            .confirm(sentinel, &self.config, self.addr(), generation)
            .await;
    }

    /// The shared connection, establishing it if needed. Concurrent callers share one
    /// connect attempt; a failed attempt is not cached, so the next call tries again.
    pub(super) async fn connection(&self) -> Result<(Conn, u64), NodeError> {
        let closing = self.closing.notified();
        tokio::pin!(closing);
        let (fut, generation) = {
            let mut st = self.lock_state();
            if !matches!(st.slot, Slot::Ready(_)) {
                // Registered before `quit()` can close the slot: it wakes this wait then.
                closing.as_mut().enable();
            }
            match &st.slot {
                Slot::Ready(c) => return Ok((c.clone(), st.generation)),
                Slot::Closed => return Err(NodeError::Closed { addr: self.addr() }),
                Slot::Connecting(f) => (f.clone(), st.generation),
                Slot::Idle => {
                    if let Some(down) = st.down.as_ref().filter(|d| Instant::now() < d.until) {
                        return Err(down.error.clone());
                    }
                    st.generation += 1;
                    let f = establish(self.config.clone(), self.drops.clone())
                        .boxed()
                        .shared();
                    st.slot = Slot::Connecting(f.clone());
                    (f, st.generation)
                }
            }
        };
        let result = tokio::select! {
            r = fut => r,
            _ = &mut closing => return Err(NodeError::Closed { addr: self.addr() }),
        };
        self.settle(generation, result)
    }

    /// Records the outcome of the connect attempt of `generation`, unless the slot moved on
    /// meanwhile: the connection (for Sentinel: the master's client and address) and the
    /// server's identity, or the back-off after a time-out.
    fn settle(
        &self,
        generation: u64,
        result: Result<Connected, NodeError>,
    ) -> Result<(Conn, u64), NodeError> {
        let mut st = self.lock_state();
        let result = result.map(|(conn, found, identity)| {
            st.connected = true;
            if st.generation == generation && matches!(st.slot, Slot::Connecting(_)) {
                self.adopt(found, identity);
            }
            conn
        });
        if st.generation == generation && matches!(st.slot, Slot::Connecting(_)) {
            st.slot = match &result {
                Ok(c) => Slot::Ready(c.clone()),
                Err(_) => Slot::Idle,
            };
            st.down = match &result {
                Err(error @ NodeError::ConnectTimeout { .. }) => {
                    let backoff = st
                        .down
                        .as_ref()
                        .map_or(FIRST_BACKOFF, |d| (d.backoff * 2).min(MAX_BACKOFF));
                    Some(Down {
                        until: Instant::now() + backoff,
                        backoff,
                        error: error.clone(),
                    })
                }
                _ => None,
            };
        }
        // Closed meanwhile: a connection made still serves the commands that waited for
        // it (`quit()` sends its `QUIT` after theirs).
        if matches!(st.slot, Slot::Closed) && result.is_err() {
            return Err(NodeError::Closed { addr: self.addr() });
        }
        result.map(|c| (c, generation))
    }

    /// A new connection's server: for Sentinel, the master's client and address; its
    /// identity (read again, so a restart behind it is seen).
    fn adopt(&self, found: Option<(Client, String)>, identity: Option<Identity>) {
        if self.config.sentinel.is_some() {
            self.master_watch.checked_now();
        }
        if let Some((client, addr)) = found {
            *self.client.write_now() = client;
            *self.addr.write_now() = addr;
        }
        *self.identity.locked() = identity;
        self.identity_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The connection `stuck` left its first command unanswered past the command time-out:
    /// its peer is gone without a word (a crashed host, a lost NAT entry; the kernel would
    /// keep it for many minutes), replies were lost, or the server itself is not answering
    /// (paused, busy). A fresh connection, tried in the background, tells which: made, it
    /// takes the stuck one's place for the next commands (those on the stuck one finish
    /// there); not made, the server is not answering, the stuck connection
    /// is kept (its commands are answered when the server wakes), and the next command
    /// tries again. This command goes on the connection returned: the fresh one when it
    /// is made within [`PROBE_LOOK`], else the stuck one.
    async fn replace_stuck(&self, stuck: (Conn, u64)) -> (Conn, u64) {
        let probe = {
            let mut st = self.lock_state();
            if st
                .probe
                .as_ref()
                .is_some_and(|p| matches!(p.peek(), Some(Err(_))))
            {
                st.probe = None; // (failed: tried anew)
            }
            let (config, drops) = (self.config.clone(), self.drops.clone());
            st.probe
                .get_or_insert_with(|| {
                    let probe = establish(config, drops).boxed().shared();
                    // (Driven to its end whether or not a command is there to see it.)
                    tokio::spawn(probe.clone().map(drop));
                    probe
                })
                .clone()
        };
        // A short look: a dead connection's replacement is made in a few round trips.
        let _ = timer::timeout(PROBE_LOOK, probe).await;
        let mut st = self.lock_state();
        let probed = match st.probe.as_ref().and_then(|p| p.peek()) {
            Some(Ok(probed)) => probed.clone(),
            _ => return stuck, // (still trying, or failed)
        };
        st.probe = None;
        let (conn, found, identity) = probed;
        if st.generation != stuck.1 || !matches!(st.slot, Slot::Ready(_)) {
            return stuck; // (moved on meanwhile: the probe's connection goes)
        }
        st.generation += 1;
        // The stuck one is not closed: a command on it that is still waiting may have run
        // on a server that is only slow, and would be sent again on the fresh one (an INCR
        // counted twice, a fence claimed twice). Its commands finish there or time out.
        if let Slot::Ready(stuck) = std::mem::replace(&mut st.slot, Slot::Ready(conn.clone())) {
            st.stuck = Some(stuck);
        }
        // The same server (the probe read its identity): what was checked of it holds.
        let same = matches!(
            (&*self.identity.locked(), &identity),
            (Some(was), Some(is)) if was.run_id == is.run_id && was.promoted == is.promoted
        );
        if !same {
            self.adopt(found, identity);
        }
        (conn, st.generation)
    }

    /// For Sentinel, on every command: drops a connection found to be to a deposed master
    /// (the command then connects to the master the sentinels name), and has the sentinels
    /// asked again when it is time (see [`MasterWatch`]). `false` when the command must
    /// first wait for their answer ([`Server::confirm_master`]).
    fn watch_master(&self, st: &mut State) -> bool {
        let Some(sentinel) = &self.config.sentinel else {
            return true;
        };
        if !matches!(st.slot, Slot::Ready(_)) {
            return true;
        }
        if self.master_watch.moved(st.generation) {
            st.slot = Slot::Idle;
            return true;
        }
        if self.master_watch.due() {
            return false;
        }
        self.master_watch
            .check(sentinel, &self.config, self.addr(), st.generation);
        true
    }

    /// Forgets the connection of `generation` so the next command reconnects.
    fn invalidate(&self, generation: u64) {
        let mut st = self.lock_state();
        if st.generation == generation && matches!(st.slot, Slot::Ready(_)) {
            st.slot = Slot::Idle;
        }
    }

    fn map_error(&self, e: RedisError, generation: u64) -> NodeError {
        if e.is_timeout() {
            return NodeError::Timeout {
                addr: self.addr(),
                ms: self.config.command_timeout.as_millis() as u64,
            };
        }
        // READONLY: the server is a replica now (a failover); reconnecting finds the master.
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.code() == Some("READONLY")
        {
            self.invalidate(generation);
        }
        match e.code().and_then(|code| server_line(code, e.detail())) {
            Some(line) => NodeError::Reply {
                addr: self.addr(),
                line,
            },
            None => NodeError::Command {
                addr: self.addr(),
                reason: plain(&e),
            },
        }
    }

    /// Runs `op` on the shared connection, within `wait` when given, and hands its reply
    /// to `reply`. A connection found broken is dropped and `op` is sent once more on a
    /// fresh one, as ioredis resends unfulfilled commands (every lock script is
    /// idempotent, so a resend is safe). A reply that `reply` refuses fails as the
    /// driver's parsing error would (`query_async` converts inside the driver).
    pub(super) async fn run<F, Fut>(
        &self,
        wait: Option<Duration>,
        reply: Reply<'_>,
        op: F,
    ) -> Result<(), NodeError>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<redis::Value, RedisError>>,
    {
        self.confirm_master().await;
        let (conn, generation) = match self.ready() {
            Some(stuck) if stuck.0.stuck() => self.replace_stuck(stuck).await,
            Some(ready) => ready,
            None => self.reconnection(wait).await?,
        };
        let first = self.bounded(wait, op(conn)).await?;
        if let Some(done) = self.settle_try(generation, first, &mut *reply) {
            return done;
        }
        let (conn, generation) = self.reconnection(wait).await?;
        let v = self
            .bounded(wait, op(conn))
            .await?
            .map_err(|e| self.map_error(e, generation))?;
        reply(v).map_err(|e| self.map_error(e.into(), generation))
    }

    /// The shared connection ([`Server::connection`]); after the first one, waited for
    /// within `wait` (a command's time-out: a server that stopped answering, whose
    /// connection was given up, must not hold its commands for the connect time-out).
    ///
    /// A user's command (`wait` given) finds a server not listening (yet: starting, or
    /// restarting) tried again until its time is up, or before a first connection until
    /// the connect time-out, as ioredis and node-redis queue commands while they
    /// reconnect. A lock's command fails at once: its vote is counted as unavailable.
    async fn reconnection(&self, wait: Option<Duration>) -> Result<(Conn, u64), NodeError> {
        let Some(wait) = wait else {
            return self.connection().await;
        };
        if !self.lock_state().connected {
            let end = Instant::now() + self.config.connect_timeout;
            return self.until_listening(end).await;
        }
        let end = Instant::now() + wait;
        self.bounded(Some(wait), self.until_listening(end)).await?
    }

    /// [`Server::connection`], tried again while nothing listens at the address, until
    /// `end`.
    async fn until_listening(&self, end: Instant) -> Result<(Conn, u64), NodeError> {
        let mut pause = FIRST_LISTEN_PAUSE;
        loop {
            match self.connection().await {
                Err(e) if e.is_refused() && Instant::now() + pause < end => {
                    timer::sleep(pause).await;
                    pause = (pause * 2).min(MAX_LISTEN_PAUSE);
                }
                other => return other,
            }
        }
    }

    /// The outcome of a first try on the connection of `generation`: the reply handed to
    /// `reply`, or the error; `None` when the connection broke (it is given up, and the
    /// command is to be sent once more on a fresh one).
    fn settle_try(
        &self,
        generation: u64,
        result: redis::RedisResult<Value>,
        reply: Reply<'_>,
    ) -> Option<Result<(), NodeError>> {
        match result {
            Ok(v) => Some(reply(v).map_err(|e| self.map_error(e.into(), generation))),
            Err(e) if resent(&e) => {
                self.invalidate(generation);
                None
            }
            Err(e) => Some(Err(self.map_error(e, generation))),
        }
    }

    /// `fut` within `wait`, when given.
    async fn bounded<T>(
        &self,
        wait: Option<Duration>,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, NodeError> {
        within(wait, fut, || self.addr()).await
    }
}

/// Whether a command that failed with `e` is sent once more on a fresh connection: the
/// connection broke (not a time-out: the server may just be slow).
fn resent(e: &RedisError) -> bool {
    (e.is_connection_dropped() || e.is_io_error()) && !e.is_timeout()
}

/// Connects (for Sentinel: to the master the sentinels name), then loads the lock
/// scripts so that the first `EVALSHA` finds them.
async fn establish(
    config: NodeConfig,
    drops: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Connected, NodeError> {
    if let Some(nodes) = &config.cluster {
        return connect_cluster(nodes, &config, drops)
            .await
            .map(|c| (Conn::Cluster(c), None, None));
    }
    match &config.sentinel {
        Some(sentinel) => connect_master(sentinel, &config).await,
        None => connect_to(&config).await.map(|(c, id)| (c, None, id)),
    }
}
