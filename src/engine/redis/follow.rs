//! Following the partitions: one link per partition stream (`Reader`),
//! each with a blocking XREAD always after the last id it read (its
//! cursor), and the catch-up from a source's history stream when a
//! record's predecessor never reached this node (`Resync`).

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::link::{Endpoint, Link, LinkState};
use super::pipeline::{Awaited, OP_TIMEOUT, Pipeline};
use super::records::{self, Record};
use super::resp::Value;
use crate::engine::SourceKey;
use crate::sse::EventId;

/// XREAD's BLOCK (`SSEHUB_REDIS_BLOCK_MS` overrides it: a knob for
/// tests), and the read deadline: the block time and half as much again,
/// at least a second (a link that answers nothing within it is dropped).
const BLOCK_MS: u64 = 5000;

fn block_ms() -> u64 {
    std::env::var("SSEHUB_REDIS_BLOCK_MS").ok().and_then(|v| v.parse().ok()).filter(|&ms| ms > 0).unwrap_or(BLOCK_MS)
}
/// Entries per XREAD.
const READ_COUNT: &str = "1000";

/// Partition `n`'s reader.
pub struct Reader {
    pub link: Link,
    /// The last partition id read: the next XREAD starts after it.
    pub cursor: Vec<u8>,
    /// An XREAD is out since.
    reading: Option<Instant>,
    /// XREAD's BLOCK, and the read deadline.
    block: String,
    read_timeout: Duration,
}

impl Reader {
    pub fn new(token: Token, cursor: Vec<u8>) -> Reader {
        let block = block_ms();
        let read_timeout = Duration::from_millis(block + (block / 2).max(1000));
        Reader { link: Link::new(token), cursor, reading: None, block: block.to_string(), read_timeout }
    }

    /// Connects if the link is down and its backoff has passed.
    pub fn connect_due(&mut self, at: &Endpoint, registry: &Registry, now: Instant) -> io::Result<()> {
        if self.link.due(now) {
            self.link.connect(at, registry)?;
            self.reading = None;
        }
        Ok(())
    }

    /// Closes the link. True if it was up.
    pub fn lose(&mut self, registry: &Registry) -> bool {
        let was_up = self.link.state == LinkState::Up;
        self.link.lose(registry);
        self.reading = None;
        was_up
    }

    /// A reply: its records appended to `out`. An error loses the link.
    pub fn reply(&mut self, reply: Value, out: &mut VecDeque<Record>) -> Result<(), String> {
        self.reading = None;
        match reply {
            Value::Nil => Ok(()),
            Value::Error(e) => Err(String::from_utf8_lossy(&e).into_owned()),
            v => {
                records::read(v, &mut self.cursor, out);
                Ok(())
            }
        }
    }

    /// Asks for what comes after the cursor (unless a read is out), and writes.
    pub fn flush(&mut self, stream: impl FnOnce() -> String) -> Result<(), String> {
        if self.reading.is_none() && matches!(self.link.state, LinkState::Up | LinkState::Connecting) {
            let stream = stream();
            self.link.send(&[
                b"XREAD",
                b"COUNT",
                READ_COUNT.as_bytes(),
                b"BLOCK",
                self.block.as_bytes(),
                b"STREAMS",
                stream.as_bytes(),
                &self.cursor,
            ]);
            self.reading = Some(Instant::now());
        }
        if self.link.state == LinkState::Up { self.link.flush() } else { Ok(()) }
    }

    pub fn wants_flush(&self) -> bool {
        self.link.wants_flush() || (self.reading.is_none() && self.link.state == LinkState::Up)
    }

    /// The link stopped answering: a read past its BLOCK, or a connect that takes too long.
    pub fn stuck(&self, now: Instant) -> bool {
        self.reading.is_some_and(|at| now >= at + self.read_timeout)
            || (self.link.state == LinkState::Connecting && self.reading.is_some_and(|at| now >= at + OP_TIMEOUT))
    }

    /// The times `stuck` and a reconnect have to look at next.
    pub fn next_wake(&self, consider: &mut impl FnMut(Instant)) {
        if let LinkState::Down { retry_at } = self.link.state {
            consider(retry_at);
        }
        if let Some(t) = self.reading {
            consider(t + self.read_timeout);
        }
    }
}

/// A source caught up from its history stream: a partition record's
/// predecessor never reached this node (the partition was trimmed past the
/// node's position while it was paused, or Redis lost it). Every record
/// waits meanwhile, so order holds.
pub struct Resync {
    pub key: SourceKey,
    /// The predecessor the record named.
    pub prev: EventId,
    /// The history's answer is in.
    pub done: bool,
    pub gap_sent: bool,
}

impl Resync {
    /// Asks on the command link for the history of `source` after `last`
    /// (the caller logs it, throttled).
    /// `keep`: what the source's history stream keeps (its count bound + 1).
    pub fn ask<T>(pipe: &mut Pipeline<T>, source: &str, key: SourceKey, last: EventId, prev: EventId, keep: &str) -> Resync {
        let history = pipe.keys.history(source);
        // What an exactly trimmed history holds: its newest `keep` (newest first; `~`
        // trimming may keep more), those up to `prev` used (the later ones come by partition).
        let from = format!("({last}");
        pipe.send(&[b"XREVRANGE", history.as_bytes(), b"+", from.as_bytes(), b"COUNT", keep.as_bytes()], Awaited::Resync);
        pipe.last_sent = Instant::now();
        Resync { key, prev, done: false, gap_sent: false }
    }
}
