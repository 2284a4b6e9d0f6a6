//! ssehub: a self-hosted server for private Server-Sent Events streams of
//! event sources, built to hold very many subscribers on a small machine.
//!
//! # The loop contract
//!
//! One thread runs one [mio] reactor. Sockets are registered once,
//! edge-triggered, for both directions; readiness is kept in user space
//! (`can_read`, `can_write`), since an event flag is only a hint that a
//! direction may have changed. Every ready direction is drained until
//! `WouldBlock` (or a short read, which on a Linux TCP socket means the
//! same: later bytes raise a new edge; unless the event hinted at a FIN,
//! which raises none), or until its per-turn budget runs out, in which case the
//! connection is remembered and served on the next turn. Output is never
//! written where it is produced: an event is framed once into a shared
//! buffer, queued on every subscriber, and each connection with queued
//! output is flushed once, with one vectored write, just before the
//! reactor polls again. Connections close at the end of a turn, so a stale
//! event never reaches a reused slab key.
//!
//! # Embedding
//!
//! ```no_run
//! use ssehub::{Config, Server};
//!
//! let config = Config { listen: "127.0.0.1:0".parse().unwrap(), api_key: Some("secret".into()), ..Config::default() };
//! let server = Server::bind(config).unwrap();
//! let handle = server.handle();
//! println!("listening on {}", server.local_addr());
//! let thread = std::thread::spawn(move || server.run());
//! handle.create_source("orders").unwrap();
//! let id = handle.emit("orders", r#"{"total": 12}"#).unwrap();
//! println!("emitted {id}");
//! handle.shutdown();
//! thread.join().unwrap().unwrap();
//! ```

// The `fuzzing` feature makes internal items reachable; they are documented for the crate, not the public API.
#![cfg_attr(not(feature = "fuzzing"), warn(missing_docs))]

mod api;
mod auth;
mod config;
mod conn;
mod history;
mod http;
mod json;
mod metrics;
mod outq;
mod server;
mod source;
mod sse;
mod state;
mod text;
mod timer;
mod webhook;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;

pub use config::{Config, ConfigError, usage};
pub use metrics::Stats;

/// The sans-I/O parsers, re-exported for the fuzz targets under `fuzz/`
/// (feature `fuzzing`, never on by default). Not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::history::History;
    pub use crate::http::{BodyReader, Framing, HEAD_BYTES_MAX, Head, HttpError, parse_head, percent_decode, query_pairs, query_param};
    pub use crate::json::{DEPTH_MAX, compact};
    pub use crate::sse::{Event, EventId, frame};
}

/// A bound server, not yet running. `Send`: bind on one thread, run on
/// another.
pub struct Server {
    inner: server::Bound,
}

impl Server {
    /// Binds the listening socket and loads the keys. With no key
    /// configured at all, one is generated and logged once (warn level).
    pub fn bind(config: Config) -> io::Result<Server> {
        server::Bound::new(config).map(|inner| Server { inner })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The key of the default account: the configured one, or the one
    /// generated at bind.
    pub fn api_key(&self) -> Option<&str> {
        self.inner.default_key.as_deref()
    }

    /// A handle to control the server from any thread.
    pub fn handle(&self) -> Handle {
        Handle { shared: self.inner.shared.clone() }
    }

    /// Runs the reactor on the calling thread until [`Handle::shutdown`].
    pub fn run(self) -> io::Result<()> {
        server::Reactor::new(self.inner).run()
    }
}

/// Errors of [`Handle`] calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No source with that id or name in the default account.
    NotFound,
    /// The source name is taken in the default account.
    NameTaken,
    /// A source name is 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    BadName,
    /// The payload is not one JSON value.
    InvalidJson(String),
    /// The payload is larger than `max_event_bytes`.
    TooLarge,
    /// The server has stopped.
    Stopped,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => write!(f, "no such source"),
            Error::NameTaken => write!(f, "a source with this name already exists"),
            Error::BadName => write!(f, "a source name is 1 to 64 characters of A-Z a-z 0-9 _ -"),
            Error::InvalidJson(why) => write!(f, "not valid JSON: {why}"),
            Error::TooLarge => write!(f, "event larger than max_event_bytes"),
            Error::Stopped => write!(f, "the server has stopped"),
        }
    }
}

impl std::error::Error for Error {}

/// A source as the handle reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// `dc_` + random characters.
    pub id: String,
    /// Unique within its account.
    pub name: String,
    /// The webhook path, `/e/<endpoint-key>`.
    pub endpoint_path: String,
}

/// Controls a server from any thread: cheap to clone, `Send + Sync`. Each
/// call is queued to the reactor, which it wakes; calls from one thread
/// take effect in order.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<server::Shared>,
}

impl Handle {
    /// Creates a source in the default account.
    pub fn create_source(&self, name: &str) -> Result<SourceInfo, Error> {
        self.call(|reply| server::Command::Create { name: name.to_string(), reply })?
    }

    /// Deletes a source (by id or name) of the default account, ending its streams.
    pub fn delete_source(&self, source: &str) -> Result<(), Error> {
        self.call(|reply| server::Command::Delete { source: source.to_string(), reply })?
    }

    /// Emits one JSON value to a source (by id or name) of the default
    /// account; returns the event id. The JSON is validated and compacted
    /// on the calling thread; the reactor frames it once.
    pub fn emit(&self, source: &str, json: &str) -> Result<String, Error> {
        if json.len() > self.shared.max_event_bytes {
            return Err(Error::TooLarge);
        }
        let payload = json::compact(json.as_bytes()).map_err(|e| Error::InvalidJson(e.to_string()))?;
        self.call(|reply| server::Command::Emit { source: source.to_string(), payload, reply })?
    }

    /// The counters as of the reactor's last loop turn.
    pub fn stats(&self) -> Stats {
        self.shared.published.load()
    }

    /// Stops the server: it stops accepting, ends every stream cleanly,
    /// and [`Server::run`] returns. Safe to call more than once.
    pub fn shutdown(&self) {
        let _ = self.shared.send(server::Command::Shutdown);
    }

    fn call<T>(&self, command: impl FnOnce(mpsc::Sender<T>) -> server::Command) -> Result<T, Error> {
        let (tx, rx) = mpsc::channel();
        self.shared.send(command(tx))?;
        rx.recv().map_err(|_| Error::Stopped)
    }
}

/// SIGINT and SIGTERM, blocked so that a thread can wait for them.
///
/// Create it first, before any thread is spawned: threads inherit the
/// blocked mask, so the signals then wait for [`StopSignals::wait`] instead
/// of killing the process.
pub struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    /// Blocks SIGINT and SIGTERM in this thread and the threads it spawns from now on.
    pub fn block() -> StopSignals {
        // SAFETY: the set is initialised by sigemptyset before use, and
        // pthread_sigmask only reads it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            StopSignals { set }
        }
    }

    /// Waits for SIGINT or SIGTERM; returns the signal number.
    pub fn wait(&self) -> i32 {
        let mut signal = 0;
        // SAFETY: `set` is initialised; sigwait writes the signal number.
        unsafe { libc::sigwait(&self.set, &mut signal) };
        signal
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limit now
/// in force. Call it before [`Server::bind`] so the connection limit follows.
pub fn raise_fd_limit() -> u64 {
    let mut lim = nofile();
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    lim.rlim_cur
}

/// The soft open-file limit now in force.
pub(crate) fn fd_limit() -> u64 {
    nofile().rlim_cur
}

fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
    // SAFETY: getrlimit only writes the struct we pass; on failure it is untouched.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim
}
