//! Restart safety: a node that restarted without its data has forgotten the locks it
//! granted, so it must not vote for a new lock (or in a fence read) until every lock it
//! could have granted before has expired: until it has been up for `maxDuration`, the
//! longest duration any acquire or extend may ask for.
//!
//! A restart is recognised by the node's identity (its `run_id`, from `INFO`, read on
//! every (re)connect: a restart always breaks the connection); a failover, by a changed
//! `run_id` on a master that was promoted. A Redis Cluster is judged per shard
//! ([`crate::engine::shards`]), its records kept on another shard of the same cluster. The identity
//! each client trusted is recorded on the *other* nodes (the hash [`RECORDS_KEY`], one
//! field per node), so that a client meeting a node for the first time still learns from
//! its peers that the node restarted. Nodes that no one recorded are trusted at once.

use crate::engine::sync::Unpoisoned;
use crate::engine::timer;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use crate::engine::config::NodeConfig;
use crate::engine::error::NodeError;
use crate::engine::identity::{same_server, Identity, LOST_KEY, RECORDS_KEY};
use crate::engine::node::Node;
use crate::engine::scripts::{hash_slot, SERVER_RUN_ID_SCRIPT};
use crate::engine::shards::Shard;

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
/// peers, or remembered by this client). A different server sits out until it has been up
/// for `max_duration`; one promoted by a failover, for `max_duration` from now (it may
/// have taken over just now, whatever its uptime).
pub fn judge(
    current: &Identity,
    known: &[String],
    max_duration: Duration,
    now: Instant,
) -> Verdict {
    let replaced = known.iter().any(|r| !same_server(r, &current.run_id));
    if !replaced {
        return Verdict::Trusted;
    }
    let in_role = if current.promoted {
        Duration::ZERO
    } else {
        current.uptime_at(now)
    };
    if in_role >= max_duration {
        return Verdict::Trusted;
    }
    Verdict::Quarantined {
        until: now + (max_duration - in_role),
    }
}

/// What a quorum concluded about one node, or about one shard of a cluster node.
#[derive(Debug, Clone)]
struct Checked {
    /// How this client names it: the node's address, or the shard's slots.
    name: String,
    /// The record fields it is read from and written to.
    fields: Vec<String>,
    /// Where it answers (for messages): the node, or the shard's master.
    addr: String,
    /// For a shard, its slots and where it is recorded; `None` for a node.
    shard: Option<ShardPlace>,
    run_id: String,
    /// The end of its quarantine, if it is in one.
    until: Option<Instant>,
    /// Whether its identity was recorded.
    recorded: bool,
    /// The places of its record (in [`record_places`]' order) that did not answer when
    /// it was checked: its identity is not recorded there (an older one there would be
    /// overwritten unread).
    unread: Vec<usize>,
    /// When it was found restarted (for messages).
    restarted_at: Option<Instant>,
    /// Whether this server lost its data since fencing counters may have been written
    /// there (see [`lost_data`]), or may have: its mark could not be read in time.
    lost: bool,
}

/// A shard's slots, and the key (on another shard) that records it.
#[derive(Debug, Clone)]
struct ShardPlace {
    ranges: Vec<(u16, u16)>,
    record_key: Option<String>,
}

impl Checked {
    fn serves(&self, slot: u16) -> bool {
        match &self.shard {
            None => true,
            Some(s) => s.ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)),
        }
    }
}

/// A [`NodeChecked::epoch`] no connection has: the node is checked again.
const STALE: u64 = u64::MAX;

/// How many times [`Trust::admit`] checks a node whose connection keeps being replaced
/// while it is checked.
const RECHECKS: usize = 3;

/// An identity read, before it is judged.
struct Seen {
    identity: Identity,
    name: String,
    /// The record fields it is read from and written to (see `NodeConfig::identity_fields`).
    fields: Vec<String>,
    addr: String,
    shard: Option<ShardPlace>,
}

