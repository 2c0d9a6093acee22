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
use crate::engine::shards::{master_addrs, parse_shards, Shard};
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
    // Each server's connection gets the connect time-out, the whole connect three times
    // that (startup nodes, then the slot map's masters, one phase after the other): one
    // frozen master costs a time-out in each, and the other shards stay usable (audit: one
    // time-out for it all reached no shard; hunts: a third per server failed over a slow
    // link, twice in all failed with a frozen startup node).
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
    let whole = config.connect_timeout * 3;
    match timer::timeout(whole, client.get_async_connection()).await {
        Ok(Ok(c)) => Ok(c),
        // No startup node answered within the time-out: a cluster that does not answer,
        // backed off as one (and said as one).
        Ok(Err(e)) if e.is_timeout() || plain(&e) == "timed out" => {
            Err(NodeError::ConnectTimeout {
                addr,
                ms: config.connect_timeout.as_millis() as u64,
                said: None,
            })
        }
        Ok(Err(e)) => Err(NodeError::Connect {
            addr,
            reason: plain(&e),
        }),
        Err(_) => Err(NodeError::ConnectTimeout {
            addr,
            ms: config.connect_timeout.as_millis() as u64,
            said: Some(format!(
                "the cluster's servers were not all connected within {} ms",
                whole.as_millis()
            )),
        }),
    }
}

/// The shards of the cluster behind `c`, each with its master's identity, read now within
/// `wait` (`None` when the ACL forbids `INFO`). `Err`: why they could not be read.
/// Each master is asked on its own, for half the time left: one that does not answer
/// (frozen, down) leaves its own shard out, whose slots then sit out, not every shard
/// (found by an audit: a client made while a master was frozen failed every acquire).
pub(super) async fn read_shards(
    c: &mut ClusterConnection,
    wait: Duration,
) -> Result<Option<Vec<Shard>>, String> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let deadline = Instant::now() + wait;
    let mut slots = redis::cmd("CLUSTER");
    slots.arg("SLOTS");
    let random = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
    let slots = match timer::timeout(wait, c.route_command(slots, random)).await {
        Ok(Ok(slots)) => slots,
        Ok(Err(e)) if e.code() == Some("NOPERM") => return Ok(None),
        Ok(Err(e)) => return Err(plain(&e)),
        Err(_) => return Err("timed out reading the cluster's shards".into()),
    };
    // Half of what is left: a master that does not answer must not take all of it (the
    // operation that asked for the shards waits within the same time-out).
    let left = deadline.saturating_duration_since(Instant::now()) / 2;
    let asks = master_addrs(&slots)?.into_iter().map(|(host, port)| {
        let mut c = c.clone();
        async move {
            let addr = format!("{host}:{port}");
            let at = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            // The default sections: `server` and `replication` (was it promoted?).
            let info = redis::cmd("INFO");
            (addr, timer::timeout(left, c.route_command(info, at)).await)
        }
    });
    let mut infos = Vec::new();
    for (addr, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(Ok(info)) => infos.push((redis::Value::BulkString(addr.into_bytes()), info)),
            Ok(Err(e)) if e.code() == Some("NOPERM") => return Ok(None),
            _ => {}
        }
    }
    match parse_shards(&slots, &redis::Value::Map(infos), Instant::now()) {
        Err(e) if e.starts_with("NOPERM") => Ok(None),
        Err(e) => Err(e),
        Ok(shards) => Ok(Some(shards)),
    }
}
