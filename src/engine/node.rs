//! One Redis node: a single multiplexed (pipelining) connection shared by every caller,
//! connected in the background, re-established by itself after a drop, and a time-out
//! on every wait.

use crate::engine::sync::{Unpoisoned, UnpoisonedRw};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, FromRedisValue, IntoConnectionInfo,
    RedisConnectionInfo, RedisError,
};

use crate::engine::config::{NodeConfig, SentinelConfig};
use crate::engine::error::{plain_reason, NodeError};
use crate::engine::identity::Identity;
use crate::engine::memory::MemoryStore;
use crate::engine::notify::Subscriber;
use crate::engine::scripts::{self, LockScript};
use crate::engine::shards::{parse_shards, Shard};

/// The connection of a node: one server, or a Redis Cluster (routed by slot).
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A new connection, for Sentinel the master's client and address when they changed, and
/// the server's identity (when it could be read).
type Connected = (Conn, Option<(Client, String)>, Option<Identity>);
type ConnectFuture = Shared<BoxFuture<'static, Result<Connected, NodeError>>>;

enum Slot {
    Idle,
    Connecting(ConnectFuture),
    Ready(Conn),
    Closed,
}

struct State {
    /// Bumped whenever the slot changes, so a stale failure never drops a newer connection.
    generation: u64,
    slot: Slot,
    /// A host that did not answer within the connect time-out is not tried again until
    /// `until` (doubling, up to [`MAX_BACKOFF`]): calls meanwhile fail at once with the
    /// last error instead of each waiting the whole time-out. The first call after it
    /// probes. A refused connection is cheap and is retried at once.
    down: Option<Down>,
}

struct Down {
    until: Instant,
    backoff: Duration,
    error: NodeError,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A Redis node shared by clients and locks.
pub struct Node {
    config: NodeConfig,
    /// How errors name the node (for Sentinel: the current master, once found).
    addr: std::sync::RwLock<String>,
    /// The client of the node (for Sentinel: of the current master).
    client: std::sync::RwLock<Client>,
    state: Mutex<State>,
    /// Whether the server takes `SET key value NX PX ms GET` (Redis >= 7.0); learnt from
    /// its first refusal.
    set_nx_get: std::sync::atomic::AtomicBool,
    /// The pub/sub connection for release notifications, made on first need.
    subscriber: tokio::sync::Mutex<Option<Arc<Subscriber>>>,
    /// The identity of the server behind the current connection, and a counter bumped
    /// whenever it is read again (each new connection).
    identity: Mutex<Option<Identity>>,
    identity_epoch: std::sync::atomic::AtomicU64,
    /// For a cluster: bumped whenever one of its connections drops (a shard's master may
    /// have restarted, and the cluster connection reconnects by itself). Part of
    /// [`Node::identity_epoch`].
    drops: Arc<std::sync::atomic::AtomicU64>,
    /// An in-process node instead of a server (see [`MemoryStore`]).
    memory: Option<Arc<MemoryStore>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("config", &self.config)
            .finish()
    }
}

fn build_client(config: &NodeConfig) -> Result<Client, NodeError> {
    let fail = |e: RedisError| NodeError::Connect {
        addr: config.addr(),
        reason: plain(&e),
    };
    let addr = match &config.tls {
        None => ConnectionAddr::Tcp(config.host.clone(), config.port),
        Some(tls) => {
            install_crypto_provider();
            ConnectionAddr::TcpTls {
                host: config.host.clone(),
                port: config.port,
                insecure: !tls.reject_unauthorized,
                tls_params: None,
            }
        }
    };
    let mut redis_info = RedisConnectionInfo::default().set_db(config.db);
    if let Some(u) = &config.username {
        redis_info = redis_info.set_username(u);
    }
    if let Some(p) = &config.password {
        redis_info = redis_info.set_password(p);
    }
    let info = addr
        .into_connection_info()
        .map_err(fail)?
        .set_redis_settings(redis_info);
    match &config.tls {
        Some(tls) if tls.ca.is_some() || tls.cert.is_some() => {
            let client_tls = match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                    client_cert: cert.as_bytes().to_vec(),
                    client_key: key.as_bytes().to_vec(),
                }),
                _ => None,
            };
            let certs = redis::TlsCertificates {
                client_tls,
                root_cert: tls.ca.as_ref().map(|c| c.as_bytes().to_vec()),
            };
            Client::build_with_tls(info, certs).map_err(fail)
        }
        _ => Client::open(info).map_err(fail),
    }
}

fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another library in the process may have installed one already: that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Node {
    /// A node for `config`. Nothing is connected until [`Node::connect`] or a command.
    pub fn new(config: NodeConfig) -> Result<Arc<Node>, NodeError> {
        let client = build_client(&config)?;
        Ok(Node::with(config, client, None))
    }

    /// A node that is the in-process `store`.
    pub fn memory(store: Arc<MemoryStore>, command_timeout: Duration) -> Arc<Node> {
        let config = NodeConfig {
            host: format!("MemoryStore '{}'", store.name()),
            command_timeout,
            memory: true,
            ..NodeConfig::default()
        };
        // Never used to connect: the store answers every command.
        let client = Client::open("redis://127.0.0.1:1").expect("a constant URL parses");
        Node::with(config, client, Some(store))
    }

    fn with(config: NodeConfig, client: Client, memory: Option<Arc<MemoryStore>>) -> Arc<Node> {
        Arc::new(Node {
            addr: std::sync::RwLock::new(config.addr()),
            config,
            client: std::sync::RwLock::new(client),
            state: Mutex::new(State {
                generation: 0,
                slot: Slot::Idle,
                down: None,
            }),
            subscriber: tokio::sync::Mutex::new(None),
            set_nx_get: std::sync::atomic::AtomicBool::new(true),
            identity: Mutex::new(None),
            identity_epoch: std::sync::atomic::AtomicU64::new(0),
            drops: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            memory,
        })
    }

    /// The in-process store behind this node, if it is one.
    pub fn memory_store(&self) -> Option<&Arc<MemoryStore>> {
        self.memory.as_ref()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// `host:port`, how errors name this node.
    pub fn addr(&self) -> String {
        self.addr.read_now().clone()
    }

    fn client(&self) -> Client {
        self.client.read_now().clone()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent (every
        // update is a single assignment), so a poisoned lock is still usable.
        self.state.locked()
    }

    /// Starts connecting in the background if not connected (used on construction).
    pub async fn connect(self: Arc<Self>) -> Result<(), NodeError> {
        self.ensure_connected().await
    }

    /// Connects when not connected (the identity of the server comes with it).
    pub async fn ensure_connected(&self) -> Result<(), NodeError> {
        if let Some(m) = &self.memory {
            return m.check();
        }
        self.connection().await.map(|_| ())
    }

    /// The identity of the server behind the current connection, if it could be read.
    pub fn identity(&self) -> Option<Identity> {
        if let Some(m) = &self.memory {
            let (run_id, uptime) = m.identity();
            return Some(Identity {
                run_id,
                uptime: Duration::from_secs(uptime.as_secs()),
                seen_at: Instant::now(),
                promoted: false,
            });
        }
        self.identity.locked().clone()
    }

    /// Changes whenever a new connection read the server's identity again (for a
    /// cluster: also whenever a connection to one of its servers dropped).
    pub fn identity_epoch(&self) -> u64 {
        if let Some(m) = &self.memory {
            return m.identity_epoch();
        }
        let acquire = std::sync::atomic::Ordering::Acquire;
        self.identity_epoch.load(acquire) + self.drops.load(acquire)
    }

    /// The shards of a cluster node, each with its master's identity, read now (`None`
    /// when the ACL forbids `INFO`).
    pub async fn cluster_shards(&self) -> Result<Option<Vec<Shard>>, NodeError> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
        let (Conn::Cluster(mut c), _) = self.connection().await? else {
            return Ok(Some(Vec::new()));
        };
        let fail = |reason: String| NodeError::Command {
            addr: self.addr(),
            reason,
        };
        let work = async {
            let mut slots = redis::cmd("CLUSTER");
            slots.arg("SLOTS");
            let random = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
            let slots = c.route_command(slots, random).await?;
            // The default sections: `server` and `replication` (was it promoted?).
            let info = redis::cmd("INFO");
            let masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            let infos = c.route_command(info, masters).await?;
            Ok::<_, RedisError>((slots, infos))
        };
        let (slots, infos) = match tokio::time::timeout(self.config.command_timeout, work).await {
            Ok(Ok(replies)) => replies,
            Ok(Err(e)) if e.code() == Some("NOPERM") => return Ok(None),
            Ok(Err(e)) => return Err(fail(plain(&e))),
            Err(_) => return Err(fail("timed out reading the cluster's shards".into())),
        };
        match parse_shards(&slots, &infos, Instant::now()) {
            Err(e) if e.starts_with("NOPERM") => Ok(None),
            Err(e) => Err(fail(e)),
            Ok(shards) => Ok(Some(shards)),
        }
    }

    /// The shared connection, establishing it if needed. Concurrent callers share one
    /// connect attempt; a failed attempt is not cached, so the next call tries again.
    async fn connection(&self) -> Result<(Conn, u64), NodeError> {
        let (fut, generation) = {
            let mut st = self.lock_state();
            match &st.slot {
                Slot::Ready(c) => return Ok((c.clone(), st.generation)),
                Slot::Closed => return Err(NodeError::Closed { addr: self.addr() }),
                Slot::Connecting(f) => (f.clone(), st.generation),
                Slot::Idle => {
                    if let Some(down) = st.down.as_ref().filter(|d| Instant::now() < d.until) {
                        return Err(down.error.clone());
                    }
                    st.generation += 1;
                    let f = establish(self.client(), self.config.clone(), self.drops.clone())
                        .boxed()
                        .shared();
                    st.slot = Slot::Connecting(f.clone());
                    (f, st.generation)
                }
            }
        };
        let result = fut.await;
        let mut st = self.lock_state();
        let result = result.map(|(conn, found, identity)| {
            if st.generation == generation && matches!(st.slot, Slot::Connecting(_)) {
                if let Some((client, addr)) = found {
                    *self.client.write_now() = client;
                    *self.addr.write_now() = addr;
                }
                *self.identity.locked() = identity;
                self.identity_epoch
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
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
        if matches!(st.slot, Slot::Closed) {
            return Err(NodeError::Closed { addr: self.addr() });
        }
        result.map(|c| (c, generation))
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
        NodeError::Command {
            addr: self.addr(),
            reason: plain(&e),
        }
    }

    /// Runs `op` on the shared connection, within `wait` when given. A connection found
    /// broken is dropped and `op` is sent once more on a fresh one, as ioredis resends
    /// unfulfilled commands (every lock script is idempotent, so a resend is safe).
    pub async fn run<T, F, Fut>(&self, wait: Option<Duration>, op: F) -> Result<T, NodeError>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let (conn, generation) = self.connection().await?;
        let e = match self.bounded(wait, op(conn)).await? {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !(e.is_connection_dropped() || e.is_io_error()) || e.is_timeout() {
            return Err(self.map_error(e, generation));
        }
        self.invalidate(generation);
        let (conn, generation) = self.connection().await?;
        self.bounded(wait, op(conn))
            .await?
            .map_err(|e| self.map_error(e, generation))
    }

    /// `fut` within `wait`, when given.
    async fn bounded<T>(
        &self,
        wait: Option<Duration>,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, NodeError> {
        match wait {
            None => Ok(fut.await),
            Some(w) => tokio::time::timeout(w, fut)
                .await
                .map_err(|_| NodeError::Timeout {
                    addr: self.addr(),
                    ms: w.as_millis() as u64,
                }),
        }
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, NodeError> {
        if self.memory.is_some() {
            let wait = self.config.command_timeout;
            return self.bounded(Some(wait), self.in_memory(&cmd)).await?;
        }
        let cmd = &cmd;
        self.run(Some(self.config.command_timeout), move |mut c| async move {
            cmd.query_async::<T>(&mut c).await
        })
        .await
    }

    /// Whether `SET NX PX GET` is worth trying on this node.
    pub fn has_set_nx_get(&self) -> bool {
        self.set_nx_get.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The server refused `SET NX PX GET`: lock scripts from now on.
    pub fn lacks_set_nx_get(&self) {
        self.set_nx_get
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs a prebuilt command. No time-out of its own: lock operations bound the whole
    /// attempt with one deadline.
    pub async fn send<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, NodeError> {
        if self.memory.is_some() {
            return self.in_memory(cmd).await;
        }
        self.run(None, move |mut c| async move {
            cmd.query_async::<T>(&mut c).await
        })
        .await
    }

    /// Runs a prebuilt `EVALSHA` of `script`, loading the script again after `NOSCRIPT`.
    /// No time-out of its own: lock operations bound the whole attempt with one deadline.
    pub async fn eval<T: FromRedisValue>(
        &self,
        script: &LockScript,
        evalsha: &redis::Cmd,
    ) -> Result<T, NodeError> {
        if self.memory.is_some() {
            return self.in_memory(evalsha).await;
        }
        self.run(None, |mut c| async move {
            match evalsha.query_async::<T>(&mut c).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    script.load().query_async::<()>(&mut c).await?;
                    evalsha.query_async::<T>(&mut c).await
                }
                other => other,
            }
        })
        .await
    }

    /// `cmd` answered by the in-process store.
    async fn in_memory<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, NodeError> {
        let Some(m) = &self.memory else {
            return Err(NodeError::Closed { addr: self.addr() });
        };
        let value = m.execute(cmd).await?;
        T::from_redis_value(value).map_err(|e| NodeError::Protocol {
            addr: self.addr(),
            reason: e.to_string(),
        })
    }

    /// The shared pub/sub connection of this node (re-made when it died).
    pub async fn subscriber(&self) -> Result<Arc<Subscriber>, NodeError> {
        if let Some(m) = &self.memory {
            m.check()?;
            return Ok(m.subscriber());
        }
        let mut slot = self.subscriber.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| s.is_alive()) {
            return Ok(s.clone());
        }
        if self.is_closed() {
            return Err(NodeError::Closed { addr: self.addr() });
        }
        if self.config.cluster.is_some() {
            // No release notifications through a cluster (yet): waiters use the retry delay.
            return Err(NodeError::Connect {
                addr: self.addr(),
                reason: "release notifications are not used with Redis Cluster".into(),
            });
        }
        let s = Subscriber::connect(&self.client(), &self.config).await?;
        *slot = Some(s.clone());
        Ok(s)
    }

    /// Closes the connection gracefully (`QUIT`, bounded by the command time-out). Later
    /// commands fail with "Connection is closed.".
    pub async fn quit(&self) {
        if let Some(m) = &self.memory {
            m.close();
            return;
        }
        let previous = {
            let mut st = self.lock_state();
            std::mem::replace(&mut st.slot, Slot::Closed)
        };
        self.subscriber.lock().await.take();
        if let Slot::Ready(Conn::Single(mut c)) = previous {
            let _ = tokio::time::timeout(
                self.config.command_timeout,
                redis::cmd("QUIT").query_async::<()>(&mut c),
            )
            .await;
        }
    }

    pub fn is_closed(&self) -> bool {
        if let Some(m) = &self.memory {
            return m
                .check()
                .is_err_and(|e| matches!(e, NodeError::Closed { .. }));
        }
        matches!(self.lock_state().slot, Slot::Closed)
    }
}

/// Connects (for Sentinel: to the master the sentinels name), then loads the lock
/// scripts so that the first `EVALSHA` finds them.
async fn establish(
    client: Client,
    config: NodeConfig,
    drops: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Connected, NodeError> {
    if let Some(nodes) = &config.cluster {
        return connect_cluster(nodes, &config, drops)
            .await
            .map(|c| (Conn::Cluster(c), None, None));
    }
    let Some(sentinel) = &config.sentinel else {
        return connect_to(client, &config)
            .await
            .map(|(c, id)| (Conn::Single(c), None, id));
    };
    let work = async {
        let (host, port) = discover_master(sentinel, &config).await?;
        let master = NodeConfig {
            host,
            port,
            sentinel: None,
            ..config.clone()
        };
        let client = build_client(&master)?;
        let (mut conn, identity) = connect_to(client.clone(), &master).await?;
        // A sentinel may still name a master that was just demoted.
        let role: Vec<redis::Value> =
            redis::cmd("ROLE")
                .query_async(&mut conn)
                .await
                .map_err(|e| NodeError::Connect {
                    addr: master.host_port(),
                    reason: plain(&e),
                })?;
        match role.first() {
            Some(redis::Value::BulkString(r)) if r == b"master" => {}
            _ => {
                return Err(NodeError::Connect {
                    addr: master.host_port(),
                    reason: "not a master (a failover is under way)".into(),
                })
            }
        }
        Ok((
            Conn::Single(conn),
            Some((client, master.host_port())),
            identity,
        ))
    };
    match tokio::time::timeout(config.connect_timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(NodeError::ConnectTimeout {
            addr: config.addr(),
            ms: config.connect_timeout.as_millis() as u64,
        }),
    }
}

/// Connects to a Redis Cluster through its startup nodes (slots, MOVED/ASK and topology
/// refreshes are redis-rs' cluster-async). Scripts are loaded on first use (NOSCRIPT).
/// RESP3, so that every dropped connection to one of its servers is told (`drops`).
async fn connect_cluster(
    nodes: &[(String, u16)],
    config: &NodeConfig,
    drops: Arc<std::sync::atomic::AtomicU64>,
) -> Result<ClusterConnection, NodeError> {
    let addr = config.addr();
    let infos: Vec<redis::ConnectionInfo> = nodes
        .iter()
        .map(|(host, port)| {
            let addr = match &config.tls {
                None => ConnectionAddr::Tcp(host.clone(), *port),
                Some(tls) => {
                    install_crypto_provider();
                    ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port: *port,
                        insecure: !tls.reject_unauthorized,
                        tls_params: None,
                    }
                }
            };
            addr.into_connection_info()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| NodeError::Connect {
            addr: addr.clone(),
            reason: plain(&e),
        })?;
    let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.command_timeout)
        .retries(2)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(move |info: redis::PushInfo| {
            if info.kind == redis::PushKind::Disconnection {
                drops.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            Ok::<(), std::convert::Infallible>(())
        });
    if let Some(u) = &config.username {
        builder = builder.username(u);
    }
    if let Some(p) = &config.password {
        builder = builder.password(p);
    }
    let client = builder.build().map_err(|e| NodeError::Connect {
        addr: addr.clone(),
        reason: plain(&e),
    })?;
    match tokio::time::timeout(config.connect_timeout, client.get_async_connection()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(NodeError::Connect {
            addr,
            reason: plain(&e),
        }),
        Err(_) => Err(NodeError::ConnectTimeout {
            addr,
            ms: config.connect_timeout.as_millis() as u64,
        }),
    }
}

/// Asks the sentinels, in order, for the address of the master; the first answer wins.
async fn discover_master(
    sentinel: &SentinelConfig,
    config: &NodeConfig,
) -> Result<(String, u16), NodeError> {
    let mut reasons = Vec::new();
    for (host, port) in &sentinel.sentinels {
        let at = NodeConfig {
            host: host.clone(),
            port: *port,
            username: sentinel.username.clone(),
            password: sentinel.password.clone(),
            db: 0,
            sentinel: None,
            ..config.clone()
        };
        let ask = async {
            let mut conn = connect_plain(build_client(&at)?, &at).await?;
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&sentinel.name)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
                .map_err(|e| NodeError::Command {
                    addr: at.host_port(),
                    reason: plain(&e),
                })
        };
        match tokio::time::timeout(config.command_timeout.max(config.connect_timeout), ask).await {
            Ok(Ok(Some(master))) => return Ok(master),
            Ok(Ok(None)) => reasons.push(format!(
                "{} knows no master '{}'",
                at.host_port(),
                sentinel.name
            )),
            Ok(Err(e)) => reasons.push(e.to_string()),
            Err(_) => reasons.push(format!("{}: no answer", at.host_port())),
        }
    }
    Err(NodeError::Connect {
        addr: config.addr(),
        reason: format!("no sentinel named the master: {}", reasons.join("; ")),
    })
}

/// A connection without the lock scripts (to a sentinel).
async fn connect_plain(
    client: Client,
    config: &NodeConfig,
) -> Result<MultiplexedConnection, NodeError> {
    let conn_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.command_timeout));
    client
        .get_multiplexed_async_connection_with_config(&conn_config)
        .await
        .map_err(|e| NodeError::Connect {
            addr: config.host_port(),
            reason: plain(&e),
        })
}

/// Connects to one server, loads the lock scripts and reads the server's identity (a
/// user whose ACL forbids `INFO` gets none).
async fn connect_to(
    client: Client,
    config: &NodeConfig,
) -> Result<(MultiplexedConnection, Option<Identity>), NodeError> {
    let addr = config.host_port();
    let conn_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        // Waits are bounded by our own timers (per command, or per lock attempt).
        .set_response_timeout(None);
    let work = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&conn_config)
            .await?;
        let mut pipe = redis::pipe();
        for script in scripts::all() {
            pipe.add_command(script.load()).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        // The server's identity (restart safety). A user whose ACL forbids INFO gets none;
        // any other failure fails the connect, so that a restarted node is never taken
        // for one whose identity could not be read.
        let identity = match redis::cmd("INFO") // server and replication, by default
            .query_async::<String>(&mut conn)
            .await
        {
            Ok(info) => Identity::parse(&info, std::time::Instant::now()),
            Err(e) if e.code() == Some("NOPERM") => None,
            Err(e) => return Err(e),
        };
        Ok::<_, RedisError>((conn, identity))
    };
    match tokio::time::timeout(config.connect_timeout, work).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) if !e.is_timeout() => Err(NodeError::Connect {
            addr,
            reason: plain(&e),
        }),
        _ => Err(NodeError::ConnectTimeout {
            addr,
            ms: config.connect_timeout.as_millis() as u64,
        }),
    }
}

/// A driver error in plain words (see [`plain_reason`]).
pub(crate) fn plain(e: &RedisError) -> String {
    plain_reason(&e.to_string())
}