/// The checks of one node's connection: one entry, one per shard of a cluster, or none
/// (the ACL forbids `INFO`: nothing to check against).
#[derive(Debug, Clone)]
struct NodeChecked {
    /// [`Node::identity_epoch`] of the connection checked.
    epoch: u64,
    units: Vec<Checked>,
}

/// The identity checks of one quorum: one entry per node.
pub struct Trust {
    checked: Mutex<Vec<Option<NodeChecked>>>,
    /// Serialises the slow path per node, so that a reconnect is checked once.
    checking: Vec<tokio::sync::Mutex<()>>,
    /// How long a restarted node sits out: the instance's `maxDuration` (never a call's,
    /// which may be lower).
    max_duration: Duration,
}

impl Trust {
    pub fn new(n: usize, max_duration: Duration) -> Self {
        Trust {
            checked: Mutex::new(vec![None; n]),
            checking: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
            max_duration,
        }
    }

    fn checked(&self) -> std::sync::MutexGuard<'_, Vec<Option<NodeChecked>>> {
        self.checked.locked()
    }

    /// Whether node `i` may vote for an acquire of keys in hash slot `slot()` now (the slot
    /// picks the shard of a cluster; other nodes do not compute it): `Ok` when it is trusted, the
    /// error that says why not otherwise. Connects the node when needed (its identity
    /// comes with the connection); costs one look-up unless the node reconnected since.
    pub async fn admit(
        &self,
        nodes: &[Arc<Node>],
        i: usize,
        slot: impl Fn() -> u16,
    ) -> Result<(), NodeError> {
        let node = &nodes[i];
        // Only a cluster has shards to pick (a CRC of the key spared to other nodes).
        let slot = if node.config().cluster.is_some() {
            slot()
        } else {
            0
        };
        node.ensure_connected().await?;
        if let Some(done) = self.verdict(nodes, i, slot) {
            return done;
        }
        let _one = self.checking[i].lock().await;
        if let Some(done) = self.verdict(nodes, i, slot) {
            return done;
        }
        // A connection dropped while it was checked (the check's own commands reconnect
        // it) is checked again, on the new connection: a few times, a drop each time.
        for _ in 0..RECHECKS {
            let epoch = node.identity_epoch();
            let remembered = self.checked()[i].as_ref().map(|c| c.units.clone());
            let units = check(nodes, i, self.max_duration, remembered.unwrap_or_default()).await?;
            self.checked()[i] = Some(NodeChecked { epoch, units });
            if let Some(done) = self.verdict(nodes, i, slot) {
                return done;
            }
            if node.identity_epoch() == epoch {
                break;
            }
        }
        self.verdict(nodes, i, slot).unwrap_or_else(|| {
            let reason = if node.config().cluster.is_some() {
                format!("the master of hash slot {slot} did not answer INFO (down, or the cluster is changing)")
            } else {
                // It reconnected (to a new server, perhaps) while it was being checked.
                "the server changed while its identity was being checked (it reconnected or restarted): tried again with the next attempt".to_string()
            };
            Err(NodeError::Command {
                addr: node.addr(),
                reason,
            })
        })
    }

    /// For node `i`, a Redis Cluster: `Ok` when the master that holds `key` now (MOVED and
    /// ASK followed) is one its last check judged and trusted (the slot's, or another
    /// master's during a slot migration), or there is nothing to compare (the ACL forbids
    /// `INFO`); else an error that says so, and the node is checked again by its next
    /// admission (a promoted master then sits out as a restarted one does). A failover
    /// moves slots without dropping a connection, so that check would not come by itself.
    pub async fn same_master(
        &self,
        nodes: &[Arc<Node>],
        i: usize,
        key: &str,
    ) -> Result<(), NodeError> {
        let slot = hash_slot(key);
        let node = &nodes[i];
        // Nothing to compare with (the ACL forbids INFO, or no shard serves the slot): no ask.
        let serves = |c: &NodeChecked| c.units.iter().any(|u| u.serves(slot));
        if !self.checked()[i].as_ref().is_some_and(serves) {
            return Ok(());
        }
        let ask = SERVER_RUN_ID_SCRIPT.evalsha(&[key.to_string()], &[]);
        let now = match node
            .eval::<Option<String>>(&SERVER_RUN_ID_SCRIPT, &ask)
            .await
        {
            Ok(Some(run_id)) => run_id,
            Ok(None) => return Ok(()),
            Err(e) if e.is_noperm() => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut checked = self.checked();
        let Some(c) = checked[i].as_mut() else {
            return Ok(());
        };
        let at = Instant::now();
        let trusted =
            |u: &Checked| same_server(&u.run_id, &now) && u.until.is_none_or(|end| end <= at);
        if !serves(c) || c.units.iter().any(trusted) {
            return Ok(());
        }
        c.epoch = STALE;
        Err(NodeError::Command {
            addr: node.addr(),
            reason: format!(
                "the master of hash slot {slot} changed (a failover or a reshard) since it was checked: checked again with the next attempt"
            ),
        })
    }

    /// Whether node `i`'s server lost its data (a restart without persistence, or a
    /// failover) since fencing counters may have been written there, or may have (its mark
    /// could not be read in time), as its last check found: a fence read reads its mark
    /// again. (A cluster's shards are never found so.)
    pub fn lost(&self, i: usize) -> bool {
        self.checked()[i]
            .as_ref()
            .is_some_and(|c| c.units.iter().any(|u| u.lost))
    }

    /// [`Trust::admit`] when it needs no wait: `None` when it would wait (a cluster, or a
    /// node not checked since it connected).
    pub fn admit_now(&self, nodes: &[Arc<Node>], i: usize) -> Option<Result<(), NodeError>> {
        if nodes[i].config().cluster.is_some() {
            return None;
        }
        self.verdict(nodes, i, 0)
    }

    /// [`Trust::fast_path`]'s verdict, a trusted identity recorded on the peers the first
    /// time it is seen.
    fn verdict(&self, nodes: &[Arc<Node>], i: usize, slot: u16) -> Option<Result<(), NodeError>> {
        let done = self.fast_path(&nodes[i], i, slot)?;
        Some(done.map(|new| record(nodes, i, new)))
    }

    /// The verdict on node `i`'s current connection for `slot`, if it was checked:
    /// `Ok(Some(checked))` the first time a trusted identity is to be recorded.
    fn fast_path(
        &self,
        node: &Node,
        i: usize,
        slot: u16,
    ) -> Option<Result<Option<Checked>, NodeError>> {
        let mut checked = self.checked();
        let c = checked[i].as_mut()?;
        if c.epoch != node.identity_epoch() {
            return None;
        }
        if c.units.is_empty() {
            return Some(Ok(None));
        }
        let u = c.units.iter_mut().find(|u| u.serves(slot))?;
        if let Some(until) = u.until {
            let now = Instant::now();
            if now < until {
                let ago = u
                    .restarted_at
                    .map_or(0, |at| now.duration_since(at).as_secs());
                return Some(Err(NodeError::Quarantined {
                    addr: u.addr.clone(),
                    restarted_s_ago: ago,
                    left_ms: (until - now).as_millis() as u64,
                }));
            }
            u.until = None;
        }
        if !u.recorded {
            u.recorded = true;
            return Some(Ok(Some(u.clone())));
        }
        Some(Ok(None))
    }
}

