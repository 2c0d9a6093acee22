//! One attempt's requests to the nodes, and their answers as votes.
//!
//! Every node gets the attempt's command. A node whose connection is up and takes it at
//! once (a lean connection: one server, or the master the sentinels name, over plain TCP
//! or TLS) and that needs no identity check first gets it right away, with nothing but
//! its reply to wait for; one [`Votes`] stream reads the answers of all of them, with no
//! future per node (on a lock's hot path, the future of each node's request cost more of
//! the JavaScript thread than the request itself: `benchmark/README.md`). Everything else
//! goes the node's usual way, [`Node::send`] and [`Node::eval`], in a future of its
//! own: a node connecting or to be checked (restart safety), a dropped connection (the
//! request sent again on a new one), a script to load again, a Cluster, a `MemoryStore`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::Stream;
use redis::{Cmd, RedisResult, Value};

use crate::engine::error::NodeError;
use crate::engine::kinds::{read_reply, Commands, Op, Reply};
use crate::engine::node::{Node, Sent};
use crate::engine::quorum::Vote;
use crate::engine::trust::Trust;
use crate::engine::value::holder_hash;

/// A node's answer: its vote, the fencing counter it read, the semaphore slot it took, and
/// for a `SET NX GET` that found the key held, a hash of the holder's value.
pub type Answer = (Vote, Option<i64>, Option<u32>, Option<u64>);

/// The holder's hash of a vote against by an owner whose value is not known (an extend
/// that found another value).
const OTHER_OWNER: u64 = 0;

/// The holder of a vote against where a lock script met a key of another type (a hash
/// named like the resource, or one of the library's own keys overwritten): what the script
/// set before that error stays, so the attempt's cleanup goes there too (see
/// [`not_a_lock`]).
pub const WRONG_TYPE: u64 = 1;

/// What a node is asked, and so how its reply reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum How {
    /// The plain `SET NX PX GET` of a single-resource acquire.
    Set,
    /// The attempt's lock script.
    Script,
    /// The lock script of an acquire that honours the waiting line.
    Line,
}

enum Request {
    /// Sent at once: the reply to come, and the node's identity epoch before it was sent.
    Sent {
        sent: Sent,
        how: How,
        epoch: u64,
    },
    /// On the node's usual way.
    Usual(BoxFuture<'static, Answer>),
    Answered,
}

/// The requests of one attempt still under way, by node index: a stream of the nodes'
/// answers in the order they come.
pub struct Votes {
    requests: Vec<Request>,
    left: usize,
    nodes: Arc<Vec<Arc<Node>>>,
    trust: Arc<Trust>,
    commands: Arc<Commands>,
    op: Op,
    /// Whether a node must be trusted not to have forgotten locks to vote (acquires with
    /// restart safety: see [`Trust`]).
    checked: bool,
}

impl Votes {
    /// Sends `commands` to every node. The requests own what they use, so that the
    /// stragglers of a won attempt can finish in the background.
    pub fn send(
        nodes: &Arc<Vec<Arc<Node>>>,
        trust: &Arc<Trust>,
        op: Op,
        commands: &Arc<Commands>,
        checked: bool,
    ) -> Votes {
        let mut votes = Votes {
            requests: Vec::with_capacity(nodes.len()),
            left: nodes.len(),
            nodes: nodes.clone(),
            trust: trust.clone(),
            commands: commands.clone(),
            op,
            checked,
        };
        for i in 0..nodes.len() {
            let request = votes
                .send_now(i)
                .unwrap_or_else(|| Request::Usual(votes.usual(i)));
            votes.requests.push(request);
        }
        votes
    }

    /// Whether every node answered.
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// The request to node `i`, sent at once when the node takes it without waiting.
    fn send_now(&self, i: usize) -> Option<Request> {
        let node = &self.nodes[i];
        let epoch = node.identity_epoch();
        if self.checked {
            if let Err(e) = self.trust.admit_now(&self.nodes, i)? {
                return Some(Request::Usual(Box::pin(std::future::ready(failed(e)))));
            }
        }
        let (cmd, how) = first_request(node, &self.commands);
        let sent = node.send_now(cmd)?;
        Some(Request::Sent { sent, how, epoch })
    }

