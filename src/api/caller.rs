//! Who a request comes from: an account's key (`Authorization: Bearer`)
//! or, for streams and event summaries, a subscribe token (also as
//! `?access_token=`); and the source such a request names.

use std::borrow::Cow;

use super::reply::Fail;
use super::{Ctx, Result};
use crate::auth::{AccountId, KeyId};
use crate::engine::SourceKey;
use crate::http::{self, Head};
use crate::tokens::{self, Check, Opener, Serial};

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
pub(super) fn authenticate<W>(ctx: &Ctx<'_, W>, head: &Head) -> Result<AccountId> {
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
pub(super) fn reader<W>(ctx: &Ctx<'_, W>, head: &Head, s: &str) -> Result<(SourceKey, Opener)> {
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

pub(super) fn find<W>(ctx: &Ctx<'_, W>, account: AccountId, s: &str) -> Result<SourceKey> {
    ctx.hub.registry.find(account, s).ok_or_else(|| Fail::new(404, "no such source"))
}
