#![deny(clippy::all)]
//! redlock-rs: distributed locks for Node.js on Redis.
//!
//! [`engine`] is the pure-Rust quorum engine; the other modules are the thin napi layer.

pub mod engine;

/// Rust-side allocations (connections, replies, per-attempt state) use mimalloc: the
/// system allocator was a tenth of the addon's CPU time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod completion;
mod js;
mod redlock;
mod reply;

/// The tokio runtime behind every operation: two worker threads (lock traffic needs no
/// more, and on a small machine more threads only compete with Node.js and Redis), or
/// `REDLOCK_RS_THREADS`.
#[napi_derive::module_init]
fn init() {
    let threads = std::env::var("REDLOCK_RS_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2);
    if let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        napi::bindgen_prelude::create_custom_tokio_runtime(rt);
    }
}
