//! Restart safety: a node that restarted without its data has forgotten the locks it
//! granted, so it must not vote for a new lock (or in a fence read) until every lock it
//! could have granted before has expired: until it has been up for `maxDuration`, the
//! longest duration any acquire or extend may ask for.
//!
//! A restart is recognised by the node's identity (its `run_id`, from `INFO server`,
//! read on every (re)connect: a restart always breaks the connection). The identity
//! each client trusted is recorded on the *other* nodes (the hash [`RECORDS_KEY`], one
//! field per node), so that a client meeting a node for the first time still learns from
//! its peers that the node restarted. Nodes that no one recorded are trusted at once.

use crate::engine::sync::Unpoisoned;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use crate::engine::error::NodeError;
use crate::engine::node::Node;

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
}

impl Identity {
    /// Reads `run_id` and `uptime_in_seconds` out of an `INFO server` reply.
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
        })
    }

    /// How long the server has been up at `now`.
    pub fn uptime_at(&self, now: Instant) -> Duration {
        self.uptime + now.saturating_duration_since(self.seen_at)
    }
}

/// What a client concludes about a node it (re)connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Never seen before, the same server as recorded, or up long enough.
    Trusted,
    /// A different server than recorded (it restarted, or a failover put another in its
    /// place) that has not been up for `max_duration` yet: it sits out until `until`.
    Quarantined { until: Instant },
}

/// Judges `current` against the identities recorded for the same node (`known`: by the
/// peers, or remembered by this client).
pub fn judge(
    current: &Identity,
    known: &[String],
    max_duration: Duration,
    now: Instant,
) -> Verdict {
    let restarted = known.iter().any(|r| *r != current.run_id);
    let uptime = current.uptime_at(now);
    if !restarted || uptime >= max_duration {
        return Verdict::Trusted;
    }
    Verdict::Quarantined {
        until: now + (max_duration - uptime),
    }
}

/// What a quorum concluded about one node, for the connection it checked.
#[derive(Debug, Clone)]
struct Checked {
    /// [`Node::identity_epoch`] of the connection checked.
    epoch: u64,
    run_id: String,
    /// The end of its quarantine, if it is in one.
    until: Option<Instant>,
    /// Whether its identity was written to the peers.
    recorded: bool,
    /// When it was found restarted (for messages).
    restarted_at: Option<Instant>,
}

/// The identity checks of one quorum: one entry per node.
pub struct Trust {
    checked: Mutex<Vec<Option<Checked>>>,
    /// Serialises the slow path per node, so that a reconnect is checked once.
    checking: Vec<tokio::sync::Mutex<()>>,
}

impl Trust {
    pub fn new(n: usize) -> Self {
        Trust {
            checked: Mutex::new(vec![None; n]),
            checking: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    fn checked(&self) -> std::sync::MutexGuard<'_, Vec<Option<Checked>>> {
        self.checked.locked()
    }

    /// Whether node `i` may vote for an acquire now: `Ok` when it is trusted, the error
    /// that says why not otherwise. Connects the node when needed (its identity comes with
    /// the connection); costs one look-up unless the node reconnected since last time.
    pub async fn admit(
        &self,
        nodes: &[Arc<Node>],
        i: usize,
        max_duration: Duration,
    ) -> Result<(), NodeError> {
        let node = &nodes[i];
        if node.config().cluster.is_some() {
            return Ok(()); // see README: Cluster shards are not checked
        }
        node.ensure_connected().await?;
        if let Some(done) = self.fast_path(node, i) {
            return done.map(|new| record(nodes, i, new));
        }
        let _one = self.checking[i].lock().await;
        if let Some(done) = self.fast_path(node, i) {
            return done.map(|new| record(nodes, i, new));
        }
        let epoch = node.identity_epoch();
        let Some(current) = node.identity() else {
            return Ok(()); // INFO not allowed for this user: nothing to check against
        };
        let remembered = self.checked()[i].as_ref().map(|c| c.run_id.clone());
        let mut known = read_records(nodes, i).await;
        known.extend(remembered);
        let now = Instant::now();
        let verdict = judge(&current, &known, max_duration, now);
        let restarted_at = match verdict {
            Verdict::Quarantined { .. } => {
                Some(now.checked_sub(current.uptime_at(now)).unwrap_or(now))
            }
            Verdict::Trusted => None,
        };
        self.checked()[i] = Some(Checked {
            epoch,
            run_id: current.run_id,
            until: match verdict {
                Verdict::Quarantined { until } => Some(until),
                Verdict::Trusted => None,
            },
            recorded: false,
            restarted_at,
        });
        self.fast_path(node, i)
            .unwrap_or(Ok(None))
            .map(|new| record(nodes, i, new))
    }

    /// The verdict on node `i`'s current connection, if it was checked: `Ok(Some(run_id))`
    /// the first time a trusted identity is to be recorded on the peers.
    fn fast_path(&self, node: &Node, i: usize) -> Option<Result<Option<String>, NodeError>> {
        let now = Instant::now();
        let mut checked = self.checked();
        let c = checked[i].as_mut()?;
        if c.epoch != node.identity_epoch() {
            return None;
        }
        if let Some(until) = c.until {
            if now < until {
                let ago = c
                    .restarted_at
                    .map_or(0, |at| now.duration_since(at).as_secs());
                return Some(Err(NodeError::Quarantined {
                    addr: node.addr(),
                    restarted_s_ago: ago,
                    left_ms: (until - now).as_millis() as u64,
                }));
            }
            c.until = None;
        }
        if !c.recorded {
            c.recorded = true;
            return Some(Ok(Some(c.run_id.clone())));
        }
        Some(Ok(None))
    }
}

/// The identities the peers of node `i` recorded for it. Waits for every peer, but not
/// for a dead or frozen one: once half of them answered, the others get [`PEER_GRACE`]
/// (or twice the time taken so far) more; nothing waits past [`PEER_WAIT`] or the command
/// time-out.
async fn read_records(nodes: &[Arc<Node>], i: usize) -> Vec<String> {
    let name = nodes[i].config().addr();
    let mut hget = redis::cmd("HGET");
    hget.arg(RECORDS_KEY).arg(&name);
    let hget = Arc::new(hget);
    let mut reads: FuturesUnordered<_> = nodes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, peer)| {
            let (peer, hget) = (peer.clone(), hget.clone());
            async move { peer.send::<Option<String>>(&hget).await.ok().flatten() }
        })
        .collect();
    let peers = reads.len();
    let started = Instant::now();
    let limit = nodes[i].config().command_timeout.min(PEER_WAIT);
    let mut until = started + limit;
    let (mut answered, mut known) = (0, Vec::new());
    while answered < peers {
        match tokio::time::timeout_at(until.into(), reads.next()).await {
            Ok(Some(record)) => {
                answered += 1;
                known.extend(record);
                if answered * 2 >= peers {
                    let grace = PEER_GRACE.max(started.elapsed() * 2);
                    until = until.min(Instant::now() + grace);
                }
            }
            _ => break,
        }
    }
    known
}

