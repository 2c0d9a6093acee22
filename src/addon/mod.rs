//! The thin napi layer: JavaScript classes that parse options, convert errors and call
//! the engine, one async call per JavaScript operation.
//!
//! * [`client`]: `NativeClient` (standalone, Sentinel, Cluster, MemoryStore) and its
//!   direct commands; [`reply`]: Redis replies as JavaScript values.
//! * [`redlock`]: `NativeRedlock`, the lock operations over the engine's quorum;
//!   [`calls`]: its acquire, extend and release as plain functions of the module.
//! * [`completion`]: results delivered to JavaScript in batches, as typed objects.
//! * [`event_loop`]: where futures run (on the JavaScript thread, driven by libuv).
//! * [`js`]: reading and checking JavaScript arguments (`TypeError`/`RangeError`).

pub mod calls;
pub mod client;
pub mod completion;
pub mod event_loop;
pub mod js;
pub mod redlock;
pub mod reply;
