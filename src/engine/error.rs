//! Errors of the engine. None of them ever carries a password: they name nodes by
//! `host:port` only.

use std::fmt;

/// Why one node could not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeError {
    /// The connection could not be established.
    Connect { addr: String, reason: String },
    /// No connection within the connect time-out (a host that does not answer).
    ConnectTimeout { addr: String, ms: u64 },
    /// No answer within the time allowed.
    Timeout { addr: String, ms: u64 },
    /// `quit()` was called on this client.
    Closed { addr: String },
    /// The server answered with an error, or the connection broke mid-command.
    Command { addr: String, reason: String },
    /// The server answered something a lock script never returns.
    Protocol { addr: String, reason: String },
}

impl NodeError {
    /// Whether the server refused the command's syntax (an option it does not know).
    pub fn is_syntax_error(&self) -> bool {
        matches!(self, NodeError::Command { reason, .. } if reason.to_ascii_lowercase().contains("syntax error"))
    }

    /// Whether the request may have reached the server (so a cleanup must go there too).
    pub fn may_have_executed(&self) -> bool {
        matches!(self, NodeError::Timeout { .. } | NodeError::Command { .. })
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Connect { addr, reason } => {
                write!(f, "Redis {addr}: could not connect: {reason}")
            }
            NodeError::ConnectTimeout { addr, ms } => {
                write!(f, "Redis {addr}: could not connect: no connection within {ms} ms (connectTimeout)")
            }
            NodeError::Timeout { addr, ms } => {
                write!(f, "Redis {addr}: no reply within {ms} ms")
            }
            NodeError::Closed { addr } => write!(f, "Redis {addr}: Connection is closed."),
            NodeError::Command { addr, reason } => write!(f, "Redis {addr}: {reason}"),
            NodeError::Protocol { addr, reason } => {
                write!(f, "Redis {addr}: unexpected reply: {reason}")
            }
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
