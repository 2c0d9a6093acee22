#![deny(clippy::all)]
//! redlock-rs: distributed locks for Node.js on Redis.
//!
//! [`engine`] is the pure-Rust quorum engine; the other modules are the thin napi layer.

pub mod engine;

mod client;
mod js;
mod redlock;
mod reply;