/// Judges node `i` (each shard of a cluster) against the records and what this client
/// remembers (`remembered`, from its previous connection).
async fn check(
    nodes: &[Arc<Node>],
    i: usize,
    max_duration: Duration,
    remembered: Vec<Checked>,
) -> Result<Vec<Checked>, NodeError> {
    let limit = nodes[i].config().command_timeout;
    let all = seen(&nodes[i]).await?;
    // A cluster's masters now: a shard's slots taken from one of them (a reshard) were
    // handed over with their keys; that master is no evidence against the taker.
    let masters: Vec<String> = all.iter().map(|s| s.identity.run_id.clone()).collect();
    let judged = all.into_iter().map(|seen| {
        let sources = record_places(nodes, i, &seen.shard);
        let prior = prior_of(&seen, &remembered);
        let node = nodes[i].clone();
        let (remembered, masters) = (&remembered, &masters);
        async move {
            let fields = seen.shard.is_none().then_some(&seen.fields[..]);
            let ((recorded, unread), marked) = futures::join!(
                read_records(&sources, fields, limit),
                marked_lost(&node, &seen, limit)
            );
            let mut known = known_for(&seen, recorded, remembered, masters);
            let evidence = |p: &&Checked| seen.shard.is_none() || !is_master(masters, &p.run_id);
            known.extend(prior.as_ref().filter(evidence).map(|p| p.run_id.clone()));
            let lost = lost_data(&node, &seen, &known, limit).await || marked;
            let checked = Checked {
                unread,
                lost,
                ..judged(seen, &known, max_duration)
            };
            keep_quarantine(checked, prior)
        }
    });
    let units = futures::future::join_all(judged).await;
    Ok(carry_quarantined(units, remembered, Instant::now()))
}

