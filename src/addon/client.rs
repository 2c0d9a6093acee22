//! `NativeClient`: the native side of `Redis` (ioredis-shaped) and `RedisJsClient`
//! (node-redis-shaped). One shared connection per client; every command has a time-out.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::addon::event_loop;
use crate::addon::js::{
    self, check, classify, field, opt_bool, opt_number, opt_string, type_error, Val,
};
use crate::addon::reply::Reply;
use crate::engine::args;
use crate::engine::config::{NodeConfig, SentinelConfig, TlsConfig};
use crate::engine::error::{ArgError, NodeError};
use crate::engine::memory::MemoryStore;
use crate::engine::node::Node;

/// `new MemoryStore({ name? })`: an in-process lock node.
fn memory_store(env: &Env, options: Val) -> Result<NativeClient> {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let (name, timeout) = match options {
        Val::Missing(_) => (None, None),
        Val::Object(o) => {
            // Few options, so a misspelt one is refused rather than silently not applied.
            for key in Object::keys(&o)? {
                if key != "name" && key != "commandTimeout" {
                    return Err(js::throw(
                        env,
                        crate::engine::error::ArgError::type_error(format!(
                            "options.{key} is not a MemoryStore option: they are name and commandTimeout."
                        )),
                    ));
                }
            }
            let name = opt_string(env, &o, "options", "name")?;
            if name.as_deref() == Some("") {
                return Err(js::throw(
                    env,
                    crate::engine::error::ArgError::type_error(
                        "options.name must be a non-empty string (it names the store in errors).",
                    ),
                ));
            }
            let timeout = opt_number(env, &o, "options", "commandTimeout")?;
            (name, ms(env, "options.commandTimeout", timeout)?)
        }
        other => return Err(type_error(env, "options", "an object", &other)),
    };
    let name = name.unwrap_or_else(|| {
        format!(
            "memory-{}",
            COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    });
    // A paused store's calls end at this time-out, as a frozen server's do.
    let timeout = timeout.unwrap_or(Duration::from_millis(1_000));
    let store = MemoryStore::new(name, timeout);
    Ok(NativeClient {
        node: Node::memory(store, timeout),
        kind: "MemoryStore",
    })
}

#[napi]
pub struct NativeClient {
    pub(crate) node: Arc<Node>,
    kind: &'static str,
}

fn ms(env: &Env, name: &str, v: Option<f64>) -> Result<Option<Duration>> {
    v.map(|v| check(env, args::duration_ms(name, v)).map(Duration::from_millis))
        .transpose()
}

/// `tls: true | { ca, cert, key, servername, rejectUnauthorized }`.
/// Why `call(command, first, ...)` must not run on the connection that every command (and
/// lock) of the client shares: it would change that connection's state for all of them.
fn changes_connection(command: &str, first: Option<&[u8]>) -> Option<&'static str> {
    let is = |name: &str| command.trim().eq_ignore_ascii_case(name);
    if ["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR"]
        .into_iter()
        .any(is)
    {
        return Some("it would turn the connection every command shares into a stream of messages (use a separate client for pub/sub).");
    }
    if ["MULTI", "WATCH", "SYNC", "PSYNC"].into_iter().any(is) {
        return Some("a transaction or replication stream on the connection every command shares would take in the other commands' (use a separate client).");
    }
    if is("SELECT") || is("RESET") || is("AUTH") || is("HELLO") {
        return Some("it would change the database, user or protocol of the connection every command shares: give them in the options.");
    }
    if is("QUIT") {
        return Some("use quit().");
    }
    if is("CLIENT") && first.is_some_and(|f| f.eq_ignore_ascii_case(b"REPLY")) {
        return Some("with replies turned off, the commands sharing the connection would wait for replies that never come.");
    }
    None
}

