//! `forward SOURCE --to URL` (SPEC §7): follows the source as `events -f`
//! does and replays each event as an HTTP request to a local server. A
//! webhook event is sent as the original request (method, path suffix and
//! query under `--to`'s path, headers but hop-by-hop ones, the exact body
//! bytes, so the sender's signature still verifies); any other event is a
//! `POST` of its JSON. The original path stays under `--to`'s path: its
//! dot segments are resolved first. One request at a time, in order; a
//! connection error, 429, 500, 502, 503 or 504 is retried with backoff
//! (or after the target's `Retry-After`), then reported and skipped; any
//! other status is final. `--cursor FILE` keeps the last id forwarded, so
//! a restart resumes after it.

use super::api::Api;
use super::error::Error;
use super::follow;
use super::http;
use super::json::Envelope;
use super::output::{notice, print};
use super::retry;
use super::signal;
use super::url::{self, BaseUrl, Flaw};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// First retry after this, doubling up to `BACKOFF_MAX_FACTOR` times it.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX_FACTOR: u32 = 30;
/// Testing knob: the first retry delay in ms (the cap stays 30 times it).
pub const BACKOFF_ENV: &str = "SSEHUB_FORWARD_BACKOFF_MS";
/// How long the target may take to answer (its next byte).
const PATIENCE: Duration = Duration::from_secs(30);
/// The resume point when the source has no history: older than any id.
const BEFORE_ALL: &str = "0-0";

/// Headers that belong to one connection (RFC 9110 §7.6.1), and those the
/// new request has its own of.
const NOT_FORWARDED: &[&str] =
    &["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length", "ssehub-event-id"];

/// The `--to` URL: plain HTTP only (the target is on this machine or near
/// it), with a query of its own if it has one.
#[derive(Debug)]
pub struct Target {
    pub base: BaseUrl,
    /// Sent before the event's own query.
    pub query: Option<String>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.query {
            Some(query) => write!(f, "{}?{query}", self.base),
            None => write!(f, "{}", self.base),
        }
    }
}

/// The `--to` URL; an `https://` one is checked with the system's roots
/// plus `cacert`, or not at all (`insecure`, said on stderr once).
pub fn target(to: &str, cacert: Option<String>, insecure: bool) -> Result<Target, Error> {
    let refuse = |why: &str| Error::Usage(format!("forward: --to {to}: {why}"));
    let mut parts = url::split(to).map_err(|flaw| match flaw {
        Flaw::Https => refuse("this ssehub is built without TLS (the `tls` feature); forward to a plain http:// server"),
        Flaw::NotHttp => refuse("the target must be an http:// or https:// URL (such as http://localhost:3000/hooks)"),
        Flaw::BadHostOrPort => refuse("bad host or port"),
    })?;
    if let Some(tls) = &mut parts.base.tls {
        *tls = url::Tls { cacert: cacert.map(Into::into), cacert_flag: "--to-cacert", insecure };
        if insecure {
            eprintln!("ssehub: warning: --to-insecure: the certificate of {to} is not verified");
        }
    }
    if parts.credentials {
        return Err(refuse(
            "user:password in --to is not sent; each request carries the original request's own headers (its Authorization, if it had one)",
        ));
    }
    if parts.fragment {
        return Err(refuse("a fragment (#...) is never sent in a request; leave it out"));
    }
    let query = parts.query.map(|q| q.trim_matches('&')).filter(|q| !q.is_empty());
    let sent = format!("{}{}", parts.base.prefix, query.unwrap_or(""));
    if !sent.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse("spaces and other special characters in the path or query must be percent-encoded"));
    }
    Ok(Target { base: parts.base, query: query.map(str::to_string) })
}

