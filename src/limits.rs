//! Tenant limits (SPEC §12): what one account may hold and how fast its
//! sources may emit. Rates (`R[:BURST]`), token buckets that refill on use
//! from the caller's clock (no thread, no timer per bucket), and each
//! account's limit values: the flags', with what its `--keys-file` line
//! sets over them. No I/O, no clock: times come in as milliseconds.

use std::fmt;

/// The flags' defaults: sources per account and live tokens per source.
pub const DEFAULT_SOURCES: u64 = 10_000;
pub const DEFAULT_TOKENS: u64 = 1_000;
/// Thousandths in one event: rates are kept exactly to three decimals.
const MILLI: u64 = 1_000;
/// The fastest rate: a million events a second (one a microsecond).
const RATE_MAX_MILLI: u64 = 1_000_000 * MILLI;

/// Events per second and the burst allowed at once, in thousandths of an
/// event (`0.5` is 500), so that a rate is parsed and compared without floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_s_milli: u64,
    burst_milli: u64,
}

impl Rate {
    /// `R` or `R:BURST`, each a positive decimal with at most three
    /// decimals; the burst defaults to `R` and is at least one event (a
    /// bucket that never holds a whole event would refuse every emit).
    pub fn parse(s: &str) -> Result<Rate, &'static str> {
        const WANT: &str = "expected events per second and an optional burst, such as 100, 0.5 or 50:200";
        let (rate, burst) = match s.split_once(':') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let per_s_milli = decimal_milli(rate).filter(|&r| r > 0 && r <= RATE_MAX_MILLI).ok_or(WANT)?;
        let burst_milli = match burst {
            None => per_s_milli.max(MILLI),
            Some(b) => decimal_milli(b).filter(|&b| b >= MILLI).ok_or("the burst is at least 1 event")?,
        };
        Ok(Rate { per_s_milli, burst_milli })
    }

    /// Microseconds between two events at this rate.
    fn interval_us(&self) -> u64 {
        (1_000_000 * MILLI / self.per_s_milli).max(1)
    }

    /// How far ahead of the clock a bucket may run: the burst beyond the first event.
    fn tolerance_us(&self) -> u64 {
        (self.burst_milli - MILLI).saturating_mul(self.interval_us()) / MILLI
    }
}

/// A non-negative decimal with at most three decimals, in thousandths.
fn decimal_milli(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').map_or((s, None), |(w, f)| (w, Some(f)));
    if whole.is_empty() || whole.len() > 12 || frac.is_some_and(|f| f.is_empty() || f.len() > 3) {
        return None;
    }
    let mut milli = 0;
    let mut scale = MILLI;
    for (i, b) in whole.bytes().chain(frac.unwrap_or("").bytes()).enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        if i >= whole.len() {
            scale /= 10;
        }
        milli = milli * 10 + (b - b'0') as u64;
    }
    Some(milli * scale)
}

/// Thousandths written back as a decimal (`500` → `0.5`).
struct Milli(u64);

impl fmt::Display for Milli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, mut frac, mut digits) = (self.0 / MILLI, self.0 % MILLI, 3);
        if frac == 0 {
            return write!(f, "{whole}");
        }
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        write!(f, "{whole}.{frac:0digits$}")
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Milli(self.per_s_milli), Milli(self.burst_milli))
    }
}

/// A token bucket in eight bytes, as the generic cell rate algorithm keeps
/// it: the time (reactor microseconds) at which it would be full again.
/// Full when new; refilled by the clock moving, read only on use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    full_at_us: u64,
}

impl Bucket {
    /// Whether one event may pass at `now_ms`: `Ok` with the bucket it
    /// leaves (to be kept once every bucket of the emit agrees), or how
    /// many milliseconds until one would.
    pub fn check(&self, rate: &Rate, now_ms: u64) -> Result<Bucket, u64> {
        let now = now_ms.saturating_mul(1000);
        let from = self.full_at_us.max(now);
        let ahead = from - now;
        if ahead > rate.tolerance_us() {
            return Err((ahead - rate.tolerance_us()).div_ceil(1000));
        }
        Ok(Bucket { full_at_us: from + rate.interval_us() })
    }
}