/// What this client remembers of `seen` from its previous check: the same node, or for a
/// shard, the one its slots overlap (the same server first: a reshard renames a shard).
fn prior_of(seen: &Seen, remembered: &[Checked]) -> Option<Checked> {
    let Some(place) = &seen.shard else {
        return remembered.iter().find(|c| c.name == seen.name).cloned();
    };
    let overlapping = |c: &&Checked| {
        c.shard
            .as_ref()
            .is_some_and(|s| overlap(&s.ranges, &place.ranges))
    };
    let mut candidates = remembered.iter().filter(overlapping);
    let same = candidates
        .clone()
        .find(|c| same_server(&c.run_id, &seen.identity.run_id));
    same.or_else(|| candidates.next()).cloned()
}

/// Whether the identity `known` is that of one of a cluster's `masters` now.
fn is_master(masters: &[String], known: &str) -> bool {
    masters.iter().any(|m| same_server(known, m))
}

/// Whether two sets of slot ranges share a slot.
fn overlap(a: &[(u16, u16)], b: &[(u16, u16)]) -> bool {
    a.iter()
        .any(|(a0, a1)| b.iter().any(|(b0, b1)| a0 <= b1 && b0 <= a1))
}

/// The identities recorded for `seen` (`recorded`: the record fields read and their
/// values). A node's are those under its names. A shard's are those of every recorded or
/// remembered shard whose slots overlap its own: a reshard renames shards (their names are
/// their slots), and a master restarted empty after one must still meet its old record.
/// A master whose `run_id` is recorded anywhere in the cluster did not restart: it took
/// slots over from another (it is the same server), so nothing counts against it; nor do
/// the records of another master that is one now (`masters`): it handed the slots over.
fn known_for(
    seen: &Seen,
    recorded: Vec<(String, String)>,
    remembered: &[Checked],
    masters: &[String],
) -> Vec<String> {
    let Some(place) = &seen.shard else {
        return recorded.into_iter().map(|(_, run_id)| run_id).collect();
    };
    let current = &seen.identity.run_id;
    let continuing = recorded.iter().any(|(_, r)| same_server(r, current))
        || remembered
            .iter()
            .any(|c| c.shard.is_some() && same_server(&c.run_id, current));
    if continuing {
        return vec![current.clone()];
    }
    let overlapping =
        |name: &str| Shard::ranges_named(name).is_some_and(|r| overlap(&r, &place.ranges));
    recorded
        .into_iter()
        .filter(|(name, _)| overlapping(name))
        .map(|(_, run_id)| run_id)
        .chain(
            remembered
                .iter()
                .filter(|c| {
                    c.shard
                        .as_ref()
                        .is_some_and(|s| overlap(&s.ranges, &place.ranges))
                })
                .map(|c| c.run_id.clone()),
        )
        .filter(|run_id| !is_master(masters, run_id))
        .collect()
}

