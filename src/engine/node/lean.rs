//! A lean connection to one Redis server, over plain TCP or TLS (rustls): the connection
//! every lock command of a single server (or of the master the sentinels name) goes
//! through.
//!
//! redis-rs' multiplexed connection sends each command through a channel to its own
//! connection task, packs it into a fresh buffer, parses replies with a general streaming
//! parser and sends each one back through another channel: about a microsecond of the
//! JavaScript thread per command, a fifth of what the engine spends above a raw client
//! (`benchmark/README.md`, "Floors"). Here a command is appended to the connection's
//! output buffer under a lock, the connection task woken only when it is not already
//! scheduled, and the replies parsed in place and handed back through one one-shot each.
//!
//! Like redis-rs' connection it pipelines: the commands appended before the task runs
//! leave in one write, and replies are matched to commands in order. It speaks RESP2 (no
//! `HELLO`), as every lock command needs. When the socket fails or the server closes it,
//! every command waiting fails with an I/O error, and so does every later one: the server
//! then drops the connection and makes a new one (`server.rs`), as it does for redis-rs'.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::tls::{tcp, LeanTls};
use crate::engine::sync::Unpoisoned;

/// The first size of the read and write buffers (the read buffer doubles when a reply
/// does not fit).
const READ_CHUNK: usize = 16 * 1024;
/// Buffers grown past this size shrink back when empty.
const KEPT: usize = 256 * 1024;
/// The most reads in one turn of the connection task: a reply that keeps coming (a large
/// one, or one without end) lets the runtime's other tasks, and the event loop whose
/// thread runs them, in between.
const READS_PER_TURN: usize = 64;
/// The longest bulk string a server sends (its default `proto-max-bulk-len`).
const MAX_BULK: i64 = 512 * 1024 * 1024;
/// The deepest nesting of arrays taken in a reply: Redis' own replies nest a few levels;
/// tens of thousands (a broken or hostile server) would overflow the stack of whatever
/// walks the value (dropping it, converting it for JavaScript).
const MAX_DEPTH: usize = 512;
/// The most elements a reply's arrays hold at once while it is parsed: lock replies hold a
/// few; a server that sends an endless array (`*2147483647` and then elements without end)
/// would otherwise take all the memory there is.
const MAX_HELD: usize = 1 << 20;

thread_local! {
    /// How many times the socket of a lean connection woke its task on this thread.
    static SOCKET_WAKES: Cell<u64> = const { Cell::new(0) };
}

/// How many times (wrapping) the socket of a lean connection woke its task on this thread:
/// the event loop that drives a runtime on a JavaScript thread reads it around the
/// runtime's last look for events, which may wake a task that then waits for the next
/// turn (`src/addon/event_loop.rs`).
pub fn socket_wakes() -> u64 {
    SOCKET_WAKES.with(Cell::get)
}

/// The waker the connection task gives its socket: counts the wake, then wakes the task.
#[derive(Default)]
struct SocketWaker(AtomicWaker);

impl Wake for SocketWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        SOCKET_WAKES.with(|w| w.set(w.get().wrapping_add(1)));
        self.0.wake();
    }
}

/// A handle to a lean connection; clones share it. The connection closes when the last
/// clone is dropped.
#[derive(Clone)]
pub(super) struct Lean {
    handle: Arc<Handle>,
    db: i64,
    /// The server's address as this connection reached it (its host name resolved).
    peer: Option<std::net::SocketAddr>,
}

/// What the clones of a [`Lean`] share; dropped with the last of them.
struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// How long the first command waiting may go unanswered before the connection counts
    /// as stuck (the node's command time-out).
    stuck_after: Duration,
}

