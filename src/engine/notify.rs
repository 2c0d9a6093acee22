//! Release notifications: one pub/sub connection per node, shared by every waiter of the
//! process. A waiter registers a [`Signal`] for the channels of the resources it waits
//! for; each announced release (see `scripts::RELEASE`) stores a wake-up permit in it, so
//! a release that lands while the waiter is busy with an attempt is not missed, unless the
//! attempt's votes show it saw that release already (the other nodes' copies of the one
//! that sent it to the nodes: see [`Signal::settle`]). A waiter is not woken by the
//! cleanup of its own failed attempts.

use crate::engine::sync::Unpoisoned;
use crate::engine::timer;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::Notify;

use crate::engine::config::NodeConfig;
use crate::engine::error::NodeError;
use crate::engine::quorum::Vote;
use crate::engine::scripts::{LEFT_PREFIX, RESERVED_PREFIX};
use crate::engine::value::holder_hash;

/// The waiters registered for a channel: registration id, signal, and the index of the
/// node in the waiter's quorum.
type Listeners = HashMap<String, Vec<(u64, Arc<Signal>, usize)>>;

/// A waiter's wake-up: a permit for each announced release, except of its own value.
#[derive(Default)]
pub struct Signal {
    notify: Notify,
    own: Mutex<Option<String>>,
    /// The waiter's ticket in the nodes' line (see `crate::engine::line`).
    ticket: Mutex<Option<String>>,
    /// What woke the signal, around the waiter's attempts (see [`Signal::settle`]).
    heard: Mutex<Heards>,
}

#[derive(Default)]
struct Heards {
    /// Since the last attempt began, by node index.
    since: Vec<(usize, Heard)>,
    /// The released values heard before the current attempt began (what sent the waiter
    /// to the nodes): later copies of their announcements may be stale.
    before: Vec<u64>,
}

/// What an announcement that woke a waiter said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    /// The lock was released on the node: the hash of the value it had.
    Released(u64),
    /// The lock is kept on the node for the waiter's ticket.
    Reserved,
    /// The connection died, or more was heard than is kept: news whatever the attempt saw.
    News,
}

/// At most this many announcements are told apart during one attempt.
const HEARD_MAX: usize = 32;

impl Signal {
    /// Ignore announcements of releases of `value` (the waiter's own cleanups).
    pub fn set_own(&self, value: Option<String>) {
        *self.own.locked() = value;
    }

    /// Of the releases that keep the lock for a ticket, only those for `ticket` wake.
    pub fn set_ticket(&self, ticket: Option<String>) {
        *self.ticket.locked() = ticket;
    }

    /// A release announced by the waiter's node `node`.
    fn announce(&self, node: usize, value: &[u8]) {
        let heard = if let Some(for_ticket) = value.strip_prefix(RESERVED_PREFIX.as_bytes()) {
            (self.ticket.locked().as_deref().map(str::as_bytes) == Some(for_ticket))
                .then_some(Heard::Reserved)
        } else if let Some(ticket) = value.strip_prefix(LEFT_PREFIX.as_bytes()) {
            // Freed where it was kept for a ticket that left: it held that reservation.
            let kept = [RESERVED_PREFIX.as_bytes(), ticket].concat();
            Some(Heard::Released(holder_hash(&kept)))
        } else {
            (self.own.locked().as_deref().map(str::as_bytes) != Some(value))
                .then(|| Heard::Released(holder_hash(value)))
        };
        if let Some(heard) = heard {
            self.hear(node, heard);
        }
    }

    /// Wakes the waiter whatever the release (the connection died: silence means nothing).
    fn wake(&self) {
        self.hear(0, Heard::News);
    }

    /// Stores a wake-up (under the lock of what was heard, so that [`Signal::settle`]
    /// never drops one it did not judge).
    fn hear(&self, node: usize, heard: Heard) {
        let mut heards = self.heard.locked();
        if heards.since.len() < HEARD_MAX {
            heards.since.push((node, heard));
        } else {
            heards.since[HEARD_MAX - 1] = (node, Heard::News);
        }
        self.notify.notify_one();
    }