/// `o.port`: a number, or a string of digits (as ioredis and node-redis take it).
fn opt_port(env: &Env, o: &Object, ctx: &str) -> Result<Option<f64>> {
    match field(o, "port")? {
        Val::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(s.parse::<f64>().unwrap_or(f64::NAN)))
        }
        _ => opt_number(env, o, ctx, "port"),
    }
}

/// `o[key]`: PEM text as a string, a Buffer, or an array of those (joined).
fn opt_pem(env: &Env, o: &Object, ctx: &str, key: &str) -> Result<Option<String>> {
    let name = format!("{ctx}.{key}");
    let pem = |v: Val| -> Result<String> {
        match v {
            Val::Str(s) => Ok(s),
            Val::Buf(b) => String::from_utf8(b).map_err(|_| {
                type_error(
                    env,
                    &name,
                    "PEM text (a string or Buffer)",
                    &Val::Other("binary data"),
                )
            }),
            other => Err(type_error(
                env,
                &name,
                "a string, a Buffer or an array of them",
                &other,
            )),
        }
    };
    let text = match field(o, key)? {
        Val::Missing(_) => return Ok(None),
        Val::Array(items) => {
            let parts = items
                .into_iter()
                .map(|item| classify(Some(item)).and_then(pem))
                .collect::<Result<Vec<_>>>()?;
            parts.join("\n")
        }
        other => pem(other)?,
    };
    // Empty (`ca: process.env.CA ?? ''`, `[]`, an empty Buffer) is absent, as for Node's tls.
    Ok(Some(text).filter(|t| !t.trim().is_empty()))
}

/// Node's TLS options the connection cannot honour, refused rather than left unread (found
/// by an audit: a `checkServerIdentity` that allowed an IP address was dropped, and every
/// connect failed on the certificate's name): a function the engine cannot run (unless
/// nothing is checked), and an encrypted key (the JavaScript layer decrypts an ioredis or
/// node-redis client's).
fn unsupported_tls(env: &Env, o: &Object, ctx: &str) -> Result<()> {
    let given = |name: &str| Ok::<_, napi::Error>(!matches!(field(o, name)?, Val::Missing(_)));
    // With the certificate not checked at all, node:tls ignores the function's verdict too
    // (found by a regression hunt: such options, which connect with ioredis, were refused).
    let unchecked = matches!(field(o, "rejectUnauthorized")?, Val::Bool(false));
    if given("checkServerIdentity")? && !unchecked {
        return Err(js::throw(env, ArgError::type_error(format!(
            "{ctx}.checkServerIdentity is not supported (the connection is made in Rust, which cannot call it): \
             give {ctx}.servername, the name the server's certificate is for, or {ctx}.rejectUnauthorized: false."
        ))));
    }
    if given("passphrase")? {
        return Err(js::throw(env, ArgError::type_error(format!(
            "{ctx}.passphrase is not supported: give {ctx}.key decrypted, e.g. \
             crypto.createPrivateKey({{ key, passphrase }}).export({{ type: 'pkcs8', format: 'pem' }})."
        ))));
    }
    Ok(())
}

/// A TLS option named `ctx` (`options.tls`, `options.sentinelTLS`): `true`, or an object
/// whose `ca`, `cert` and `key` are PEM strings or Buffers (or arrays of them), as Node's
/// `tls.connect` takes them.
fn tls_option(env: &Env, ctx: &str, v: Val) -> Result<Option<TlsConfig>> {
    match v {
        Val::Missing(_) | Val::Bool(false) => Ok(None),
        Val::Bool(true) => Ok(Some(TlsConfig {
            reject_unauthorized: true,
            ..TlsConfig::default()
        })),
        Val::Object(o) => {
            unsupported_tls(env, &o, ctx)?;
            let tls = TlsConfig {
                ca: opt_pem(env, &o, ctx, "ca")?,
                cert: opt_pem(env, &o, ctx, "cert")?,
                key: opt_pem(env, &o, ctx, "key")?,
                servername: opt_string(env, &o, ctx, "servername")?,
                reject_unauthorized: opt_bool(env, &o, ctx, "rejectUnauthorized")?.unwrap_or(true),
            };
            args::tls_pem(ctx, &tls).map_err(|e| js::throw(env, e))?;
            Ok(Some(tls))
        }
        other => Err(type_error(env, ctx, "a boolean or an object", &other)),
    }
}

