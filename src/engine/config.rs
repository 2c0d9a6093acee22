//! Connection settings of one Redis node, and `redis://` / `rediss://` URL parsing.

use std::fmt;
use std::time::Duration;

use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};

use crate::engine::error::ArgError;

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 6379;
/// ioredis' default connect time-out.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Every command has a time-out; ioredis has none by default, a lock library must.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(5_000);

/// TLS settings (`tls: true`, `tls: {...}` or a `rediss://` URL).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM CA certificate(s) to trust instead of the system's.
    pub ca: Option<String>,
    /// PEM client certificate and key, for mutual TLS.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// The name the server's certificate must be valid for (and sent as SNI), when it is
    /// not the host connected to (an IP address, say).
    pub servername: Option<String>,
    /// `false` accepts any certificate (testing only).
    pub reject_unauthorized: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca.as_ref().map(|_| "<set>"))
            .field("cert", &self.cert.as_ref().map(|_| "<set>"))
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("servername", &self.servername)
            .field("reject_unauthorized", &self.reject_unauthorized)
            .finish()
    }
}

/// Redis Sentinel: the master of group `name` is discovered through `sentinels`.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    pub sentinels: Vec<(String, u16)>,
    pub name: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS to the sentinels (ioredis' `sentinelTLS`); the master's is the node's own.
    pub tls: Option<TlsConfig>,
}

/// Everything needed to connect to one node.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    pub tls: Option<TlsConfig>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// When set, `host`/`port` are the master's, found through the sentinels.
    pub sentinel: Option<SentinelConfig>,
    /// Redis Cluster: the startup nodes (`host`/`port` are then unused).
    pub cluster: Option<Vec<(String, u16)>>,
    /// An in-process `MemoryStore` (`host` is then its name, as errors show it).
    pub memory: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            username: None,
            password: None,
            db: 0,
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            sentinel: None,
            cluster: None,
            memory: false,
        }
    }
}

impl NodeConfig {
    /// How errors name this node: `host:port` (IPv6 hosts in brackets), or for Sentinel
    /// the master group before its master is known.
    pub fn addr(&self) -> String {
        if self.memory {
            return self.host.clone();
        }
        if let Some(s) = &self.sentinel {
            return format!("sentinel master '{}'", s.name);
        }
        if let Some(nodes) = &self.cluster {
            let hosts: Vec<String> = nodes.iter().map(|(h, p)| format!("{h}:{p}")).collect();
            return format!("cluster {}", hosts.join(","));
        }
        self.host_port()
    }

    /// What this client calls the node when it remembers its identity (see
    /// `crate::engine::trust`): its address, and for a Sentinel group its name with its
    /// sentinels (sorted).
    pub fn identity_name(&self) -> String {
        match &self.sentinel {
            Some(s) if !self.memory => {
                let mut sentinels: Vec<String> = s
                    .sentinels
                    .iter()
                    .map(|(h, p)| format!("{h}:{p}"))
                    .collect();
                sentinels.sort();
                format!("sentinel master '{}' via {}", s.name, sentinels.join(","))
            }
            _ => self.addr(),
        }
    }

    /// The fields the node's identity is recorded under on the other nodes: its address;
    /// for a Sentinel group, its name through each of its sentinels. Separate groups often
    /// share a name (`mymaster`): under the name alone each group's master looked like the
    /// others' replaced. Through each sentinel, clients that list the group's sentinels
    /// differently (a subset, another order) still meet each other's records, as long as
    /// they share one sentinel.
    pub fn identity_fields(&self) -> Vec<String> {
        match &self.sentinel {
            Some(s) if !self.memory => s
                .sentinels
                .iter()
                .map(|(h, p)| format!("sentinel master '{}' via {h}:{p}", s.name))
                .collect(),
            _ => vec![self.addr()],
        }
    }

    /// `host:port` (IPv6 hosts in brackets).
    pub fn host_port(&self) -> String {
        host_port(&self.host, self.port)
    }

