//! The client of one server, and the address of any server, over TLS when the node's
//! settings ask for it: redis-rs' (Cluster, sentinels) and the rustls settings of our own
//! connections (the lean one and the pub/sub one), which also honour `servername`.

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

/// How the lean connection speaks TLS to one server: the rustls settings, and the name the
/// server's certificate must be valid for (`servername`, else the host).
pub(super) struct LeanTls {
    pub(super) config: std::sync::Arc<rustls::ClientConfig>,
    pub(super) name: rustls::pki_types::ServerName<'static>,
}

impl LeanTls {
    /// A TLS session with these settings over `tcp`.
    pub(super) async fn over(
        self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        tokio_rustls::TlsConnector::from(self.config)
            .connect(self.name, tcp)
            .await
    }
}

/// A TCP connection to `host:port` with no Nagle delay (see [`tcp_settings`]), for our own
/// connections (the lean one and the pub/sub one over TLS).
pub(super) async fn tcp(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The TLS settings of `config` for our own connections (`None` over plain TCP). A mistake
/// in them is a connect error, as redis-rs reports its own.
pub(super) fn lean_tls(config: &NodeConfig) -> redis::RedisResult<Option<LeanTls>> {
    rustls_settings(config).map_err(|why| {
        RedisError::from((redis::ErrorKind::InvalidClientConfig, "TLS settings", why))
    })
}

/// The rustls settings of `config`: the CA given (else the system's roots), the client
/// certificate for mutual TLS, and no check at all with `rejectUnauthorized: false`
/// (testing only).
fn rustls_settings(config: &NodeConfig) -> Result<Option<LeanTls>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::sync::Arc;
    let Some(tls) = config.tls.as_ref() else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier = if tls.reject_unauthorized {
        let mut roots = rustls::RootCertStore::empty();
        let mut given = Vec::new();
        match &tls.ca {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| format!("the CA certificate is not PEM: {e}"))?;
                    given.push(cert.clone());
                    roots
                        .add(cert)
                        .map_err(|e| format!("bad CA certificate: {e}"))?;
                }
            }
            None => {
                let _ =
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        if roots.is_empty() {
            return Err("no CA certificate to check the server's against".into());
        }
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("bad CA certificate: {e}"))?;
        Verifier {
            webpki: Some(webpki),
            given,
            provider,
        }
    } else {
        Verifier {
            webpki: None,
            given: Vec::new(),
            provider,
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let client = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the client certificate is not PEM: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|_| "the client key is not a PEM private key".to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("bad client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = tls
        .servername
        .clone()
        .unwrap_or_else(|| config.host.clone());
    let name = ServerName::try_from(name.clone())
        .map_err(|_| format!("{name:?} is not a name a certificate can be checked against"))?;
    Ok(Some(LeanTls {
        config: Arc::new(client),
        name,
    }))
}

/// How the server's certificate is checked: against the CA (webpki), or as itself one of
/// the certificates given as `ca` (a self-signed certificate, which OpenSSL marks as a CA,
/// given as `tls.ca` is trusted directly, as ioredis and node-redis trust it), and either
/// way for the server's name; or not at all (`webpki: None`: `rejectUnauthorized: false`,
/// testing only). The handshake's signatures are checked in every case.
#[derive(Debug)]
struct Verifier {
    webpki: Option<std::sync::Arc<rustls::client::WebPkiServerVerifier>>,
    given: Vec<rustls::pki_types::CertificateDer<'static>>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        };
        let signed =
            webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        if signed.is_err() && self.given.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&cert, server_name)?;
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        signed
    }

    // rustls asks for both signature checks; they differ only in the TLS version.
    fn verify_tls12_signature(&self, m: &[u8], c: &Der<'_>, d: &Signed) -> SignatureCheck {
        rustls::crypto::verify_tls12_signature(m, c, d, self.algorithms())
    }

    fn verify_tls13_signature(&self, m: &[u8], c: &Der<'_>, d: &Signed) -> SignatureCheck {
        rustls::crypto::verify_tls13_signature(m, c, d, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

impl Verifier {
    /// The signature algorithms of the handshake's checks.
    fn algorithms(&self) -> &rustls::crypto::WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

type Der<'a> = rustls::pki_types::CertificateDer<'a>;
type Signed = rustls::DigitallySignedStruct;
type SignatureCheck = Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>;
