//! Connecting to one server: the connection (one server, or a Redis Cluster routed by
//! slot), with the lock scripts loaded and the server's identity read.

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, RedisConnectionInfo, RedisError};

use super::lean::Lean;
use super::plain;
use super::tls::{lean_tls, tcp};
use crate::engine::config::NodeConfig;
use crate::engine::error::NodeError;
use crate::engine::identity::Identity;
use crate::engine::scripts;
use crate::engine::timer;

/// The connection of a node: one server (the lean connection, over plain TCP or TLS), or
/// a Redis Cluster (routed by slot).
#[derive(Clone)]
pub(super) enum Conn {
    Lean(Lean),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Whether the connection left its first command unanswered past the command time-out
    /// (see `Lean::stuck`; a cluster's connection reconnects by itself).
    pub(super) fn stuck(&self) -> bool {
        match self {
            Conn::Lean(l) => l.stuck(),
            Conn::Cluster(_) => false,
        }
    }
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Lean(c) => c.req_packed_command(cmd),
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
            Conn::Lean(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Lean(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A new connection, for Sentinel the master's client and address when they changed, and
/// the server's identity (when it could be read).
pub(super) type Connected = (Conn, Option<(Client, String)>, Option<Identity>);
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

/// Connects to one server (the lean connection, over plain TCP or TLS), loads the lock
/// scripts and reads the server's identity (a user whose ACL forbids `INFO` gets none).
pub(super) async fn connect_to(config: &NodeConfig) -> Result<(Conn, Option<Identity>), NodeError> {
    let addr = config.host_port();
    let work = async {
        let lean = connect_lean(config).await?;
        let peer = lean.peer();
        let mut conn = Conn::Lean(lean);
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
            Ok(info) => {
                Identity::parse(&info, std::time::Instant::now()).map(|id| id.reached_at(peer))
            }
            Err(e) if e.code() == Some("NOPERM") => None,
            Err(e) => return Err(e),
        };
        Ok::<_, RedisError>((conn, identity))
    };
    match timer::timeout(config.connect_timeout, work).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) if !e.is_timeout() => Err(NodeError::Connect {
            addr,
            reason: plain(&e),
        }),
        _ => Err(NodeError::ConnectTimeout {
            addr,
            ms: config.connect_timeout.as_millis() as u64,
            said: None,
        }),
    }
}

/// Whether `AUTH` was refused because the server has no password to check (Redis 6 and
/// newer say so one way, older ones another).
fn no_password_configured(e: &RedisError) -> bool {
    let said = e.to_string();
    said.contains("called without any password configured") || said.contains("no password is set")
}

/// Whether the server of `config` has no password, so that the one given is not needed:
/// its `AUTH` says so.
pub(super) async fn password_unneeded(config: &NodeConfig) -> bool {
    let asked = timer::timeout(config.connect_timeout, lean_authenticating(config)).await;
    matches!(asked, Ok(Ok((_, Err(e)))) if no_password_configured(&e))
}

/// A lean connection to the server of `config`, and the server's answer to its `AUTH`
/// when a password is given.
async fn lean_authenticating(
    config: &NodeConfig,
) -> Result<(Lean, Result<(), RedisError>), RedisError> {
    let mut conn = Lean::connect(
        &config.host,
        config.port,
        config.db,
        lean_tls(config)?,
        config.command_timeout,
    )
    .await?;
    let Some(password) = &config.password else {
        return Ok((conn, Ok(())));
    };
    let mut auth = redis::cmd("AUTH");
    if let Some(user) = &config.username {
        auth.arg(user);
    }
    let answer = auth.arg(password).query_async::<()>(&mut conn).await;
    Ok((conn, answer))
}

/// The lean connection to the server of `config`, authenticated (`AUTH`) and on its
/// database (`SELECT`), as redis-rs' handshake leaves its own.
async fn connect_lean(config: &NodeConfig) -> Result<Lean, RedisError> {
    let (mut conn, authenticated) = lean_authenticating(config).await?;
    match authenticated {
        // A password for a server that has none: it takes every command without one,
        // and ioredis goes on too (the same settings often serve a server with one).
        Err(e) if no_password_configured(&e) => {}
        done => done?,
    }
    if config.db != 0 {
        redis::cmd("SELECT")
            .arg(config.db)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(conn)
}

/// The pub/sub connection (release notifications) of the server `client` reaches. A
/// password given for a server that has none is not needed (as for the lean connection):
/// refused (redis-rs says only that authentication failed; the lean connection's own
/// `AUTH` tells why), the connection is made again without it.
pub(super) async fn pubsub(
    client: &Client,
    config: &NodeConfig,
) -> redis::RedisResult<redis::aio::PubSub> {
    match pubsub_of(client, config).await {
        Err(e)
            if e.kind() == redis::ErrorKind::AuthenticationFailed
                && config.password.is_some()
                && password_unneeded(config).await =>
        {
            let info = client.get_connection_info().clone();
            let settings = info.redis_settings();
            let mut plain = RedisConnectionInfo::default()
                .set_db(settings.db())
                .set_protocol(settings.protocol());
            if settings.skip_set_lib_name() {
                plain = plain.set_skip_set_lib_name();
            }
            pubsub_of(&Client::open(info.set_redis_settings(plain))?, config).await
        }
        done => done,
    }
}

/// [`pubsub`]'s connection: over TLS made as the lean connection makes its own (CA, client
/// certificate, `servername`); redis-rs' own otherwise.
async fn pubsub_of(client: &Client, config: &NodeConfig) -> redis::RedisResult<redis::aio::PubSub> {
    let info = client.get_connection_info();
    let ConnectionAddr::TcpTls { host, port, .. } = info.addr() else {
        return client.get_async_pubsub().await;
    };
    let Some(tls) = lean_tls(config)? else {
        return client.get_async_pubsub().await;
    };
    let stream = tls.over(tcp(host, *port).await?).await?;
    redis::aio::PubSub::new(info.redis_settings(), stream).await
}
