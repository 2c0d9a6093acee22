//! The in-process [`MemoryStore`] as a node's [`Backend`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::{within, Backend, Reply};
use crate::engine::error::NodeError;
use crate::engine::identity::Identity;
use crate::engine::memory::MemoryStore;
use crate::engine::notify::Subscriber;
use crate::engine::scripts::LockScript;
use crate::engine::shards::Shard;

/// The store as a node's [`Backend`] (see [`Node::memory`](crate::engine::node::Node::memory)):
/// it answers every command itself, and a reply the caller cannot read is a `Protocol`
/// error.
pub struct MemoryBackend(pub Arc<MemoryStore>);

impl Backend for MemoryBackend {
    fn addr(&self) -> String {
        self.0.addr()
    }

    fn ensure_connected(&self) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move { self.0.check() })
    }

    fn identity(&self) -> Option<Identity> {
        let (run_id, uptime) = self.0.identity();
        Some(Identity {
            run_id,
            uptime: Duration::from_secs(uptime.as_secs()),
            seen_at: Instant::now(),
            promoted: false,
            peer: None,
        })
    }

    fn identity_epoch(&self) -> u64 {
        self.0.identity_epoch()
    }

    /// Not a cluster: no shards.
    fn cluster_shards(&self) -> BoxFuture<'_, Result<Option<Vec<Shard>>, NodeError>> {
        Box::pin(async move { self.0.check().map(|()| Some(Vec::new())) })
    }

    fn command<'a>(
        &'a self,
        cmd: &'a redis::Cmd,
        wait: Option<Duration>,
        reply: Reply<'a>,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            let value = match wait {
                None => self.0.execute(cmd).await?,
                // A command that times out (a paused store) still runs when the pause ends,
                // as one sent to a stopped server does when it resumes.
                Some(_) => {
                    let (store, cmd) = (self.0.clone(), cmd.clone());
                    let run = tokio::spawn(async move { store.execute(&cmd).await });
                    let ran = within(wait, run, || self.0.addr()).await?;
                    ran.map_err(|e| NodeError::Protocol {
                        addr: self.0.addr(),
                        reason: e.to_string(),
                    })??
                }
            };
            reply(value).map_err(|e| NodeError::Protocol {
                addr: self.0.addr(),
                reason: e.to_string(),
            })
        })
    }

    /// The lock scripts are native here: never `NOSCRIPT` for them.
    fn script<'a>(
        &'a self,
        _script: &'a LockScript,
        evalsha: &'a redis::Cmd,
        reply: Reply<'a>,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        self.command(evalsha, None, reply)
    }

    /// Always: the store answers `SET NX PX GET`.
    fn has_set_nx_get(&self) -> bool {
        true
    }

    fn lacks_set_nx_get(&self) {}

    fn subscriber(&self) -> BoxFuture<'_, Result<Arc<Subscriber>, NodeError>> {
        Box::pin(async move {
            self.0.check()?;
            Ok(self.0.subscriber())
        })
    }

    fn quit(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.0.close() })
    }

    fn is_closed(&self) -> bool {
        self.0
            .check()
            .is_err_and(|e| matches!(e, NodeError::Closed { .. }))
    }

    fn memory_store(&self) -> Option<&Arc<MemoryStore>> {
        Some(&self.0)
    }
}