struct State {
    /// Commands not handed to the socket yet.
    out: Vec<u8>,
    /// Who waits for the next replies, in the order the commands were appended.
    waiting: VecDeque<Waiter>,
    /// By when each of them is to be answered (when it was appended, and the command
    /// time-out, and the time a blocking command asked to block; `None`: blocking without
    /// end). A reply lost on the way leaves every later one handed to the waiter before
    /// its own: the first waiter then is an old one.
    due: VecDeque<Option<Instant>>,
    /// Wakes the connection task, when it is not scheduled already.
    task: Option<Waker>,
    /// Why the connection is gone, once it is.
    failed: Option<(io::ErrorKind, &'static str)>,
    /// Whether every handle was dropped: the task closes the socket.
    dropped: bool,
}

/// Waits for replies: one command's, or a pipeline's (of which the first `skip` are
/// dropped).
enum Waiter {
    One(oneshot::Sender<RedisResult<Value>>),
    Many {
        left: usize,
        skip: usize,
        got: Vec<Value>,
        tx: oneshot::Sender<RedisResult<Vec<Value>>>,
    },
}

impl Waiter {
    fn fail(self, kind: io::ErrorKind, why: &'static str) {
        let e = || RedisError::from(io::Error::new(kind, why));
        match self {
            Waiter::One(tx) => drop(tx.send(Err(e()))),
            Waiter::Many { tx, .. } => drop(tx.send(Err(e()))),
        }
    }
}

impl Lean {
    /// Connects to `host:port` (no Nagle delay; over TLS when `tls` is given) and starts
    /// the connection task on the current runtime. No command is sent; `db` is only what
    /// [`Lean::get_db`] reports. A command unanswered for `stuck_after` makes the
    /// connection stuck ([`Lean::stuck`]).
    pub(super) async fn connect(
        host: &str,
        port: u16,
        db: i64,
        tls: Option<LeanTls>,
        stuck_after: Duration,
    ) -> io::Result<Lean> {
        let stream = tcp(host, port).await?;
        let peer = stream.peer_addr().ok();
        let lean = match tls {
            None => Lean::start(stream, db, stuck_after),
            Some(tls) => Lean::start(tls.over(stream).await?, db, stuck_after),
        };
        Ok(Lean { peer, ..lean })
    }

    /// The server's address as this connection reached it.
    pub(super) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer
    }

    /// Starts the connection task over `stream`.
    fn start<S>(stream: S, db: i64, stuck_after: Duration) -> Lean
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                out: Vec::with_capacity(READ_CHUNK),
                waiting: VecDeque::new(),
                due: VecDeque::new(),
                task: None,
                failed: None,
                dropped: false,
            }),
            stuck_after,
        });
        tokio::spawn(Task {
            shared: shared.clone(),
            socket_waker: Arc::default(),
            stream,
            wbuf: Vec::with_capacity(READ_CHUNK),
            written: 0,
            rbuf: vec![0; READ_CHUNK],
            filled: 0,
            read: 0,
            decoder: Decoder::default(),
            replies: Vec::new(),
        });
        Lean {
            handle: Arc::new(Handle { shared }),
            db,
            peer: None,
        }
    }

    /// Appends a command (written by `pack`) and who waits for its replies, and wakes the
    /// connection task unless it is scheduled already.
    fn send(
        &self,
        pack: impl FnOnce(&mut Vec<u8>),
        waiter: Waiter,
        blocks: Option<Option<Duration>>,
        unless_stuck: bool,
    ) -> bool {
        let task = {
            let mut st = self.handle.shared.state.locked();
            if let Some((kind, why)) = st.failed {
                drop(st);
                waiter.fail(kind, why);
                return true;
            }
            if unless_stuck && st.overdue() {
                return false;
            }
            pack(&mut st.out);
            st.waiting.push_back(waiter);
            let patience = match blocks {
                None => Some(self.handle.shared.stuck_after),
                Some(None) => None,
                Some(Some(block)) => Some(self.handle.shared.stuck_after + block),
            };
            // (A block past what an Instant holds is one without end.)
            st.due
                .push_back(patience.and_then(|p| Instant::now().checked_add(p)));
            st.task.take()
        };
        if let Some(t) = task {
            t.wake();
        }
        true
    }
}

impl State {
    /// Whether the first command waiting has waited past the time it was due by.
    fn overdue(&self) -> bool {
        self.due
            .front()
            .is_some_and(|due| due.is_some_and(|due| Instant::now() > due))
    }
}