/// Redis Sentinel: `sentinels: [{ host, port }]`, `name`, `sentinelUsername`,
/// `sentinelPassword`.
fn sentinel_options(env: &Env, cfg: &mut NodeConfig, o: &Object, ctx: &str) -> Result<()> {
    let list = match field(o, "sentinels")? {
        Val::Missing(_) => return Ok(()),
        Val::Array(items) if !items.is_empty() => items,
        other => {
            return Err(type_error(
                env,
                &format!("{ctx}.sentinels"),
                "a non-empty array of { host, port }",
                &other,
            ))
        }
    };
    let mut sentinels = Vec::with_capacity(list.len());
    for (i, item) in list.into_iter().enumerate() {
        let name = format!("{ctx}.sentinels[{i}]");
        let s = match classify(Some(item))? {
            Val::Object(s) => s,
            other => return Err(type_error(env, &name, "an object { host, port }", &other)),
        };
        let host = opt_string(env, &s, &name, "host")?.unwrap_or_else(|| "127.0.0.1".into());
        let port = match opt_port(env, &s, &name)? {
            Some(p) => check(env, args::port(&format!("{name}.port"), p))?,
            None => 26379,
        };
        sentinels.push((host, port));
    }
    let Some(group) = opt_string(env, o, ctx, "name")?.filter(|n| !n.is_empty()) else {
        return Err(js::throw(
            env,
            crate::engine::error::ArgError::type_error(format!(
                "{ctx}.name must name the master group when {ctx}.sentinels is given."
            )),
        ));
    };
    cfg.sentinel = Some(SentinelConfig {
        sentinels,
        name: group,
        username: opt_string(env, o, ctx, "sentinelUsername")?,
        password: opt_string(env, o, ctx, "sentinelPassword")?,
        tls: tls_option(env, &format!("{ctx}.sentinelTLS"), field(o, "sentinelTLS")?)?,
    });
    Ok(())
}

/// ioredis options that would change where the locks go or what their keys are, which
/// redlock-rs does not carry out: refused rather than silently ignored (the other options
/// of ioredis, about its own queues and retries, mean nothing here and are ignored).
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "path",
        "(a unix socket) is not supported: redlock-rs connects over TCP (give host and port)",
    ),
    (
        "keyPrefix",
        "is not applied by redlock-rs' own clients: prefix the resource names, or pass the ioredis client itself to new Redlock(), whose keyPrefix is honoured",
    ),
];

fn refuse_unsupported(env: &Env, o: &Object, ctx: &str, which: &[(&str, &str)]) -> Result<()> {
    for (name, why) in which {
        let given = match field(o, name)? {
            Val::Missing(_) => false,
            Val::Str(s) => !s.is_empty(),
            _ => true,
        };
        if given {
            return Err(js::throw(
                env,
                crate::engine::error::ArgError::type_error(format!("{ctx}.{name} {why}.")),
            ));
        }
    }
    Ok(())
}

/// ioredis options: host, port, username, password, db, tls, connectTimeout,
/// commandTimeout, lazyConnect. Returns lazyConnect.
fn ioredis_options(env: &Env, cfg: &mut NodeConfig, o: &Object) -> Result<bool> {
    let ctx = "options";
    refuse_unsupported(env, o, ctx, UNSUPPORTED)?;
    sentinel_options(env, cfg, o, ctx)?;
    if let Some(h) = opt_string(env, o, ctx, "host")? {
        cfg.host = h;
    }
    if let Some(p) = opt_port(env, o, ctx)? {
        cfg.port = check(env, args::port("options.port", p))?;
    }
    cfg.username = opt_string(env, o, ctx, "username")?.or(cfg.username.take());
    cfg.password = opt_string(env, o, ctx, "password")?.or(cfg.password.take());
    if let Some(d) = opt_number(env, o, ctx, "db")? {
        cfg.db = check(env, args::db("options.db", d))?;
    }
    if let Some(t) = tls_option(env, &format!("{ctx}.tls"), field(o, "tls")?)? {
        cfg.tls = Some(t);
    }
    common_timeouts(env, cfg, o, ctx, "connectTimeout")?;
    Ok(opt_bool(env, o, ctx, "lazyConnect")?.unwrap_or(false))
}

