//! One Redis node: a single multiplexed (pipelining) connection shared by every caller,
//! connected in the background, re-established by itself after a drop, and a time-out
//! on every wait.
//!
//! * `connection`: the connection state (connect once for all callers, back-off, reconnect
//!   after a drop), the resend of a command on a broken connection, and connecting to one
//!   server (lock scripts loaded, identity read).
//! * `tls`: the client of a server, over TLS when asked.
//! * `sentinel`: the master the sentinels name, checked with `ROLE`.
//! * `cluster`: a Redis Cluster's connection and its shards.
//!
//! An in-process node (a [`MemoryStore`]) answers every command itself; each public method
//! below checks for it first.

mod cluster;
mod connection;
mod sentinel;
mod tls;

use crate::engine::sync::{Unpoisoned, UnpoisonedRw};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{Client, FromRedisValue, RedisError};

use crate::engine::config::NodeConfig;
use crate::engine::error::{plain_reason, NodeError};
use crate::engine::identity::Identity;
use crate::engine::memory::MemoryStore;
use crate::engine::notify::Subscriber;
use crate::engine::scripts::LockScript;
use crate::engine::shards::Shard;
use connection::{Conn, Slot, State};
use tls::build_client;

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
            state: Mutex::new(State::new()),
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
        let (Conn::Cluster(mut c), _) = self.connection().await? else {
            return Ok(Some(Vec::new()));
        };
        cluster::read_shards(&mut c, self.config.command_timeout)
            .await
            .map_err(|reason| NodeError::Command {
                addr: self.addr(),
                reason,
            })
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

/// A driver error in plain words (see [`plain_reason`]).
fn plain(e: &RedisError) -> String {
    plain_reason(&e.to_string())
}
