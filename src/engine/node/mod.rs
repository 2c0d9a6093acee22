//! One node of the quorum: [`Node`], what the engine sends every command to, over a
//! [`Backend`] that answers them.
//!
//! * `backend`: the [`Backend`] trait, what the quorum needs from a node: a command or a
//!   lock script run (within a time-out when asked) to a reply or an error, its address,
//!   its identity and identity epoch (restart safety), Cluster shards, the pub/sub side
//!   for release notifications, closing, and whether it takes `SET NX PX GET`. Two
//!   implementations: `Server` below, and the in-process [`MemoryStore`] (through
//!   `MemoryBackend`), which answers every command itself.
//! * `server`: `Server`, a Redis deployment over the network: a single multiplexed
//!   (pipelining) connection shared by every caller, connected in the background (once
//!   for all callers, with a back-off), re-established by itself after a drop (the command
//!   resent), and a time-out on every wait.
//! * `connection`: connecting to one server (lock scripts loaded, identity read), and the
//!   connection type (one server, or a Cluster).
//! * `lean`: the connection to one server, over plain TCP or TLS: commands appended to
//!   one buffer, replies parsed in place (RESP2), no channel to a driver task per command.
//! * `tls`: the client of a server (redis-rs', for Cluster and Sentinel), over TLS when
//!   asked, and the rustls settings of the lean and pub/sub connections (`servername`).
//! * `sentinel`: the master the sentinels name, checked with `ROLE`.
//! * `cluster`: a Redis Cluster's connection and its shards.
//! * `in_memory`: the in-process [`MemoryStore`] as a [`Backend`].
//!
//! [`Node`] itself is a thin wrapper: the node's settings and its backend, and each reply
//! converted into the caller's type.

mod backend;
mod blocking;
mod cluster;
mod connection;
mod in_memory;
mod lean;
mod sentinel;
mod server;
mod tls;

pub(crate) use backend::within;
pub use backend::{Backend, Reply, Sent};
pub use lean::socket_wakes;

use std::sync::Arc;
use std::time::Duration;

use redis::{FromRedisValue, ParsingError, RedisError, Value};

use crate::engine::config::NodeConfig;
use crate::engine::error::{plain_reason, NodeError};
use crate::engine::identity::Identity;
use crate::engine::memory::MemoryStore;
use crate::engine::notify::Subscriber;
use crate::engine::scripts::LockScript;
use crate::engine::shards::Shard;
use in_memory::MemoryBackend;
use server::Server;

