//! The shared leaf of the API: what a request gets (`Reply`), an error
//! answer (`Fail`), a complete answer (`ok`), and the answer a request
//! parked on storage gets once its change is acknowledged (`Answer`).

use std::borrow::Cow;

use super::list::Listing;
use crate::access::Access;
use crate::engine::{Ack, SourceKey, StorageError, Ticket};
use crate::http::{self, Head};
use crate::json;
use crate::sse::EventId;
use crate::tokens::Opener;

/// What a request gets.
pub enum Reply {
    /// A complete response; `close` ends the connection after it.
    Response { status: u16, bytes: Vec<u8>, close: bool },
    /// The connection becomes a stream of `source`, replaying what follows
    /// `after` first; it ends when its opener does (a key removed by a
    /// reload, a subscribe token expired or revoked).
    Stream { source: SourceKey, after: Option<EventId>, opener: Opener },
    /// The answer waits until storage acknowledges `ticket`.
    Wait { ticket: Ticket, answer: Answer },
    /// A page of sources, built a slice per turn (`Listing::step`).
    Listing(Box<Listing>),
}

/// The `Access-Control-Allow-Origin` (and `Vary`) header lines of one
/// answer, whole lines each ending in CRLF; empty for none.
pub type Cors = Cow<'static, str>;

/// Any origin may read the answer: streams, webhooks, errors outside `/v1`.
pub const CORS_ANY: &str = "Access-Control-Allow-Origin: *\r\n";

/// An error answer: the status and its sentence as JSON (and for 405 the
/// allowed methods).
pub struct Fail {
    pub status: u16,
    pub message: String,
    pub allow: Option<&'static str>,
    /// `Retry-After` in seconds (a rate limit's answer).
    pub retry_after_s: Option<u64>,
}

impl Fail {
    pub fn new(status: u16, message: impl Into<String>) -> Fail {
        Fail { status, message: message.into(), allow: None, retry_after_s: None }
    }

    pub fn not_allowed(allow: &'static str) -> Fail {
        Fail { allow: Some(allow), ..Fail::new(405, format!("method not allowed; allowed: {allow}")) }
    }

    /// `429` with `Retry-After`.
    pub fn retry_after(message: impl Into<String>, retry_after_s: u64) -> Fail {
        Fail { retry_after_s: Some(retry_after_s), ..Fail::new(429, message) }
    }

    /// The response, with the same CORS headers as a success on its path
    /// would have, so an allowed page sees the status and the sentence
    /// rather than an opaque CORS failure.
    pub fn reply(&self, keep_alive: bool, head_only: bool, cors: &str) -> Reply {
        let mut extra = String::from(cors);
        match (self.status, self.allow, self.retry_after_s) {
            (401, ..) => extra.push_str("WWW-Authenticate: Bearer\r\n"),
            (503, ..) => extra.push_str("Retry-After: 1\r\n"),
            (_, Some(allow), _) => extra.push_str(&format!("Allow: {allow}\r\n")),
            (.., Some(s)) => extra.push_str(&format!("Retry-After: {s}\r\n")),
            _ => {}
        }
        let body = json::error_body(&self.message);
        let bytes = http::response(self.status, "application/json", &extra, &body, keep_alive, head_only);
        Reply::Response { status: self.status, bytes, close: !keep_alive }
    }
}

/// A complete answer to `head` (no body for HEAD; closes unless kept alive).
pub fn ok(head: &Head, status: u16, content_type: &str, extra: &str, body: &[u8]) -> Reply {
    let bytes = http::response(status, content_type, extra, body, head.keep_alive, head.method() == "HEAD");
    Reply::Response { status, bytes, close: !head.keep_alive }
}

/// How a parked request is answered once storage has spoken.
pub struct Answer {
    /// For the access log, when it is on.
    pub access: Option<Box<Access>>,
    what: Answered,
    keep_alive: bool,
    head_only: bool,
    cors: Cors,
}

enum Answered {
    /// `202 {"id":…}`.
    Emitted,
    /// A webhook's `200 {"success":true}`.
    Ingested,
    /// Known at submission (a new source's JSON, a 204).
    Fixed { status: u16, body: Vec<u8> },
}

impl Answer {
    fn new(head: &Head, what: Answered, cors: Cors) -> Answer {
        Answer { access: None, what, keep_alive: head.keep_alive, head_only: head.method() == "HEAD", cors }
    }

    pub fn emitted(head: &Head, cors: Cors) -> Answer {
        Answer::new(head, Answered::Emitted, cors)
    }

    pub fn ingested(head: &Head) -> Answer {
        Answer::new(head, Answered::Ingested, Cow::Borrowed(CORS_ANY))
    }

    /// More requests may follow on the connection.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    pub fn fixed(head: &Head, status: u16, body: Vec<u8>, cors: Cors) -> Answer {
        Answer::new(head, Answered::Fixed { status, body }, cors)
    }

    /// The response for `result`; `scratch` is a buffer kept across calls.
    pub fn render(self, result: Result<Ack, StorageError>, scratch: &mut Vec<u8>) -> Reply {
        let Answer { what, keep_alive, head_only, cors, .. } = self;
        let ack = match result {
            Ok(ack) => ack,
            Err(StorageError::Conflict) => return Fail::new(409, StorageError::Conflict.to_string()).reply(keep_alive, head_only, &cors),
            Err(StorageError::KeyReused) => return Fail::new(422, StorageError::KeyReused.to_string()).reply(keep_alive, head_only, &cors),
            Err(_) => return Fail::new(503, "storage unavailable").reply(keep_alive, head_only, &cors),
        };
        let response = |status, content_type, body: &[u8]| {
            let bytes = http::response(status, content_type, &cors, body, keep_alive, head_only);
            Reply::Response { status, bytes, close: !keep_alive }
        };
        match (what, ack) {
            (Answered::Emitted, Ack::Appended(id)) => {
                scratch.clear();
                scratch.extend_from_slice(b"{\"id\":\"");
                id.write(scratch);
                scratch.extend_from_slice(b"\"}");
                response(202, "application/json", scratch)
            }
            // Storage (Redis) found the key used with the same body: the first emit's id.
            (Answered::Emitted, Ack::Replayed(id)) => {
                let extra = format!("{cors}Idempotent-Replayed: true\r\n");
                let body = format!("{{\"id\":\"{id}\"}}");
                let bytes = http::response(202, "application/json", &extra, body.as_bytes(), keep_alive, head_only);
                Reply::Response { status: 202, bytes, close: !keep_alive }
            }
            (Answered::Ingested, _) => response(200, "application/json", b"{\"success\":true}"),
            (Answered::Fixed { status, body }, _) => response(status, "application/json", &body),
            // An emit acknowledged without an id: its source went away meanwhile.
            (Answered::Emitted, Ack::Stored) => Fail::new(404, "no such source").reply(keep_alive, head_only, &cors),
        }
    }
}