    /// The URL of this node with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        // A user name as a URL carries it (`@`, `:` and `/` would read as something else).
        let user = |u: &str| utf8_percent_encode(u, NON_ALPHANUMERIC).to_string();
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{}:***@", user(u)),
            (None, Some(_)) => ":***@".to_string(),
            (Some(u), None) => format!("{}@", user(u)),
            (None, None) => String::new(),
        };
        let db = if self.db != 0 {
            format!("/{}", self.db)
        } else {
            String::new()
        };
        if let Some(nodes) = &self.cluster {
            let hosts: Vec<String> = nodes.iter().map(|(h, p)| host_port(h, *p)).collect();
            return format!("{scheme}://{auth}{}", hosts.join(","));
        }
        if let Some(s) = &self.sentinel {
            let hosts: Vec<String> = s.sentinels.iter().map(|(h, p)| host_port(h, *p)).collect();
            return format!("redis+sentinel://{auth}{}/{}{db}", hosts.join(","), s.name);
        }
        format!("{scheme}://{auth}{}{db}", self.host_port())
    }

    /// Whether the URL `input` names a port (a URL that does not parse names none).
    pub fn url_has_port(input: &str) -> bool {
        url::Url::parse(input).is_ok_and(|u| u.port().is_some())
    }

    /// Applies a `redis://[user:pass@]host[:port][/db]` or `rediss://...` URL on top of
    /// these settings. `name` is the argument's name, for messages.
    pub fn apply_url(&mut self, name: &str, input: &str) -> Result<(), ArgError> {
        self.apply_url_with(name, input, true)
    }

    /// [`NodeConfig::apply_url`] as node-redis reads a URL: its query is ignored.
    pub fn apply_node_redis_url(&mut self, name: &str, input: &str) -> Result<(), ArgError> {
        self.apply_url_with(name, input, false)
    }

    fn apply_url_with(&mut self, name: &str, input: &str, query: bool) -> Result<(), ArgError> {
        // Never echo the URL: it may carry a password.
        let bad =
            |why: &str| ArgError::type_error(format!("{name} is not a valid Redis URL: {why}."));
        let url = url::Url::parse(input).map_err(|e| bad(&e.to_string()))?;
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(bad("the scheme must be redis:// or rediss://")),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("it has no host"))?;
        self.host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        self.port = url.port().unwrap_or(DEFAULT_PORT);
        if self.port == 0 {
            return Err(bad("the port must be from 1 to 65535"));
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        if !url.username().is_empty() {
            self.username = Some(decode(url.username()));
        }
        if let Some(p) = url.password() {
            self.password = Some(decode(p));
        }
        let path = url.path().trim_matches('/');
        if !path.is_empty() {
            self.db = db_number(path).ok_or_else(|| {
                bad("the path must be a database number from 0 to 2147483647, like /0")
            })?;
        }
        // As ioredis reads them: `?db=` where the path does not say, `?password=` and
        // `?username=` where the URL has no user part (other options of the query are
        // ioredis' own, ignored; node-redis ignores the query).
        let user_part = !url.username().is_empty() || url.password().is_some();
        for (key, value) in url.query_pairs().filter(|_| query) {
            match &*key {
                "db" if path.is_empty() => {
                    self.db = db_number(&value).ok_or_else(|| {
                        bad("db in the query must be a database number from 0 to 2147483647")
                    })?;
                }
                "password" if !user_part => self.password = Some(value.into_owned()),
                "username" if !user_part => self.username = Some(value.into_owned()),
                _ => {}
            }
        }
        if tls && self.tls.is_none() {
            self.tls = Some(TlsConfig {
                reject_unauthorized: true,
                ..TlsConfig::default()
            });
        }
        Ok(())
    }
}

/// A database number of a URL: 0 to `i32::MAX`.
fn db_number(text: &str) -> Option<i64> {
    let db = text.parse::<u32>().ok()?;
    i32::try_from(db).ok().map(i64::from)
}

/// `host:port`, an IPv6 address in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("url", &self.redacted_url())
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