    /// The request to node `i` the usual way: the node connected and checked first when
    /// needed, and the request sent again on a new connection after a drop.
    fn usual(&self, i: usize) -> BoxFuture<'static, Answer> {
        let (nodes, trust, commands) = (
            self.nodes.clone(),
            self.trust.clone(),
            self.commands.clone(),
        );
        let (op, checked) = (self.op, self.checked);
        Box::pin(async move {
            let node = &nodes[i];
            let admit = || trust.admit(&nodes, i, || commands.hash_slot());
            if checked {
                if let Err(e) = admit().await {
                    return failed(e);
                }
            }
            let epoch = node.identity_epoch();
            let answer = node_vote(node, op, &commands).await;
            // Reconnected meanwhile (the request was sent again): check the server that
            // answered.
            if checked && node.identity_epoch() != epoch {
                if let Err(e) = admit().await {
                    return failed(e);
                }
            }
            // A cluster's failover moves a slot to another master without a connection
            // dropped (MOVED is followed): the master that voted for it is the one checked.
            if checked && answer.0 == Vote::For && node.config().cluster.is_some() {
                if let Some(key) = commands.first_key() {
                    if let Err(e) = trust.same_master(&nodes, i, key).await {
                        return failed(e);
                    }
                }
            }
            answer
        })
    }

    /// Node `i`'s answer to a request sent at once; `None` when the request goes the
    /// usual way after all (sent again).
    fn landed(
        &self,
        i: usize,
        sent: &Sent,
        how: How,
        epoch: u64,
        result: RedisResult<Value>,
    ) -> Option<Answer> {
        let node = &self.nodes[i];
        // Connected again since it was checked: the server that answered may not be the
        // one checked.
        if self.checked && node.identity_epoch() != epoch {
            return None;
        }
        let c = &*self.commands;
        match how {
            How::Set => set_answer(node, c, node.landed(sent, result)?),
            _ => Some(script_answer(
                node,
                self.op,
                c,
                how,
                node.landed(sent, result)?,
            )),
        }
    }
}

impl Stream for Votes {
    type Item = (usize, Answer);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        for i in 0..this.requests.len() {
            loop {
                let answer = match std::mem::replace(&mut this.requests[i], Request::Answered) {
                    Request::Answered => break,
                    Request::Usual(mut f) => match f.as_mut().poll(cx) {
                        Poll::Ready(answer) => answer,
                        Poll::Pending => {
                            this.requests[i] = Request::Usual(f);
                            break;
                        }
                    },
                    Request::Sent {
                        mut sent,
                        how,
                        epoch,
                    } => match Pin::new(&mut sent).poll(cx) {
                        Poll::Pending => {
                            this.requests[i] = Request::Sent { sent, how, epoch };
                            break;
                        }
                        Poll::Ready(result) => match this.landed(i, &sent, how, epoch, result) {
                            Some(answer) => answer,
                            None => {
                                this.requests[i] = Request::Usual(this.usual(i));
                                continue;
                            }
                        },
                    },
                };
                this.left -= 1;
                return Poll::Ready(Some((i, answer)));
            }
        }
        Poll::Pending
    }
}

/// What node is asked first: the attempt's lock script, or for a single-resource acquire
/// the plain `SET NX PX GET` where the node takes it.
fn first_request<'c>(node: &Node, c: &'c Commands) -> (&'c Cmd, How) {
    if c.reply == Reply::Line {
        return (&c.cmd, How::Line);
    }
    match c.fast.as_ref().filter(|_| node.has_set_nx_get()) {
        Some(set) => (set, How::Set),
        None => (&c.cmd, How::Script),
    }
}

