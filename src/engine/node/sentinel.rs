//! Redis Sentinel: the master the sentinels name, checked to be a master still.

use redis::aio::MultiplexedConnection;

use super::connection::{connect_plain, connect_to, Conn, Connected};
use super::plain;
use super::tls::build_client;
use crate::engine::config::{NodeConfig, SentinelConfig};
use crate::engine::error::NodeError;

/// Connects to the master the sentinels name, within the connect time-out, and returns
/// its client and address with the connection (the node is named after it from then on).
pub(super) async fn connect_master(
    sentinel: &SentinelConfig,
    config: &NodeConfig,
) -> Result<Connected, NodeError> {
    let work = async {
        let (host, port) = discover_master(sentinel, config).await?;
        let master = NodeConfig {
            host,
            port,
            sentinel: None,
            ..config.clone()
        };
        let client = build_client(&master)?;
        let (mut conn, identity) = connect_to(client.clone(), &master).await?;
        check_master(&mut conn, &master).await?;
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

/// Fails unless the server behind `conn` says (`ROLE`) it is a master: a sentinel may
/// still name a master that was just demoted.
async fn check_master(
    conn: &mut MultiplexedConnection,
    master: &NodeConfig,
) -> Result<(), NodeError> {
    let role: Vec<redis::Value> =
        redis::cmd("ROLE")
            .query_async(conn)
            .await
            .map_err(|e| NodeError::Connect {
                addr: master.host_port(),
                reason: plain(&e),
            })?;
    match role.first() {
        Some(redis::Value::BulkString(r)) if r == b"master" => Ok(()),
        _ => Err(NodeError::Connect {
            addr: master.host_port(),
            reason: "not a master (a failover is under way)".into(),
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