impl fmt::Display for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(u: &str) -> Result<NodeConfig, ArgError> {
        let mut c = NodeConfig::default();
        c.apply_url("url", u).map(|_| c)
    }

    #[test]
    fn full_url() {
        let c = parse("redis://alice:s%40cret@example.com:6390/3").unwrap();
        assert_eq!(c.host, "example.com");
        assert_eq!(c.port, 6390);
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert_eq!(c.db, 3);
        assert!(c.tls.is_none());
    }

    #[test]
    fn query_options_as_ioredis_reads_them() {
        let c = parse("redis://h:1?db=4&password=p%40w&username=u&family=6").unwrap();
        assert_eq!(
            (c.db, c.password.as_deref(), c.username.as_deref()),
            (4, Some("p@w"), Some("u"))
        );
        // The path and the user part win, as in ioredis.
        let c = parse("redis://a:b@h:1/2?db=4&password=p&username=u").unwrap();
        assert_eq!(
            (c.db, c.password.as_deref(), c.username.as_deref()),
            (2, Some("b"), Some("a"))
        );
        // Any user part: the query's user and password are ignored, as ioredis does.
        let c = parse("redis://:pw@h:1?username=alice").unwrap();
        assert_eq!(
            (c.password.as_deref(), c.username.as_deref()),
            (Some("pw"), None)
        );
        let c = parse("redis://alice@h:1?password=pw").unwrap();
        assert_eq!(
            (c.password.as_deref(), c.username.as_deref()),
            (None, Some("alice"))
        );
        // node-redis ignores the query.
        let mut c = NodeConfig::default();
        c.apply_node_redis_url("url", "redis://h:1?db=4&password=p")
            .unwrap();
        assert_eq!((c.db, c.password.as_deref()), (0, None));
        let e = parse("redis://h:1?db=x&password=hunter2").unwrap_err();
        assert!(e.message.contains("db in the query") && !e.message.contains("hunter2"));
    }

    #[test]
    fn defaults_and_tls() {
        let c = parse("rediss://localhost").unwrap();
        assert_eq!(c.port, 6379);
        assert_eq!(c.db, 0);
        assert!(c.tls.as_ref().unwrap().reject_unauthorized);
        let c = parse("redis://:pw@[::1]:7000").unwrap();
        assert_eq!(c.host, "::1");
        assert_eq!(c.addr(), "[::1]:7000");
        assert_eq!(c.username, None);
        assert_eq!(c.password.as_deref(), Some("pw"));
    }

    #[test]
    fn malformed_urls_are_type_errors_without_the_secret() {
        for u in [
            "",
            "http://h:1",
            "redis://",
            "redis://h:99999",
            "redis://u:hunter2@h/x",
            "not a url",
        ] {
            let e = parse(u).unwrap_err();
            assert!(
                e.message.starts_with("url is not a valid Redis URL"),
                "{u}: {}",
                e.message
            );
            assert!(!e.message.contains("hunter2"));
        }
    }

    #[test]
    fn sentinel_groups_of_one_name_are_recorded_apart() {
        let group = |sentinels: &[(&str, u16)]| NodeConfig {
            sentinel: Some(SentinelConfig {
                sentinels: sentinels.iter().map(|(h, p)| (h.to_string(), *p)).collect(),
                name: "mymaster".into(),
                username: None,
                password: Some("hunter2".into()),
                tls: None,
            }),
            ..NodeConfig::default()
        };
        let a = group(&[("10.0.0.1", 26379), ("10.0.0.2", 26379)]);
        let same_listed_otherwise = group(&[("10.0.0.2", 26379), ("10.0.0.1", 26379)]);
        let b = group(&[("10.0.1.1", 26379)]);
        assert_eq!(a.addr(), b.addr(), "errors name the group by its name");
        assert_ne!(a.identity_name(), b.identity_name());
        assert_eq!(a.identity_name(), same_listed_otherwise.identity_name());
        assert!(!a.identity_name().contains("hunter2"));
        // Recorded through each sentinel: groups that share none never meet; lists that
        // share one do.
        let (fa, fb) = (a.identity_fields(), b.identity_fields());
        assert!(fa.iter().all(|f| !fb.contains(f)));
        let subset = group(&[("10.0.0.2", 26379)]);
        assert!(subset.identity_fields().iter().all(|f| fa.contains(f)));
        assert_eq!(fa[0], "sentinel master 'mymaster' via 10.0.0.1:26379");
        let plain = parse("redis://h:1").unwrap();
        assert_eq!(plain.identity_name(), "h:1");
        assert_eq!(plain.identity_fields(), ["h:1"]);
    }

    #[test]
    fn debug_and_display_hide_the_password() {
        let c = parse("redis://bob:hunter2@h:1/2").unwrap();
        let shown = format!("{c:?} {c}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://bob:***@h:1/2"));
    }
}