fn common_timeouts(
    env: &Env,
    cfg: &mut NodeConfig,
    o: &Object,
    ctx: &str,
    connect_name: &str,
) -> Result<()> {
    let connect = ms(
        env,
        &format!("{ctx}.{connect_name}"),
        opt_number(env, o, ctx, connect_name)?,
    )?;
    if let Some(d) = connect {
        cfg.connect_timeout = d;
    }
    if let Some(d) = ms(
        env,
        &format!("{ctx}.commandTimeout"),
        opt_number(env, o, ctx, "commandTimeout")?,
    )? {
        cfg.command_timeout = d;
    }
    Ok(())
}

/// `new Redis()`, `new Redis(options)`, `new Redis(url, options?)`,
/// `new Redis(port, host?, options?)`. Explicit url/port/host win over the options object.
fn ioredis_args(env: &Env, a: [Val; 3]) -> Result<(NodeConfig, bool)> {
    let mut cfg = NodeConfig::default();
    let [a0, a1, a2] = a;
    // The options object is the last object among the arguments.
    let mut lazy = false;
    for v in [&a0, &a1, &a2] {
        if let Val::Object(o) = v {
            lazy = ioredis_options(env, &mut cfg, o)?;
        }
    }
    // A port as a string of digits is a port, as in ioredis (`new Redis('6380')`).
    let a0 = match a0 {
        Val::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Val::Num(s.parse::<f64>().unwrap_or(f64::NAN))
        }
        other => other,
    };
    match a0 {
        // "host:port" (or a bare host) reads as redis://host:port, as in ioredis.
        Val::Str(url) if !url.contains("://") && !url.starts_with('/') => {
            check(env, cfg.apply_url("url", &format!("redis://{url}")))?
        }
        Val::Str(url) => check(env, cfg.apply_url("url", &url))?,
        Val::Num(p) => {
            cfg.port = check(env, args::port("port", p))?;
            match &a1 {
                Val::Str(h) => cfg.host = h.clone(),
                Val::Missing(_) | Val::Object(_) => {}
                other => return Err(type_error(env, "host", "a string", other)),
            }
        }
        Val::Missing(_) | Val::Object(_) => {}
        other => {
            return Err(type_error(
                env,
                "the first argument",
                "an options object, a redis:// URL or a port number",
                &other,
            ))
        }
    }
    if cfg.host.is_empty() {
        return Err(js::throw(
            env,
            crate::engine::error::ArgError::type_error("host must be a non-empty string."),
        ));
    }
    Ok((cfg, lazy))
}

