//! The embedding API: `Server` (bind, then run on any thread), and
//! `Handle`, which queues `Command`s to the reactor from any thread and
//! wakes it through the one waker.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use mio::Waker;

use crate::config::Config;
use crate::json;
use crate::metrics::{Published, Stats};
use crate::reactor;

/// A request from a `Handle`, carried out on the reactor thread.
pub(crate) enum Command {
    Create { name: String, reply: Reply<Result<SourceInfo, Error>> },
    Delete { source: String, reply: Reply<Result<(), Error>> },
    Emit { source: String, payload: Vec<u8>, reply: Reply<Result<String, Error>> },
    ReloadKeys,
    Shutdown,
}

/// What handles and the reactor share.
pub(crate) struct Shared {
    pub commands: Mutex<Vec<Command>>,
    /// Set when the reactor has stopped: commands are refused from then on.
    pub stopped: AtomicBool,
    /// The one waker: handles and storage helper threads wake the reactor with it.
    pub waker: Arc<Waker>,
    pub published: Published,
    pub max_event_bytes: usize,
}

impl Shared {
    pub fn send(&self, command: Command) -> Result<(), Error> {
        let mut queue = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        if self.stopped.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        queue.push(command);
        drop(queue);
        self.waker.wake().map_err(|_| Error::Stopped)
    }

    /// Takes the queued commands (reactor thread).
    pub fn take_commands(&self) -> Vec<Command> {
        std::mem::take(&mut *self.commands.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Refuses commands from now on; queued ones are dropped, so their
    /// callers get `Stopped`.
    pub fn stop(&self) {
        let mut queue = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        self.stopped.store(true, Ordering::Release);
        queue.clear();
    }
}

/// A bound server, not yet running. `Send`: bind on one thread, run on
/// another.
pub struct Server {
    inner: reactor::Bound,
}

impl Server {
    /// Binds the listening socket and loads the keys. With no key
    /// configured at all, one is generated and logged once (warn level).
    pub fn bind(config: Config) -> io::Result<Server> {
        reactor::Bound::new(config).map(|inner| Server { inner })
    }

    /// Binds with an engine of the test's own.
    #[cfg(test)]
    pub(crate) fn bind_with(config: Config, make: Box<dyn FnOnce(u64) -> Box<dyn crate::engine::Engine> + Send>) -> io::Result<Server> {
        reactor::Bound::with_engine(config, |_, waker| Ok(crate::engine::Opened::custom(make, waker))).map(|inner| Server { inner })
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
        reactor::Reactor::new(self.inner)?.run()
    }

    /// As [`Server::run`], but leaves the server's memory to the process's
    /// exit, for a `main` that returns right after (as the `ssehub` binary
    /// does): with many sources, freeing it takes long. Storage is
    /// released before it returns, as with `run` (the data dir's lock
    /// too, so another process may take it at once).
    pub fn run_without_freeing(self) -> io::Result<()> {
        reactor::Reactor::new(self.inner)?.run_without_freeing()
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
    /// Storage did not take the change (a write or sync failed, Redis is
    /// unreachable); nothing of it was kept.
    Unavailable,
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
            Error::Unavailable => write!(f, "storage unavailable"),
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
    shared: Arc<Shared>,
}

impl Handle {
    /// Creates a source in the default account.
    pub fn create_source(&self, name: &str) -> Result<SourceInfo, Error> {
        self.call(|reply| Command::Create { name: name.to_string(), reply })?
    }

    /// Deletes a source (by id or name) of the default account, ending its streams.
    pub fn delete_source(&self, source: &str) -> Result<(), Error> {
        self.call(|reply| Command::Delete { source: source.to_string(), reply })?
    }

    /// Emits one JSON value to a source (by id or name) of the default
    /// account; returns the event id. The JSON is validated and compacted
    /// on the calling thread; the reactor frames it once.
    pub fn emit(&self, source: &str, json: &str) -> Result<String, Error> {
        if json.len() > self.shared.max_event_bytes {
            return Err(Error::TooLarge);
        }
        let payload = json::compact(json.as_bytes()).map_err(|e| Error::InvalidJson(e.to_string()))?;
        self.call(|reply| Command::Emit { source: source.to_string(), payload, reply })?
    }

    /// The counters as of the reactor's last loop turn.
    pub fn stats(&self) -> Stats {
        self.shared.published.load()
    }

    /// Reads `keys_file` again, as the binary does on SIGHUP: added keys
    /// work, removed ones get 401, a key moved to another account acts on
    /// that one, and streams opened with a removed or moved key end. The
    /// outcome is logged (one line); a file that cannot be read or parsed
    /// leaves the keys as they were.
    pub fn reload_keys(&self) {
        let _ = self.shared.send(Command::ReloadKeys);
    }

    /// Stops the server: it stops accepting, ends every stream cleanly,
    /// and [`Server::run`] returns. Safe to call more than once.
    pub fn shutdown(&self) {
        let _ = self.shared.send(Command::Shutdown);
    }

    fn call<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let slot = Arc::new(Slot { state: Mutex::new(State::Waiting), filled: Condvar::new() });
        self.shared.send(command(Reply(slot.clone())))?;
        let state = slot.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = slot.filled.wait_while(state, |s| matches!(s, State::Waiting)).unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *state, State::Dropped) {
            State::Filled(value) => Ok(value),
            _ => Err(Error::Stopped),
        }
    }
}

/// The answer to one handle call, filled once by the reactor. Dropped
/// unfilled (the server stopped first), it wakes the caller with `Stopped`.
/// One slot rather than an `mpsc` channel: a channel's machinery per answer
/// type was ~25 KiB of the binary for three one-shot answers.
pub(crate) struct Reply<T>(Arc<Slot<T>>);

struct Slot<T> {
    state: Mutex<State<T>>,
    filled: Condvar,
}

enum State<T> {
    Waiting,
    Filled(T),
    Dropped,
}

impl<T> Reply<T> {
    /// As `mpsc::Sender::send`: gives the value back when nobody waits.
    pub fn send(self, value: T) -> Result<(), T> {
        if Arc::strong_count(&self.0) == 1 {
            return Err(value);
        }
        self.settle(State::Filled(value));
        Ok(())
    }

    fn settle(&self, to: State<T>) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*state, State::Waiting) {
            *state = to;
            self.0.filled.notify_one();
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        self.settle(State::Dropped);
    }
}
