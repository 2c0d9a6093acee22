//! Who a server is: its `run_id`, uptime, and whether it was promoted from replica, read
//! from `INFO` when connecting to it; and the key under which clients record the
//! identities they trusted (restart safety: see [`crate::engine::trust`]).

use std::time::{Duration, Instant};

/// The hash, on every node, of the identities clients trusted for the other nodes.
pub const RECORDS_KEY: &str = "redlock-rs:nodes";

/// The hash that marks a server as one that lost its data (a restart without persistence,
/// or a replica promoted in its place: found by a changed identity), set on that server
/// by the client that finds it, so that every client meeting it later knows that its
/// fencing counters may be missing or stale (see `Trust::lost`). Its fields other than
/// `run_id` name the fencing counters written there since by a claim whose read had a
/// quorum of known counters, each with the `run_id` of the server it was written on: those
/// are known again while that server runs (a mark restored from a snapshot, or replicated
/// to a replica promoted later, names another server's).
pub const LOST_KEY: &str = "redlock-rs:data-lost";

/// Who a server is, as read when connecting to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its `run_id`, and for a master promoted from replica its replication ID
    /// (`master_replid`) too: `run_id/replid`. The first changes at a restart, the second
    /// at every promotion (also of a master demoted earlier and promoted back). Compare
    /// them with [`same_server`].
    pub run_id: String,
    /// A lower bound of how long it had been up when read: `uptime_in_seconds` less a
    /// second. The server subtracts its start time in whole seconds from the time in
    /// whole seconds, so it may say 1 a few milliseconds after starting.
    pub uptime: Duration,
    /// When it was read.
    pub seen_at: Instant,
    /// Whether it was promoted from replica to master since it started (a failover): its
    /// uptime then says nothing about when it took over.
    pub promoted: bool,
    /// Its address as the connection reached it, as records name it (see
    /// [`Identity::reached_at`]), when known.
    pub peer: Option<String>,
}

/// Whether `known`, an identity recorded or remembered earlier, is the server whose
/// identity is `current` now, with the same data: the same `run_id`, and no promotion
/// since (a master promoted now names its replication ID, which must be the one known).
/// A master not promoted now is the same server as under a promotion known earlier: its
/// replicas were gone for a while (`repl-backlog-ttl`), and it dropped the promotion's
/// IDs, but no other server's data came into it.
pub fn same_server(known: &str, current: &str) -> bool {
    known == current || (!current.contains('/') && known.split('/').next() == Some(current))
}

impl Identity {
    /// Reads `run_id` and `uptime_in_seconds` out of an `INFO server` reply, and
    /// `master_replid` and whether it was promoted (`second_repl_offset` other than -1)
    /// out of `INFO replication`.
    pub fn parse(info: &str, seen_at: Instant) -> Option<Identity> {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let run_id = field("run_id").filter(|r| !r.is_empty())?;
        let promoted = field("second_repl_offset").is_some_and(|v| v != "-1");
        // A promotion gives a new replication ID: a master demoted by a failover and
        // promoted back keeps its run_id but may lack what its stand-in took meanwhile.
        let run_id = match field("master_replid").filter(|r| promoted && !r.is_empty()) {
            Some(replid) => format!("{run_id}/{replid}"),
            None => run_id,
        };
        Some(Identity {
            run_id,
            uptime: Duration::from_secs(
                field("uptime_in_seconds")?
                    .parse::<u64>()
                    .ok()?
                    .saturating_sub(1),
            ),
            seen_at,
            promoted,
            peer: None,
        })
    }

    /// This identity, read through a connection to `peer`: the server's address as
    /// records name it, whatever name a client gave it (`localhost`, a host name, an IP),
    /// so that clients that name it differently meet each other's records. `127.0.0.1`
    /// and `::1` are `localhost` (one client's `localhost` may be `::1`, another's
    /// `127.0.0.1`); other loopback addresses (`127.0.0.2`) name servers of their own. An
    /// IPv4 address in IPv6 form is the IPv4 one.
    pub fn reached_at(self, peer: Option<std::net::SocketAddr>) -> Identity {
        let peer = peer.map(|a| {
            let ip = a.ip().to_canonical();
            let local = ip == std::net::Ipv4Addr::LOCALHOST || ip == std::net::Ipv6Addr::LOCALHOST;
            if local {
                format!("localhost:{}", a.port())
            } else {
                std::net::SocketAddr::new(ip, a.port()).to_string()
            }
        });
        Identity { peer, ..self }
    }

    /// How long the server has been up at `now`.
    pub fn uptime_at(&self, now: Instant) -> Duration {
        self.uptime + now.saturating_duration_since(self.seen_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_reached_is_named_by_its_address_every_loopback_one_localhost() {
        let id = Identity::parse(INFO, Instant::now()).unwrap();
        assert_eq!(id.peer, None);
        let at = |a: &str| id.clone().reached_at(a.parse().ok()).peer;
        assert_eq!(at("127.0.0.1:6379").as_deref(), Some("localhost:6379"));
        assert_eq!(at("127.0.0.2:6379").as_deref(), Some("127.0.0.2:6379"));
        assert_eq!(at("[::1]:6379").as_deref(), Some("localhost:6379"));
        assert_eq!(at("10.0.0.5:7000").as_deref(), Some("10.0.0.5:7000"));
        assert_eq!(
            at("[::ffff:10.0.0.5]:7000").as_deref(),
            Some("10.0.0.5:7000")
        );
        assert_eq!(
            at("[2001:db8::1]:6379").as_deref(),
            Some("[2001:db8::1]:6379")
        );
        assert_eq!(at("not an address"), None);
    }

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\ntcp_port:6379\r\nuptime_in_seconds:42\r\n";

    #[test]
    fn parses_info_server() {
        let now = Instant::now();
        let id = Identity::parse(INFO, now).unwrap();
        assert_eq!(id.run_id, "abc123");
        // 42 may mean 41.01 s: whole seconds of the clock, less whole seconds at start.
        assert_eq!(id.uptime, Duration::from_secs(41));
        let fresh = INFO.replace("uptime_in_seconds:42", "uptime_in_seconds:0");
        assert_eq!(Identity::parse(&fresh, now).unwrap().uptime, Duration::ZERO);
        assert!(Identity::parse("# Server\r\nuptime_in_seconds:1\r\n", now).is_none());
    }

    #[test]
    fn a_promotion_changes_the_identity_the_run_id_kept() {
        let now = Instant::now();
        let replication = |replid: &str| {
            format!("{INFO}# Replication\r\nrole:master\r\nmaster_replid:{replid}\r\nmaster_replid2:0000\r\n")
        };
        let promoted =
            |replid: &str| replication(replid).replace("0000", "0000\r\nsecond_repl_offset:77");
        let never = Identity::parse(&replication("aaaa"), now).unwrap();
        let once = Identity::parse(&promoted("aaaa"), now).unwrap();
        let again = Identity::parse(&promoted("bbbb"), now).unwrap();
        // Never promoted: the run_id alone (its replication ID changes without a promotion).
        assert_eq!(never.run_id, "abc123");
        assert_eq!(once.run_id, "abc123/aaaa");
        assert!(!same_server(&never.run_id, &once.run_id), "promoted since");
        assert!(!same_server(&once.run_id, &again.run_id), "promoted again");
        assert!(same_server(&once.run_id, &once.run_id));
        // Its replicas gone for repl-backlog-ttl, a promoted master drops the IDs.
        assert!(same_server(&once.run_id, &never.run_id));
        assert!(!same_server("other/aaaa", "abc123"));
    }
}