/// ioredis' `new Cluster(startupNodes, options)`: nodes as `{ host, port }`, `"host:port"`
/// or `redis://host:port`; options as for `Redis` (credentials, tls, time-outs).
fn cluster_args(env: &Env, nodes: Val, options: Val) -> Result<(NodeConfig, bool)> {
    let list = match nodes {
        Val::Array(items) if !items.is_empty() => items,
        other => {
            return Err(type_error(
                env,
                "startupNodes",
                "a non-empty array of { host, port } or \"host:port\"",
                &other,
            ))
        }
    };
    let mut cfg = NodeConfig::default();
    let mut lazy = false;
    if let Val::Object(o) = &options {
        lazy = ioredis_options(env, &mut cfg, o)?;
        // ioredis Cluster's per-node options, where the top level says nothing.
        if let Val::Object(ro) = field(o, "redisOptions")? {
            let mut per_node = NodeConfig::default();
            ioredis_options(env, &mut per_node, &ro)?;
            cfg.username = cfg.username.take().or(per_node.username);
            cfg.password = cfg.password.take().or(per_node.password);
            cfg.tls = cfg.tls.take().or(per_node.tls);
            if matches!(field(o, "connectTimeout")?, Val::Missing(_)) {
                cfg.connect_timeout = per_node.connect_timeout;
            }
            if matches!(field(o, "commandTimeout")?, Val::Missing(_)) {
                cfg.command_timeout = per_node.command_timeout;
            }
        }
    } else if !matches!(options, Val::Missing(_)) {
        return Err(type_error(env, "options", "an object", &options));
    }
    if cfg.sentinel.is_some() {
        // A cluster finds its masters itself: Sentinel options would be silently ignored.
        return Err(js::throw(
            env,
            crate::engine::error::ArgError::type_error(
                "options.sentinels cannot be given to a Cluster (a Redis Cluster finds its masters itself; use Redis with sentinels for a Sentinel group).",
            ),
        ));
    }
    let mut startup = Vec::with_capacity(list.len());
    for (i, item) in list.into_iter().enumerate() {
        let name = format!("startupNodes[{i}]");
        let (host, port) = match classify(Some(item))? {
            Val::Object(o) => (
                opt_string(env, &o, &name, "host")?.unwrap_or_else(|| "127.0.0.1".into()),
                match opt_port(env, &o, &name)? {
                    Some(p) => check(env, args::port(&format!("{name}.port"), p))?,
                    None => 6379,
                },
            ),
            Val::Num(p) => ("127.0.0.1".into(), check(env, args::port(&name, p))?),
            Val::Str(s) => {
                let mut node = NodeConfig::default();
                let url = if s.contains("://") {
                    s
                } else {
                    format!("redis://{s}")
                };
                check(env, node.apply_url(&name, &url))?;
                if node.db != 0 {
                    return Err(js::throw(
                        env,
                        crate::engine::error::ArgError::range_error(format!(
                            "{name}: a Redis Cluster has only db 0; got /{}.",
                            node.db
                        )),
                    ));
                }
                // The credentials and TLS of a URL serve every node, where the options
                // say nothing.
                cfg.username = cfg.username.take().or(node.username);
                cfg.password = cfg.password.take().or(node.password);
                cfg.tls = cfg.tls.take().or(node.tls);
                (node.host, node.port)
            }
            other => {
                return Err(type_error(
                    env,
                    &name,
                    "{ host, port } or \"host:port\"",
                    &other,
                ))
            }
        };
        startup.push((host, port));
    }
    // `host` and `port` read as the first startup node's.
    (cfg.host, cfg.port) = startup[0].clone();
    cfg.cluster = Some(startup);
    Ok((cfg, lazy))
}

