//! The HTTP API, sans I/O: a complete request (head and body) in, a reply
//! out — a response to send, "make this connection a stream", or "wait
//! for storage" — and a head alone, before its body (`check`): what it
//! gets whatever its body. Routing (`admit`, shared by both), CORS, and
//! the dispatch to a handler (`run`) live here, with the handlers of
//! streams, events, health and metrics; beside it, `caller.rs` (who is
//! asking: a key or a subscribe token), `rates.rs` (tenant limits as
//! answers), `sources.rs` (the handlers of sources, their tokens and
//! event summaries), `webhook.rs` (ingest), `ui.rs` (the inspector) and
//! `reply.rs` (what a request gets). Changes go through the hub, and the
//! reactor applies what it records.

mod caller;
mod list;
mod rates;
pub mod reply;
mod sources;
mod ui;
mod webhook;

use std::borrow::Cow;

use crate::auth::{AccountId, Keys};
use crate::config::Config;
use crate::engine::{IdemKey, SourceKey};
use crate::http::{self, Framing, Head};
use crate::hub::{Hub, Repeat};
use crate::json;
use crate::limits::Kind;
use crate::metrics::Stats;
use crate::sse::EventId;
use crate::throttle::{Throttles, throttled};
use crate::tokens::Opener;
pub use caller::account_name;
use caller::{authenticate, find, reader};
pub use list::Listing;
use rates::{limited, limits_of, rate_refusal, refuse_over_rate, take_emit};
pub use reply::Reply;
use reply::{Answer, CORS_ANY, Cors, Fail, ok};
use sources::{base_url, create_source, create_token, list_sources, source_json, summaries, update_source};

/// What a handler may read and change.
pub struct Ctx<'a, W> {
    pub hub: &'a mut Hub<W>,
    pub keys: &'a Keys,
    pub config: &'a Config,
    pub stats: &'a mut Stats,
    /// The lines any client can cause in bulk, each kind once a second.
    pub throttles: &'a mut Throttles,
    /// Unix milliseconds.
    pub now_ms: u64,
    /// The reactor's clock (milliseconds, monotonic): rate limits refill by it.
    pub clock_ms: u64,
    /// A buffer kept across requests (no allocation per emit).
    pub scratch: &'a mut Vec<u8>,
    /// The request came in on `--metrics-listen`.
    pub metrics_listener: bool,
}