/// One node's vote on `op` the usual way (see [`first_request`]): with the fencing counter
/// the node read and the semaphore slot it took.
async fn node_vote(node: &Node, op: Op, c: &Commands) -> Answer {
    let (cmd, how) = first_request(node, c);
    if how == How::Set {
        if let Some(answer) = set_answer(node, c, node.send(cmd).await) {
            return answer;
        }
    }
    // The lock script (also where the node refused `SET NX PX GET`).
    let how = if how == How::Set { How::Script } else { how };
    script_answer(node, op, c, how, node.eval(c.script, &c.cmd).await)
}

/// The answer to a `SET NX PX GET`; `None` when the node refused it (it is marked, and
/// gets the lock script instead).
fn set_answer(
    node: &Node,
    c: &Commands,
    reply: Result<Option<Vec<u8>>, NodeError>,
) -> Option<Answer> {
    Some(match reply {
        // Set, or already ours (a resend after a dropped connection).
        Ok(None) => (Vote::For, None, None, None),
        Ok(Some(v)) if v == c.value.as_bytes() => (Vote::For, None, None, None),
        Ok(Some(v)) => (Vote::Locked, None, None, Some(holder_hash(&v))),
        Err(e) if e.is_syntax_error() => {
            node.lacks_set_nx_get();
            return None;
        }
        // (Nothing was set: the one key is another type.)
        Err(e) if wrong_type(&e) => (Vote::Locked, None, None, Some(OTHER_OWNER)),
        Err(e) => failed(e),
    })
}

/// A key of another type where the lock's key would be (the resource's name is a hash or
/// a list's too): the lock is not ours there, as when another owner holds it, and not a
/// node failure (found by an audit: `acquireLock` answered `null`, and `'clientError'`
/// fired, where node-redlock, whose scripts ask only whether the key exists, says
/// locked). A release has nothing of ours to remove there. A script may have set keys
/// before it met the key of another type (a fenced acquire's counter is read after the
/// lock is set; found by a regression hunt): its holder is [`WRONG_TYPE`].
fn not_a_lock(op: Op, e: &NodeError) -> Option<Answer> {
    wrong_type(e).then_some(match op {
        Op::Release => (Vote::For, None, None, None),
        _ => (Vote::Locked, None, None, Some(WRONG_TYPE)),
    })
}

/// Whether `e` is a server's `WRONGTYPE` (a key of another type where a lock's would be).
fn wrong_type(e: &NodeError) -> bool {
    matches!(e, NodeError::Reply { line, .. } if line.contains("WRONGTYPE"))
}

/// The answer to a lock script (`how`: a line-honouring acquire's, against with the
/// holder's hash when the lock is held and with none when another waiter is first).
fn script_answer(
    node: &Node,
    op: Op,
    c: &Commands,
    how: How,
    reply: Result<Value, NodeError>,
) -> Answer {
    use redis::Value::{BulkString, Int};
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => return not_a_lock(op, &e).unwrap_or_else(|| failed(e)),
    };
    if how == How::Line {
        return match reply {
            Int(1) => (Vote::For, None, None, None),
            BulkString(v) => {
                let holder = (!v.is_empty()).then(|| holder_hash(&v));
                (Vote::Locked, None, None, holder)
            }
            _ => failed(unexpected(node, "a line acquire reply")),
        };
    }
    // An extend refused because another owner holds a key (0) names that owner (its value
    // unknown: [`OTHER_OWNER`]); refused because the lock is gone (-1), nobody.
    let holder = (matches!(op, Op::Extend { .. }) && reply == Int(0)).then_some(OTHER_OWNER);
    match read_reply(op, c.reply, &reply) {
        Some((vote, counter, slot)) => (vote, counter, slot, holder),
        None => failed(unexpected(node, "a lock script reply")),
    }
}

fn failed(e: NodeError) -> Answer {
    (Vote::Failed(e), None, None, None)
}

