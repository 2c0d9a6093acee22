//! Who a server is: its `run_id`, uptime, and whether it was promoted from replica, read
//! from `INFO` when connecting to it; and the key under which clients record the
//! identities they trusted (restart safety: see [`crate::engine::trust`]).

use std::time::{Duration, Instant};

/// The hash, on every node, of the identities clients trusted for the other nodes.
pub const RECORDS_KEY: &str = "redlock-rs:nodes";

/// Who a server is, as read when connecting to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub run_id: String,
    /// `uptime_in_seconds` (rounded down by the server, so never more than the truth).
    pub uptime: Duration,
    /// When it was read.
    pub seen_at: Instant,
    /// Whether it was promoted from replica to master since it started (a failover): its
    /// uptime then says nothing about when it took over.
    pub promoted: bool,
}

impl Identity {
    /// Reads `run_id` and `uptime_in_seconds` out of an `INFO server` reply, and whether
    /// it was promoted (`second_repl_offset` other than -1) out of `INFO replication`.
    pub fn parse(info: &str, seen_at: Instant) -> Option<Identity> {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        Some(Identity {
            run_id: field("run_id").filter(|r| !r.is_empty())?,
            uptime: Duration::from_secs(field("uptime_in_seconds")?.parse().ok()?),
            seen_at,
            promoted: field("second_repl_offset").is_some_and(|v| v != "-1"),
        })
    }

    /// How long the server has been up at `now`.
    pub fn uptime_at(&self, now: Instant) -> Duration {
        self.uptime + now.saturating_duration_since(self.seen_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\ntcp_port:6379\r\nuptime_in_seconds:42\r\n";

    #[test]
    fn parses_info_server() {
        let now = Instant::now();
        let id = Identity::parse(INFO, now).unwrap();
        assert_eq!(id.run_id, "abc123");
        assert_eq!(id.uptime, Duration::from_secs(42));
        assert!(Identity::parse("# Server\r\nuptime_in_seconds:1\r\n", now).is_none());
    }
}
