//! The HTTP API, sans I/O: a complete request (head and body) in, a reply
//! out — a response to send, "make this connection a stream", or "wait
//! for storage" — and a head alone, before its body (`check`): what it
//! gets whatever its body. Routing (`admit`, shared by both), authentication,
//! CORS and every REST handler live here; changes go through the hub, and
//! the reactor applies what it records.

mod list;
pub mod reply;
mod ui;
mod webhook;

use std::borrow::Cow;

use crate::auth::{AccountId, KeyId, Keys};
use crate::config::Config;
use crate::engine::{self, IdemKey, Retention, SourceKey};
use crate::http::{self, Framing, Head};
use crate::hub::{Hub, Limited, Repeat};
use crate::json;
use crate::limits::{self, Kind, Limits};
use crate::metrics::Stats;
use crate::registry::{CreateError, Source};
use crate::sse::EventId;
use crate::text;
use crate::throttle::{Throttles, throttled};
use crate::tokens::Opener;
use crate::tokens::{self, Check, Serial};
use crate::verify::Verify;
pub use list::Listing;
pub use reply::Reply;
use reply::{Answer, CORS_ANY, Cors, Fail, ok};

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

/// The account's limits: the flags', with what its keys file line sets.
fn limits_of<W>(ctx: &Ctx<'_, W>, account: AccountId) -> Limits {
    ctx.keys.limits(account, &ctx.config.limits)
}

/// Refuses an emit of `source` that its rates refuse now (429); takes nothing.
fn refuse_over_rate<W>(ctx: &mut Ctx<'_, W>, source: SourceKey) -> Result<()> {
    rate_refusal(ctx, source).map_or(Ok(()), Err)
}

/// Takes an emit of `source` from its rates, or refuses it (429): after
/// `refuse_over_rate` in the same turn, it passes.
fn take_emit<W>(ctx: &mut Ctx<'_, W>, source: SourceKey) -> Result<()> {
    let account = ctx.hub.source(source).account;
    let limits = limits_of(ctx, account);
    match ctx.hub.take_emit(source, &limits, ctx.clock_ms) {
        Ok(()) => Ok(()),
        Err(refused) => Err(rate_limited(ctx, account, &limits, refused)),
    }
}

/// The `429` an emit of `source` gets now, if its rates refuse it (nothing is taken).
fn rate_refusal<W>(ctx: &mut Ctx<'_, W>, source: SourceKey) -> Option<Fail> {
    let account = ctx.hub.source(source).account;
    let limits = limits_of(ctx, account);
    let refused = ctx.hub.emit_refused(source, &limits, ctx.clock_ms)?;
    Some(rate_limited(ctx, account, &limits, refused))
}

fn rate_limited<W>(ctx: &mut Ctx<'_, W>, account: AccountId, limits: &Limits, refused: Limited) -> Fail {
    let retry = limits::retry_after_s(refused.wait_ms);
    let (whose, rate) = match refused.kind {
        Kind::AccountEmitRate => ("account", limits.account_emit_rate),
        _ => ("source", limits.emit_rate),
    };
    let rate = rate.map(|r| r.to_string()).unwrap_or_default();
    let message = format!("emit rate exceeded ({rate} events per second per {whose}); retry in {retry} s");
    limited(ctx, account, refused.kind, Fail::retry_after(message, retry))
}