/// `Retry-After` for a wait in milliseconds: whole seconds, at least 1.
pub fn retry_after_s(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(1000).max(1)
}

/// The limits, each named as `/metrics` labels it: first the account's
/// (`ACCOUNT_KINDS` of them), then the bodies' (`bodies`), which no
/// account sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sources,
    Tokens,
    Streams,
    EmitRate,
    AccountEmitRate,
    /// A body refused: its webhook endpoint or its client address holds
    /// its share of `--max-body-bytes-in-flight`.
    BodyShare,
    /// A body cut below the floor rate.
    BodyRate,
}

/// The limits an account has (and a keys file sets): the first of `Kind::ALL`.
pub const ACCOUNT_KINDS: usize = 5;

impl Kind {
    pub const ALL: [Kind; 7] =
        [Kind::Sources, Kind::Tokens, Kind::Streams, Kind::EmitRate, Kind::AccountEmitRate, Kind::BodyShare, Kind::BodyRate];

    /// The `limit` label of `ssehub_limited_total`, and (an account's
    /// limit) the option's name in a keys file.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sources => "sources",
            Kind::Tokens => "tokens",
            Kind::Streams => "streams",
            Kind::EmitRate => "emit_rate",
            Kind::AccountEmitRate => "account_emit_rate",
            Kind::BodyShare => "body_share",
            Kind::BodyRate => "body_rate",
        }
    }
}

/// One account's limits; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sources the account may hold.
    pub sources: Option<u64>,
    /// Live subscribe tokens per source.
    pub tokens: Option<u64>,
    /// Open streams of the account's sources.
    pub streams: Option<u64>,
    /// Emits of one source.
    pub emit_rate: Option<Rate>,
    /// Emits of all the account's sources together.
    pub account_emit_rate: Option<Rate>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { sources: Some(DEFAULT_SOURCES), tokens: Some(DEFAULT_TOKENS), streams: None, emit_rate: None, account_emit_rate: None }
    }
}

/// A count, or `none` for no limit.
pub fn parse_count(s: &str) -> Result<Option<u64>, &'static str> {
    match s {
        "none" => Ok(None),
        _ => s.parse().map(Some).map_err(|_| "expected a count or none"),
    }
}

/// A rate, or `none` for no limit.
pub fn parse_rate(s: &str) -> Result<Option<Rate>, &'static str> {
    match s {
        "none" => Ok(None),
        _ => Rate::parse(s).map(Some),
    }
}

/// What one account's lines in a keys file set over the flags: each
/// `Some` replaces the flag's value (with `Some(None)`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    sources: Option<Option<u64>>,
    tokens: Option<Option<u64>>,
    streams: Option<Option<u64>>,
    emit_rate: Option<Option<Rate>>,
    account_emit_rate: Option<Option<Rate>>,
}

impl Overrides {
    /// One `name=value` word after a keys file's `KEY ACCOUNT`.
    pub fn set(&mut self, word: &str) -> Result<(), &'static str> {
        let (name, value) = word.split_once('=').ok_or(UNKNOWN)?;
        match name {
            "sources" => self.sources = Some(parse_count(value)?),
            "tokens" => self.tokens = Some(parse_count(value)?),
            "streams" => self.streams = Some(parse_count(value)?),
            "emit_rate" => self.emit_rate = Some(parse_rate(value)?),
            "account_emit_rate" => self.account_emit_rate = Some(parse_rate(value)?),
            _ => return Err(UNKNOWN),
        }
        Ok(())
    }

    /// The account's limits: these over the flags' `base`.
    pub fn over(&self, base: &Limits) -> Limits {
        Limits {
            sources: self.sources.unwrap_or(base.sources),
            tokens: self.tokens.unwrap_or(base.tokens),
            streams: self.streams.unwrap_or(base.streams),
            emit_rate: self.emit_rate.unwrap_or(base.emit_rate),
            account_emit_rate: self.account_emit_rate.unwrap_or(base.account_emit_rate),
        }
    }
}