fn unexpected(node: &Node, what: &str) -> NodeError {
    NodeError::Protocol {
        addr: node.addr().to_string(),
        reason: format!("not {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kinds::Kind;
    use crate::engine::memory::MemoryStore;
    use crate::engine::settings::Settings;
    use futures::StreamExt;
    use std::time::Duration;

    fn nodes(n: usize) -> (Vec<Arc<MemoryStore>>, Arc<Vec<Arc<Node>>>) {
        let t = Duration::from_millis(200);
        let stores: Vec<_> = (0..n)
            .map(|i| MemoryStore::new(format!("votes-{i}"), t))
            .collect();
        let nodes = stores.iter().map(|s| Node::memory(s.clone(), t)).collect();
        (stores, Arc::new(nodes))
    }

    fn acquire(value: &str) -> Arc<Commands> {
        let op = Op::Acquire { ttl_ms: 10_000 };
        let r = ["votes-key".to_string()];
        Arc::new(Commands::build(
            op,
            Kind::Mutex,
            &r,
            value,
            &Settings::default(),
        ))
    }

    #[test]
    fn a_set_reply_is_for_when_set_or_already_ours_and_names_another_holder() {
        let (_stores, nodes) = nodes(1);
        let (node, c) = (&nodes[0], acquire("mine"));
        let vote = |reply| set_answer(node, &c, reply).map(|(v, _, _, holder)| (v, holder));
        assert_eq!(vote(Ok(None)), Some((Vote::For, None)));
        assert_eq!(vote(Ok(Some(b"mine".to_vec()))), Some((Vote::For, None)));
        let theirs = vote(Ok(Some(b"theirs".to_vec()))).unwrap();
        assert_eq!(theirs, (Vote::Locked, Some(holder_hash(b"theirs"))));
        assert_ne!(holder_hash(b"theirs"), holder_hash(b"others"));
        let refused = NodeError::Command {
            addr: node.addr(),
            reason: "ERR syntax error".into(),
        };
        assert_eq!(
            vote(Err(refused)),
            None,
            "a refusal goes to the lock script"
        );
        let timeout = NodeError::Timeout {
            addr: node.addr(),
            ms: 5,
        };
        assert!(matches!(vote(Err(timeout)), Some((Vote::Failed(_), None))));
    }

    #[test]
    fn a_line_reply_is_for_or_against_with_the_holder_when_there_is_one() {
        use redis::Value::{BulkString, Int, Nil};
        let (_stores, nodes) = nodes(1);
        let (node, c) = (&nodes[0], acquire("mine"));
        let op = Op::Acquire { ttl_ms: 10_000 };
        let vote = |reply| {
            let (v, _, _, holder) = script_answer(node, op, &c, How::Line, Ok(reply));
            (v, holder)
        };
        assert_eq!(vote(Int(1)), (Vote::For, None));
        assert_eq!(vote(BulkString(Vec::new())), (Vote::Locked, None));
        let held = vote(BulkString(b"theirs".to_vec()));
        assert_eq!(held, (Vote::Locked, Some(holder_hash(b"theirs"))));
        assert!(matches!(
            vote(Nil).0,
            Vote::Failed(NodeError::Protocol { .. })
        ));
    }

    #[tokio::test]
    async fn every_node_answers_once_in_the_order_answers_come() {
        let (stores, nodes) = nodes(3);
        stores[1].down();
        let trust = Arc::new(Trust::new(3, Duration::from_secs(300)));
        let op = Op::Acquire { ttl_ms: 10_000 };
        let mut votes = Votes::send(&nodes, &trust, op, &acquire("v"), false);
        assert!(!votes.is_empty());
        let mut seen = Vec::new();
        while let Some((i, (vote, ..))) = votes.next().await {
            seen.push((i, matches!(vote, Vote::For)));
        }
        seen.sort();
        assert_eq!(seen, vec![(0, true), (1, false), (2, true)]);
        assert!(votes.is_empty());
        assert!(votes.next().await.is_none());
    }
}
