//! A Redis Cluster as one node: its connection, and its shards with their masters'
//! identities (restart safety per shard).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::cluster_async::ClusterConnection;
use redis::IntoConnectionInfo;

use super::plain;
use super::tls::{certificates, connection_addr, tcp_settings};
use crate::engine::config::NodeConfig;
use crate::engine::error::NodeError;
use crate::engine::shards::{parse_shards, Shard};
use crate::engine::timer;

/// Connects to a Redis Cluster through its startup nodes (slots, MOVED/ASK and topology
/// refreshes are redis-rs' cluster-async). Scripts are loaded on first use (NOSCRIPT).
/// RESP3, so that every dropped connection to one of its servers is told (`drops`).
pub(super) async fn connect_cluster(
    nodes: &[(String, u16)],
    config: &NodeConfig,
    drops: Arc<std::sync::atomic::AtomicU64>,
) -> Result<ClusterConnection, NodeError> {
    let addr = config.addr();
    let infos: Vec<redis::ConnectionInfo> = nodes
        .iter()
        .map(|(host, port)| {
            connection_addr(host, *port, config)
                .into_connection_info()
                .map(|info| info.set_tcp_settings(tcp_settings()))
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
        // redis-rs waits 1.28 s at least before it retries a TRYAGAIN, CLUSTERDOWN or
        // LOADING, longer than a command's time-out: a few ms, then the error is the
        // engine's to handle (its retries, or a single-key release during a migration).
        .min_retry_wait(5)
        .max_retry_wait(100)
        .retry_wait_formula(10, 2)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(move |info: redis::PushInfo| {
            if info.kind == redis::PushKind::Disconnection {
                drops.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            Ok::<(), std::convert::Infallible>(())
        });
    if let Some(certs) = certificates(config) {
        builder = builder.certs(certs);
    }
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
    match timer::timeout(config.connect_timeout, client.get_async_connection()).await {
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

/// The shards of the cluster behind `c`, each with its master's identity, read now within
/// `wait` (`None` when the ACL forbids `INFO`). `Err`: why they could not be read.
pub(super) async fn read_shards(
    c: &mut ClusterConnection,
    wait: Duration,
) -> Result<Option<Vec<Shard>>, String> {
    use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
    let work = async {
        let mut slots = redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let random = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let slots = c.route_command(slots, random).await?;
        // The default sections: `server` and `replication` (was it promoted?).
        let info = redis::cmd("INFO");
        let masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let infos = c.route_command(info, masters).await?;
        Ok::<_, redis::RedisError>((slots, infos))
    };
    let (slots, infos) = match timer::timeout(wait, work).await {
        Ok(Ok(replies)) => replies,
        Ok(Err(e)) if e.code() == Some("NOPERM") => return Ok(None),
        Ok(Err(e)) => return Err(plain(&e)),
        Err(_) => return Err("timed out reading the cluster's shards".into()),
    };
    match parse_shards(&slots, &infos, Instant::now()) {
        Err(e) if e.starts_with("NOPERM") => Ok(None),
        Err(e) => Err(e),
        Ok(shards) => Ok(Some(shards)),
    }
}
