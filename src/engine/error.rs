//! Errors of the engine. None of them ever carries a password: they name nodes by
//! `host:port` only.

use std::fmt;

/// Why one node could not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeError {
    /// The connection could not be established.
    Connect { addr: String, reason: String },
    /// No connection within the connect time-out (a host that does not answer); `said`:
    /// what the servers that did answer said (Sentinel: a sentinel that knows no master).
    ConnectTimeout {
        addr: String,
        ms: u64,
        said: Option<String>,
    },
    /// No answer within the time allowed.
    Timeout { addr: String, ms: u64 },
    /// `quit()` was called on this client.
    Closed { addr: String },
    /// The connection broke mid-command, or the server refused it for a reason said in
    /// plain words (authentication, permissions).
    Command { addr: String, reason: String },
    /// The server answered with an error reply: its own line (`WRONGTYPE Operation
    /// against a key holding the wrong kind of value`), as ioredis and node-redis give it.
    Reply { addr: String, line: String },
    /// The server answered something a lock script never returns.
    Protocol { addr: String, reason: String },
    /// The call was aborted before this node answered.
    Aborted { addr: String },
    /// The node restarted (its identity changed) less than `maxDuration` ago, so it may
    /// have forgotten locks it granted: it sits out acquires for `left_ms` more.
    Quarantined {
        addr: String,
        restarted_s_ago: u64,
        left_ms: u64,
    },
}

/// A `NOPERM` in plain words: a key or a command the ACL denies, and what to allow.
fn noperm_words(lower: &str, raw: &str) -> String {
    if lower.contains("keys") {
        return "permission denied (NOPERM): this user's ACL does not allow a key the lock uses: \
                allow the resource names and, for waiting lines, fencing, semaphores and \
                read-write locks, `{<resource>}:redlock-rs:*` too (README: ACL users)"
            .into();
    }
    // (A pipeline's failures are a driver dump: only the command they name is said.)
    let said = match denied_command(raw) {
        Some(command) => Some(format!("the '{command}' command")),
        None if lower.contains("pipeline failures") => None,
        None => Some(raw.to_string()),
    };
    if lower.contains("command") {
        let said = said.map(|s| format!(" ({s})")).unwrap_or_default();
        return format!(
            "permission denied (NOPERM): this user's ACL does not allow a command the lock uses{said}"
        );
    }
    let said = said.map(|s| format!(": {s}")).unwrap_or_default();
    format!("permission denied (NOPERM){said}")
}

/// The command a NOPERM error names ("... no permissions to run the 'evalsha' command").
fn denied_command(raw: &str) -> Option<&str> {
    let start = raw.find("run the '")? + "run the '".len();
    let len = raw[start..].find('\'')?;
    Some(&raw[start..start + len])
}

