//! One request: its head parsed, its body fed, then dispatched to the API
//! and answered (now, in the order of the connection's awaited answers, or
//! once storage acknowledges), or turned into a stream; a request that
//! cannot be read any further refused. Also what the API may read and
//! change for a request (`ctx`) and the access log's record of it.

use std::net::IpAddr;

use super::read::Step;
use super::timers::KEEPALIVE_TIMEOUT_MS;
use super::{Reactor, Waiter};
use crate::access::Access;
use crate::api::reply::CORS_ANY;
use crate::api::{self, Ctx, Reply};
use crate::conn::{BodyRead, Phase};
use crate::engine::SourceKey;
use crate::http::{self, BodyReader, Framing, Head, HttpError};
use crate::outq::Buf;
use crate::proxy;
use crate::sse::{self, EventId};
use crate::throttle::throttled;
use crate::tokens::Opener;

/// Pipelined requests awaiting storage on one connection before it stops reading.
pub(super) const MAX_AWAITED: usize = 64;

impl Reactor {
    /// The read buffer may hold a request head: parsed, and answered now
    /// if its body (if any) is here too; else its body is read next.
    pub(super) fn on_head(&mut self, key: usize) -> Step {
        let conn = &mut self.conns[key];
        let len = match http::parse_head_into(&conn.rbuf, &mut self.spare_head) {
            Ok(None) => return Step::Wait,
            Err(e) => {
                self.refuse(key, &e);
                return Step::Wait;
            }
            Ok(Some(len)) => len,
        };
        // Reused request after request: its buffers stay allocated.
        let head = std::mem::take(&mut self.spare_head);
        // A second clock read per request only for the access log's durations.
        conn.request_at_us = if self.access_log { self.start.elapsed().as_micros() as u64 } else { self.now * 1000 };
        conn.rbuf.drain(..len);
        let reader = match BodyReader::new(head.framing, self.config.max_event_bytes) {
            Err(e) => {
                self.refuse(key, &e);
                return Step::Wait;
            }
            Ok(reader) => reader,
        };
        match (reader, head.framing) {
            (None, _) => self.dispatch(key, head, &[]),
            // The common case, a whole Content-Length body already read, is
            // answered from the read buffer.
            (Some(_), Framing::Length(n)) if n as usize <= conn.rbuf.len() => {
                let n = n as usize;
                let mut rbuf = std::mem::take(&mut conn.rbuf);
                self.dispatch(key, head, &rbuf[..n]);
                // Kept only if the connection still reads requests.
                if let Some(conn) = self.conns.get_mut(key).filter(|c| matches!(c.phase, Phase::Head | Phase::Waiting)) {
                    rbuf.drain(..n);
                    conn.rbuf = rbuf;
                }
            }
            (Some(reader), _) => self.begin_body(key, head, reader),
        }
        Step::Again
    }

    /// Feeds what was read to the body being read; a complete one is answered.
    pub(super) fn on_body(&mut self, key: usize) -> Step {
        let conn = &mut self.conns[key];
        let Phase::Body(read) = &mut conn.phase else { return Step::Wait };
        match read.reader.feed(&conn.rbuf, &mut read.body) {
            Err(e) => {
                self.refuse(key, &e);
                Step::Wait
            }
            Ok(n) => {
                conn.rbuf.drain(..n);
                read.received += n as u64;
                if !read.reader.is_done() {
                    return Step::Wait;
                }
                let Some(BodyRead { head, body, .. }) = conn.take_body() else { return Step::Wait };
                self.release_body(key);
                self.dispatch(key, head, &body);
                Step::Again
            }
        }
    }

    /// Answers a request that cannot be read any further, then closes.
    pub(super) fn refuse(&mut self, key: usize, e: &HttpError) {
        self.release_body(key);
        let status = e.status();
        let conn = &mut self.conns[key];
        let body = crate::json::error_body(&e.to_string());
        let bytes = http::response(status, "application/json", CORS_ANY, &body, false, false);
        if self.access_log {
            let access =
                Access { account: "-".to_string(), client: None, request: "- -".to_string(), since_us: conn.request_at_us, sent: 0 };
            access.log(conn.peer, status, bytes.len() as u64, self.start.elapsed().as_micros() as u64);
        }
        // After the answers still awaited, if any; nothing more is read.
        conn.answered(None, bytes, true);
        if conn.awaiting() > 0 {
            conn.park();
        }
        self.to_flush.mark(conn, key);
        self.stats.count_response(status);
        self.disarm(key);
    }