const UNKNOWN: &str = "unknown option after `KEY ACCOUNT` (known: sources=N emit_rate=R[:B] account_emit_rate=R[:B] streams=N tokens=N)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        let table: &[(&str, (u64, u64))] = &[
            ("100", (100_000, 100_000)),
            ("2:5", (2_000, 5_000)),
            ("0.5", (500, 1_000)),
            ("0.5:3", (500, 3_000)),
            ("1.25:1.5", (1_250, 1_500)),
            ("1000000", (1_000_000_000, 1_000_000_000)),
        ];
        for (input, want) in table {
            assert_eq!(Rate::parse(input).map(|r| (r.per_s_milli, r.burst_milli)), Ok(*want), "{input:?}");
        }
        for bad in ["", "0", "-1", "1.", ".5", "0.0001", "1e3", "2:", "2:0.5", "x", "1000001", "2:3:4", " 2"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Rate::parse("2:0").unwrap_err(), "the burst is at least 1 event");
        for (input, shown) in [("2", "2:2"), ("0.5", "0.5:1"), ("1.25:10", "1.25:10")] {
            assert_eq!(Rate::parse(input).unwrap().to_string(), shown);
        }
    }

    /// Emits at `times` (ms) through one bucket: passed, or the wait in ms.
    fn run(rate: &str, times: &[u64]) -> Vec<Result<(), u64>> {
        let rate = Rate::parse(rate).unwrap();
        let mut bucket = Bucket::default();
        times.iter().map(|&t| bucket.check(&rate, t).map(|after| bucket = after)).collect()
    }

    #[test]
    fn buckets_pass_the_burst_then_the_rate() {
        // 2 a second, burst 2: two at once, then one each 500 ms.
        assert_eq!(run("2:2", &[0, 0, 0, 499, 500, 500, 1000]), [Ok(()), Ok(()), Err(500), Err(1), Ok(()), Err(500), Ok(())]);
        // Idle for long: full again, never more than the burst.
        assert_eq!(run("2:2", &[0, 0, 60_000, 60_000, 60_000]), [Ok(()), Ok(()), Ok(()), Ok(()), Err(500)]);
        // Half an event a second: one, then one every 2 s.
        assert_eq!(run("0.5", &[1000, 1000, 2999, 3000]), [Ok(()), Err(2000), Err(1), Ok(())]);
        // A burst of 10 at 1/s.
        let burst = run("1:10", &[5; 11]);
        assert!(burst[..10].iter().all(Result::is_ok));
        assert_eq!(burst[10], Err(1000));
        // A refusal leaves the bucket as it was.
        let rate = Rate::parse("1").unwrap();
        let mut b = Bucket::default();
        b = b.check(&rate, 0).unwrap();
        let before = b;
        assert!(b.check(&rate, 10).is_err());
        assert_eq!(b, before);
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        for (ms, s) in [(0, 1), (1, 1), (1000, 1), (1001, 2), (2500, 3)] {
            assert_eq!(retry_after_s(ms), s, "{ms}");
        }
    }

    #[test]
    fn overrides_replace_the_flags_values() {
        let base = Limits { emit_rate: Some(Rate::parse("10").unwrap()), ..Limits::default() };
        let mut o = Overrides::default();
        assert_eq!(o.over(&base), base);
        for word in ["sources=5", "emit_rate=none", "account_emit_rate=2:4", "streams=3", "tokens=none"] {
            o.set(word).unwrap();
        }
        let got = o.over(&base);
        assert_eq!(got.sources, Some(5));
        assert_eq!(got.emit_rate, None);
        assert_eq!(got.account_emit_rate, Some(Rate::parse("2:4").unwrap()));
        assert_eq!((got.streams, got.tokens), (Some(3), None));
        for bad in ["colour=red", "sources", "sources=-1", "sources=", "emit_rate=0", "streams=many", "=5"] {
            assert!(Overrides::default().set(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Overrides::default().set("colour=red"), Err(UNKNOWN));
    }
}
