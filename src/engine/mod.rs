//! The quorum engine: pure Rust, no napi types.
//!
//! * [`args`]: validation of the values users pass; [`settings`]: retry, drift and
//!   safety settings; [`error`]: node and argument errors in plain words.
//! * [`config`]: connection settings of one node and URL parsing.
//! * [`node`]: the [`Node`](node::Node) every command goes to, over the
//!   [`Backend`](node::Backend) trait (command or script to a reply within a deadline,
//!   address, identity, capabilities) with two implementations: `Server`, one shared,
//!   self-healing, pipelining connection with time-outs, and the in-process [`memory`]
//!   store. Inside it: `backend`, `server` (connect, back-off, reconnect, resend),
//!   `connection` (connecting to one server), `lean` (our connection to one server),
//!   `tls` (rustls settings, `servername`), `sentinel` (master discovery, `ROLE`
//!   check), `cluster` (Redis Cluster connection and shards) and `in_memory` (the store's
//!   adapter).
//! * [`identity`]: who a server is (`run_id`, uptime, promoted), read from `INFO`;
//!   [`trust`]: restart safety (records on the peers, quarantine);
//!   [`shards`]: the same per shard of a Redis Cluster.
//! * [`notify`]: release notifications over one pub/sub connection per node.
//! * [`queue`]: local first-come-first-served lines of waiters.
//! * [`kinds`]: mutex, semaphore permit, read and write holds: keys, commands, replies.
//! * [`scripts`]: the Lua scripts that do every owner check.
//! * [`votes`]: one attempt's requests to the nodes (sent at once on a connection that is
//!   up) and their answers, read as votes by one stream.
//! * [`quorum`]: vote counting with early decisions; [`validity`]: drift and validity on a
//!   monotonic clock.
//! * [`redlock`]: acquire / extend / release over N nodes, with retries, cleanup, fencing.
//! * [`sync`]: locks that survive a panic; [`value`]: random lock values; [`timer`]:
//!   the engine's timers, which say when they are due (for the event loop that drives a
//!   runtime on the JavaScript thread); [`spin`]: whether a lone operation polls for its
//!   result, measured.
//! * `paths`: tests of the hard paths on in-process nodes.

pub mod args;
pub mod config;
pub mod error;
pub mod identity;
pub mod kinds;
pub mod line;
pub mod memory;
pub mod node;
pub mod notify;
mod paths;
pub mod queue;
pub mod quorum;
pub mod redlock;
pub mod scripts;
pub mod settings;
pub mod shards;
pub mod spin;
pub mod sync;
pub mod timer;
pub mod trust;
pub mod validity;
pub mod value;
pub mod votes;
