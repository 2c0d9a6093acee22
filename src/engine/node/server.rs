//! A Redis deployment over the network as a [`Backend`]: one server, the master the
//! sentinels name, or a Redis Cluster, through a single multiplexed (pipelining)
//! connection shared by every caller (see `connection`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::ConnectionLike;
use redis::{Client, Cmd, Value};

use super::backend::{Backend, Reply};
use super::cluster;
use super::connection::{Conn, Slot, State};
use super::tls::build_client;
use crate::engine::config::NodeConfig;
use crate::engine::error::NodeError;
use crate::engine::identity::Identity;
use crate::engine::notify::Subscriber;
use crate::engine::scripts::LockScript;
use crate::engine::shards::Shard;
use crate::engine::sync::{Unpoisoned, UnpoisonedRw};

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
    /// The identity of the server behind the current connection, and a counter bumped
    /// whenever it is read again (each new connection).
    pub(super) identity: Mutex<Option<Identity>>,
    pub(super) identity_epoch: AtomicU64,
    /// For a cluster: bumped whenever one of its connections drops (a shard's master may
    /// have restarted, and the cluster connection reconnects by itself). Part of
    /// [`Backend::identity_epoch`].
    pub(super) drops: Arc<AtomicU64>,
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
            identity: Mutex::new(None),
            identity_epoch: AtomicU64::new(0),
            drops: Arc::new(AtomicU64::new(0)),
        })
    }

    pub(super) fn client(&self) -> Client {
        self.client.read_now().clone()
    }
}

/// The reply to `cmd` on `c`, a server error in it as an error (as `query_async` reads it).
async fn request(c: &mut Conn, cmd: &Cmd) -> redis::RedisResult<Value> {
    c.req_packed_command(cmd)
        .await
        .and_then(Value::extract_error)
}

impl Backend for Server {
    fn addr(&self) -> String {
        self.addr.read_now().clone()
    }

    fn ensure_connected(&self) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move { self.connection().await.map(|_| ()) })
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

    fn script<'a>(
        &'a self,
        script: &'a LockScript,
        evalsha: &'a Cmd,
        reply: Reply<'a>,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(self.run(None, reply, move |mut c| async move {
            match request(&mut c, evalsha).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    script.load().query_async::<()>(&mut c).await?;
                    request(&mut c, evalsha).await
                }
                other => other,
            }
        }))
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
            let s = Subscriber::connect(&self.client(), &self.config).await?;
            *slot = Some(s.clone());
            Ok(s)
        })
    }

    /// `QUIT`, bounded by the command time-out.
    fn quit(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
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
        })
    }

    fn is_closed(&self) -> bool {
        matches!(self.lock_state().slot, Slot::Closed)
    }
}