/// Whether another client marked the server behind `seen` as one that lost its data
/// ([`LOST_KEY`]; not for a cluster's shards, which are not marked), or this client could
/// not tell in time (a slow link, an ACL): then a fenced acquire reads the mark itself.
async fn marked_lost(node: &Node, seen: &Seen, limit: Duration) -> bool {
    if seen.shard.is_some() {
        return false;
    }
    let mut exists = redis::cmd("EXISTS");
    exists.arg(LOST_KEY);
    let wait = (limit / 2).min(PEER_WAIT);
    !matches!(
        timer::timeout(wait, node.send::<i64>(&exists)).await,
        Ok(Ok(0))
    )
}

/// Whether the server behind `seen` replaced an identity recorded for it (`known`): it
/// restarted, or a failover put another in its place, and so may lack fencing counters
/// written before. Marked so on the server ([`LOST_KEY`]) for the clients that meet it
/// later, when the records will name it. A cluster's shards are not marked.
async fn lost_data(node: &Node, seen: &Seen, known: &[String], limit: Duration) -> bool {
    if seen.shard.is_some() || known.iter().all(|r| same_server(r, &seen.identity.run_id)) {
        return false;
    }
    let mut mark = redis::cmd("HSET");
    mark.arg(LOST_KEY).arg("run_id").arg(&seen.identity.run_id);
    let _ = timer::timeout(limit, node.send::<redis::Value>(&mark)).await;
    true
}

/// `units`, with the shards still in quarantine at `now` that this check left out (their
/// master did not answer INFO this time) kept from `remembered`: met again without it,
/// with their records out of reach, they would pass for trusted.
fn carry_quarantined(
    mut units: Vec<Checked>,
    remembered: Vec<Checked>,
    now: Instant,
) -> Vec<Checked> {
    for p in remembered {
        if p.until.is_some_and(|u| now < u) && !units.iter().any(|c| c.name == p.name) {
            units.push(p);
        }
    }
    units
}

/// The identities node `i` has now: its server's, or each of its shards' masters' (none
/// when the ACL forbids `INFO`: nothing to check against).
async fn seen(node: &Node) -> Result<Vec<Seen>, NodeError> {
    if node.config().cluster.is_none() {
        return Ok(node
            .identity()
            .map(|identity| Seen {
                fields: fields_of(node.config(), &identity),
                identity,
                name: node.config().identity_name(),
                addr: node.addr(),
                shard: None,
            })
            .into_iter()
            .collect());
    }
    let shards = node.cluster_shards().await?.unwrap_or_default();
    Ok(shards
        .into_iter()
        .map(|s| Seen {
            fields: vec![s.name()],
            name: s.name(),
            shard: Some(ShardPlace {
                record_key: s.record_key(),
                ranges: s.ranges,
            }),
            identity: s.identity,
            addr: s.addr,
        })
        .collect())
}

/// The record fields of a node (see `NodeConfig::identity_fields`), and for a server
/// reached directly over plain TCP also its address as the connection reached it (see
/// [`Identity::reached_at`]): clients that name one server differently (`localhost` and
/// `127.0.0.1`, a host name and its IP) then meet each other's records. (A Sentinel
/// group's master changes: it is named by the group. Over TLS one address may serve
/// many servers, told apart by the name the client asks for, SNI.)
fn fields_of(config: &NodeConfig, identity: &Identity) -> Vec<String> {
    let mut fields = config.identity_fields();
    let direct = config.sentinel.is_none() && config.tls.is_none();
    if let Some(peer) = identity.peer.as_ref().filter(|_| direct) {
        if !fields.contains(peer) {
            fields.push(peer.clone());
        }
    }
    fields
}