/// A Redis node shared by clients and locks: a server over the network or an in-process
/// store.
pub struct Node {
    config: NodeConfig,
    backend: Box<dyn Backend>,
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
        let server = Server::new(config.clone())?;
        Ok(Arc::new(Node {
            config,
            backend: Box::new(server),
        }))
    }

    /// A node that is the in-process `store`.
    pub fn memory(store: Arc<MemoryStore>, command_timeout: Duration) -> Arc<Node> {
        let config = NodeConfig {
            host: format!("MemoryStore '{}'", store.name()),
            command_timeout,
            memory: true,
            ..NodeConfig::default()
        };
        Arc::new(Node {
            config,
            backend: Box::new(MemoryBackend(store)),
        })
    }

    /// The in-process store behind this node, if it is one.
    pub fn memory_store(&self) -> Option<&Arc<MemoryStore>> {
        self.backend.memory_store()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// `host:port`, how errors name this node.
    pub fn addr(&self) -> String {
        self.backend.addr()
    }

    /// Starts connecting in the background if not connected (used on construction).
    pub async fn connect(self: Arc<Self>) -> Result<(), NodeError> {
        self.ensure_connected().await
    }

    /// Connects now, for a user's `connect()`: a server not listening yet is tried again
    /// until the connect time-out (see [`Backend::connect_waiting`]).
    pub async fn connect_waiting(&self) -> Result<(), NodeError> {
        self.backend.connect_waiting().await
    }

    /// Connects when not connected (the identity of the server comes with it).
    pub async fn ensure_connected(&self) -> Result<(), NodeError> {
        self.backend.ensure_connected().await
    }

    /// The identity of the server behind the current connection, if it could be read.
    pub fn identity(&self) -> Option<Identity> {
        self.backend.identity()
    }

    /// Changes whenever a new connection read the server's identity again (for a
    /// cluster: also whenever a connection to one of its servers dropped).
    pub fn identity_epoch(&self) -> u64 {
        self.backend.identity_epoch()
    }

    /// The shards of a cluster node, each with its master's identity, read now (`None`
    /// when the ACL forbids `INFO`).
    pub async fn cluster_shards(&self) -> Result<Option<Vec<Shard>>, NodeError> {
        self.backend.cluster_shards().await
    }

    /// Runs one command, within the command time-out.
    pub async fn query<T: FromRedisValue + Send>(&self, cmd: redis::Cmd) -> Result<T, NodeError> {
        self.query_within(cmd, Some(self.config.command_timeout))
            .await
    }

    /// Runs any command a user sends (`call()`): within the command time-out, plus the
    /// time a blocking command (`BLPOP q 7`, `XREAD BLOCK 500`, `WAIT 1 100`) was asked to
    /// block; one asked to block without end (a time-out of 0) waits as long as it blocks.
    /// (Given up on early, the command would still block on the server, take what comes,
    /// and hold up every later command on the shared connection.)
    pub async fn query_any<T: FromRedisValue + Send>(
        &self,
        cmd: redis::Cmd,
    ) -> Result<T, NodeError> {
        let wait = match blocking::of_cmd(&cmd) {
            None => Some(self.config.command_timeout),
            Some(None) => None,
            Some(Some(block)) => Some(self.config.command_timeout + block),
        };
        self.query_within(cmd, wait).await
    }

    async fn query_within<T: FromRedisValue + Send>(
        &self,
        cmd: redis::Cmd,
        wait: Option<Duration>,
    ) -> Result<T, NodeError> {
        let mut out = None;
        self.backend
            .command(&cmd, wait, &mut keep(&mut out))
            .await?;
        self.answer(out)
    }

    /// Whether `SET NX PX GET` is worth trying on this node.
    pub fn has_set_nx_get(&self) -> bool {
        self.backend.has_set_nx_get()
    }

    /// The server refused `SET NX PX GET`: lock scripts from now on.
    pub fn lacks_set_nx_get(&self) {
        self.backend.lacks_set_nx_get()
    }

    /// Runs a prebuilt command. No time-out of its own: lock operations bound the whole
    /// attempt with one deadline.
    pub async fn send<T: FromRedisValue + Send>(&self, cmd: &redis::Cmd) -> Result<T, NodeError> {
        let mut out = None;
        self.backend.command(cmd, None, &mut keep(&mut out)).await?;
        self.answer(out)
    }

    /// Runs a command that names no key where `key` is (see [`Backend::command_at`]). No
    /// time-out of its own.
    pub async fn send_at<T: FromRedisValue + Send>(
        &self,
        cmd: &redis::Cmd,
        key: &str,
    ) -> Result<T, NodeError> {
        let mut out = None;
        self.backend
            .command_at(cmd, key, &mut keep(&mut out))
            .await?;
        self.answer(out)
    }

    /// Runs a prebuilt `EVALSHA` of `script`, loading the script again after `NOSCRIPT`.
    /// No time-out of its own: lock operations bound the whole attempt with one deadline.
    pub async fn eval<T: FromRedisValue + Send>(
        &self,
        script: &LockScript,
        evalsha: &redis::Cmd,
    ) -> Result<T, NodeError> {
        let mut out = None;
        self.backend
            .script(script, evalsha, &mut keep(&mut out))
            .await?;
        self.answer(out)
    }

    /// Sends a prebuilt command at once when the node has a connection up that takes it
    /// without waiting (see [`Backend::send_now`]); `None` otherwise.
    pub fn send_now(&self, cmd: &redis::Cmd) -> Option<Sent> {
        self.backend.send_now(cmd)
    }

    /// The reply to a command sent with [`Node::send_now`], converted into `T`; `None`
    /// when it must be sent again the usual way ([`Node::send`], [`Node::eval`]).
    pub fn landed<T: FromRedisValue + Send>(
        &self,
        sent: &Sent,
        result: redis::RedisResult<Value>,
    ) -> Option<Result<T, NodeError>> {
        let mut out = None;
        let done = self.backend.landed(sent, result, &mut keep(&mut out))?;
        Some(done.and_then(|()| self.answer(out)))
    }

    /// The reply a backend that answered handed over (it hands one over whenever it
    /// answers without an error).
    fn answer<T>(&self, out: Option<T>) -> Result<T, NodeError> {
        out.ok_or_else(|| NodeError::Protocol {
            addr: self.addr(),
            reason: "no reply".into(),
        })
    }

    /// The shared pub/sub connection of this node (re-made when it died).
    pub async fn subscriber(&self) -> Result<Arc<Subscriber>, NodeError> {
        self.backend.subscriber().await
    }

    /// Closes the connection gracefully (`QUIT`, bounded by the command time-out). Later
    /// commands fail with "Connection is closed.".
    pub async fn quit(&self) {
        self.backend.quit().await
    }

    pub fn is_closed(&self) -> bool {
        self.backend.is_closed()
    }
}