impl Shared {
    /// Whether the first command waiting has waited past the command time-out.
    fn stuck(&self) -> bool {
        self.state.locked().overdue()
    }

    /// Has the connection task close the socket; the commands still waiting fail.
    fn shut(&self) {
        let task = {
            let mut st = self.state.locked();
            st.dropped = true;
            st.task.take()
        };
        if let Some(t) = task {
            t.wake();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shut();
    }
}

impl Lean {
    /// Whether the first command waiting has gone unanswered past the command time-out: the
    /// server stopped answering, or the connection is dead without a word from its peer
    /// (see `Server::replace_stuck`).
    pub(super) fn stuck(&self) -> bool {
        self.handle.shared.stuck()
    }

    /// Closes the connection now, whoever else holds it: the commands still waiting fail
    /// and the socket closes (after `QUIT`, a blocked command such as `BLPOP q 0` would
    /// otherwise keep both for ever).
    pub(super) fn close(&self) {
        self.handle.shared.shut();
    }
}

impl Lean {
    /// Sends `cmd` now; the reply comes through the [`Sent`] (a future of its own).
    pub(super) fn send_one(&self, cmd: &Cmd) -> Sent {
        let (tx, rx) = oneshot::channel();
        self.send(
            |out| cmd.write_packed_command(out),
            Waiter::One(tx),
            super::blocking::of_cmd(cmd),
            false,
        );
        Sent(rx)
    }

    /// [`Lean::send_one`], unless the connection is stuck ([`Lean::stuck`]): `None` then,
    /// nothing sent (one look at the connection's state for both).
    pub(super) fn send_unless_stuck(&self, cmd: &Cmd) -> Option<Sent> {
        let (tx, rx) = oneshot::channel();
        let blocks = super::blocking::of_cmd(cmd);
        self.send(
            |out| cmd.write_packed_command(out),
            Waiter::One(tx),
            blocks,
            true,
        )
        .then_some(Sent(rx))
    }
}

/// The reply to a command sent on a lean connection (an I/O error once the connection is
/// gone).
pub struct Sent(oneshot::Receiver<RedisResult<Value>>);

impl Future for Sent {
    type Output = RedisResult<Value>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(gone())))
    }
}

impl redis::aio::ConnectionLike for Lean {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.send_one(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if offset + count == 0 {
            return Box::pin(async { Ok(Vec::new()) });
        }
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter::Many {
            left: offset + count,
            skip: offset,
            got: Vec::with_capacity(count),
            tx,
        };
        self.send(
            |out| out.extend(pipeline.get_packed_pipeline()),
            waiter,
            None,
            false,
        );
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(gone())) })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

/// The error of a command whose connection task is gone.
fn gone() -> RedisError {
    RedisError::from(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "connection closed",
    ))
}

/// The connection task: writes what was appended, reads and parses replies, and hands
/// each to its waiter. Ends when the socket fails or the last handle is dropped.
struct Task<S> {
    shared: Arc<Shared>,
    /// What the socket wakes (the task, counted: see [`socket_wakes`]).
    socket_waker: Arc<SocketWaker>,
    /// The socket, or the TLS session over it.
    stream: S,
    /// Bytes being written, of which `written` are.
    wbuf: Vec<u8>,
    written: usize,
    /// The read buffer (all of it initialized): `filled` bytes read, of which `read` are
    /// parsed.
    rbuf: Vec<u8>,
    filled: usize,
    read: usize,
    decoder: Decoder,
    /// Replies parsed, not yet handed over (kept to reuse its memory).
    replies: Vec<Value>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Task<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match this.turn(cx) {
            Ok(()) => Poll::Pending,
            Err((kind, why)) => {
                this.fail(kind, why);
                Poll::Ready(())
            }
        }
    }
}

