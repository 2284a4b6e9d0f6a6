//! The handlers of `/v1/sources` and what hangs off a source: create,
//! list (a page at a time), update (signature check, retention), its
//! subscribe tokens made and its event summaries read; a source as JSON.

use super::rates::{limited, limits_of};
use super::reply::{Answer, Cors, Fail, Reply, ok};
use super::{Ctx, Listing, Result, require_length};
use crate::auth::AccountId;
use crate::engine::{self, Retention, SourceKey};
use crate::http::{self, Head};
use crate::json;
use crate::limits::Kind;
use crate::registry::{CreateError, Source};
use crate::text;
use crate::throttle::throttled;
use crate::tokens;
use crate::verify::Verify;

pub(super) fn create_source<W>(ctx: &mut Ctx<'_, W>, head: &Head, account: AccountId, body: &[u8], cors: &Cors) -> Result<Reply> {
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
pub(super) fn list_sources<W>(ctx: &mut Ctx<'_, W>, head: &Head, account: AccountId, cors: &str) -> Result<Reply> {
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
pub(super) fn update_source<W>(ctx: &mut Ctx<'_, W>, head: &Head, source: SourceKey, body: &[u8], cors: &Cors) -> Result<Reply> {
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
pub(super) fn create_token<W>(ctx: &mut Ctx<'_, W>, head: &Head, source: SourceKey, body: &[u8], cors: &Cors) -> Result<Reply> {
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

pub(super) fn summaries<W>(ctx: &Ctx<'_, W>, head: &Head, source: SourceKey, cors: &str) -> Result<Reply> {
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
pub(super) fn base_url<W>(ctx: &Ctx<'_, W>, head: &Head) -> String {
    match &ctx.config.public_url {
        Some(url) => url.clone(),
        None => match head.header_str("host").filter(|h| !h.is_empty()) {
            Some(host) => format!("{}://{host}", ctx.config.scheme()),
            None => format!("{}://{}", ctx.config.scheme(), ctx.config.listen),
        },
    }
}

pub(super) fn source_json(out: &mut Vec<u8>, s: &Source, base: &str, defaults: engine::Bounds) {
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