/// A request refused at a tenant limit: counted, and logged once a minute
/// per account and limit, naming the account (never a key).
fn limited<W>(ctx: &mut Ctx<'_, W>, account: AccountId, kind: Kind, fail: Fail) -> Fail {
    ctx.stats.count_limited(kind);
    let (level, held) = ctx.throttles.limited.level(account, kind as usize, log::Level::Warn);
    log::log!(level, "account {}: {} (answered {}){held}", ctx.keys.account_name(account), fail.message, fail.status);
    fail
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

/// Who a request comes from.
enum Caller {
    Account(AccountId, KeyId),
    /// A subscribe token of `source`.
    Token {
        source: SourceKey,
        serial: Serial,
    },
}

/// The credential: `Authorization: Bearer`, or where `query` allows
/// (streams, summaries: browsers' EventSource cannot set headers)
/// `?access_token=`. Neither is ever logged.
fn credential(head: &Head, query: bool) -> Option<Cow<'_, [u8]>> {
    let from_header = head.header("authorization").and_then(|v| {
        let (scheme, token) = v.split_at(v.iter().position(|&b| b == b' ')?);
        scheme.eq_ignore_ascii_case(b"bearer").then(|| Cow::Borrowed(token.trim_ascii()))
    });
    from_header.or_else(|| query.then(|| http::query_param(head.query(), "access_token").map(|t| Cow::Owned(t.into_bytes()))).flatten())
}

/// The caller of a request: an account's key, or a subscribe token.
fn caller<W>(ctx: &Ctx<'_, W>, head: &Head, query: bool) -> Result<Caller> {
    let Some(presented) = credential(head, query) else {
        return Err(Fail::new(401, "missing API key: send Authorization: Bearer <key>"));
    };
    if let Some((account, key)) = ctx.keys.lookup(&presented) {
        return Ok(Caller::Account(account, key));
    }
    if !tokens::looks_like(&presented) {
        return Err(Fail::new(401, "invalid API key"));
    }
    match ctx.hub.tokens.check(&presented, ctx.now_ms) {
        Check::Valid { source, serial } => Ok(Caller::Token { source, serial }),
        Check::Expired => Err(Fail::new(401, "subscribe token expired")),
        Check::Unknown => Err(Fail::new(401, "invalid or revoked subscribe token")),
    }
}

/// The name of the account whose key or subscribe token `head` carries,
/// for the access log; `None` without a valid one.
pub fn account_name<W>(ctx: &Ctx<'_, W>, head: &Head) -> Option<String> {
    let account = match caller(ctx, head, true).ok()? {
        Caller::Account(account, _) => account,
        Caller::Token { source, .. } => ctx.hub.registry.get(source)?.account,
    };
    Some(ctx.keys.account_name(account).to_string())
}

/// The account of the request's key (`Authorization: Bearer` only); a
/// subscribe token is refused here.
fn authenticate<W>(ctx: &Ctx<'_, W>, head: &Head) -> Result<AccountId> {
    match caller(ctx, head, false)? {
        Caller::Account(account, _) => Ok(account),
        Caller::Token { .. } => Err(token_refused()),
    }
}

fn token_refused() -> Fail {
    Fail::new(403, "a subscribe token reads its source's stream and event summaries only")
}

/// The source a stream or summaries request reads, and what opened it. A
/// token names its own source only: any other is `403`, whether it exists
/// or not (so a token tells nothing about the account's other sources).
fn reader<W>(ctx: &Ctx<'_, W>, head: &Head, s: &str) -> Result<(SourceKey, Opener)> {
    match caller(ctx, head, true)? {
        Caller::Account(account, key) => Ok((find(ctx, account, s)?, Opener::Key(key))),
        Caller::Token { source, serial } => {
            // A token goes with its source; were one left behind, it reads nothing.
            let Some(named) = ctx.hub.registry.get(source) else {
                return Err(Fail::new(401, "invalid or revoked subscribe token"));
            };
            match ctx.hub.registry.find(named.account, s) {
                Some(found) if found == source => Ok((source, Opener::Token(serial))),
                _ => Err(token_refused()),
            }
        }
    }
}