/// A [`Reply`] that converts the reply into `T` and keeps it in `out`.
fn keep<T: FromRedisValue>(
    out: &mut Option<T>,
) -> impl FnMut(Value) -> Result<(), ParsingError> + '_ {
    move |v| {
        *out = Some(T::from_redis_value(v)?);
        Ok(())
    }
}

/// A driver error in plain words (see [`plain_reason`]).
fn plain(e: &RedisError) -> String {
    plain_reason(&e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> (Arc<MemoryStore>, Arc<Node>) {
        let store = MemoryStore::new("n".into(), Duration::from_millis(50));
        let node = Node::memory(store.clone(), Duration::from_millis(50));
        (store, node)
    }

    #[tokio::test]
    async fn query_is_bounded_by_the_command_time_out_send_is_not() {
        let (store, node) = node();
        store.pause(600);
        let started = std::time::Instant::now();
        let err = node.query::<String>(redis::cmd("PING")).await.unwrap_err();
        assert_eq!(
            err,
            NodeError::Timeout {
                addr: "MemoryStore 'n'".into(),
                ms: 50
            }
        );
        assert!(started.elapsed() < Duration::from_millis(250));
        let ping = redis::cmd("PING");
        let late = tokio::time::timeout(Duration::from_millis(150), node.send::<String>(&ping));
        assert!(late.await.is_err(), "send waits for the caller's deadline");
        assert_eq!(node.send::<String>(&ping).await.unwrap(), "PONG");
    }

    #[tokio::test]
    async fn replies_are_converted_to_the_callers_type() {
        let (_store, node) = node();
        let set = crate::engine::kinds::set_nx_px_get("k", "v", 1000);
        assert_eq!(node.send::<Option<Vec<u8>>>(&set).await.unwrap(), None);
        assert_eq!(
            node.send::<Option<Vec<u8>>>(&set).await.unwrap(),
            Some(b"v".to_vec())
        );
        let err = node.send::<i64>(&set).await.unwrap_err();
        assert!(
            matches!(&err, NodeError::Protocol { addr, .. } if addr == "MemoryStore 'n'"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_memory_node_is_its_store() {
        let (store, node) = node();
        assert!(Arc::ptr_eq(node.memory_store().unwrap(), &store));
        assert_eq!(node.addr(), node.config().addr());
        assert_eq!(node.cluster_shards().await, Ok(Some(Vec::new())));
        assert!(node.has_set_nx_get());
        let epoch = node.identity_epoch();
        store.clear();
        assert_ne!(node.identity_epoch(), epoch);
        assert!(!node.is_closed());
        node.quit().await;
        assert!(node.is_closed());
        assert_eq!(
            node.ensure_connected().await,
            Err(NodeError::Closed {
                addr: "MemoryStore 'n'".into()
            })
        );
    }
}