type Failure = (io::ErrorKind, &'static str);

fn io_failure(e: io::Error) -> Failure {
    let why = match e.kind() {
        io::ErrorKind::ConnectionReset => "connection reset by peer",
        io::ErrorKind::BrokenPipe => "broken pipe",
        _ => "connection lost",
    };
    (e.kind(), why)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Task<S> {
    /// Writes and reads what it can; `Ok` when it waits for the socket or for commands.
    fn turn(&mut self, cx: &mut Context<'_>) -> Result<(), Failure> {
        {
            let mut st = self.shared.state.locked();
            if st.dropped {
                return Err((io::ErrorKind::BrokenPipe, "connection closed"));
            }
            if self.written == self.wbuf.len() {
                self.wbuf.clear();
                self.written = 0;
                if self.wbuf.capacity() > KEPT {
                    // After a large command: back to the first size.
                    self.wbuf = Vec::with_capacity(READ_CHUNK);
                }
                std::mem::swap(&mut self.wbuf, &mut st.out);
            }
            if !st.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                st.task = Some(cx.waker().clone());
            }
        }
        self.socket_waker.0.register(cx.waker());
        let task = cx.waker();
        let waker = Waker::from(self.socket_waker.clone());
        let cx = &mut Context::from_waker(&waker);
        // Through tokio's `AsyncRead`/`AsyncWrite`: a short read or write marks the
        // socket not ready, so no call is made only to hear that it would block.
        while self.written < self.wbuf.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.wbuf[self.written..]) {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => return Err((io::ErrorKind::WriteZero, "connection lost")),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Err(io_failure(e)),
            }
        }
        // A TLS session may hold records back until flushed (a socket has nothing to flush).
        if let Poll::Ready(Err(e)) = Pin::new(&mut self.stream).poll_flush(cx) {
            return Err(io_failure(e));
        }
        for _ in 0..READS_PER_TURN {
            if self.filled == self.rbuf.len() {
                // Full: what is parsed goes, or the buffer doubles.
                if self.read > 0 {
                    self.rbuf.copy_within(self.read..self.filled, 0);
                    self.filled -= self.read;
                    self.read = 0;
                } else {
                    self.rbuf.resize(self.rbuf.len() * 2, 0);
                }
            }
            let mut space = ReadBuf::new(&mut self.rbuf[self.filled..]);
            match Pin::new(&mut self.stream).poll_read(cx, &mut space) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(e)) => return Err(io_failure(e)),
                Poll::Ready(Ok(())) => {}
            }
            match space.filled().len() {
                0 => {
                    return Err((
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the server",
                    ))
                }
                n => self.filled += n,
            }
            self.deliver()?;
        }
        // More to read, perhaps: the next turn goes on.
        task.wake_by_ref();
        Ok(())
    }

    /// Parses every complete reply read and hands each to its waiter.
    fn deliver(&mut self) -> Result<(), Failure> {
        while let Some(v) = self
            .decoder
            .decode(&self.rbuf[..self.filled], &mut self.read)
            .map_err(|why| (io::ErrorKind::InvalidData, why))?
        {
            self.replies.push(v);
        }
        if self.read == self.filled {
            self.filled = 0;
            self.read = 0;
            if self.rbuf.len() > KEPT {
                // After a large reply: back to the first size.
                self.rbuf = vec![0; READ_CHUNK];
            }
        }
        if self.replies.is_empty() {
            return Ok(());
        }
        // Each reply to its waiter, in order (a one-shot send only wakes the waiter).
        let mut st = self.shared.state.locked();
        let mut unexpected = false;
        for v in self.replies.drain(..) {
            let Some(front) = st.waiting.front_mut() else {
                unexpected = true;
                break;
            };
            let one = match front {
                Waiter::One(_) => Some(v),
                Waiter::Many {
                    left, skip, got, ..
                } => {
                    *left -= 1;
                    if *skip > 0 {
                        *skip -= 1;
                    } else {
                        got.push(v);
                    }
                    if *left > 0 {
                        continue;
                    }
                    None
                }
            };
            st.due.pop_front();
            match (st.waiting.pop_front(), one) {
                (Some(Waiter::One(tx)), Some(v)) => drop(tx.send(Ok(v))),
                (Some(Waiter::Many { got, tx, .. }), _) => drop(tx.send(Ok(got))),
                _ => {}
            }
        }
        drop(st);
        if unexpected {
            return Err((io::ErrorKind::InvalidData, "a reply nobody asked for"));
        }
        Ok(())
    }

    /// The connection is gone: every waiting command, and every later one, fails.
    fn fail(&mut self, kind: io::ErrorKind, why: &'static str) {
        let waiting = {
            let mut st = self.shared.state.locked();
            st.failed = Some((kind, why));
            st.task = None;
            st.due.clear();
            std::mem::take(&mut st.waiting)
        };
        for w in waiting {
            w.fail(kind, why);
        }
    }
}