/// A driver's error text in plain words that say what happened: refused, timed out,
/// authentication required or failed, TLS; the Redis error code is kept in brackets.
/// Never a raw pipeline dump, never a secret (the driver's texts carry none).
pub fn plain_reason(raw: &str) -> String {
    let clipped = clip(raw);
    let raw: &str = &clipped;
    let lower = raw.to_ascii_lowercase();
    let has = |s: &str| lower.contains(s);
    if has("noauth") {
        return "authentication required (NOAUTH): the server needs a password and none was given"
            .into();
    }
    if has("wrongpass")
        || has("invalid username-password")
        || has("invalid password")
        || has("authentication failed")
    {
        return "authentication failed (WRONGPASS): wrong username or password".into();
    }
    if has("called without any password configured") || has("no password is set") {
        return "authentication failed: a password was given, but the server has none configured (remove the password, or set one on the server)".into();
    }
    if has("db index is out of range") {
        return "the database number (db) is out of range for this server (DB index is out of range)".into();
    }
    if has("cluster support disabled") {
        return "the server is not part of a Redis Cluster (cluster support disabled): use Redis, not Cluster, for it".into();
    }
    if has("noperm") {
        return noperm_words(&lower, raw);
    }
    if has("connection refused") {
        return REFUSED.into();
    }
    if has("certificate") || has("tls") || has("handshake") || has("unknownissuer") {
        return format!("TLS failed: {}", tls_words(&lower, raw));
    }
    if has("connection reset") {
        return "connection reset by the server".into();
    }
    if has("broken pipe") || has("connection closed") || has("connection dropped") {
        return "connection lost".into();
    }
    if has("timed out") || has("timeout") {
        return "timed out".into();
    }
    if has("failed to lookup address") || has("name or service not known") {
        return "host not found (DNS)".into();
    }
    // (redis-rs' Cluster says so of what no Redis server sends: an HTTP reply, say.)
    if has("parse error at") {
        return "a reply that is not the Redis protocol: is a Redis server listening there?".into();
    }
    if has("incompatible type") || has("response type not") {
        return "unexpected reply: not of the type the command returns".into();
    }
    if has("readonly") {
        return "the server is a read-only replica (READONLY)".into();
    }
    // Unwrap redis-rs' pipeline dumps down to the server's own message.
    if let Some(start) = raw.find("error: \"") {
        let inner = &raw[start + 8..];
        let code = inner.split('"').next().unwrap_or("");
        let text = inner.split("\": ").nth(1).unwrap_or("");
        let text = text.split(')').next().unwrap_or(text).trim_matches('"');
        return format!("{code} {text}").trim().to_string();
    }
    if let Some(words) = unknown_command_words(&lower, raw) {
        return words;
    }
    // A reply of the server, without the driver's type name before it (of a pipeline's
    // list of errors, the first).
    match raw.find("ResponseError: ") {
        Some(at) => {
            let text = &raw[at + 15..];
            let text = text.split("), (Index ").next().unwrap_or(text);
            let text = text.strip_suffix(")]").unwrap_or(text);
            format!("the server answered: {}", without_args(text))
        }
        None => without_args(raw).to_string(),
    }
}

/// A server that refuses the commands every connection starts with (a Sentinel's port, an
/// `AUTH` renamed away), or a Redis server asked as a sentinel, in plain words. (Redis
/// before 6.2 quotes with backticks, and echoes the arguments: a password, for `AUTH`.)
fn unknown_command_words(lower: &str, raw: &str) -> Option<String> {
    let at = lower
        .find("unknown command '")
        .or_else(|| lower.find("unknown command `"))?;
    let name = raw[at + 17..].split(['\'', '`']).next().unwrap_or("");
    if name.eq_ignore_ascii_case("sentinel") {
        return Some("the server does not know the command 'SENTINEL': not a sentinel (a Redis server's port? sentinels usually listen on 26379)".to_string());
    }
    Some(format!(
        "the server does not know the command '{name}': not a Redis server that takes the lock commands (a Sentinel's port?)"
    ))
}

/// `text` without the arguments a server's refusal echoes ("with args beginning with:
/// ..."): they may be a password (`AUTH`'s) or a value.
fn without_args(text: &str) -> &str {
    match text.to_ascii_lowercase().find(", with args beginning with") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// An error reply of the server as `code detail`, its own line; authentication and
/// permission refusals in plain words instead (see [`plain_reason`]). `None` for the codes
/// said in plain words.
pub fn server_line(code: &str, detail: Option<&str>) -> Option<String> {
    if matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM") {
        return None;
    }
    // A redirect the Cluster client could not follow (its retries ran out: the slot's
    // owner did not answer), in words that name the owner.
    if let ("MOVED" | "ASK", Some((slot, owner))) = (code, detail.and_then(|d| d.split_once(' '))) {
        return Some(
            clip(&format!(
                "hash slot {slot} is served by {owner}, which could not be reached ({code})"
            ))
            .into_owned(),
        );
    }
    Some(match detail.map(without_args) {
        Some(d) if !d.is_empty() => clip(&format!("{code} {d}")).into_owned(),
        _ => clip(code).into_owned(),
    })
}