    /// What the API may read and change for connection `key`'s request.
    pub(super) fn ctx(&mut self, key: usize) -> Ctx<'_, Waiter> {
        Ctx {
            hub: &mut self.hub,
            keys: &self.keys,
            config: &self.config,
            stats: &mut self.stats,
            throttles: &mut self.throttles,
            now_ms: self.unix_now,
            clock_ms: self.now,
            scratch: &mut self.handler_scratch,
            metrics_listener: self.conns[key].on_metrics,
        }
    }

    /// The reactor clock read now, in microseconds (the access log's durations).
    pub(super) fn clock_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// The access log's record of connection `key`'s request `head`: its
    /// account, and its client if the peer is a trusted proxy.
    pub(super) fn access(&mut self, key: usize, head: &Head) -> Box<Access> {
        let since = self.conns[key].request_at_us;
        let client = self.forwarded_client(key, head);
        let account = api::account_name(&self.ctx(key), head);
        Access::of(head, since, account.as_deref(), client)
    }

    /// The client of connection `key`'s request `head` if the peer is a
    /// trusted proxy (`--trusted-proxy`) that names it; `None`: the peer.
    pub(super) fn forwarded_client(&self, key: usize, head: &Head) -> Option<IpAddr> {
        if self.trusted_proxies.is_empty() {
            return None;
        }
        proxy::client(
            &self.trusted_proxies,
            self.conns[key].peer.ip(),
            head.headers().filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for")).map(|(_, v)| v),
        )
    }

    /// The client address of connection `key`'s request `head`: the peer,
    /// or the client a trusted proxy names.
    pub(super) fn client(&self, key: usize, head: &Head) -> IpAddr {
        self.forwarded_client(key, head).unwrap_or_else(|| self.conns[key].peer.ip())
    }

    /// Answers one complete request; its head goes back to be reused.
    pub(super) fn dispatch(&mut self, key: usize, head: Head, body: &[u8]) {
        self.turn_served = true;
        if self.served_turn.len() <= key {
            self.served_turn.resize(key + 1, 0);
        }
        self.served_turn[key] = self.turn;
        self.refresh_gauges();
        // Before the request is handled: it may revoke the token it names.
        let access = self.access_log.then(|| self.access(key, &head));
        let reply = api::handle(&mut self.ctx(key), &head, body);
        self.spare_head = head;
        match reply {
            Reply::Response { status, bytes, close } => {
                if let Some(access) = access {
                    access.log(self.conns[key].peer, status, bytes.len() as u64, self.clock_us());
                }
                self.answer(key, None, status, bytes, close);
            }
            Reply::Stream { source, after, opener } => {
                self.stats.count_response(200);
                self.subscribe(key, source, after, opener);
                self.conns[key].access = access;
            }
            Reply::Listing(listing) => self.begin_listing(key, listing, access),
            Reply::Wait { ticket, mut answer } => {
                answer.access = access;
                let (slot, generation) = self.await_slot(key, answer.keep_alive());
                self.hub.wait(ticket, Waiter::Conn { key, generation, slot, answer });
            }
        }
        // An engine that acknowledges at once (memory) answers before the
        // next pipelined request is parsed.
        self.settle();
    }

    /// An answer slot on `key` for an answer that comes later (from
    /// storage, or a page built in slices): its slot and generation. Later
    /// requests are read meanwhile (their answers queue behind this one),
    /// unless none may follow.
    pub(super) fn await_slot(&mut self, key: usize, keep_alive: bool) -> (u32, u32) {
        let conn = &mut self.conns[key];
        let slot = conn.await_answer();
        if !keep_alive || conn.peer_eof || conn.awaiting() >= MAX_AWAITED {
            conn.park();
        }
        let generation = conn.generation;
        self.disarm(key);
        (slot, generation)
    }

    /// Queues an answer (to the request just read, or to the awaited one
    /// in `slot`); the connection reads its next request or lingers.
    pub(super) fn answer(&mut self, key: usize, slot: Option<u32>, status: u16, bytes: Vec<u8>, close: bool) {
        self.stats.count_response(status);
        let conn = &mut self.conns[key];
        if status == 401 {
            self.stats.auth_failures += 1;
            throttled!(self.throttles.auth, Warn, "failed authentication from {}", conn.peer);
        }
        let was_parked = matches!(conn.phase, Phase::Waiting);
        // After the end of input, the answer to the last request read closes.
        let close = close || (conn.peer_eof && conn.rbuf.is_empty());
        conn.answered(slot, bytes, close);
        self.to_flush.mark(conn, key);
        let generation = conn.generation;
        match conn.phase {
            Phase::Linger => self.disarm(key),
            Phase::Head if conn.awaiting() == 0 => {
                if was_parked {
                    self.to_resume.push((key, generation));
                }
                self.arm(key, self.now + KEEPALIVE_TIMEOUT_MS);
            }
            _ => {}
        }
    }

    pub(super) fn subscribe(&mut self, key: usize, source: SourceKey, after: Option<EventId>, opener: Opener) {
        let conn = &mut self.conns[key];
        conn.push(Buf::Static(http::STREAM_HEAD));
        conn.push(Buf::Static(sse::HANDSHAKE));
        if let Some(range) = &self.config.client_retry {
            conn.push(Buf::Owned(sse::retry_frame(crate::sys::random_in(range))));
        }
        if let Some(after) = after {
            let (gap, events) = self.hub.replay(source, after);
            if let Some(gap) = gap {
                conn.push(Buf::Owned(sse::gap_frame(&gap)));
            }
            for event in events {
                conn.push(Buf::Shared(event.frame.clone()));
                self.stats.frames_delivered += 1;
            }
        }
        let index = self.hub.registry.subscribe(source, key as u32);
        if let Some(after) = after.filter(|&after| self.hub.is_ahead(source, after)) {
            self.hub.registry.resumed_ahead(source, key as u32, after);
        }
        conn.subscribe(source, index, opener);
        self.to_flush.mark(conn, key);
        self.stats.subscribers += 1;
        self.disarm(key);
        self.start_handshakes();
    }
}