/// A RESP2 reply parser that resumes where the bytes ran out: the arrays under
/// construction are kept, so a large reply arriving in many reads is parsed once.
#[derive(Default)]
struct Decoder {
    /// Open arrays: how many elements each still needs, and those it has.
    open: Vec<(usize, Vec<Value>)>,
    /// How many elements they hold in all (at most [`MAX_HELD`]).
    held: usize,
}

/// One item of the stream: a whole value, or the header of a non-empty array.
enum Item {
    Value(Value),
    Array(usize),
}

type Parse<T> = Result<Option<T>, &'static str>;

impl Decoder {
    /// The next complete reply in `buf` from `*at`, moving `*at` past what was used; `None`
    /// when the bytes run out first (what was parsed is kept for the next call).
    fn decode(&mut self, buf: &[u8], at: &mut usize) -> Parse<Value> {
        loop {
            let Some((item, used)) = item(&buf[*at..])? else {
                return Ok(None);
            };
            *at += used;
            let mut value = match item {
                Item::Array(_) if self.open.len() >= MAX_DEPTH => {
                    return Err("a reply nested deeper than 512 arrays");
                }
                Item::Array(n) => {
                    self.open.push((n, Vec::with_capacity(n.min(1024))));
                    continue;
                }
                Item::Value(v) => v,
            };
            loop {
                let Some((left, items)) = self.open.last_mut() else {
                    return Ok(Some(value));
                };
                if self.held >= MAX_HELD {
                    return Err("a reply of more than a million elements");
                }
                items.push(value);
                self.held += 1;
                *left -= 1;
                if *left > 0 {
                    break;
                }
                let (_, items) = self.open.pop().expect("an open array");
                self.held -= items.len();
                value = Value::Array(items);
            }
        }
    }
}

/// The line at the start of `buf` (without its CRLF) and the length with it.
fn line(buf: &[u8]) -> Parse<(&[u8], usize)> {
    match memchr::memchr(b'\n', buf) {
        None => Ok(None),
        Some(0) => Err("an empty line"),
        Some(end) if buf[end - 1] == b'\r' => Ok(Some((&buf[..end - 1], end + 1))),
        Some(_) => Err("a line not ended by CRLF"),
    }
}

fn number(digits: &[u8]) -> Result<i64, &'static str> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("a malformed number")
}