/// What is concluded about `seen`, given the identities `known` for it.
fn judged(seen: Seen, known: &[String], max_duration: Duration) -> Checked {
    let now = Instant::now();
    let (until, restarted_at) = match judge(&seen.identity, known, max_duration, now) {
        // A promoted master took over at the latest now; a restarted one when it started.
        Verdict::Quarantined { until } if seen.identity.promoted => (Some(until), Some(now)),
        Verdict::Quarantined { until } => (
            Some(until),
            Some(now.checked_sub(seen.identity.uptime_at(now)).unwrap_or(now)),
        ),
        Verdict::Trusted => (None, None),
    };
    Checked {
        name: seen.name,
        fields: seen.fields,
        addr: seen.addr,
        shard: seen.shard,
        run_id: seen.identity.run_id,
        until,
        recorded: false,
        restarted_at,
        unread: Vec::new(),
        lost: false,
    }
}

/// `checked`, still in the quarantine `prior` (this client's earlier check of it) put the
/// same server in: checked again, a restarted server is its own "remembered" identity, and
/// with the peers' records out of reach (their node down) it would pass for trusted.
fn keep_quarantine(mut checked: Checked, prior: Option<Checked>) -> Checked {
    let Some(p) = prior.filter(|p| same_server(&p.run_id, &checked.run_id)) else {
        return checked;
    };
    if p.until
        .is_some_and(|u| Instant::now() < u && checked.until.is_none_or(|c| c < u))
    {
        checked.until = p.until;
        checked.restarted_at = p.restarted_at;
    }
    checked
}

/// Where the identity of node `i` (or of one of its shards) is recorded: on every other
/// node for a node, in the same cluster on another shard for a shard. A `MemoryStore`'s
/// only on the other stores: it lives in this process, and its name means another store
/// in the next process (or in a parallel one) that shares the same Redis servers.
fn record_places(
    nodes: &[Arc<Node>],
    i: usize,
    shard: &Option<ShardPlace>,
) -> Vec<(Arc<Node>, String)> {
    let in_process = nodes[i].config().memory;
    match shard {
        Some(s) => s
            .record_key
            .iter()
            .map(|k| (nodes[i].clone(), k.clone()))
            .collect(),
        None => nodes
            .iter()
            .enumerate()
            .filter(|(j, peer)| *j != i && (!in_process || peer.config().memory))
            .map(|(_, peer)| (peer.clone(), RECORDS_KEY.to_string()))
            .collect(),
    }
}

/// The identities recorded as any of `fields` in the hashes at `sources`, and the
/// sources (their indexes) that did not answer.
///
/// Waits for [`enough`] of them, then [`PEER_GRACE`] (or as long again as that took) for
/// the others; nothing waits past [`PEER_WAIT`] or half the `command_timeout`. Enough is what
/// closes the restart hole: a client that held a lock on a quorum including this node
/// recorded the node on the rest of that quorum, at least half of its peers, so any
/// [`enough`] of them include one of those, when they answer within [`PEER_WAIT`]. Slower
/// peers are not heard: a client that meets a restarted node through them alone trusts it
/// (its identity is then recorded only where none was: see [`record`]).
async fn read_records(
    sources: &[(Arc<Node>, String)],
    fields: Option<&[String]>,
    command_timeout: Duration,
) -> (Vec<(String, String)>, Vec<usize>) {
    let mut reads: FuturesUnordered<_> = sources
        .iter()
        .enumerate()
        .map(|(k, (peer, key))| async move { (k, read_record(peer, key, fields).await) })
        .collect();
    let started = Instant::now();
    // (Half the time-out at most: the node's vote in the attempt that waits for this
    // check must still fit in the attempt.)
    let mut until = started + (command_timeout / 2).min(PEER_WAIT);
    let needed = enough(sources.len());
    let mut unread: Vec<usize> = (0..sources.len()).collect();
    let mut known = Vec::new();
    while let Ok(Some((k, record))) = timer::timeout_at(until, reads.next()).await {
        if let Some(record) = record {
            unread.retain(|u| *u != k);
            known.extend(record);
        }
        if sources.len() - unread.len() == needed {
            until = until.min(Instant::now() + PEER_GRACE.max(started.elapsed()));
        }
    }
    (known, unread)
}