fn find<W>(ctx: &Ctx<'_, W>, account: AccountId, s: &str) -> Result<SourceKey> {
    ctx.hub.registry.find(account, s).ok_or_else(|| Fail::new(404, "no such source"))
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

fn create_source<W>(ctx: &mut Ctx<'_, W>, head: &Head, account: AccountId, body: &[u8], cors: &Cors) -> Result<Reply> {
    require_length(head)?;
    if let Some(max) = limits_of(ctx, account).sources
        && ctx.hub.registry.count(account) as u64 >= max
    {
        return Err(limited(ctx, account, Kind::Sources, Fail::new(403, format!("source limit reached ({max} per account)"))));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| Fail::new(400, format!("body is not valid JSON: {e}")))?;
    let name = value.get("name").and_then(|n| n.as_str()).ok_or_else(|| Fail::new(400, "body must be {\"name\":\"<source name>\"}"))?;
    let verify = match value.get("verify") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(Verify::from_json(v).map_err(|e| Fail::new(400, e))?),
    };
    let retention = retention(value.get("retention"))?;
    let account_name = ctx.keys.account_name(account);
    let (key, ticket) = ctx.hub.create(account, account_name, name, verify, retention, ctx.now_ms).map_err(|e| match e {
        CreateError::BadName => Fail::new(400, e.to_string()),
        CreateError::Taken => Fail::new(409, e.to_string()),
    })?;
    let s = ctx.hub.source(key);
    ctx.stats.sources_created += 1;
    throttled!(ctx.throttles.sources, Info, "source {} ({}) created in account {account_name}", s.name, s.id);
    let mut out = b"{\"data\":".to_vec();
    source_json(&mut out, s, &base_url(ctx, head), ctx.config.retention_bounds());
    out.push(b'}');
    Ok(Reply::Wait { ticket, answer: Answer::fixed(head, 201, out, cors.clone()) })
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

/// `retention` of a create or a `PATCH`: absent or `null`, every bound
/// the server's; else an object whose members are each absent, `null` or
/// in range (SPEC §10).
fn retention(value: Option<&serde_json::Value>) -> Result<Retention> {
    let object = match value {
        None | Some(serde_json::Value::Null) => return Ok(Retention::default()),
        Some(serde_json::Value::Object(o)) => o,
        Some(_) => return Err(Fail::new(400, "retention must be {\"max_events\":N,\"max_age_s\":S,\"max_bytes\":B} (each optional)")),
    };
    if let Some(k) = object.keys().find(|k| !matches!(k.as_str(), "max_events" | "max_age_s" | "max_bytes")) {
        return Err(Fail::new(400, format!("retention has no member {k:?} (max_events, max_age_s, max_bytes)")));
    }
    let bound = |name: &str, range: std::ops::RangeInclusive<u64>| -> Result<Option<u32>> {
        match object.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => match v.as_u64().filter(|n| range.contains(n)) {
                Some(n) => Ok(Some(n as u32)),
                None => Err(Fail::new(400, format!("retention.{name} must be a whole number from {} to {}", range.start(), range.end()))),
            },
        }
    };
    let retention = Retention {
        max_events: bound("max_events", Retention::MAX_EVENTS)?,
        max_age_s: bound("max_age_s", Retention::MAX_AGE_S)?,
        max_bytes: bound("max_bytes", Retention::MAX_BYTES)?,
    };
    Ok(retention)
}

/// Sources on one page of `GET /v1/sources`: by default, and at most.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;

/// `GET /v1/sources?limit=N&after=ID`: a page of the account's sources,
/// oldest first, after the source `after` (an id, as `end_cursor` gives,
/// or a name). It costs the page, not the account's other sources, and
/// the reactor builds it a slice per turn (`list.rs`).
fn list_sources<W>(ctx: &mut Ctx<'_, W>, head: &Head, account: AccountId, cors: &str) -> Result<Reply> {
    let limit = match http::query_param(head.query(), "limit") {
        None => PAGE_DEFAULT,
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=PAGE_MAX).contains(n))
            .ok_or_else(|| Fail::new(400, format!("limit must be a number from 1 to {PAGE_MAX}")))?,
    };
    let after = match http::query_param(head.query(), "after").filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(
            ctx.hub
                .registry
                .find(account, &a)
                .ok_or_else(|| Fail::new(400, "after must name one of this account's sources (the end_cursor of the page before)"))?,
        ),
    };
    let from = after.and_then(|k| ctx.hub.registry.position(k));
    let bounds = ctx.config.retention_bounds();
    Ok(Reply::Listing(Box::new(Listing::new(account, from, limit, base_url(ctx, head), bounds, head, cors))))
}