/// Forwards until stopped or refused.
pub fn run(api: &Api, source: &str, target: &Target, cursor: Option<&str>, max_retries: u32) -> Result<(), Error> {
    signal::install();
    let first = follow::millis_from_env(BACKOFF_ENV, BACKOFF_FIRST)?;
    let cursor = cursor.map(PathBuf::from);
    let after = match cursor.as_deref().map(read_cursor).transpose()?.flatten() {
        Some(id) => {
            notice(format!("forwarding {source} to {target}, resuming after {id}"));
            id
        }
        None => {
            // New events only: the newest kept one is the resume point.
            let newest = api.recent(source, 1)?.pop().map_or(BEFORE_ALL.to_string(), |e| e.id);
            notice(format!("forwarding new events of {source} to {target}"));
            newest
        }
    };
    let mut forwarder = Forwarder { target, cursor, max_retries, first };
    follow::run(api, source, after, &mut |event| forwarder.forward(event))
}

struct Forwarder<'a> {
    target: &'a Target,
    cursor: Option<PathBuf>,
    max_retries: u32,
    first: Duration,
}

/// The target's answer to one attempt.
struct Answer {
    status: u16,
    /// How long it asks to wait before the next try.
    retry_after: Option<Duration>,
}

impl Forwarder<'_> {
    /// Sends one event until it gets a final answer or the retries run out.
    fn forward(&mut self, event: &Envelope) -> Result<(), Error> {
        let request = Replay::of(event, self.target);
        let bytes = request.encode(&self.target.base, &event.id);
        let mut backoff = self.first;
        for attempt in 0..=self.max_retries {
            let started = Instant::now();
            let outcome = match self.send(&request, &bytes) {
                Err(Error::Stopped) => return Err(Error::Stopped),
                outcome => outcome,
            };
            let line = format!("{} {} {}", event.id, request.method, request.target);
            let last = attempt == self.max_retries;
            let retry = |what: String, wait: Duration| {
                notice(format!("{line}{what}; retry {} of {} in {} ms", attempt + 1, self.max_retries, wait.as_millis()));
                wait
            };
            let wait = match outcome {
                Ok(Answer { status, .. }) if !retry::is_retried(status) || last => {
                    print(&format!("{line} -> {status} ({} ms)", started.elapsed().as_millis()))?;
                    if retry::is_retried(status) {
                        notice(format!("{line}: still {status} after {} retries; skipped", self.max_retries));
                    }
                    return self.save(&event.id);
                }
                Ok(Answer { status, retry_after }) => retry(format!(" -> {status}"), retry_after.unwrap_or(backoff)),
                Err(err) if last => {
                    notice(format!("{line}: {err}; gave up after {} retries, skipped", self.max_retries));
                    return self.save(&event.id);
                }
                Err(err) => retry(format!(": {err}"), backoff),
            };
            follow::pause(wait)?;
            backoff = (backoff * 2).min(self.first * BACKOFF_MAX_FACTOR);
        }
        Ok(())
    }

    /// One attempt: the status of the answer, its body read and dropped. A
    /// Ctrl-C meanwhile waits for the answer, so that a clean stop never
    /// leaves a request sent but not recorded in the cursor.
    fn send(&self, request: &Replay, bytes: &[u8]) -> Result<Answer, Error> {
        signal::hold(true);
        let result = self.attempt(request, bytes);
        signal::hold(false);
        result
    }

    fn attempt(&self, request: &Replay, bytes: &[u8]) -> Result<Answer, Error> {
        let exchange = http::send_bytes(&self.target.base, bytes, PATIENCE)?;
        let status = exchange.head.status;
        let retry_after = exchange.head.header("retry-after").and_then(|v| retry::retry_after(v, SystemTime::now()));
        // An answer to HEAD has no body, whatever its Content-Length says.
        if request.method != "HEAD" {
            exchange.read_body(PATIENCE)?;
        }
        Ok(Answer { status, retry_after })
    }

    /// Records `id` as forwarded: a new file renamed over the old, so a
    /// crash leaves one or the other, never half of one.
    fn save(&self, id: &str) -> Result<(), Error> {
        let Some(path) = &self.cursor else { return Ok(()) };
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let failed = |e: std::io::Error| Error::Local(format!("cannot write the cursor {}: {e}", path.display()));
        std::fs::write(&tmp, format!("{id}\n")).map_err(failed)?;
        std::fs::rename(&tmp, path).map_err(failed)
    }
}

