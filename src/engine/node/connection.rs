//! The connection of a node: one shared connection, made on first need by one attempt
//! that concurrent callers share, given up after a drop and made again by the next
//! command, with a back-off for a host that does not answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};

use super::backend::{within, Backend, Reply};
use super::cluster::connect_cluster;
use super::plain;
use super::sentinel::connect_master;
use super::server::Server;
use crate::engine::config::NodeConfig;
use crate::engine::error::NodeError;
use crate::engine::identity::Identity;
use crate::engine::scripts;
use crate::engine::sync::{Unpoisoned, UnpoisonedRw};

/// The connection of a node: one server, or a Redis Cluster (routed by slot).
#[derive(Clone)]
pub(super) enum Conn {
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
pub(super) type Connected = (Conn, Option<(Client, String)>, Option<Identity>);
type ConnectFuture = Shared<BoxFuture<'static, Result<Connected, NodeError>>>;

pub(super) enum Slot {
    Idle,
    Connecting(ConnectFuture),
    Ready(Conn),
    Closed,
}

pub(super) struct State {
    /// Bumped whenever the slot changes, so a stale failure never drops a newer connection.
    generation: u64,
    pub(super) slot: Slot,
    /// A host that did not answer within the connect time-out is not tried again until
    /// `until` (doubling, up to [`MAX_BACKOFF`]): calls meanwhile fail at once with the
    /// last error instead of each waiting the whole time-out. The first call after it
    /// probes. A refused connection is cheap and is retried at once.
    down: Option<Down>,
}

impl State {
    /// Not connected, nothing tried yet.
    pub(super) fn new() -> State {
        State {
            generation: 0,
            slot: Slot::Idle,
            down: None,
        }
    }
}

struct Down {
    until: Instant,
    backoff: Duration,
    error: NodeError,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Server {
    pub(super) fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent (every
        // update is a single assignment), so a poisoned lock is still usable.
        self.state.locked()
    }

    /// The shared connection, establishing it if needed. Concurrent callers share one
    /// connect attempt; a failed attempt is not cached, so the next call tries again.
    pub(super) async fn connection(&self) -> Result<(Conn, u64), NodeError> {
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
        let (conn, generation) = self.connection().await?;
        let e = match self.bounded(wait, op(conn)).await? {
            Ok(v) => return reply(v).map_err(|e| self.map_error(e.into(), generation)),
            Err(e) => e,
        };
        if !(e.is_connection_dropped() || e.is_io_error()) || e.is_timeout() {
            return Err(self.map_error(e, generation));
        }
        self.invalidate(generation);
        let (conn, generation) = self.connection().await?;
        let v = self
            .bounded(wait, op(conn))
            .await?
            .map_err(|e| self.map_error(e, generation))?;
        reply(v).map_err(|e| self.map_error(e.into(), generation))
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
    match &config.sentinel {
        Some(sentinel) => connect_master(sentinel, &config).await,
        None => connect_to(client, &config)
            .await
            .map(|(c, id)| (Conn::Single(c), None, id)),
    }
}

/// A connection without the lock scripts (to a sentinel).
pub(super) async fn connect_plain(
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
pub(super) async fn connect_to(
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
