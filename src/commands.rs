//! The messages between a `Handle` and the reactor: the commands, what
//! they share (the queue, the one waker, the published counters), the
//! one-shot reply slot each call waits on, and the errors it may get. A
//! leaf, so that the handle (above the reactor) and the reactor both name
//! them without importing each other.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use mio::Waker;

use crate::engine::IdemKey;
use crate::metrics::Published;

/// A request from a `Handle`, carried out on the reactor thread.
pub(crate) enum Command {
    Create { name: String, reply: Reply<Result<SourceInfo, Error>> },
    Delete { source: String, reply: Reply<Result<(), Error>> },
    Emit { source: String, payload: Vec<u8>, idem: Option<IdemKey>, reply: Reply<Result<Emitted, Error>> },
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

/// Errors of `Handle` calls.
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
    /// An idempotency key is 1 to 255 visible ASCII characters.
    BadIdempotencyKey,
    /// The idempotency key was used on the source with another payload.
    IdempotencyKeyReused,
    /// An emit with the idempotency key is still being stored: retry.
    IdempotencyKeyInFlight,
    /// The engine does not do this (no engine answers it today).
    Unsupported(&'static str),
}

/// An emit's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The event id.
    pub id: String,
    /// True when an earlier emit with the same idempotency key and payload
    /// got this id, and nothing was emitted now.
    pub replayed: bool,
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
            Error::BadIdempotencyKey => write!(f, "an idempotency key is 1 to 255 visible ASCII characters"),
            Error::IdempotencyKeyReused => write!(f, "this idempotency key was used with another payload on this source"),
            Error::IdempotencyKeyInFlight => write!(f, "an emit with this idempotency key is still being stored; retry shortly"),
            Error::Unsupported(what) => write!(f, "{what}"),
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

/// Where a handle call waits for its [`Reply`].
pub(crate) struct Answer<T>(Arc<Slot<T>>);

/// A reply slot: the reactor's end and the caller's.
pub(crate) fn reply<T>() -> (Reply<T>, Answer<T>) {
    let slot = Arc::new(Slot { state: Mutex::new(State::Waiting), filled: Condvar::new() });
    (Reply(slot.clone()), Answer(slot))
}

impl<T> Answer<T> {
    /// Blocks until the reactor fills the slot, or drops it (`Stopped`).
    pub fn wait(self) -> Result<T, Error> {
        let state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.0.filled.wait_while(state, |s| matches!(s, State::Waiting)).unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *state, State::Dropped) {
            State::Filled(value) => Ok(value),
            _ => Err(Error::Stopped),
        }
    }
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
