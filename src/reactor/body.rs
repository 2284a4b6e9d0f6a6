//! Request bodies being read: the budget they share
//! (`--max-body-bytes-in-flight`, a quarter of it at most for one webhook
//! endpoint's senders or one client address, `bodies::Budget`), a head
//! refused before its body when it would be refused anyway or the budget
//! is held, `100 Continue`, and a body cut with `408` below the floor rate.

use std::net::IpAddr;

use log::warn;

use super::Reactor;
use super::timers::BODY_TIMEOUT_MS;
use crate::api::{self, Reply};
use crate::bodies::{Busy, Floor};
use crate::conn::{BodyRead, Phase};
use crate::engine;
use crate::http::{self, BodyReader, Framing, Head, HttpError};
use crate::limits::Kind;
use crate::outq::Buf;
use crate::throttle::throttled;

impl Reactor {
    /// A head whose body is still to come. Refused at once if it would be
    /// whatever its body (401, 404, 405: no `100 Continue`, the body is not
    /// read), or if bodies being read already hold `--max-body-bytes-in-flight`,
    /// or the senders of its webhook endpoint or its client address hold
    /// their share of it (503, `bodies::Budget`); else its body is read,
    /// holding its length (a chunked one: the most it may be) of that budget.
    pub(super) fn begin_body(&mut self, key: usize, head: Head, reader: BodyReader) {
        // At most --max-event-bytes (a longer Content-Length got its 413).
        let max = self.config.max_event_bytes as u64;
        let reserve = u32::try_from(match head.framing {
            Framing::Length(n) => n.min(max),
            _ => max,
        })
        .unwrap_or(u32::MAX);
        let source = api::ingest_source(&self.ctx(key), &head);
        let client = self.client(key, &head);
        let taken = self.bodies.take(key, reserve, source, client);
        if let Some(Reply::Response { status, bytes, .. }) = api::check(&mut self.ctx(key), &head, taken.is_err()) {
            // Taken only to be refused for another reason: given back.
            self.bodies.release(key);
            if status == 503 {
                self.body_busy(taken, source, client);
            }
            if self.access_log {
                let access = self.access(key, &head);
                access.log(self.conns[key].peer, status, bytes.len() as u64, self.clock_us());
            }
            self.spare_head = head;
            self.answer(key, None, status, bytes, true);
            let conn = &mut self.conns[key];
            // The body that may follow is not a request: nothing more is parsed.
            if conn.awaiting() > 0 {
                conn.park();
            }
            return;
        }
        let conn = &mut self.conns[key];
        if head.expect_continue && head.minor >= 1 {
            // Interim answers too keep their place behind awaited ones.
            if conn.awaiting() > 0 {
                conn.answered(None, http::CONTINUE.to_vec(), false);
            } else {
                conn.push(Buf::Static(http::CONTINUE));
            }
            self.to_flush.mark(conn, key);
            self.stats.count_response(100);
        }
        let started = self.now;
        conn.begin_body(BodyRead { head, reader, body: Vec::new(), started, received: 0 }, reserve);
        self.arm(key, self.floor.first_check(started).min(started + BODY_TIMEOUT_MS));
    }

    /// A body refused (503) because the budget, or its share, is held:
    /// one line a second at most of each.
    pub(super) fn body_busy(&mut self, busy: Result<(), Busy>, source: Option<engine::SourceKey>, client: IpAddr) {
        let holder = match busy {
            Ok(()) => return,
            Err(Busy::Full) => {
                if self.last_busy_warning.is_none_or(|at| self.now >= at + 1000) {
                    warn!("request bodies being read reached --max-body-bytes-in-flight; new ones get 503");
                    self.last_busy_warning = Some(self.now);
                }
                return;
            }
            Err(Busy::Endpoint) => match source.and_then(|s| self.hub.registry.get(s)) {
                Some(s) => format!("to the webhook endpoint of source {} (account {})", s.id, self.keys.account_name(s.account)),
                None => "to a webhook endpoint".to_string(),
            },
            Err(Busy::Client) => format!("from {client}"),
        };
        self.stats.count_limited(Kind::BodyShare);
        let share = self.bodies.share();
        throttled!(
            self.throttles.body_share,
            Warn,
            "request bodies {holder} hold their share of --max-body-bytes-in-flight ({share} bytes); new ones get 503"
        );
    }

    /// The connection's body, if it was reading one, no longer holds its share.
    pub(super) fn release_body(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && std::mem::take(&mut conn.body_reserved) != 0
        {
            self.bodies.release(key);
        }
    }

    /// A body below the floor rate: answered `408` and closed.
    pub(super) fn too_slow(&mut self, key: usize) {
        let conn = &self.conns[key];
        let peer = conn.peer;
        let (received, ms) = match &conn.phase {
            Phase::Body(read) => (read.received, self.now - read.started),
            _ => (0, 0),
        };
        self.stats.count_limited(Kind::BodyRate);
        let Floor { after_ms, bytes_per_s } = self.floor;
        // Tenths of seconds by hand: printing an f64 would link core's float formatting.
        throttled!(
            self.throttles.body_rate,
            Info,
            "request body from {peer} too slow: {received} bytes in {}.{} s (the floor is {bytes_per_s} bytes/s after {}.{} s); answered 408",
            ms / 1000,
            ms % 1000 / 100,
            after_ms / 1000,
            after_ms % 1000 / 100
        );
        self.refuse(key, &HttpError::BodyTooSlow);
    }
}
