//! The embedding API: `Server` (bind, then run on any thread), and
//! `Handle`, which queues `Command`s (`commands.rs`) to the reactor from
//! any thread and wakes it through the one waker.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::commands::{self, Command, Emitted, Error, Reply, Shared, SourceInfo};
use crate::config::Config;
use crate::json;
use crate::metrics::Stats;
use crate::reactor;

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
    /// Under systemd (`$NOTIFY_SOCKET` set) it tells the service manager
    /// when it serves (`READY=1`), reloads keys and stops.
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
        self.call(|reply| Command::Emit { source: source.to_string(), payload, idem: None, reply })?.map(|e| e.id)
    }

    /// `emit` with an idempotency key (1 to 255 visible ASCII characters),
    /// as the API's `Idempotency-Key`: the same key and JSON on the same
    /// source within 24 hours (across restarts with the `log` engine) get
    /// the first emit's id back with `replayed` set, and nothing is
    /// emitted; the same key with another JSON is `IdempotencyKeyReused`;
    /// while the first is not yet stored, `IdempotencyKeyInFlight`. So a
    /// caller that got `Unavailable` may retry safely.
    pub fn emit_idempotent(&self, source: &str, json: &str, key: &str) -> Result<Emitted, Error> {
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::BadIdempotencyKey);
        }
        if json.len() > self.shared.max_event_bytes {
            return Err(Error::TooLarge);
        }
        let payload = json::compact(json.as_bytes()).map_err(|e| Error::InvalidJson(e.to_string()))?;
        // The compacted JSON is the body compared: the same value however it is spaced.
        let idem = Some(crate::engine::IdemKey::new(key.as_bytes(), &payload));
        self.call(|reply| Command::Emit { source: source.to_string(), payload, idem, reply })?
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

    /// Stops the server: it stops accepting, answers the requests it has
    /// read, ends every stream cleanly, and [`Server::run`] returns. With
    /// [`Config::drain`], the first call ends the streams spread over the
    /// drain (each after a `retry:`) and a second ends the rest at once.
    /// Safe to call more than once.
    pub fn shutdown(&self) {
        let _ = self.shared.send(Command::Shutdown);
    }

    fn call<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (reply, answer) = commands::reply();
        self.shared.send(command(reply))?;
        answer.wait()
    }
}