/// `PATCH /v1/sources/{source}` `{"verify":{…}|null,"retention":{…}|null}`
/// (either or both). Answered with the source once storage has the change.
fn update_source<W>(ctx: &mut Ctx<'_, W>, head: &Head, source: SourceKey, body: &[u8], cors: &Cors) -> Result<Reply> {
    require_length(head)?;
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| Fail::new(400, format!("body is not valid JSON: {e}")))?;
    let object = value.as_object().filter(|o| o.contains_key("verify") || o.contains_key("retention"));
    let Some(object) = object else {
        return Err(Fail::new(400, "body must be {\"verify\":{…}|null} or {\"retention\":{…}|null}, or both"));
    };
    let verify = match object.get("verify") {
        None => None,
        Some(serde_json::Value::Null) => Some(None),
        Some(v) => Some(Some(Verify::from_json(v).map_err(|e| Fail::new(400, e))?)),
    };
    let retention = match object.get("retention") {
        None => None,
        v => Some(retention(v)?),
    };
    let s = ctx.hub.source(source);
    match &verify {
        Some(Some(v)) => {
            throttled!(ctx.throttles.sources, Info, "source {} ({}): signature check set to {}", s.name, s.id, v.scheme.name())
        }
        Some(None) => throttled!(ctx.throttles.sources, Info, "source {} ({}): signature check removed", s.name, s.id),
        None => {}
    }
    let mut ticket = None;
    if let Some(verify) = verify {
        ticket = Some(ctx.hub.set_verify(source, verify, ctx.now_ms));
    }
    if let Some(retention) = retention {
        let s = ctx.hub.source(source);
        throttled!(ctx.throttles.sources, Info, "source {} ({}): retention set", s.name, s.id);
        // The later ticket: engines acknowledge in submission order.
        ticket = Some(ctx.hub.set_retention(source, retention, ctx.now_ms));
    }
    let ticket = ticket.expect("one setting at least");
    let mut out = b"{\"data\":".to_vec();
    source_json(&mut out, ctx.hub.source(source), &base_url(ctx, head), ctx.config.retention_bounds());
    out.push(b'}');
    Ok(Reply::Wait { ticket, answer: Answer::fixed(head, 200, out, cors.clone()) })
}

/// `POST …/tokens` `{"expires_in_s":N}` (or no body): a subscribe token.
fn create_token<W>(ctx: &mut Ctx<'_, W>, head: &Head, source: SourceKey, body: &[u8], cors: &Cors) -> Result<Reply> {
    let bad = || Fail::new(400, format!("body must be {{\"expires_in_s\":<1 to {}>}} or empty", tokens::MAX_LIFE_S));
    let life_s = if body.trim_ascii().is_empty() {
        tokens::DEFAULT_LIFE_S
    } else {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| Fail::new(400, format!("body is not valid JSON: {e}")))?;
        match value.as_object().ok_or_else(bad)?.get("expires_in_s") {
            None => tokens::DEFAULT_LIFE_S,
            Some(n) => n.as_u64().filter(|n| (1..=tokens::MAX_LIFE_S).contains(n)).ok_or_else(bad)?,
        }
    };
    let account = ctx.hub.source(source).account;
    if let Some(max) = limits_of(ctx, account).tokens
        && ctx.hub.tokens.count(source) >= max
    {
        let message = format!("token limit reached ({max} live tokens per source)");
        return Err(limited(ctx, account, Kind::Tokens, Fail::new(403, message)));
    }
    let (token, ticket) = ctx.hub.create_token(source, ctx.now_ms + life_s * 1000, ctx.now_ms);
    ctx.stats.tokens_created += 1;
    throttled!(ctx.throttles.tokens, Info, "subscribe token for source {} created, expires in {life_s} s", token.source_id);
    let mut out = b"{\"data\":{\"token\":".to_vec();
    json::write_str(&mut out, &token.token);
    out.extend_from_slice(b",\"source_id\":");
    json::write_str(&mut out, &token.source_id);
    out.extend_from_slice(format!(",\"expires_at\":{}}}}}", token.expires_at).as_bytes());
    Ok(Reply::Wait { ticket, answer: Answer::fixed(head, 201, out, cors.clone()) })
}

