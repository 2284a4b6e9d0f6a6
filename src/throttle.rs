//! Lines that any client can cause in bulk (sources and tokens created,
//! timed-out connections, failed authentication, the connection limit
//! reached, bodies refused at their share of the bodies' budget or cut
//! below the floor rate, storage failing and recovering) are logged at most once a
//! second per kind; the others of that second go to `debug`, and the next
//! line that passes says how many were held back. `/metrics` counts them
//! all. Refusals at a tenant limit are logged once a minute per account
//! and limit (`PerAccount`): one busy account does not hide another's.

use std::fmt;
use std::time::{Duration, Instant};

/// How often one kind of line may be logged at its own level.
const PERIOD: Duration = Duration::from_secs(1);
/// How often one kind of line of one account may be.
const PER_ACCOUNT_PERIOD: Duration = Duration::from_secs(60);

/// One kind of line.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// `Some(lines held back since the last one)` if a line may be logged
    /// at its level now; `None`: log it at `debug`.
    pub fn pass(&mut self) -> Option<Held> {
        self.pass_at(Instant::now(), PERIOD)
    }

    /// The level to log a line at now: `want` (and the count held back)
    /// if the throttle passes it, else `Debug`.
    pub fn level(&mut self, want: log::Level) -> (log::Level, Held) {
        match self.pass() {
            Some(held) => (want, held),
            None => (log::Level::Debug, Held(0)),
        }
    }

    fn pass_at(&mut self, now: Instant, period: Duration) -> Option<Held> {
        if self.last.is_some_and(|last| now < last + period) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(Held(std::mem::take(&mut self.held)))
    }
}

/// `N` kinds of line per account (by its dense id), each passing a line a minute.
#[derive(Debug)]
pub struct PerAccount<const N: usize> {
    throttles: Vec<[Throttle; N]>,
}

impl<const N: usize> Default for PerAccount<N> {
    fn default() -> PerAccount<N> {
        PerAccount { throttles: Vec::new() }
    }
}

impl<const N: usize> PerAccount<N> {
    /// As `Throttle::level`, once a minute for line `kind` (below `N`) of `account`.
    pub fn level(&mut self, account: u32, kind: usize, want: log::Level) -> (log::Level, Held) {
        self.level_at(account, kind, want, Instant::now())
    }

    fn level_at(&mut self, account: u32, kind: usize, want: log::Level, now: Instant) -> (log::Level, Held) {
        let at = account as usize;
        if self.throttles.len() <= at {
            self.throttles.resize_with(at + 1, || std::array::from_fn(|_| Throttle::default()));
        }
        match self.throttles[at][kind].pass_at(now, PER_ACCOUNT_PERIOD) {
            Some(held) => (want, held),
            None => (log::Level::Debug, Held(0)),
        }
    }
}

/// One throttle per kind of line.
#[derive(Debug, Default)]
pub struct Throttles {
    /// Sources created, deleted or changed.
    pub sources: Throttle,
    /// Subscribe tokens created.
    pub tokens: Throttle,
    /// Connections closed for a timeout.
    pub timeouts: Throttle,
    /// Requests answered 401.
    pub auth: Throttle,
    /// Connections refused at `--max-connections`.
    pub limit: Throttle,
    /// Subscribers dropped past `--max-subscriber-buffer`.
    pub slow: Throttle,
    /// Bodies refused at their endpoint's or their address's share of
    /// `--max-body-bytes-in-flight`.
    pub body_share: Throttle,
    /// Bodies cut below the floor rate.
    pub body_rate: Throttle,
    /// Refusals at a tenant limit, by account and limit (the account's of `limits::Kind`).
    pub limited: PerAccount<{ crate::limits::ACCOUNT_KINDS }>,
}

/// Written after a line that passed: nothing, or how many were held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held(pub u64);

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " (and {n} more like it since the last such line, at debug level)"),
        }
    }
}

/// `throttled!(throttle, Warn, "format", args…)`: the line at `Warn` if
/// the throttle passes it (with the count held back), else at `Debug`. One
/// logging call either way, so each use formats its arguments once.
macro_rules! throttled {
    ($throttle:expr, $level:ident, $($arg:tt)+) => {{
        let (level, held) = $throttle.level(log::Level::$level);
        log::log!(level, "{}{held}", format_args!($($arg)+))
    }};
}
pub(crate) use throttled;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_a_second_with_the_count_held_back() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut pass = |at| t.pass_at(ms(at), PERIOD);
        assert_eq!(pass(0), Some(Held(0)));
        assert_eq!(pass(10), None);
        assert_eq!(pass(999), None);
        assert_eq!(pass(1000), Some(Held(2)));
        assert_eq!(pass(1500), None);
        assert_eq!(pass(5000), Some(Held(1)));
        assert_eq!(pass(6000), Some(Held(0)));
        assert_eq!(Held(0).to_string(), "");
        assert_eq!(Held(3).to_string(), " (and 3 more like it since the last such line, at debug level)");
    }

    #[test]
    fn once_a_minute_per_account_and_kind() {
        use log::Level::{Debug, Warn};
        let mut t = PerAccount::<5>::default();
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        assert_eq!(t.level_at(1, 2, Warn, s(0)), (Warn, Held(0)));
        assert_eq!(t.level_at(1, 2, Warn, s(30)), (Debug, Held(0)));
        assert_eq!(t.level_at(2, 2, Warn, s(30)), (Warn, Held(0)), "another account");
        assert_eq!(t.level_at(1, 0, Warn, s(30)), (Warn, Held(0)), "another limit");
        assert_eq!(t.level_at(1, 2, Warn, s(60)), (Warn, Held(1)));
    }
}