/// The routes, matched on the path alone; methods are checked after.
enum Route<'p> {
    Healthz,
    Metrics,
    Stream(&'p str),
    Sources,
    Source(&'p str),
    Events(&'p str),
    Summaries(&'p str),
    Tokens(&'p str),
    Token(&'p str, &'p str),
    Ingest(&'p str, &'p str),
    Ui(ui::Asset),
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    if let Some(rest) = path.strip_prefix("/e/") {
        let (key, suffix) = rest.find('/').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
        return Route::Ingest(key, suffix);
    }
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    let (mut segments, mut n) = ([""; 5], 0);
    for segment in path.split('/').skip(1) {
        if n == segments.len() {
            return Route::NotFound;
        }
        segments[n] = segment;
        n += 1;
    }
    match &segments[..n] {
        ["healthz"] => Route::Healthz,
        ["metrics"] => Route::Metrics,
        ["sources", s, "sse"] | ["v1", "sources", s, "sse"] | ["sse", "dc", s, "emits"] => Route::Stream(s),
        ["v1", "sources"] => Route::Sources,
        ["v1", "sources", s] => Route::Source(s),
        ["v1", "sources", s, "events"] => Route::Events(s),
        ["v1", "sources", s, "event_summaries"] => Route::Summaries(s),
        ["v1", "sources", s, "tokens"] => Route::Tokens(s),
        ["v1", "sources", s, "tokens", t] => Route::Token(s, t),
        ["ui"] | ["ui", "sources", _] => Route::Ui(ui::Asset::Page),
        ["ui", "app.js"] => Route::Ui(ui::Asset::Script),
        ["ui", "app.css"] => Route::Ui(ui::Asset::Style),
        _ => Route::NotFound,
    }
}

type Result<T> = std::result::Result<T, Fail>;

/// Headers a page may send on `/v1` and streams (CORS preflight answers).
const CORS_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID, Idempotency-Key";

/// What a request may do, known from its head alone: routed, its key
/// checked, its source found, its method allowed.
enum Target<'h> {
    Healthz,
    Metrics,
    /// A CORS preflight, answered before authentication; the methods of its path.
    Preflight(&'static str),
    Stream {
        source: SourceKey,
        after: Option<EventId>,
        opener: Opener,
    },
    Sources(AccountId),
    Source(AccountId, SourceKey),
    Events(SourceKey),
    Summaries(SourceKey),
    Tokens(SourceKey),
    Token(SourceKey, &'h str),
    /// A webhook delivery to a source (or a CORS preflight of its endpoint), and its path suffix.
    Ingest(SourceKey, &'h str),
    Ui(ui::Asset),
}

pub fn handle<W>(ctx: &mut Ctx<'_, W>, head: &Head, body: &[u8]) -> Reply {
    let route = route_of(ctx, head.path());
    let cors = cors(ctx.config, head, &route);
    admit(ctx, head, route)
        .and_then(|target| run(ctx, head, target, body, &cors))
        .unwrap_or_else(|fail| fail.reply(head.keep_alive, head.method() == "HEAD", &cors))
}

/// Before a body is read: the answer that the request gets whatever its
/// body (401, 403, 404, 405; 429 for an emit over its rate, so a refused
/// emit is not even read), or `503` if it would be read but the bodies'
/// budget is spent (`busy`); `None` to read it. The answer closes the
/// connection, since the body that may follow is not read.
pub fn check<W>(ctx: &mut Ctx<'_, W>, head: &Head, busy: bool) -> Option<Reply> {
    let route = route_of(ctx, head.path());
    let cors = cors(ctx.config, head, &route);
    let fail = match admit(ctx, head, route) {
        Err(fail) => fail,
        Ok(Target::Events(source)) if head.method() == "POST" && !busy => rate_refusal(ctx, source)?,
        Ok(Target::Ingest(source, _)) if !webhook::is_preflight(head) && !busy => rate_refusal(ctx, source)?,
        Ok(_) if busy => Fail::new(503, "server busy: too many request bodies in flight"),
        Ok(_) => return None,
    };
    Some(fail.reply(false, head.method() == "HEAD", &cors))
}

/// The source whose webhook endpoint the request is sent to, if it is.
pub fn ingest_source<W>(ctx: &Ctx<'_, W>, head: &Head) -> Option<SourceKey> {
    match route_of(ctx, head.path()) {
        Route::Ingest(key, _) => ctx.hub.registry.find_endpoint(key),
        _ => None,
    }
}

/// The route, with `/metrics` only on the listener that serves it.
fn route_of<'p, W>(ctx: &Ctx<'_, W>, path: &'p str) -> Route<'p> {
    match (route(path), ctx.config.metrics_listen.is_some(), ctx.metrics_listener) {
        (r @ (Route::Metrics | Route::Healthz), _, true) => r,
        (_, _, true) | (Route::Metrics, true, false) => Route::NotFound,
        (r, ..) => r,
    }
}

/// The CORS headers of every answer on `route`: `/v1` as `--cors-origin`
/// says, streams and webhooks (and errors elsewhere) to any origin.
fn cors(config: &Config, head: &Head, route: &Route<'_>) -> Cors {
    let v1 = match route {
        Route::Sources | Route::Source(_) | Route::Events(_) | Route::Summaries(_) | Route::Tokens(_) | Route::Token(..) => true,
        Route::NotFound => head.path() == "/v1" || head.path().starts_with("/v1/"),
        _ => false,
    };
    let origins = &config.cors_origins;
    if !v1 || origins.iter().any(|o| o == "*") {
        return Cow::Borrowed(CORS_ANY);
    }
    if origins.is_empty() {
        return Cow::Borrowed("");
    }
    match head.header_str("origin") {
        // httparse has refused CR and LF in values, so echoing cannot split the head.
        Some(origin) if origins.iter().any(|o| o == origin) => {
            Cow::Owned(format!("Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"))
        }
        _ => Cow::Borrowed("Vary: Origin\r\n"),
    }
}

fn admit<'h, W>(ctx: &Ctx<'_, W>, head: &'h Head, route: Route<'h>) -> Result<Target<'h>> {
    let method = head.method();
    let get = matches!(method, "GET" | "HEAD");
    let preflight = method == "OPTIONS" && head.header("access-control-request-method").is_some();
    // What needs no key, and methods refused before the key is checked.
    match route {
        Route::Ingest(key, suffix) => {
            let source = ctx.hub.registry.find_endpoint(key).ok_or_else(|| Fail::new(404, "no such endpoint"))?;
            return Ok(Target::Ingest(source, suffix));
        }
        Route::Healthz if get => return Ok(Target::Healthz),
        Route::Metrics if get => return Ok(Target::Metrics),
        Route::Ui(asset) if get => return Ok(Target::Ui(asset)),
        Route::Healthz | Route::Metrics | Route::Ui(_) => return Err(not_allowed("GET, HEAD")),
        Route::Summaries(_) if !get && !preflight => return Err(not_allowed("GET, HEAD")),
        Route::Stream(_) if preflight => return Ok(Target::Preflight("GET")),
        Route::Sources if preflight => return Ok(Target::Preflight("GET, HEAD, POST")),
        Route::Source(_) if preflight => return Ok(Target::Preflight("GET, HEAD, PATCH, DELETE")),
        Route::Events(_) if preflight => return Ok(Target::Preflight("POST, DELETE")),
        Route::Summaries(_) if preflight => return Ok(Target::Preflight("GET, HEAD")),
        Route::Tokens(_) if preflight => return Ok(Target::Preflight("POST")),
        Route::Token(..) if preflight => return Ok(Target::Preflight("DELETE")),
        Route::Stream(_) if method != "GET" => return Err(not_allowed("GET")),
        Route::NotFound => return Err(Fail::new(404, "no such path")),
        _ => {}
    }
    // Streams and summaries may be read with a subscribe token.
    if let Route::Stream(s) | Route::Summaries(s) = route {
        let (source, opener) = reader(ctx, head, s)?;
        return Ok(match route {
            Route::Stream(_) => Target::Stream { source, after: last_event_id(head)?, opener },
            _ => Target::Summaries(source),
        });
    }
    let account = authenticate(ctx, head)?;
    let source = match route {
        Route::Source(s) | Route::Events(s) | Route::Tokens(s) | Route::Token(s, _) => find(ctx, account, s)?,
        // Not used by the routes without a source.
        _ => 0,
    };
    match (route, method) {
        (Route::Sources, "GET" | "HEAD" | "POST") => Ok(Target::Sources(account)),
        (Route::Sources, _) => Err(not_allowed("GET, HEAD, POST")),
        (Route::Source(_), "GET" | "HEAD" | "PATCH" | "DELETE") => Ok(Target::Source(account, source)),
        (Route::Source(_), _) => Err(not_allowed("GET, HEAD, PATCH, DELETE")),
        (Route::Events(_), "POST" | "DELETE") => Ok(Target::Events(source)),
        (Route::Events(_), _) => Err(not_allowed("POST, DELETE")),
        (Route::Tokens(_), "POST") => Ok(Target::Tokens(source)),
        (Route::Tokens(_), _) => Err(not_allowed("POST")),
        (Route::Token(_, token), "DELETE") => Ok(Target::Token(source, token)),
        _ => Err(not_allowed("DELETE")),
    }
}

fn run<W>(ctx: &mut Ctx<'_, W>, head: &Head, target: Target<'_>, body: &[u8], cors: &Cors) -> Result<Reply> {
    let json = "application/json";
    match target {
        Target::Ingest(_, _) if webhook::is_preflight(head) => Ok(webhook::preflight(head)),
        Target::Ingest(source, suffix) => {
            refuse_over_rate(ctx, source)?;
            let reply = webhook::ingest(ctx.hub, head, source, suffix, body, ctx.now_ms)?;
            // A delivery refused for its signature takes nothing from the rates.
            if matches!(reply, Reply::Wait { .. }) {
                take_emit(ctx, source)?;
            }
            Ok(reply)
        }
        Target::Healthz if ctx.hub.engine().healthy() => Ok(ok(head, 200, "text/plain; charset=utf-8", "", b"ok\n")),
        Target::Healthz => Err(Fail::new(503, "storage unavailable")),
        Target::Metrics => {
            let mut text = ctx.stats.render();
            ctx.hub.engine().metrics(&mut text);
            Ok(ok(head, 200, "text/plain; version=0.0.4; charset=utf-8", "", text.as_bytes()))
        }
        Target::Ui(asset) => Ok(ui::serve(head, asset)),
        Target::Preflight(methods) => {
            let mut extra = cors.to_string();
            if extra.starts_with("Access-Control-Allow-Origin") {
                extra.push_str(&format!(
                    "Access-Control-Allow-Methods: {methods}\r\nAccess-Control-Allow-Headers: {CORS_HEADERS}\r\nAccess-Control-Max-Age: 86400\r\n"
                ));
            }
            Ok(ok(head, 204, "", &extra, b""))
        }
        Target::Stream { source, after, opener } => {
            let account = ctx.hub.source(source).account;
            let open = ctx.hub.registry.account(account).map_or(0, |a| a.streams);
            match limits_of(ctx, account).streams {
                Some(max) if open >= max => {
                    let message = format!("stream limit reached ({max} open streams per account)");
                    Err(limited(ctx, account, Kind::Streams, Fail::new(429, message)))
                }
                _ => Ok(Reply::Stream { source, after, opener }),
            }
        }
        Target::Sources(account) if head.method() == "POST" => create_source(ctx, head, account, body, cors),
        Target::Sources(account) => list_sources(ctx, head, account, cors),
        Target::Source(account, source) if head.method() == "DELETE" => {
            refuse_while_unhealthy(ctx)?;
            let s = ctx.hub.source(source);
            throttled!(ctx.throttles.sources, Info, "source {} ({}) of account {} deleted", s.name, s.id, ctx.keys.account_name(account));
            let ticket = ctx.hub.delete(source, ctx.now_ms);
            Ok(Reply::Wait { ticket, answer: Answer::fixed(head, 204, Vec::new(), cors.clone()) })
        }
        Target::Source(_, source) if head.method() == "PATCH" => update_source(ctx, head, source, body, cors),
        Target::Source(_, source) => {
            let mut out = b"{\"data\":".to_vec();
            source_json(&mut out, ctx.hub.source(source), &base_url(ctx, head), ctx.config.retention_bounds());
            out.push(b'}');
            Ok(ok(head, 200, json, cors, &out))
        }
        Target::Events(source) if head.method() == "POST" => {
            require_length(head)?;
            // Refused over its rate before its body is parsed; taken from
            // the rates only once the body is good (a 400 takes nothing).
            refuse_over_rate(ctx, source)?;
            json::compact_into(body, ctx.scratch).map_err(|e| Fail::new(400, e.to_string()))?;
            let idem = idempotency_key(head, body)?;
            take_emit(ctx, source)?;
            let Some(idem) = idem else {
                let ticket = ctx.hub.emit(source, ctx.scratch, ctx.now_ms);
                return Ok(Reply::Wait { ticket, answer: Answer::emitted(head, cors.clone()) });
            };
            match ctx.hub.emit_idempotent(source, ctx.scratch, idem, ctx.now_ms) {
                Ok(ticket) => Ok(Reply::Wait { ticket, answer: Answer::emitted(head, cors.clone()) }),
                Err(Repeat::Replayed(id)) => {
                    let extra = format!("{cors}Idempotent-Replayed: true\r\n");
                    Ok(ok(head, 202, json, &extra, format!("{{\"id\":\"{id}\"}}").as_bytes()))
                }
                Err(Repeat::OtherBody) => Err(Fail::new(422, "this Idempotency-Key was used with another body on this source")),
                Err(Repeat::InFlight) => Err(Fail::new(409, "an emit with this Idempotency-Key is still being stored; retry shortly")),
            }
        }
        Target::Events(source) => {
            refuse_while_unhealthy(ctx)?;
            let ticket = ctx.hub.clear(source, ctx.now_ms);
            Ok(Reply::Wait { ticket, answer: Answer::fixed(head, 202, b"{}".to_vec(), cors.clone()) })
        }
        Target::Summaries(source) => summaries(ctx, head, source, cors),
        Target::Tokens(source) => create_token(ctx, head, source, body, cors),
        Target::Token(source, token) => match ctx.hub.revoke_token(source, token, ctx.now_ms) {
            Some(ticket) => Ok(Reply::Wait { ticket, answer: Answer::fixed(head, 204, Vec::new(), cors.clone()) }),
            None => Err(Fail::new(404, "no such token")),
        },
    }
}

/// A delete or a clear takes effect here at once (streams end, the ring
/// empties) and storage acknowledges it later; a write that fails takes it
/// back (`hub::Undo`), and while storage is known to be unreachable it is
/// refused before it is done (`Engine::takes_removals`), so that what a
/// `503` answers is not half done here and undone by the next start.
fn refuse_while_unhealthy<W>(ctx: &Ctx<'_, W>) -> Result<()> {
    match ctx.hub.engine().takes_removals() {
        true => Ok(()),
        false => Err(Fail::new(503, "storage unavailable")),
    }
}

fn not_allowed(allow: &'static str) -> Fail {
    Fail::not_allowed(allow)
}

/// A request that carries a body must say how long it is.
pub fn require_length(head: &Head) -> Result<()> {
    match head.framing {
        Framing::None => Err(Fail::new(411, http::HttpError::LengthRequired.to_string())),
        _ => Ok(()),
    }
}

fn last_event_id(head: &Head) -> Result<Option<EventId>> {
    let text = match head.header_str("last-event-id") {
        Some(v) => Some(v.to_string()),
        None => http::query_param(head.query(), "last_event_id"),
    };
    match text {
        None => Ok(None),
        Some(t) if t.trim().is_empty() => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| Fail::new(400, "Last-Event-ID must be an event id such as 1764262800123-0")),
    }
}

/// An emit's `Idempotency-Key` (1 to 255 visible ASCII characters), as
/// kept: its hash and the body's. `None` without the header.
fn idempotency_key(head: &Head, body: &[u8]) -> Result<Option<IdemKey>> {
    let Some(key) = head.header("idempotency-key") else { return Ok(None) };
    if key.is_empty() || key.len() > 255 || !key.iter().all(u8::is_ascii_graphic) {
        return Err(Fail::new(400, "Idempotency-Key must be 1 to 255 visible ASCII characters"));
    }
    Ok(Some(IdemKey::new(key, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_paths() {
        let table: &[(&str, &str)] = &[
            ("/healthz", "healthz"),
            ("/metrics", "metrics"),
            ("/sources/orders/sse", "stream orders"),
            ("/v1/sources/dc_x/sse", "stream dc_x"),
            ("/sse/dc/dc_x/emits", "stream dc_x"),
            ("/v1/sources", "sources"),
            ("/v1/sources/", "sources"),
            ("/v1/sources/orders", "source orders"),
            ("/v1/sources/orders/events", "events orders"),
            ("/v1/sources/orders/event_summaries", "summaries orders"),
            ("/e/KEY", "ingest KEY "),
            ("/e/KEY/a/b", "ingest KEY /a/b"),
            ("/", "404"),
            ("/v1", "404"),
            ("/v1/sources/a/b/c", "404"),
            ("/sources/orders", "404"),
            ("/v1/sources/orders/tokens", "tokens orders"),
            ("/v1/sources/orders/tokens/st_x", "token orders st_x"),
            ("/v1/sources/orders/tokens/st_x/y", "404"),
            ("/ui", "ui Page"),
            ("/ui/", "ui Page"),
            ("/ui/sources/orders", "ui Page"),
            ("/ui/app.js", "ui Script"),
            ("/ui/app.css", "ui Style"),
            ("/ui/other", "404"),
        ];
        for (path, want) in table {
            let got = match route(path) {
                Route::Healthz => "healthz".to_string(),
                Route::Metrics => "metrics".to_string(),
                Route::Stream(s) => format!("stream {s}"),
                Route::Sources => "sources".to_string(),
                Route::Source(s) => format!("source {s}"),
                Route::Events(s) => format!("events {s}"),
                Route::Summaries(s) => format!("summaries {s}"),
                Route::Tokens(s) => format!("tokens {s}"),
                Route::Token(s, t) => format!("token {s} {t}"),
                Route::Ui(asset) => format!("ui {asset:?}"),
                Route::Ingest(k, rest) => format!("ingest {k} {rest}"),
                Route::NotFound => "404".to_string(),
            };
            assert_eq!(&got, want, "{path}");
        }
    }
}