    /// The waiter's attempt begins: what was announced before is stale (each node that
    /// announced a release had made it before it gets the attempt's command), so its
    /// stored wake-up goes; the released values heard are kept for [`Signal::settle`].
    pub fn attempting(&self) {
        let mut heards = self.heard.locked();
        let Heards { since, before } = &mut *heards;
        before.clear();
        if since.is_empty() {
            return; // every stored wake-up was heard (and is in `since`): none to drop
        }
        before.extend(since.drain(..).filter_map(|(_, heard)| match heard {
            Heard::Released(value) => Some(value),
            _ => None,
        }));
        self.forget();
    }

    /// The waiter's attempt was lost, with these votes and holders (hashes of the values
    /// that the nodes found, see [`crate::engine::votes`]; `lined`: a line acquire's,
    /// which put the waiter's ticket in the line of every node that voted against).
    ///
    /// Each node announces a release, so one release wakes a waiter up to once per node:
    /// the first copy sends it to the nodes, and the later ones, which land during that
    /// attempt, would send it again for nothing. So a wake-up stored during the attempt
    /// goes when everything heard meanwhile was known to the attempt:
    /// * a copy of a release heard before the attempt began, from a node whose vote shows
    ///   that the release came first there: the node voted for, or found another holder
    ///   than the released value (named by a `SET NX GET` or a line acquire; for a line
    ///   acquire, also the lock free but another ticket first: a release after its
    ///   command would keep the lock for the first ticket of a line that holds this
    ///   waiter's, and say so);
    /// * the lock kept for the waiter's ticket on a node where the attempt took it.
    ///
    /// Anything else keeps it: the next attempt may win there (a release the attempt did
    /// not see: the released value still there, or a value heard for the first time; a
    /// vote against that names no holder, as a lock script's; no answer; a dead
    /// connection).
    pub fn settle(&self, votes: &[Option<Vote>], holders: &[Option<u64>], lined: bool) {
        let heards = self.heard.locked();
        let voted_for = |node: usize| matches!(votes.get(node), Some(Some(Vote::For)));
        let news = heards.since.iter().any(|&(node, heard)| match heard {
            Heard::News => true,
            Heard::Reserved => !voted_for(node),
            Heard::Released(value) if !heards.before.contains(&value) => true,
            Heard::Released(value) => match (votes.get(node), holders.get(node)) {
                (Some(Some(Vote::For)), _) => false,
                (Some(Some(Vote::Locked)), Some(Some(holder))) => *holder == value,
                (Some(Some(Vote::Locked)), Some(None)) => !lined,
                _ => true,
            },
        });
        if !news {
            self.forget();
        }
    }

    /// Waits for the next permit.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Drops a permit stored while nobody waited (a wake-up for a release that is past).
    pub fn forget(&self) {
        use futures::FutureExt;
        let _ = self.notify.notified().now_or_never();
    }
}

/// The pub/sub side of one node.
pub struct Subscriber {
    /// The server's pub/sub connection; `None` for an in-process node (a `MemoryStore`),
    /// which announces releases by calling [`Subscriber::dispatch`] itself.
    sink: Option<PubSubSink>,
    listeners: Mutex<Listeners>,
    /// The channels subscribed on the server. Subscribing and unsubscribing happen under
    /// this lock, so they are never reordered against each other.
    subscribed: tokio::sync::Mutex<HashSet<String>>,
    alive: AtomicBool,
    next_id: AtomicU64,
    command_timeout: std::time::Duration,
    /// Ends the task that reads the connection, and so the connection (see [`Subscriber::close`]).
    closing: Arc<Notify>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.close();
    }
}

impl Subscriber {
    /// Closes the pub/sub connection: its reading task ends (at once, not at the next
    /// message) and drops it. Done by `quit()`, and when the last user lets go.
    pub fn close(&self) {
        self.closing.notify_one();
    }