/// How long the slower peers are waited for at least once half of them answered.
const PEER_GRACE: Duration = Duration::from_millis(20);
/// The longest wait for the peers' records. A peer that cannot answer this in time would
/// not answer this client's vote in time either, so it is not in its quorum.
const PEER_WAIT: Duration = Duration::from_millis(100);

/// Writes `run_id` (when given) as the trusted identity of node `i` on every peer, in the
/// background.
fn record(nodes: &[Arc<Node>], i: usize, run_id: Option<String>) {
    let Some(run_id) = run_id else { return };
    let mut hset = redis::cmd("HSET");
    hset.arg(RECORDS_KEY)
        .arg(nodes[i].config().addr())
        .arg(run_id);
    for (_, peer) in nodes.iter().enumerate().filter(|(j, _)| *j != i) {
        let (hset, peer) = (hset.clone(), peer.clone());
        tokio::spawn(async move {
            let limit = peer.config().command_timeout;
            let _ = tokio::time::timeout(limit, peer.send::<i64>(&hset)).await;
        });
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

    fn id(run_id: &str, uptime_s: u64, seen_at: Instant) -> Identity {
        Identity {
            run_id: run_id.into(),
            uptime: Duration::from_secs(uptime_s),
            seen_at,
        }
    }

    #[test]
    fn never_seen_nodes_are_trusted() {
        let now = Instant::now();
        let v = judge(&id("new", 0, now), &[], Duration::from_secs(300), now);
        assert_eq!(v, Verdict::Trusted);
    }

    #[test]
    fn the_same_server_is_trusted() {
        let now = Instant::now();
        let known = vec!["a".to_string(), "a".to_string()];
        let v = judge(&id("a", 1, now), &known, Duration::from_secs(300), now);
        assert_eq!(v, Verdict::Trusted);
    }

    #[test]
    fn a_restarted_server_sits_out_until_up_for_max_duration() {
        let now = Instant::now();
        let max = Duration::from_secs(300);
        let v = judge(&id("b", 100, now), &["a".to_string()], max, now);
        assert_eq!(
            v,
            Verdict::Quarantined {
                until: now + Duration::from_secs(200)
            }
        );
        // One peer out of date is enough to notice.
        let known = vec!["b".to_string(), "a".to_string()];
        assert!(matches!(
            judge(&id("b", 0, now), &known, max, now),
            Verdict::Quarantined { .. }
        ));
        // Up for exactly max_duration: every lock it could have forgotten has expired.
        assert_eq!(
            judge(&id("b", 300, now), &["a".to_string()], max, now),
            Verdict::Trusted
        );
        // Uptime keeps counting after it was read.
        let earlier = now - Duration::from_secs(10);
        assert_eq!(
            judge(&id("b", 295, earlier), &["a".to_string()], max, now),
            Verdict::Trusted
        );
    }
}