/// node-redis: `{ url, username, password, database, socket: { host, port, tls,
/// connectTimeout }, commandTimeout }`.
fn node_redis_args(env: &Env, a0: Val) -> Result<(NodeConfig, bool)> {
    let mut cfg = NodeConfig::default();
    let o = match a0 {
        Val::Object(o) => o,
        Val::Missing(_) => return Ok((cfg, false)),
        other => return Err(type_error(env, "options", "an object like { url }", &other)),
    };
    let ctx = "options";
    sentinel_options(env, &mut cfg, &o, ctx)?;
    let url = opt_string(env, &o, ctx, "url")?;
    match field(&o, "socket")? {
        Val::Missing(_) => {}
        Val::Object(s) => {
            let sctx = "options.socket";
            // node-redis' `socket.path`: a unix socket (the first of the unsupported).
            refuse_unsupported(env, &s, sctx, &UNSUPPORTED[..1])?;
            if let Some(h) = opt_string(env, &s, sctx, "host")? {
                cfg.host = h;
            }
            if let Some(p) = opt_port(env, &s, sctx)? {
                cfg.port = check(env, args::port("options.socket.port", p))?;
            }
            common_timeouts(env, &mut cfg, &s, sctx, "connectTimeout")?;
            // node-redis: `socket.tls: true`, with `ca`, `cert`, `key`, `servername` and
            // `rejectUnauthorized` on the socket options themselves (Node's tls options); a
            // `rediss://` URL sets `socket.tls` itself.
            let rediss = url.as_deref().is_some_and(|u| {
                u.get(..9)
                    .is_some_and(|p| p.eq_ignore_ascii_case("rediss://"))
            });
            let tls = match field(&s, "tls")? {
                Val::Bool(true) => tls_option(env, sctx, Val::Object(s))?,
                Val::Missing(_) if rediss => tls_option(env, sctx, Val::Object(s))?,
                other => tls_option(env, &format!("{sctx}.tls"), other)?,
            };
            if let Some(t) = tls {
                cfg.tls = Some(t);
            }
        }
        other => return Err(type_error(env, "options.socket", "an object", &other)),
    }
    if let Some(u) = opt_string(env, &o, ctx, "username")? {
        cfg.username = Some(u);
    }
    if let Some(p) = opt_string(env, &o, ctx, "password")? {
        cfg.password = Some(p);
    }
    if let Some(d) = opt_number(env, &o, ctx, "database")? {
        cfg.db = check(env, args::db("options.database", d))?;
    }
    // What the URL says wins over the other options, as in node-redis; its port only when
    // it has one (else `socket.port`, else 6379).
    if let Some(url) = url {
        let port = cfg.port;
        check(env, cfg.apply_node_redis_url("options.url", &url))?;
        if !NodeConfig::url_has_port(&url) {
            cfg.port = port;
        }
    }
    if let Some(d) = ms(
        env,
        "options.commandTimeout",
        opt_number(env, &o, ctx, "commandTimeout")?,
    )? {
        cfg.command_timeout = d;
    }
    Ok((cfg, false))
}

impl NativeClient {
    /// Sends `cmd` on the shared connection; the promise resolves with the reply as `T`.
    fn send<'env, T>(&self, env: &'env Env, cmd: redis::Cmd) -> Result<PromiseRaw<'env, T>>
    where
        T: redis::FromRedisValue + ToNapiValue + Send + 'static,
    {
        let node = self.node.clone();
        event_loop::promise(
            env,
            async move { node.query::<T>(cmd).await.map_err(to_js_err) },
        )
    }
}

#[napi]
impl NativeClient {
    /// `kind` is `"ioredis"` (arguments as ioredis' `new Redis(...)`) or `"node-redis"`
    /// (arguments as node-redis' `createClient(options)`).
    #[napi(constructor, catch_unwind)]
    pub fn new(
        env: Env,
        kind: String,
        a0: Option<Unknown>,
        a1: Option<Unknown>,
        a2: Option<Unknown>,
    ) -> Result<Self> {
        event_loop::init(&env);
        let (cfg, lazy, kind) = match kind.as_str() {
            "ioredis" => {
                let (c, l) = ioredis_args(&env, [classify(a0)?, classify(a1)?, classify(a2)?])?;
                (c, l, "Redis")
            }
            "node-redis" => {
                let (c, l) = node_redis_args(&env, classify(a0)?)?;
                (c, l, "RedisJsClient")
            }
            "cluster" => {
                let (c, l) = cluster_args(&env, classify(a0)?, classify(a1)?)?;
                (c, l, "Cluster")
            }
            "memory" => return memory_store(&env, classify(a0)?),
            _ => return Err(Error::from_reason("unknown client kind")),
        };
        let node = Node::new(cfg).map_err(|e| Error::from_reason(e.to_string()))?;
        if !lazy {
            // Connect in the background; commands issued meanwhile wait for it. A failure
            // here is reported by the commands that need the connection.
            let n = node.clone();
            event_loop::spawn_unpolled(async move {
                let _ = n.connect().await;
            });
        }
        Ok(NativeClient { node, kind })
    }

