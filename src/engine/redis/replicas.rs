//! `--redis-replicas N`: a change is acknowledged only once `WAIT N 1000`
//! says that N replicas have it, so a failover to a replica loses nothing
//! acknowledged. The script calls a turn sends are followed by one `WAIT`
//! (not one per event); their replies are held until it answers: N or
//! more, and they are settled as usual; fewer (or the link lost first),
//! and they fail with `503` (their fate is unknown: Redis took them, a
//! failover may lose them).
//!
//! One `WAIT` is out at a time. Redis blocks the connection in `WAIT`, so
//! calls sent behind it run only once it answers; a `WAIT` per turn behind
//! it would cost a whole replication round each. Instead the calls go out
//! at once and the next `WAIT` is sent when the one out answers: it covers
//! every call sent meanwhile, so under load the rounds carry larger
//! batches. Replies come in order, so those held when a `WAIT` answers are
//! exactly the calls Redis ran before it.

use std::time::Instant;

use super::pipeline::{Awaited, Pipeline};
use super::resp::Value;
use crate::throttle::{Throttle, throttled};

/// How long `WAIT` waits for the replicas, in milliseconds.
const WAIT_MS: &str = "1000";

pub struct Replicas<T> {
    /// N (0: no `WAIT`).
    pub n: u32,
    /// Replies to changes that wait for the next `WAIT`'s answer.
    held: Vec<(Awaited<T>, Value)>,
    /// A `WAIT` is out, not yet answered.
    waiting: bool,
    line: Throttle,
}

impl<T> Replicas<T> {
    pub fn new(n: u32) -> Replicas<T> {
        Replicas { n, held: Vec::new(), waiting: false, line: Throttle::default() }
    }

    /// One `WAIT` after the changes sent since the last (`Pipeline::unwaited`), unless one is out.
    pub fn wait_if_due(&mut self, pipe: &mut Pipeline<T>) {
        if pipe.unwaited > 0 && self.n > 0 && !self.waiting {
            pipe.unwaited = 0;
            self.waiting = true;
            let n = self.n.to_string();
            pipe.send(&[b"WAIT", n.as_bytes(), WAIT_MS.as_bytes()], Awaited::Wait(Instant::now()));
        }
    }

    /// A change's reply is held (`true`) until the `WAIT` after it
    /// answers; an error reply is not (the change failed anyway).
    pub fn hold(&mut self, awaited: Awaited<T>, reply: Value) -> Result<(), (Awaited<T>, Value)> {
        let change = matches!(awaited, Awaited::Emits { .. } | Awaited::Change { .. });
        if self.n == 0 || !change || matches!(reply, Value::Error(_)) {
            return Err((awaited, reply));
        }
        self.held.push((awaited, reply));
        Ok(())
    }

    /// `WAIT`'s answer: the held replies, and whether enough replicas have them.
    pub fn answered(&mut self, reply: &Value) -> (bool, Vec<(Awaited<T>, Value)>) {
        self.waiting = false;
        let confirmed = reply.as_int().unwrap_or(0);
        let enough = confirmed >= i64::from(self.n);
        if !enough && !self.held.is_empty() {
            throttled!(
                self.line,
                Warn,
                "only {confirmed} of {} Redis replicas confirmed {} changes within {WAIT_MS} ms; answered 503",
                self.n,
                self.held.len()
            );
        }
        (enough, std::mem::take(&mut self.held))
    }

    /// The command link is lost: what was held is not confirmed.
    pub fn lost(&mut self) -> Vec<(Awaited<T>, Value)> {
        self.waiting = false;
        std::mem::take(&mut self.held)
    }
}