/// The fields of the record hash `key` on `peer` and their values: `fields` (those
/// recorded), or all (`None`: a cluster's shards, whose names change with a reshard).
async fn read_record(
    peer: &Node,
    key: &str,
    fields: Option<&[String]>,
) -> Option<Vec<(String, String)>> {
    let Some(fields) = fields else {
        let mut hgetall = redis::cmd("HGETALL");
        hgetall.arg(key);
        let all = peer
            .send::<std::collections::HashMap<String, String>>(&hgetall)
            .await;
        return all.ok().map(|all| all.into_iter().collect());
    };
    let mut hmget = redis::cmd("HMGET");
    hmget.arg(key).arg(fields);
    let values = peer.send::<Vec<Option<String>>>(&hmget).await.ok()?;
    let named = fields.iter().cloned().zip(values);
    Some(named.filter_map(|(f, v)| Some((f, v?))).collect())
}

/// How many of a node's `peers` must answer before the slower ones are given up on: more
/// than the peers outside any quorum that includes the node (`peers` is N - 1 for N
/// nodes; a quorum holds N / 2 of them, rounded down).
fn enough(peers: usize) -> usize {
    let n = peers + 1;
    (peers - n / 2 + 1).min(peers)
}

/// How long the slower peers are waited for at least once enough of them answered.
const PEER_GRACE: Duration = Duration::from_millis(20);
/// The longest wait for the peers' records (a fresh client pays it once per connection
/// when fewer than enough peers answer). Long enough for a peer that is slow, not gone
/// (with 100 ms, peers 40 ms away hid a restart they recorded: two holders); short
/// enough that a frozen minority holds a new client's first acquire up only that long.
const PEER_WAIT: Duration = Duration::from_millis(250);