    #[napi(getter)]
    pub fn host(&self) -> String {
        self.node.config().host.clone()
    }

    #[napi(getter)]
    pub fn port(&self) -> u32 {
        u32::from(self.node.config().port)
    }

    /// The server's URL, with any password replaced by `***`.
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.node.config().redacted_url()
    }

    #[napi(js_name = "toString")]
    pub fn to_js_string(&self) -> String {
        if self.node.memory_store().is_some() {
            return format!("{} <{}>", self.kind, self.node.addr());
        }
        format!("{} <{}>", self.kind, self.node.config().redacted_url())
    }

    /// A `MemoryStore`'s fault injection: `down`, `up`, `pause` (for `ms`), `clear`.
    #[napi(catch_unwind)]
    pub fn memory_control(&self, env: Env, action: String, ms: Option<f64>) -> Result<()> {
        let store = self.store(&env)?;
        match action.as_str() {
            "down" => store.down(),
            "up" => store.up(),
            "clear" => store.clear(),
            "pause" => {
                let ms = check(&env, args::non_negative_ms("ms", ms.unwrap_or(f64::NAN)))?;
                store.pause(ms)
            }
            other => return Err(Error::from_reason(format!("unknown action {other}"))),
        }
        Ok(())
    }

    /// A `MemoryStore`'s live keys, sorted.
    #[napi(catch_unwind)]
    pub fn memory_keys(&self, env: Env) -> Result<Vec<String>> {
        Ok(self.store(&env)?.keys())
    }

    fn store(&self, env: &Env) -> Result<&std::sync::Arc<MemoryStore>> {
        self.node.memory_store().ok_or_else(|| {
            js::throw(
                env,
                crate::engine::error::ArgError::type_error("this client is not a MemoryStore."),
            )
        })
    }

    /// Connects now (useful with `lazyConnect`); resolves once connected, rejects at once
    /// when the connection is refused (as ioredis' does).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn connect<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let node = self.node.clone();
        event_loop::promise_unpolled(env, async move { node.connect().await.map_err(to_js_err) })
    }

    /// [`NativeClient::connect`] for a client someone listens to ('ready'): a server not
    /// listening yet is tried again until the connect time-out, as commands do.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn connect_waiting<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let node = self.node.clone();
        event_loop::promise_unpolled(env, async move {
            node.connect_waiting().await.map_err(to_js_err)
        })
    }

    #[napi(
        catch_unwind,
        ts_args_type = "key: string | Buffer",
        ts_return_type = "Promise<string | null>"
    )]
    pub fn get<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
    ) -> Result<PromiseRaw<'env, Option<String>>> {
        let key = js::bytes_arg(env, "key", classify(Some(key))?)?;
        let node = self.node.clone();
        event_loop::promise(env, async move {
            let v: Option<Vec<u8>> = node
                .query(redis::cmd("GET").arg(key).clone())
                .await
                .map_err(to_js_err)?;
            Ok(v.map(|b| String::from_utf8_lossy(&b).into_owned()))
        })
    }

    /// Stores `value` (`true` is stored as `"true"`, numbers as JavaScript prints them).
    #[napi(
        catch_unwind,
        ts_args_type = "key: string | Buffer, value: boolean | string | number | Buffer",
        ts_return_type = "Promise<void>"
    )]
    pub fn set<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
        value: Unknown,
    ) -> Result<PromiseRaw<'env, ()>> {
        let key = js::bytes_arg(env, "key", classify(Some(key))?)?;
        // (Not an Option: napi-rs reads null as missing, and the message must say null.)
        let value = match classify(Some(value))? {
            Val::Bool(b) => b.to_string().into_bytes(),
            v @ (Val::Str(_) | Val::Buf(_) | Val::Num(_)) => js::bytes_arg(env, "value", v)?,
            other => {
                return Err(type_error(
                    env,
                    "value",
                    "a boolean, string, number or Buffer",
                    &other,
                ))
            }
        };
        self.send(env, redis::cmd("SET").arg(key).arg(value).clone())
    }

    #[napi(
        catch_unwind,
        ts_args_type = "key: string | Buffer",
        ts_return_type = "Promise<number>"
    )]
    pub fn pttl<'env>(&self, env: &'env Env, key: Unknown) -> Result<PromiseRaw<'env, i64>> {
        let key = js::bytes_arg(env, "key", classify(Some(key))?)?;
        self.send(env, redis::cmd("PTTL").arg(key).clone())
    }

    /// `DEL` of the given keys (an array; `del(...keys)` in the JavaScript layer).
    #[napi(
        catch_unwind,
        ts_args_type = "keys: Array<string | Buffer>",
        ts_return_type = "Promise<number>"
    )]
    pub fn del_keys<'env>(&self, env: &'env Env, keys: Unknown) -> Result<PromiseRaw<'env, i64>> {
        let list = match classify(Some(keys))? {
            Val::Array(items) => items,
            other => return Err(type_error(env, "keys", "an array", &other)),
        };
        if list.is_empty() {
            return Err(js::throw(
                env,
                crate::engine::error::ArgError::type_error("del needs at least one key."),
            ));
        }
        let mut cmd = redis::cmd("DEL");
        for (i, k) in list.into_iter().enumerate() {
            cmd.arg(js::bytes_arg(
                env,
                &format!("keys[{i}]"),
                classify(Some(k))?,
            )?);
        }
        self.send(env, cmd)
    }

    /// Any command: `call(command, ...args)` in the JavaScript layer.
    #[napi(
        catch_unwind,
        ts_args_type = "command: string, args: Array<string | number | Buffer>",
        ts_return_type = "Promise<unknown>"
    )]
    pub fn call_command<'env>(
        &self,
        env: &'env Env,
        command: Unknown,
        args: Unknown,
    ) -> Result<PromiseRaw<'env, Reply>> {
        let name = match classify(Some(command))? {
            Val::Str(s) if !s.trim().is_empty() => s,
            other => return Err(type_error(env, "command", "a non-empty string", &other)),
        };
        let list = match classify(Some(args))? {
            Val::Array(items) => items,
            Val::Missing(_) => Vec::new(),
            other => return Err(type_error(env, "args", "an array", &other)),
        };
        let mut cmd = redis::cmd(&name);
        let mut first: Option<Vec<u8>> = None;
        for (i, a) in list.into_iter().enumerate() {
            let arg = js::bytes_arg(env, &format!("args[{i}]"), classify(Some(a))?)?;
            if i == 0 {
                first = Some(arg.clone());
            }
            cmd.arg(arg);
        }
        if let Some(why) = changes_connection(&name, first.as_deref()) {
            return Err(js::throw(
                env,
                crate::engine::error::ArgError::type_error(format!(
                    "call('{}') is refused: {why}",
                    name.to_ascii_uppercase()
                )),
            ));
        }
        let node = self.node.clone();
        event_loop::promise(env, async move {
            let v: redis::Value = node.query_any(cmd).await.map_err(to_js_err)?;
            Reply::from_value(v).map_err(Error::from_reason)
        })
    }

    /// Closes the connection gracefully; later commands reject with "Connection is closed.".
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn quit<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let node = self.node.clone();
        event_loop::promise_unpolled(env, async move {
            node.quit().await;
            Ok(())
        })
    }
}

/// A client command's error: a server's error reply is its own line, as ioredis and
/// node-redis give it (`WRONGTYPE Operation against a key holding the wrong kind of
/// value`); anything else names the server (`Redis host:port: ...`).
pub(crate) fn to_js_err(e: NodeError) -> Error {
    match e {
        NodeError::Reply { line, .. } => Error::from_reason(line),
        other => Error::from_reason(other.to_string()),
    }
}