    /// Connects with `connect` (within the connect time-out) and starts dispatching
    /// messages.
    pub async fn connect(
        connect: impl std::future::Future<Output = redis::RedisResult<redis::aio::PubSub>>,
        config: &NodeConfig,
    ) -> Result<Arc<Self>, NodeError> {
        let fail = |reason: String| NodeError::Connect {
            addr: config.addr(),
            reason,
        };
        let pubsub = timer::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| fail("no pub/sub connection within connectTimeout".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let (sink, mut stream) = pubsub.split();
        let subscriber = Self::new(Some(sink), config.command_timeout);
        let weak: Weak<Subscriber> = Arc::downgrade(&subscriber);
        let closing = subscriber.closing.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    msg = stream.next() => msg,
                    _ = closing.notified() => None,
                };
                let Some(msg) = msg else { break };
                let Some(this) = weak.upgrade() else { break };
                this.dispatch(msg.get_channel_name(), msg.get_payload_bytes());
            }
            if let Some(this) = weak.upgrade() {
                this.alive.store(false, Ordering::Release);
                // Wake everyone: their next attempt tells them more than silence would.
                for list in this.lock().values() {
                    list.iter().for_each(|(_, n, _)| n.wake());
                }
            }
        });
        Ok(subscriber)
    }

    /// The pub/sub side of an in-process node: always alive, nothing to subscribe to.
    pub fn local(command_timeout: std::time::Duration) -> Arc<Self> {
        Self::new(None, command_timeout)
    }

    fn new(sink: Option<PubSubSink>, command_timeout: std::time::Duration) -> Arc<Self> {
        Arc::new(Subscriber {
            sink,
            listeners: Mutex::new(HashMap::new()),
            subscribed: tokio::sync::Mutex::new(HashSet::new()),
            alive: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
            command_timeout,
            closing: Arc::new(Notify::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Listeners> {
        self.listeners.locked()
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Announces a release of `value` on `channel` to the waiters registered for it.
    pub fn dispatch(&self, channel: &str, value: &[u8]) {
        if let Some(list) = self.lock().get(channel) {
            list.iter()
                .for_each(|(_, s, node)| s.announce(*node, value));
        }
    }

    /// Registers `signal` for `channels` (this being node `node` of the waiter's quorum)
    /// and makes sure the server sends them to us. The returned guard unregisters (and
    /// unsubscribes what is no longer needed).
    pub async fn watch(
        self: &Arc<Self>,
        channels: &[String],
        signal: Arc<Signal>,
        node: usize,
    ) -> Result<Watch, NodeError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut listeners = self.lock();
            for c in channels {
                listeners
                    .entry(c.clone())
                    .or_default()
                    .push((id, signal.clone(), node));
            }
        }
        // From here on, dropping the guard undoes the registration.
        let watch = Watch {
            subscriber: self.clone(),
            id,
            channels: channels.to_vec(),
        };
        if !self.is_alive() {
            // It died between the caller's check and the registration, after waking the
            // listeners it had: wake this one too, so that it subscribes again.
            signal.wake();
        }
        if self.sink.is_none() {
            return Ok(watch);
        }
        // On a task of its own: a caller that stops waiting (an aborted acquire) must not
        // cut the SUBSCRIBE from its bookkeeping, or the channel stays subscribed for good,
        // never pruned (found by an audit: one channel more per such abort).
        let (this, channels) = (self.clone(), channels.to_vec());
        let subscribing = tokio::spawn(async move { this.subscribe(&channels).await });
        subscribing.await.unwrap_or_else(|_| {
            Err(NodeError::Command {
                addr: String::new(),
                reason: "the subscription ended".into(),
            })
        })?;
        Ok(watch)
    }

    /// Subscribes to those of `channels` not subscribed yet that someone still listens to
    /// (its caller may have stopped waiting while an earlier subscription was answered),
    /// and notes them.
    async fn subscribe(&self, channels: &[String]) -> Result<(), NodeError> {
        let Some(sink) = &self.sink else {
            return Ok(());
        };
        let mut subscribed = self.subscribed.lock().await;
        let fresh: Vec<&String> = {
            let listeners = self.lock();
            channels
                .iter()
                .filter(|c| !subscribed.contains(*c) && listeners.contains_key(*c))
                .collect()
        };
        if !fresh.is_empty() {
            let mut sink = sink.clone();
            let timeout = || NodeError::Timeout {
                addr: String::new(),
                ms: self.command_timeout.as_millis() as u64,
            };
            let answer = timer::timeout(self.command_timeout, sink.subscribe(&fresh)).await;
            if let Ok(Err(e)) = answer {
                return Err(NodeError::Command {
                    addr: String::new(),
                    reason: e.to_string(),
                });
            }
            // Subscribed, or still on its way (no answer in time): noted either way, so
            // that a prune takes it back once nobody listens.
            subscribed.extend(fresh.into_iter().cloned());
            if answer.is_err() {
                return Err(timeout());
            }
        }
        Ok(())
    }

    /// Unsubscribes from the channels nobody listens to any more.
    async fn prune(&self) {
        let mut subscribed = self.subscribed.lock().await;
        let unused: Vec<String> = {
            let listeners = self.lock();
            subscribed
                .iter()
                .filter(|c| !listeners.contains_key(*c))
                .cloned()
                .collect()
        };
        let Some(sink) = &self.sink else { return };
        if unused.is_empty() || !self.is_alive() {
            return;
        }
        let mut sink = sink.clone();
        if let Ok(Ok(())) = timer::timeout(self.command_timeout, sink.unsubscribe(&unused)).await {
            unused.iter().for_each(|c| {
                subscribed.remove(c);
            });
        }
    }
}

/// A registration of a waiter's signal; dropping it unregisters.
pub struct Watch {
    subscriber: Arc<Subscriber>,
    id: u64,
    channels: Vec<String>,
}

impl Watch {
    /// Whether its pub/sub connection still delivers.
    pub fn is_alive(&self) -> bool {
        self.subscriber.is_alive()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let emptied = {
            let mut listeners = self.subscriber.lock();
            let mut emptied = false;
            for c in &self.channels {
                if let Some(list) = listeners.get_mut(c) {
                    list.retain(|(id, _, _)| *id != self.id);
                    if list.is_empty() {
                        listeners.remove(c);
                        emptied = true;
                    }
                }
            }
            emptied
        };
        if emptied {
            let subscriber = self.subscriber.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { subscriber.prune().await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn forget_drops_a_stored_wake_up_and_leaves_later_ones() {
        let s = Signal::default();
        s.wake();
        s.forget();
        assert!(
            s.notified().now_or_never().is_none(),
            "the stored wake-up is gone"
        );
        s.forget(); // nothing stored: nothing happens
        s.wake();
        assert!(
            s.notified().now_or_never().is_some(),
            "a later wake-up still wakes"
        );
    }

    /// A signal for a waiter with `ticket` woken by the release of `v` (node 0's copy),
    /// after its attempt began, and what nodes announced during it.
    fn heard_during_attempt(ticket: &str, announced: &[(usize, &str)]) -> Signal {
        let s = Signal::default();
        s.set_ticket(Some(ticket.into()));
        s.announce(0, b"v");
        assert!(woken(&s));
        s.announce(1, b"v"); // a copy before the attempt: stale
        s.attempting();
        for (node, value) in announced {
            s.announce(*node, value.as_bytes());
        }
        s
    }

    fn woken(s: &Signal) -> bool {
        s.notified().now_or_never().is_some()
    }

    /// Whether `s` still wakes its waiter after its attempt was lost with `votes` (one
    /// character a node: `F` for, `L` against, `?` no answer) and `holders`.
    fn woken_after(s: &Signal, votes: &str, holders: [Option<u64>; 3], lined: bool) -> bool {
        let votes: Vec<Option<Vote>> = votes
            .chars()
            .map(|c| match c {
                'F' => Some(Vote::For),
                'L' => Some(Vote::Locked),
                _ => None,
            })
            .collect();
        s.settle(&votes, &holders, lined);
        woken(s)
    }

    #[tokio::test]
    async fn copies_of_a_release_the_attempt_saw_do_not_wake_again() {
        let (v, w) = (holder_hash(b"v"), holder_hash(b"w"));
        // Nodes 1 and 2 announce the release of v again; the attempt found w on node 1
        // (another waiter took the lock after the release) and on node 2 the lock free
        // but another ticket first in line: nothing new, the wake-up goes.
        let s = heard_during_attempt("t", &[(1, "v"), (2, "v")]);
        assert!(
            !woken_after(&s, "LLL", [Some(w), Some(w), None], true),
            "copies of a release the attempt came after"
        );
        // A lock script's vote against names no holder: the release may have come after.
        let s = heard_during_attempt("t", &[(2, "v")]);
        assert!(
            woken_after(&s, "LLL", [None; 3], false),
            "an unnamed holder"
        );
        // Node 2 still held v when the attempt got there: its release is news.
        let s = heard_during_attempt("t", &[(1, "v"), (2, "v")]);
        assert!(
            woken_after(&s, "LLL", [Some(w), Some(w), Some(v)], true),
            "a release after the attempt's command"
        );
        // A node that did not answer may have released after it.
        let s = heard_during_attempt("t", &[(1, "v")]);
        assert!(
            woken_after(&s, "F?L", [None, None, Some(w)], true),
            "no answer: news"
        );
    }

    #[tokio::test]
    async fn the_lock_kept_for_the_ticket_wakes_where_the_attempt_did_not_take_it() {
        let w = holder_hash(b"w");
        let reserved = format!("{RESERVED_PREFIX}t");
        let s = heard_during_attempt("t", &[(0, &reserved)]);
        assert!(
            !woken_after(&s, "FLL", [None, Some(w), Some(w)], true),
            "kept for the ticket where the attempt took it"
        );
        let s = heard_during_attempt("t", &[(0, &reserved), (1, &reserved)]);
        assert!(
            woken_after(&s, "FLL", [None, Some(w), Some(w)], true),
            "kept for the ticket after the attempt's command"
        );
    }

    #[tokio::test]
    async fn a_release_heard_first_during_the_attempt_is_news() {
        let w = holder_hash(b"w");
        // The value may have replaced the holder the node named after the attempt's
        // command, as a hand-over does, without an announcement.
        let s = heard_during_attempt("t", &[(1, "x")]);
        assert!(
            woken_after(&s, "LLL", [Some(w); 3], true),
            "a value not heard before the attempt"
        );
        // The next attempt judges the copies of what came before it, this one's included.
        s.attempting();
        s.announce(2, b"x");
        assert!(
            !woken_after(&s, "LLL", [Some(w); 3], true),
            "a copy of the release heard before this attempt"
        );
        // A lock freed where it was kept for a ticket that left: it held the reservation,
        // and a node whose vote still found that reservation freed it after the attempt.
        let s = Signal::default();
        s.announce(0, format!("{LEFT_PREFIX}x").as_bytes());
        assert!(woken(&s), "a freed lock wakes a waiter without a ticket");
        s.announce(1, format!("{LEFT_PREFIX}x").as_bytes());
        s.attempting();
        s.announce(2, format!("{LEFT_PREFIX}x").as_bytes());
        let kept = holder_hash(format!("{RESERVED_PREFIX}x").as_bytes());
        assert!(
            woken_after(&s, "FLL", [None, Some(w), Some(kept)], false),
            "still kept for the ticket when the attempt got there"
        );
    }

    #[tokio::test]
    async fn a_dead_connection_is_news_and_what_came_before_the_attempt_is_not() {
        let w = holder_hash(b"w");
        let s = heard_during_attempt("t", &[]);
        s.wake();
        assert!(
            woken_after(&s, "FFL", [None, None, Some(w)], true),
            "a dead connection"
        );
        let s = heard_during_attempt("t", &[]);
        assert!(!woken(&s), "announced before the attempt");
        assert!(!woken_after(&s, "LLL", [Some(w); 3], true));
    }
}
