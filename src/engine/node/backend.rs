//! What the quorum needs from a node, whatever answers it: the [`Backend`] trait.
//!
//! Two implementations: [`Server`](super::server::Server), a Redis deployment over the
//! network (one server, the master the sentinels name, or a Cluster), and the in-process
//! [`MemoryStore`] (through `in_memory::MemoryBackend`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use redis::{Cmd, ParsingError, RedisResult, Value};

use crate::engine::error::NodeError;
use crate::engine::identity::Identity;
use crate::engine::memory::MemoryStore;
use crate::engine::notify::Subscriber;
use crate::engine::scripts::LockScript;
use crate::engine::shards::Shard;
use crate::engine::timer;

/// Takes a node's reply: converts it into the caller's type and keeps it, or says why it
/// cannot. A refused reply fails the command with the backend's own error for it (see
/// [`Backend::command`]).
pub type Reply<'a> = &'a mut (dyn FnMut(Value) -> Result<(), ParsingError> + Send);

/// A node as the quorum uses it: commands and lock scripts sent to it, answered with a
/// reply or an error, its address, its identity (restart safety) and its capabilities.
pub trait Backend: Send + Sync {
    /// How errors name the node (for Sentinel: the current master, once found).
    fn addr(&self) -> String;

    /// Connects when not connected (the identity of the server comes with it); an
    /// in-process store only says whether it answers now.
    fn ensure_connected(&self) -> BoxFuture<'_, Result<(), NodeError>>;

    /// [`Backend::ensure_connected`] for a user's `connect()`: a server not listening yet
    /// (starting) is tried again until the connect time-out, as a command's first
    /// connection is.
    fn connect_waiting(&self) -> BoxFuture<'_, Result<(), NodeError>> {
        self.ensure_connected()
    }

    /// The identity of the server behind the current connection, if it could be read.
    fn identity(&self) -> Option<Identity>;

    /// Changes whenever the identity was read again (a new connection, a restart of the
    /// store; for a cluster: also whenever a connection to one of its servers dropped).
    fn identity_epoch(&self) -> u64;

    /// The shards of a Redis Cluster, each with its master's identity, read now (`None`
    /// when the ACL forbids `INFO`). Anything else has none (an empty list).
    fn cluster_shards(&self) -> BoxFuture<'_, Result<Option<Vec<Shard>>, NodeError>>;

    /// Runs `cmd`, within `wait` when given (otherwise the caller bounds the wait), and
    /// hands the reply to `reply`. A reply that `reply` refuses fails the command: a
    /// server reports it as the driver's parsing error of the reply (`Command`, the
    /// connection given up), an in-process store as `Protocol`.
    fn command<'a>(
        &'a self,
        cmd: &'a Cmd,
        wait: Option<Duration>,
        reply: Reply<'a>,
    ) -> BoxFuture<'a, Result<(), NodeError>>;

    /// Runs `cmd`, which names no key, as [`Backend::command`] does (without a time-out
    /// of its own) where `key` is: on a Redis Cluster, on the master of its hash slot (a
    /// `WAIT` there counts the replicas of the connection that wrote the key); anything
    /// else has one place.
    fn command_at<'a>(
        &'a self,
        cmd: &'a Cmd,
        _key: &'a str,
        reply: Reply<'a>,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        self.command(cmd, None, reply)
    }

    /// Runs the prebuilt `EVALSHA` of `script` as [`Backend::command`] does, without a
    /// time-out of its own; a server that answers `NOSCRIPT` gets the script loaded again
    /// and the `EVALSHA` once more.
    fn script<'a>(
        &'a self,
        script: &'a LockScript,
        evalsha: &'a Cmd,
        reply: Reply<'a>,
    ) -> BoxFuture<'a, Result<(), NodeError>>;

    /// Sends `cmd` at once on a connection that is up and takes it without waiting: the
    /// first try of [`Backend::command`] or [`Backend::script`], with no future of its
    /// own. `None` when there is no such connection (the caller then uses those).
    fn send_now(&self, _cmd: &Cmd) -> Option<Sent> {
        None
    }

    /// Hands the reply of a [`Sent`] to `reply` as [`Backend::command`] would. `None` when
    /// the command must go through [`Backend::command`] or [`Backend::script`] after all,
    /// which send it again: the connection dropped (it is given up), or the script is not
    /// loaded.
    fn landed(
        &self,
        _sent: &Sent,
        _result: RedisResult<Value>,
        _reply: Reply<'_>,
    ) -> Option<Result<(), NodeError>> {
        None
    }

    /// Whether `SET key value NX PX ms GET` is worth trying.
    fn has_set_nx_get(&self) -> bool;

    /// The node refused `SET NX PX GET` (Redis < 7.0): lock scripts from now on.
    fn lacks_set_nx_get(&self);

    /// The pub/sub side for release notifications (for a server: one shared connection,
    /// made again when it died).
    fn subscriber(&self) -> BoxFuture<'_, Result<Arc<Subscriber>, NodeError>>;

    /// Closes the node gracefully; later commands fail with "Connection is closed.".
    fn quit(&self) -> BoxFuture<'_, ()>;

    /// Whether [`Backend::quit`] closed it.
    fn is_closed(&self) -> bool;

    /// The in-process store behind this backend, if it is one (users' tests inject faults
    /// through it).
    fn memory_store(&self) -> Option<&Arc<MemoryStore>> {
        None
    }
}

/// `fut` within `wait`, when given; the time-out names the node with `addr`.
pub(crate) async fn within<T>(
    wait: Option<Duration>,
    fut: impl Future<Output = T>,
    addr: impl FnOnce() -> String,
) -> Result<T, NodeError> {
    match wait {
        None => Ok(fut.await),
        Some(w) => timer::timeout(w, fut)
            .await
            .map_err(|_| NodeError::Timeout {
                addr: addr(),
                ms: w.as_millis() as u64,
            }),
    }
}

/// A command sent at once (see [`Backend::send_now`]): its reply to come, and which
/// connection of the backend took it.
pub struct Sent {
    pub(super) generation: u64,
    pub(super) reply: super::lean::Sent,
}

impl Future for Sent {
    type Output = RedisResult<Value>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.reply).poll(cx)
    }
}