/// The longest text of a server's or driver's kept in an error message: a broken server's
/// 50 MB reply must not become a 50 MB message.
const MAX_TEXT: usize = 300;

/// `text`, cut at [`MAX_TEXT`] bytes (on a character boundary) with an ellipsis.
fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_TEXT {
        return text.into();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// What a TLS failure (rustls' error names, in `lower` case) means, in plain words.
fn tls_words(lower: &str, raw: &str) -> String {
    let words = [
        (
            "unknownissuer",
            "the server's certificate is not signed by a trusted CA (give its CA as tls.ca, or socket.ca for node-redis)",
        ),
        (
            "causedasendentity",
            "the server's certificate is a CA certificate that is not trusted (give that certificate itself as tls.ca, or socket.ca for node-redis, to trust it directly)",
        ),
        (
            "notvalidforname",
            "the server's certificate is not valid for name expected (the host, or tls.servername, or socket.servername for node-redis)",
        ),
        ("expired", "the server's certificate has expired"),
        ("notvalidyet", "the server's certificate is not valid yet"),
        ("revoked", "the server's certificate is revoked"),
        (
            "badsignature",
            "the server's certificate has a bad signature",
        ),
        ("badencoding", "the server's certificate could not be read"),
        (
            "certificaterequired",
            "the server asks for a client certificate (tls.cert and tls.key)",
        ),
        (
            "unknownca",
            "the server does not trust the client certificate",
        ),
        (
            "badcertificate",
            "the server refused the client certificate",
        ),
        ("protocolversion", "no TLS version both sides speak"),
        ("handshakefailure", "the TLS handshake failed"),
    ];
    match words.iter().find(|(token, _)| lower.contains(token)) {
        Some((_, plain)) => plain.to_string(),
        None => raw.rsplit(": ").next().unwrap_or(raw).trim().to_string(),
    }
}

/// [`plain_reason`] of a connect that found nothing listening at the address.
const REFUSED: &str = "connection refused (is redis-server listening there?)";

impl NodeError {
    /// Whether the user's ACL denied the command (`NOPERM`; inside a script, Redis 7.0
    /// says "can't run this command", 7.2 "ACL failure in script").
    pub fn is_noperm(&self) -> bool {
        matches!(self, NodeError::Command { reason, .. } | NodeError::Reply { line: reason, .. }
            if ["NOPERM", "can't run this command", "ACL failure"].iter().any(|w| reason.contains(w)))
    }

    /// Whether nothing listens at the address (yet): a server starting or restarting.
    pub fn is_refused(&self) -> bool {
        matches!(self, NodeError::Connect { reason, .. } if reason == REFUSED)
    }

    /// Whether the server refused the command's syntax (an option it does not know).
    pub fn is_syntax_error(&self) -> bool {
        matches!(self, NodeError::Command { reason, .. } | NodeError::Reply { line: reason, .. }
            if reason.to_ascii_lowercase().contains("syntax error"))
    }

    /// Whether the request may have reached the server (so a cleanup must go there too).
    pub fn may_have_executed(&self) -> bool {
        matches!(
            self,
            NodeError::Timeout { .. }
                | NodeError::Command { .. }
                | NodeError::Reply { .. }
                | NodeError::Aborted { .. }
        )
    }
}

impl NodeError {
    fn addr(&self) -> &str {
        match self {
            NodeError::Connect { addr, .. }
            | NodeError::ConnectTimeout { addr, .. }
            | NodeError::Timeout { addr, .. }
            | NodeError::Closed { addr }
            | NodeError::Command { addr, .. }
            | NodeError::Reply { addr, .. }
            | NodeError::Protocol { addr, .. }
            | NodeError::Aborted { addr }
            | NodeError::Quarantined { addr, .. } => addr,
        }
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "Redis host:port: ...", or "MemoryStore 'name': ..." for an in-process node.
        let addr = self.addr();
        if addr.starts_with("MemoryStore") {
            write!(f, "{addr}: ")?;
        } else {
            write!(f, "Redis {addr}: ")?;
        }
        match self {
            NodeError::Connect { reason, .. } => write!(f, "could not connect: {reason}"),
            NodeError::ConnectTimeout { ms, said, .. } => {
                write!(
                    f,
                    "could not connect: no connection within {ms} ms (connectTimeout)"
                )?;
                match said {
                    Some(said) => write!(f, "; {said}"),
                    None => Ok(()),
                }
            }
            NodeError::Timeout { ms, .. } => write!(f, "no reply within {ms} ms"),
            NodeError::Closed { .. } => write!(f, "Connection is closed."),
            NodeError::Command { reason, .. } => write!(f, "{reason}"),
            NodeError::Reply { line, .. } => write!(f, "{line}"),
            NodeError::Protocol { reason, .. } => write!(f, "unexpected reply: {reason}"),
            NodeError::Aborted { .. } => write!(f, "no answer before the operation was aborted"),
            NodeError::Quarantined {
                restarted_s_ago,
                left_ms,
                ..
            } => write!(
                f,
                "restarted or replaced {restarted_s_ago} s ago (its run_id or replication ID changed), so it may have forgotten locks it granted; it sits out lock acquisitions for another {left_ms} ms (settings.maxDuration)"
            ),
        }
    }
}

impl std::error::Error for NodeError {}

/// The JavaScript error class an argument error maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgErrorKind {
    Type,
    Range,
}

