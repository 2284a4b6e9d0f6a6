//! Tenant limits as answers: an emit over its source's or its account's
//! rate is refused (`429` with `Retry-After`) before its body is read and
//! taken from the rates once it is good; a refusal at any limit is counted
//! and logged once a minute per account and limit.

use super::reply::Fail;
use super::{Ctx, Result};
use crate::auth::AccountId;
use crate::engine::SourceKey;
use crate::hub::Limited;
use crate::limits::{self, Kind, Limits};

/// The account's limits: the flags', with what its keys file line sets.
pub(super) fn limits_of<W>(ctx: &Ctx<'_, W>, account: AccountId) -> Limits {
    ctx.keys.limits(account, &ctx.config.limits)
}

/// Refuses an emit of `source` that its rates refuse now (429); takes nothing.
pub(super) fn refuse_over_rate<W>(ctx: &mut Ctx<'_, W>, source: SourceKey) -> Result<()> {
    rate_refusal(ctx, source).map_or(Ok(()), Err)
}

/// Takes an emit of `source` from its rates, or refuses it (429): after
/// `refuse_over_rate` in the same turn, it passes.
pub(super) fn take_emit<W>(ctx: &mut Ctx<'_, W>, source: SourceKey) -> Result<()> {
    let account = ctx.hub.source(source).account;
    let limits = limits_of(ctx, account);
    match ctx.hub.take_emit(source, &limits, ctx.clock_ms) {
        Ok(()) => Ok(()),
        Err(refused) => Err(rate_limited(ctx, account, &limits, refused)),
    }
}

/// The `429` an emit of `source` gets now, if its rates refuse it (nothing is taken).
pub(super) fn rate_refusal<W>(ctx: &mut Ctx<'_, W>, source: SourceKey) -> Option<Fail> {
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
pub(super) fn limited<W>(ctx: &mut Ctx<'_, W>, account: AccountId, kind: Kind, fail: Fail) -> Fail {
    ctx.stats.count_limited(kind);
    let (level, held) = ctx.throttles.limited.level(account, kind as usize, log::Level::Warn);
    log::log!(level, "account {}: {} (answered {}){held}", ctx.keys.account_name(account), fail.message, fail.status);
    fail
}
