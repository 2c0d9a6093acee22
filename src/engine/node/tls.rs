//! The client of one server, and the address of any server, over TLS when the node's
//! settings ask for it.

use redis::{Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError};

use super::plain;
use crate::engine::config::NodeConfig;
use crate::engine::error::NodeError;

/// The client of the server `config` names (user, password, database; CA and client
/// certificate when over TLS). Nothing is connected yet.
pub(super) fn build_client(config: &NodeConfig) -> Result<Client, NodeError> {
    let fail = |e: RedisError| NodeError::Connect {
        addr: config.addr(),
        reason: plain(&e),
    };
    let addr = connection_addr(&config.host, config.port, config);
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
        .set_redis_settings(redis_info)
        .set_tcp_settings(tcp_settings());
    match certificates(config) {
        Some(certs) => Client::build_with_tls(info, certs).map_err(fail),
        None => Client::open(info).map_err(fail),
    }
}

/// TCP settings of every connection: no Nagle delay (a request written while an earlier
/// one is unanswered leaves at once, as ioredis and node-redis do).
pub(super) fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// The CA and client certificate of `config`'s TLS settings, if it has either.
pub(super) fn certificates(config: &NodeConfig) -> Option<redis::TlsCertificates> {
    let tls = config.tls.as_ref()?;
    if tls.ca.is_none() && tls.cert.is_none() {
        return None;
    }
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: cert.as_bytes().to_vec(),
            client_key: key.as_bytes().to_vec(),
        }),
        _ => None,
    };
    Some(redis::TlsCertificates {
        client_tls,
        root_cert: tls.ca.as_ref().map(|c| c.as_bytes().to_vec()),
    })
}

/// `host:port` over TCP, or over TLS when `config` has TLS settings (only whether the
/// server's certificate is checked is part of the address).
pub(super) fn connection_addr(host: &str, port: u16, config: &NodeConfig) -> ConnectionAddr {
    match &config.tls {
        None => ConnectionAddr::Tcp(host.to_string(), port),
        Some(tls) => {
            install_crypto_provider();
            ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: !tls.reject_unauthorized,
                tls_params: None,
            }
        }
    }
}

fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another library in the process may have installed one already: that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
