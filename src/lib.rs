#![deny(clippy::all)]
//! redlock-rs: distributed locks for Node.js on Redis.
//!
//! [`engine`] is the pure-Rust quorum engine; `addon` is the thin napi layer over it.

mod addon;
pub mod engine;

/// Rust-side allocations (connections, replies, per-attempt state) use mimalloc: the
/// system allocator was a tenth of the addon's CPU time under load. Built with its
/// local-dynamic TLS model: with the default (initial-exec), a second copy of the addon in
/// one process (two versions of the package in a monorepo, say) failed to load ("cannot
/// allocate memory in static TLS block"); measured no slower (`benchmark/ab.mjs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The tokio runtime of the I/O threads, used where futures do not run on the JavaScript
/// thread (`addon::event_loop`): `REDLOCK_RS_THREADS` workers (default 1: every hand-off
/// between threads costs more than the lock work itself, measured with
/// `benchmark/breakdown.mjs`).
#[napi_derive::module_init]
fn init() {
    let threads = std::env::var("REDLOCK_RS_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    if let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        napi::bindgen_prelude::create_custom_tokio_runtime(rt);
    }
}