/// The next item at the start of `buf` and the bytes it takes.
fn item(buf: &[u8]) -> Parse<(Item, usize)> {
    let Some((head, used)) = line(buf)? else {
        return Ok(None);
    };
    let Some((&kind, rest)) = head.split_first() else {
        return Err("an empty line");
    };
    let value = match kind {
        b'+' if rest == b"OK" => Value::Okay,
        b'+' => Value::SimpleString(
            String::from_utf8(rest.to_vec()).map_err(|_| "a status that is not UTF-8")?,
        ),
        // A server error: redis-rs' own parser makes it (kinds, codes and details).
        b'-' => match redis::parse_redis_value(&buf[..used]) {
            Ok(v @ Value::ServerError(_)) => v,
            _ => return Err("a malformed error reply"),
        },
        b':' => Value::Int(number(rest)?),
        b'$' => match number(rest)? {
            -1 => Value::Nil,
            n if n < 0 => return Err("a negative length"),
            // Redis' own limit (proto-max-bulk-len): a longer one is garbage, not a reply
            // to wait for.
            n if n > MAX_BULK => return Err("a bulk string longer than 512 MB"),
            n => {
                let n = n as usize;
                if buf.len() < used + n + 2 {
                    return Ok(None);
                }
                if &buf[used + n..used + n + 2] != b"\r\n" {
                    return Err("a bulk string not ended by CRLF");
                }
                return Ok(Some((
                    Item::Value(Value::BulkString(buf[used..used + n].to_vec())),
                    used + n + 2,
                )));
            }
        },
        b'*' => match number(rest)? {
            -1 => Value::Nil,
            0 => Value::Array(Vec::new()),
            n if n < 0 => return Err("a negative length"),
            n => return Ok(Some((Item::Array(n as usize), used))),
        },
        _ => return Err(
            "a reply that is not the Redis protocol (RESP2): is a Redis server listening there?",
        ),
    };
    Ok(Some((Item::Value(value), used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reply in `bytes`, fed `step` bytes at a time.
    fn parse_in_steps(bytes: &[u8], step: usize) -> Vec<Value> {
        let mut d = Decoder::default();
        let (mut buf, mut at, mut out) = (Vec::new(), 0, Vec::new());
        for chunk in bytes.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Some(v) = d.decode(&buf, &mut at).unwrap() {
                out.push(v);
            }
        }
        assert_eq!(at, buf.len(), "every byte used");
        out
    }

    #[test]
    fn parses_every_resp2_type_the_same_in_one_read_or_byte_by_byte() {
        let bytes = b"+OK\r\n+QUEUED\r\n:-42\r\n$5\r\nab\r\nc\r\n$-1\r\n$0\r\n\r\n*-1\r\n*0\r\n\
            *3\r\n:1\r\n*2\r\n$1\r\nx\r\n*0\r\n$-1\r\n-NOSCRIPT No matching script\r\n";
        let expected = vec![
            Value::Okay,
            Value::SimpleString("QUEUED".into()),
            Value::Int(-42),
            Value::BulkString(b"ab\r\nc".to_vec()),
            Value::Nil,
            Value::BulkString(Vec::new()),
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![
                Value::Int(1),
                Value::Array(vec![Value::BulkString(b"x".to_vec()), Value::Array(vec![])]),
                Value::Nil,
            ]),
        ];
        for step in [bytes.len(), 1, 2, 3, 7] {
            let got = parse_in_steps(bytes, step);
            assert_eq!(got[..expected.len()], expected[..], "step {step}");
            let Value::ServerError(e) = &got[expected.len()] else {
                panic!("not a server error: {:?}", got[expected.len()]);
            };
            assert_eq!(e.kind(), Some(redis::ServerErrorKind::NoScript));
            assert_eq!(got.len(), expected.len() + 1);
        }
    }

    #[test]
    fn a_large_array_in_many_reads_is_parsed_once() {
        let mut bytes = format!("*{}\r\n", 10_000).into_bytes();
        for i in 0..10_000 {
            bytes.extend(format!(":{i}\r\n").bytes());
        }
        let got = parse_in_steps(&bytes, 1000);
        let Value::Array(items) = &got[0] else {
            panic!("not an array")
        };
        assert_eq!(items.len(), 10_000);
        assert_eq!(items[9_999], Value::Int(9_999));
    }

    #[test]
    fn arrays_nest_up_to_the_limit() {
        let mut bytes = "*1\r\n".repeat(MAX_DEPTH).into_bytes();
        bytes.extend(b":1\r\n");
        let got = parse_in_steps(&bytes, 64);
        let mut depth = 0;
        let mut v = &got[0];
        while let Value::Array(items) = v {
            depth += 1;
            v = &items[0];
        }
        assert_eq!(depth, MAX_DEPTH);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [
            &b"?what\r\n"[..],
            b"\r\n",
            b"+OK\n",
            b":x\r\n",
            b"$-5\r\n",
            b"$1\r\nab\r\n",
            b"*-2\r\n",
            b"%1\r\n",
            b"$536870913\r\n",
            "*1\r\n".repeat(MAX_DEPTH + 1).as_bytes(),
        ] {
            let mut at = 0;
            assert!(
                Decoder::default().decode(bad, &mut at).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