/// A bad argument: becomes a `TypeError` or `RangeError` whose message names the argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    pub kind: ArgErrorKind,
    pub message: String,
}

impl ArgError {
    pub fn type_error(message: impl Into<String>) -> Self {
        ArgError {
            kind: ArgErrorKind::Type,
            message: message.into(),
        }
    }
    pub fn range_error(message: impl Into<String>) -> Self {
        ArgError {
            kind: ArgErrorKind::Range,
            message: message.into(),
        }
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ArgError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noperm_names_the_denied_command_not_the_pipeline() {
        let raw = "Pipeline failures: [(Index 0, error: NoPerm: this user has no permissions \
                   to run the 'script|load' command), (Index 1, error: NoPerm: this user has \
                   no permissions to run the 'script|load' command)]";
        let said = plain_reason(raw);
        assert!(
            said.ends_with("a command the lock uses (the 'script|load' command)"),
            "{said}"
        );
        assert!(!said.contains("Index"), "{said}");
    }

    #[test]
    fn driver_errors_in_plain_words() {
        let cases = [
            (
                "Pipeline failures: [(Index 0, error: \"NOAUTH\": Authentication required.)]",
                "authentication required",
            ),
            (
                "WRONGPASS: invalid username-password pair or user is disabled.",
                "authentication failed",
            ),
            ("Connection refused (os error 111)", "connection refused"),
            (
                "Failed to create initial connections - Io: Incompatible type - Parse error at 1",
                "a reply that is not the Redis protocol",
            ),
            ("invalid peer certificate: UnknownIssuer", "TLS failed"),
            (
                "Connection reset by peer (os error 104)",
                "connection reset",
            ),
            (
                "Password authentication failed - AuthenticationFailed",
                "authentication failed",
            ),
            (
                "Pipeline failures: [(Index 0, error: ResponseError: unknown command 'SCRIPT', with args beginning with: 'LOAD' 'local key = KEYS[1]...')]",
                "the server does not know the command 'SCRIPT': not a Redis server",
            ),
            (
                "ResponseError: AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                "authentication failed: a password was given, but the server has none",
            ),
            (
                "ResponseError: DB index is out of range",
                "the database number (db) is out of range",
            ),
            (
                "ResponseError: This instance has cluster support disabled",
                "the server is not part of a Redis Cluster",
            ),
            ("ResponseError: ERR something new", "the server answered: ERR something new"),
            (
                "NOPERM: this user has no permissions to access one of the keys used as arguments",
                "permission denied (NOPERM): this user's ACL does not allow a key the lock uses: allow the resource names and",
            ),
            (
                "NOPERM: this user has no permissions to run the 'evalsha' command",
                "permission denied (NOPERM): this user's ACL does not allow a command the lock uses (the 'evalsha' command)",
            ),
        ];
        for (raw, plain) in cases {
            let got = plain_reason(raw);
            assert!(got.starts_with(plain), "{raw} -> {got}");
            assert!(!got.contains("Pipeline"), "{got}");
            assert!(!got.contains("ResponseError"), "{got}");
        }
    }

    #[test]
    fn echoed_arguments_are_cut_and_pipeline_dumps_say_their_first_error() {
        assert_eq!(
            plain_reason("Pipeline failures: [(Index 0, error: \"ERR\": unknown command)]"),
            "ERR unknown command"
        );
        assert_eq!(plain_reason("something else"), "something else");
        // Redis before 6.2 quotes with backticks and echoes the arguments: AUTH's password.
        let renamed = plain_reason(
            "ResponseError: unknown command `AUTH`, with args beginning with: `hunter2`, ",
        );
        assert!(renamed.starts_with("the server does not know the command 'AUTH'"));
        assert!(!renamed.contains("hunter2"), "{renamed}");
        let echoed = server_line(
            "ERR",
            Some("unknown command `FOO`, with args beginning with: `s3cret`, "),
        );
        assert_eq!(echoed.as_deref(), Some("ERR unknown command `FOO`"));
        // A pipeline's dump of the same error for each command: the first, whole.
        assert_eq!(
            plain_reason("Pipeline failures: [(Index 0, error: ResponseError: ERR SCRIPT is disabled), (Index 1, error: ResponseError: ERR SCRIPT is disabled)]"),
            "the server answered: ERR SCRIPT is disabled"
        );
        assert_eq!(
            plain_reason(
                "Pipeline failures: [(Index 0, error: ResponseError: ERR SCRIPT is disabled)]"
            ),
            "the server answered: ERR SCRIPT is disabled"
        );
    }

    #[test]
    fn server_error_replies_are_the_servers_own_line_and_tls_failures_plain_words() {
        assert_eq!(
            server_line("WRONGTYPE", Some("Operation against a key")).as_deref(),
            Some("WRONGTYPE Operation against a key")
        );
        assert_eq!(server_line("ERR", None).as_deref(), Some("ERR"));
        assert_eq!(
            server_line("MOVED", Some("3300 127.0.0.1:7001")).as_deref(),
            Some("hash slot 3300 is served by 127.0.0.1:7001, which could not be reached (MOVED)")
        );
        let huge = server_line("ERR", Some(&"é".repeat(1_000_000))).unwrap();
        assert!(huge.len() < 400 && huge.ends_with('…'), "{}", huge.len());
        assert_eq!(
            plain_reason(&format!(
                "Incompatible type - (value was array({}))",
                "x".repeat(1 << 20)
            )),
            "unexpected reply: not of the type the command returns"
        );
        assert_eq!(
            server_line("NOAUTH", Some("Authentication required.")),
            None
        );
        for (raw, plain) in [
            (
                "invalid peer certificate: UnknownIssuer",
                "not signed by a trusted CA",
            ),
            (
                "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
                "is a CA certificate",
            ),
            (
                "invalid peer certificate: NotValidForNameContext { expected: .. }",
                "not valid for name",
            ),
        ] {
            let got = plain_reason(raw);
            assert!(
                got.starts_with("TLS failed: ") && got.contains(plain),
                "{raw} -> {got}"
            );
            assert!(!got.contains("Other("), "{got}");
        }
    }

    #[test]
    fn syntax_errors_are_recognised() {
        let refused = NodeError::Command {
            addr: "h:1".into(),
            reason: "ERR syntax error".into(),
        };
        assert!(refused.is_syntax_error());
        let other = NodeError::Command {
            addr: "h:1".into(),
            reason: "WRONGTYPE Operation against a key".into(),
        };
        assert!(!other.is_syntax_error());
        assert!(!NodeError::Timeout {
            addr: "h:1".into(),
            ms: 1
        }
        .is_syntax_error());
    }
}