/// The request an event becomes.
#[derive(Debug, PartialEq)]
struct Replay {
    method: String,
    /// Path and query as sent.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Replay {
    fn of(event: &Envelope, to: &Target) -> Replay {
        let payload: Option<Fields> = serde_json::from_str(&event.event).ok();
        match payload.as_ref().and_then(|p| Replay::webhook(p, to)) {
            Some(replay) => replay,
            None => Replay {
                method: "POST".into(),
                target: with_query(under(&to.base, "/"), to, String::new()),
                headers: vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("User-Agent".into(), concat!("ssehub/", env!("CARGO_PKG_VERSION")).into()),
                ],
                body: event.event.as_bytes().to_vec(),
            },
        }
    }

    /// The original request of a webhook event (SPEC §2.4), if it is one.
    fn webhook(event: &Fields, to: &Target) -> Option<Replay> {
        let text = |key: &str| event.text(key);
        let method = text("method").filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()))?;
        let path = text("path").filter(|p| p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic()))?;
        let raw = text("bodyRaw")?;
        let body = match text("bodyRawEncoding").as_deref() {
            Some("base64") => crate::base64::decode(&raw)?,
            _ => raw.into_bytes(),
        };
        // Objects in the order sent (a `Value` would sort them).
        let sent: Fields = serde_json::from_str(event.get("headers")?.get()).ok()?;
        // Names listed in Connection are hop-by-hop too.
        let listed: Vec<String> = match sent.text("connection") {
            Some(v) => v.split(',').map(|n| n.trim().to_ascii_lowercase()).collect(),
            None => Vec::new(),
        };
        let mut headers = Vec::new();
        for (name, value) in &sent.0 {
            let Some(value) = string(value) else { continue };
            let hop = NOT_FORWARDED.contains(&name.as_str()) || name.starts_with("proxy-") || listed.contains(name);
            let sendable = is_token(name) && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
            if !hop && sendable {
                headers.push((name.clone(), value.to_string()));
            }
        }
        let query: Option<Fields> = event.get("query").and_then(|q| serde_json::from_str(q.get()).ok());
        let query = query.map_or_else(String::new, |q| encode_query(&q));
        let target = with_query(under(&to.base, &resolve_dots(&path)), to, query);
        Some(Replay { method, target, headers, body })
    }

    fn encode(&self, to: &BaseUrl, id: &str) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", self.method, self.target, to.authority());
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let bodiless = matches!(self.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE");
        if !self.body.is_empty() || !bodiless {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str(&format!("ssehub-event-id: {id}\r\nConnection: close\r\n\r\n"));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A JSON object's members in the order they were written.
#[derive(Debug)]
struct Fields(Vec<(String, Box<RawValue>)>);

impl Fields {
    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// A member that is a string.
    fn text(&self, key: &str) -> Option<String> {
        string(self.get(key)?)
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fields, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(member) = map.next_entry()? {
                    fields.push(member);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// A JSON string member's text (read as a `Value`, whose reader the
/// client has anyway: a reader of its own per type costs binary size).
fn string(raw: &RawValue) -> Option<String> {
    match serde_json::from_str(raw.get()) {
        Ok(Value::String(text)) => Some(text),
        _ => None,
    }
}

/// `path` under `--to`'s path: `/hooks` + `/github` = `/hooks/github`;
/// the endpoint's own root (`/`) is `--to`'s path itself.
fn under(to: &BaseUrl, path: &str) -> String {
    match (to.prefix.as_str(), path) {
        ("", path) => path.to_string(),
        (prefix, "/") => prefix.to_string(),
        (prefix, path) => format!("{prefix}{path}"),
    }
}

/// `path` (an absolute path as the sender wrote it) with its dot segments
/// resolved as RFC 3986 §5.2.4 does, so that under `--to`'s path it stays
/// there: `/a/../../admin` is `/admin`. `%2E` counts as `.`, and `\` as
/// `/` (browsers and some servers read it so; RFC 3986 has no place for
/// it in a path). Encoded slashes (`%2F`) are data within a segment.
fn resolve_dots(path: &str) -> String {
    let segments: Vec<&str> = path.split(['/', '\\']).skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        match dots(segment) {
            0 => out.push(segment),
            n => {
                if n == 2 {
                    out.pop();
                }
                // A dot segment at the end leaves the path ending in `/`.
                if i + 1 == segments.len() {
                    out.push("");
                }
            }
        }
    }
    let mut resolved = String::with_capacity(path.len());
    for segment in out {
        resolved.push('/');
        resolved.push_str(segment);
    }
    resolved
}

/// 1 for `.`, 2 for `..` (each dot may be written `%2e` or `%2E`), else 0.
fn dots(segment: &str) -> usize {
    let (mut rest, mut n) = (segment.as_bytes(), 0);
    while let Some(&first) = rest.first() {
        rest = match rest {
            [b'%', b'2', e, more @ ..] if e | 0x20 == b'e' => more,
            _ if first == b'.' => &rest[1..],
            _ => return 0,
        };
        n += 1;
    }
    if n <= 2 { n } else { 0 }
}

/// `--to`'s own query, then the event's (SPEC §7), after the path.
fn with_query(mut target: String, to: &Target, query: String) -> String {
    let parts: Vec<&str> = [to.query.as_deref().unwrap_or(""), &query].into_iter().filter(|q| !q.is_empty()).collect();
    if !parts.is_empty() {
        target.push('?');
        target.push_str(&parts.join("&"));
    }
    target
}

/// The event's decoded `query` object as a query string again: pairs in
/// order, repeated keys (arrays) as repeated pairs, percent-encoded.
fn encode_query(query: &Fields) -> String {
    let mut pairs = Vec::new();
    for (key, value) in &query.0 {
        let values = match serde_json::from_str(value.get()) {
            Ok(Value::String(one)) => vec![Value::String(one)],
            Ok(Value::Array(many)) => many,
            _ => Vec::new(),
        };
        for v in values.iter().filter_map(Value::as_str) {
            pairs.push(format!("{}={}", url::segment(key), url::segment(v)));
        }
    }
    pairs.join("&")
}

/// An HTTP header name (RFC 9110 token).
fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The id in a cursor file; `None` if there is no file yet.
fn read_cursor(path: &Path) -> Result<Option<String>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Local(format!("cannot read the cursor {}: {e}", path.display()))),
    };
    let id = text.trim();
    let valid =
        id.split_once('-').is_some_and(|(ms, seq)| [ms, seq].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())));
    match valid {
        true => Ok(Some(id.to_string())),
        false => Err(Error::Usage(format!("forward: the cursor {} holds {id:?}, not an event id", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_of(to: &str) -> Result<Target, Error> {
        target(to, None, false)
    }

    fn envelope(payload: &str) -> Envelope {
        Envelope { id: "5-1".into(), raw: String::new(), event: payload.into() }
    }

    #[test]
    fn replays_webhook_events_as_the_original_request() {
        let to = target_of("http://localhost:3000/hooks").unwrap();
        let event = r#"{"method":"POST","path":"/github/push","query":{"a":["1","2"],"b":"x y&z"},
            "headers":{"host":"hub.example","user-agent":"GitHub-Hookshot/1","content-type":"application/json",
            "content-length":"7","connection":"keep-alive, x-hop","x-hop":"1","keep-alive":"5","proxy-authorization":"p",
            "transfer-encoding":"chunked","te":"trailers","upgrade":"h2c","x-hub-signature-256":"sha256=ab"},
            "body":{"n":1},"bodyRaw":"{ \"n\":1}"}"#;
        let replay = Replay::of(&envelope(event), &to);
        let want = Replay {
            method: "POST".into(),
            target: "/hooks/github/push?a=1&a=2&b=x%20y%26z".into(),
            headers: [("user-agent", "GitHub-Hookshot/1"), ("content-type", "application/json"), ("x-hub-signature-256", "sha256=ab")]
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: b"{ \"n\":1}".to_vec(),
        };
        assert_eq!(replay, want);
        let wire = String::from_utf8(replay.encode(&to.base, "5-1")).unwrap();
        assert!(wire.starts_with("POST /hooks/github/push?a=1&a=2&b=x%20y%26z HTTP/1.1\r\nHost: localhost:3000\r\n"), "{wire}");
        assert!(wire.ends_with("Content-Length: 8\r\nssehub-event-id: 5-1\r\nConnection: close\r\n\r\n{ \"n\":1}"), "{wire}");
    }

    #[test]
    fn replays_binary_bodies_and_roots() {
        let to = target_of("http://127.0.0.1:9").unwrap();
        let event = r#"{"method":"PUT","path":"/","query":{},"headers":{},"body":"/wA=","bodyRaw":"/wA=","bodyRawEncoding":"base64"}"#;
        let replay = Replay::of(&envelope(event), &to);
        assert_eq!((replay.target.as_str(), replay.body.as_slice()), ("/", &b"\xff\x00"[..]));
        let get = r#"{"method":"GET","path":"/","query":{"flag":""},"headers":{},"body":"","bodyRaw":""}"#;
        let wire = String::from_utf8(Replay::of(&envelope(get), &target_of("http://h/in").unwrap()).encode(&to.base, "1-0")).unwrap();
        assert!(wire.starts_with("GET /in?flag= HTTP/1.1\r\n") && !wire.contains("Content-Length"), "{wire}");
    }

    #[test]
    fn other_events_are_posted_as_json() {
        let to = target_of("http://h/in").unwrap();
        for payload in
            [r#"{"total":12}"#, "[1,2]", r#"{"method":"POST","path":"/x"}"#, r#"{"method":"GET","path":"x","headers":{},"bodyRaw":""}"#]
        {
            let replay = Replay::of(&envelope(payload), &to);
            assert_eq!((replay.method.as_str(), replay.target.as_str(), replay.body.as_slice()), ("POST", "/in", payload.as_bytes()));
            assert!(replay.headers.contains(&("Content-Type".into(), "application/json".into())));
        }
    }

    #[test]
    fn keeps_requests_under_the_target_path() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/../../admin/users/1", "/admin/users/1"),
            ("/a/../../b", "/b"),
            ("/a/./b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/..", "/"),
            ("/%2e%2e/%2E%2e/x", "/x"),
            ("/.%2E/x/%2e", "/x/"),
            ("/a\\..\\..\\admin", "/admin"),
            ("/a//b/../c", "/a//c"),
            ("/...", "/..."),
            ("/..a/%2e%2ex", "/..a/%2e%2ex"),
            ("/..%2Fadmin", "/..%2Fadmin"),
        ];
        for (path, want) in cases {
            assert_eq!(resolve_dots(path), want, "{path}");
        }
        let to = target_of("http://h/hooks?token=t&").unwrap();
        let delete = r#"{"method":"DELETE","path":"/../../admin/users/1","query":{"a":"1"},"headers":{},"body":"","bodyRaw":""}"#;
        assert_eq!(Replay::of(&envelope(delete), &to).target, "/hooks/admin/users/1?token=t&a=1");
        assert_eq!(Replay::of(&envelope("[1]"), &to).target, "/hooks?token=t");
    }

    #[test]
    fn refuses_https_targets_and_bad_cursors() {
        #[cfg(not(feature = "tls"))]
        assert!(target_of("https://localhost:3000").unwrap_err().to_string().contains("built without TLS"));
        assert_eq!(target_of("http://localhost:3000/x/").unwrap().base.prefix, "/x");
        let dir = std::env::temp_dir().join(format!("ssehub-cursor-test-{}", std::process::id()));
        std::fs::write(&dir, "garbage\n").unwrap();
        assert!(read_cursor(&dir).unwrap_err().to_string().contains("not an event id"));
        std::fs::write(&dir, "17-3\n").unwrap();
        assert_eq!(read_cursor(&dir).unwrap().as_deref(), Some("17-3"));
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(read_cursor(&dir).unwrap(), None);
    }
}