/// Records `checked` (when given) as the trusted identity of node `i` or of its shard,
/// in the background.
fn record(nodes: &[Arc<Node>], i: usize, checked: Option<Checked>) {
    let Some(c) = checked else { return };
    for (k, (place, key)) in record_places(nodes, i, &c.shard).into_iter().enumerate() {
        // Where the record was not read, only where there is none (`HSETNX`): an older
        // identity there is the evidence of a restart for the next client.
        let commands: Vec<redis::Cmd> = if c.unread.contains(&k) {
            c.fields
                .iter()
                .map(|field| {
                    redis::cmd("HSETNX")
                        .arg(&key)
                        .arg(field)
                        .arg(&c.run_id)
                        .clone()
                })
                .collect()
        } else {
            let mut hset = redis::cmd("HSET");
            hset.arg(&key);
            for field in &c.fields {
                hset.arg(field).arg(&c.run_id);
            }
            vec![hset]
        };
        tokio::spawn(async move {
            let limit = place.config().command_timeout;
            for cmd in commands {
                let _ = timer::timeout(limit, place.send::<i64>(&cmd)).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_reached_over_plain_tcp_is_also_recorded_by_its_peer_address() {
        let reached = id("r", 0, Instant::now()).reached_at("127.0.0.1:7000".parse().ok());
        let named = |host: &str| NodeConfig {
            host: host.into(),
            port: 7000,
            ..NodeConfig::default()
        };
        assert_eq!(fields_of(&named("localhost"), &reached), ["localhost:7000"]);
        assert_eq!(
            fields_of(&named("127.0.0.1"), &reached),
            ["127.0.0.1:7000", "localhost:7000"]
        );
        // Over TLS, one address may serve many servers (SNI): the name given only.
        let tls = NodeConfig {
            tls: Some(Default::default()),
            ..named("db.example.com")
        };
        assert_eq!(fields_of(&tls, &reached), ["db.example.com:7000"]);
        // No address known (the ACL forbade INFO, a MemoryStore): the name given only.
        assert_eq!(
            fields_of(&named("h"), &id("r", 0, Instant::now())),
            ["h:7000"]
        );
    }

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\ntcp_port:6379\r\nuptime_in_seconds:42\r\n";

    fn id(run_id: &str, uptime_s: u64, seen_at: Instant) -> Identity {
        Identity {
            run_id: run_id.into(),
            uptime: Duration::from_secs(uptime_s),
            seen_at,
            promoted: false,
            peer: None,
        }
    }

    #[test]
    fn enough_peers_always_include_one_of_any_quorum() {
        // N nodes: a node has N - 1 peers, a quorum N / 2 + 1 nodes.
        for n in 1..=9usize {
            let peers = n - 1;
            let in_quorum = n / 2; // the node's peers in a quorum that includes it
            let e = enough(peers);
            assert!(e <= peers);
            assert!(peers == 0 || e + in_quorum > peers, "n={n}: {e} of {peers}");
        }
        assert_eq!([enough(0), enough(1), enough(2), enough(4)], [0, 1, 2, 3]);
    }

    #[test]
    fn a_quarantine_survives_a_check_that_cannot_read_the_records() {
        let now = Instant::now();
        let max = Duration::from_secs(300);
        let seen = || Seen {
            identity: id("restarted", 1, now),
            name: "slots 0-8191".into(),
            fields: vec!["slots 0-8191".into()],
            addr: "h:1".into(),
            shard: None,
        };
        // First check: the records name the server before its restart.
        let first = keep_quarantine(judged(seen(), &["before".to_string()], max), None);
        assert!(first.until.is_some());
        // Checked again with the records out of reach: only its own identity is known now.
        let again = judged(seen(), &["restarted".to_string()], max);
        assert_eq!(again.until, None, "on its own it would pass");
        let kept = keep_quarantine(again, Some(first.clone()));
        assert_eq!(kept.until, first.until);
        // Another server in that place now: judged on its own.
        let other = Seen {
            identity: id("other", 1, now),
            ..seen()
        };
        let replaced = keep_quarantine(judged(other, &[], max), Some(first.clone()));
        assert_eq!(replaced.until, None);
        // Left out of a check (no INFO from its master this time): kept while in quarantine.
        let carried = carry_quarantined(vec![], vec![first.clone()], now);
        assert_eq!(carried.len(), 1);
        assert_eq!(carried[0].until, first.until);
        let over = first.until.unwrap() + Duration::from_secs(1);
        assert!(carry_quarantined(vec![], vec![first], over).is_empty());
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
    fn a_promoted_replica_sits_out_for_max_duration_whatever_its_uptime() {
        let now = Instant::now();
        let max = Duration::from_secs(300);
        let promoted = Identity {
            promoted: true,
            ..id("replica", 10_000, now)
        };
        assert_eq!(
            judge(&promoted, &["old-master".to_string()], max, now),
            Verdict::Quarantined { until: now + max }
        );
        assert_eq!(
            judge(&promoted, &["replica".to_string()], max, now),
            Verdict::Trusted,
            "the same master as recorded"
        );
        let info = "# Server\r\nrun_id:r\r\nuptime_in_seconds:9\r\n# Replication\r\nrole:master\r\nsecond_repl_offset:1234\r\n";
        assert!(Identity::parse(info, now).unwrap().promoted);
        assert!(!Identity::parse(INFO, now).unwrap().promoted);
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
