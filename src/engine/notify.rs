//! Release notifications: one pub/sub connection per node, shared by every waiter of the
//! process. A waiter registers a [`Signal`] for the channels of the resources it waits
//! for; each announced release (see `scripts::RELEASE`) stores a wake-up permit in it, so
//! a release that lands while the waiter is busy with an attempt is not missed. A waiter
//! is not woken by the cleanup of its own failed attempts.

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
use crate::engine::scripts::RESERVED_PREFIX;

type Listeners = HashMap<String, Vec<(u64, Arc<Signal>)>>;

/// A waiter's wake-up: a permit for each announced release, except of its own value.
#[derive(Default)]
pub struct Signal {
    notify: Notify,
    own: Mutex<Option<String>>,
    /// The waiter's ticket in the nodes' line (see `crate::engine::line`).
    ticket: Mutex<Option<String>>,
}

impl Signal {
    /// Ignore announcements of releases of `value` (the waiter's own cleanups).
    pub fn set_own(&self, value: Option<String>) {
        *self.own.locked() = value;
    }

    /// Of the releases that keep the lock for a ticket, only those for `ticket` wake.
    pub fn set_ticket(&self, ticket: Option<String>) {
        *self.ticket.locked() = ticket;
    }

    fn announce(&self, value: &[u8]) {
        let wake = match value.strip_prefix(RESERVED_PREFIX.as_bytes()) {
            Some(for_ticket) => {
                self.ticket.locked().as_deref().map(str::as_bytes) == Some(for_ticket)
            }
            None => self.own.locked().as_deref().map(str::as_bytes) != Some(value),
        };
        if wake {
            self.notify.notify_one();
        }
    }

    /// Wakes the waiter whatever the release (the connection died: silence means nothing).
    fn wake(&self) {
        self.notify.notify_one();
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
                    list.iter().for_each(|(_, n)| n.wake());
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
            list.iter().for_each(|(_, s)| s.announce(value));
        }
    }

    /// Registers `signal` for `channels` and makes sure the server sends them to us. The
    /// returned guard unregisters (and unsubscribes what is no longer needed).
    pub async fn watch(
        self: &Arc<Self>,
        channels: &[String],
        signal: Arc<Signal>,
    ) -> Result<Watch, NodeError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut listeners = self.lock();
            for c in channels {
                listeners
                    .entry(c.clone())
                    .or_default()
                    .push((id, signal.clone()));
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
        let Some(sink) = &self.sink else {
            return Ok(watch);
        };
        let mut subscribed = self.subscribed.lock().await;
        let fresh: Vec<&String> = channels
            .iter()
            .filter(|c| !subscribed.contains(*c))
            .collect();
        if !fresh.is_empty() {
            let mut sink = sink.clone();
            let timeout = || NodeError::Timeout {
                addr: String::new(),
                ms: self.command_timeout.as_millis() as u64,
            };
            timer::timeout(self.command_timeout, sink.subscribe(&fresh))
                .await
                .map_err(|_| timeout())?
                .map_err(|e| NodeError::Command {
                    addr: String::new(),
                    reason: e.to_string(),
                })?;
            subscribed.extend(fresh.into_iter().cloned());
        }
        Ok(watch)
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
                    list.retain(|(id, _)| *id != self.id);
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
}