fn summaries<W>(ctx: &Ctx<'_, W>, head: &Head, source: SourceKey, cors: &str) -> Result<Reply> {
    let max = ctx.config.retention_bounds().max_events.max(ctx.hub.source(source).retention.max_events.unwrap_or(0) as usize).max(1);
    let limit = match http::query_param(head.query(), "limit") {
        None => 10.min(max),
        Some(l) => l.parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| Fail::new(400, "limit must be a positive number"))?.min(max),
    };
    let Some(history) = ctx.hub.history(source) else { return Err(Fail::new(404, "no such source")) };
    let events: Vec<_> = history.newest(limit).collect();
    let cursor = |e: Option<&&crate::sse::Event>| e.map_or("null".to_string(), |e| format!("\"{}\"", e.id));
    let mut out = format!(
        "{{\"page_info\":{{\"total_count\":{},\"count\":{},\"start_cursor\":{},\"end_cursor\":{}}},\"data\":[",
        history.len(),
        events.len(),
        cursor(events.first()),
        cursor(events.last())
    )
    .into_bytes();
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e.envelope());
    }
    out.extend_from_slice(b"]}");
    Ok(ok(head, 200, "application/json", cors, &out))
}

/// `--public-url`, else `http://` (`https://` with TLS) + the request's Host.
fn base_url<W>(ctx: &Ctx<'_, W>, head: &Head) -> String {
    match &ctx.config.public_url {
        Some(url) => url.clone(),
        None => match head.header_str("host").filter(|h| !h.is_empty()) {
            Some(host) => format!("{}://{host}", ctx.config.scheme()),
            None => format!("{}://{}", ctx.config.scheme(), ctx.config.listen),
        },
    }
}

fn source_json(out: &mut Vec<u8>, s: &Source, base: &str, defaults: engine::Bounds) {
    // Written in place, no `format!`: a page is a thousand of these.
    out.extend_from_slice(b"{\"id\":");
    json::write_str(out, &s.id);
    out.extend_from_slice(b",\"name\":");
    json::write_str(out, &s.name);
    out.extend_from_slice(b",\"sse_url\":\"");
    json::write_escaped(out, base);
    out.extend_from_slice(b"/sources/");
    json::write_escaped(out, &s.id);
    out.extend_from_slice(b"/sse\",\"endpoint_url\":\"");
    json::write_escaped(out, base);
    out.extend_from_slice(b"/e/");
    json::write_escaped(out, &s.endpoint_key);
    out.extend_from_slice(b"\",\"created_at\":");
    text::push_u64(out, s.created_at);
    out.extend_from_slice(b",\"verify\":");
    match &s.verify {
        // Write-only: the secret never leaves.
        Some(v) => v.write_public(out),
        None => out.extend_from_slice(b"null"),
    }
    // The bounds in effect (`null`: none).
    let limits = s.retention.effective(defaults);
    let or_null = |out: &mut Vec<u8>, n: Option<u64>| match n {
        Some(n) => text::push_u64(out, n),
        None => out.extend_from_slice(b"null"),
    };
    out.extend_from_slice(b",\"retention\":{\"max_events\":");
    text::push_u64(out, limits.max_events as u64);
    out.extend_from_slice(b",\"max_age_s\":");
    or_null(out, limits.max_age_ms.map(|ms| ms / 1000));
    out.extend_from_slice(b",\"max_bytes\":");
    or_null(out, limits.max_bytes);
    out.extend_from_slice(b"}}");
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
