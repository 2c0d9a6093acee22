//! The quorum engine: pure Rust, no napi types.
//!
//! * [`config`]: connection settings of one Redis node and URL parsing.
//! * [`node`]: one shared, self-healing, pipelining connection per node with time-outs.
//! * [`notify`]: release notifications over one pub/sub connection per node.
//! * [`queue`]: local first-come-first-served lines of waiters.
//! * [`quorum`]: vote counting with early decisions.
//! * [`validity`]: drift and validity arithmetic on a monotonic clock.
//! * [`scripts`]: the Lua scripts that do every owner check.
//! * [`settings`]: retry/drift settings and their validation.
//! * [`redlock`]: acquire / extend / release over N nodes, with retries and cleanup.

pub mod args;
pub mod config;
pub mod error;
pub mod identity;
pub mod kinds;
pub mod memory;
pub mod node;
pub mod notify;
mod paths;
pub mod queue;
pub mod quorum;
pub mod redlock;
pub mod scripts;
pub mod settings;
pub mod sync;
pub mod validity;
pub mod value;
