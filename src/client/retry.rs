//! What `forward` retries (SPEC §7) and how long the target asks it to
//! wait: `Retry-After` in seconds or as an HTTP date. Pure, so it is
//! tested with tables.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The answers worth another try: the target is busy or its gateway could
/// not reach it. Any other status will not change by sending again.
const RETRIED: &[u16] = &[429, 500, 502, 503, 504];
/// A longer `Retry-After` is cut to this, so one answer cannot hold up
/// every later event for hours.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(600);

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

pub fn is_retried(status: u16) -> bool {
    RETRIED.contains(&status)
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delay seconds, or an HTTP
/// date (IMF-fixdate, or the obsolete RFC 850 and asctime forms a
/// recipient must accept). A date already past is no wait; anything
/// else unreadable is `None` (the usual backoff applies).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().map_or(RETRY_AFTER_MAX, Duration::from_secs).min(RETRY_AFTER_MAX));
    }
    let at = http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)).min(RETRY_AFTER_MAX))
}

/// Seconds since the epoch of `Sun, 06 Nov 1994 08:49:37 GMT`,
/// `Sunday, 06-Nov-94 08:49:37 GMT` or `Sun Nov  6 08:49:37 1994`: the
/// first number is the day, the second the year; names of days and the
/// zone are skipped.
fn http_date(text: &str) -> Option<u64> {
    let (mut day, mut month, mut year, mut time) = (None, None, None, None);
    for token in text.split([' ', ',', '-']).filter(|t| !t.is_empty()) {
        let number = |t: &str| t.bytes().all(|b| b.is_ascii_digit()).then(|| t.parse::<u64>().ok()).flatten();
        if let Some(i) = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(token)) {
            month = Some(i as u64 + 1);
        } else if token.len() == 8 && token.as_bytes()[2] == b':' && token.as_bytes()[5] == b':' {
            let (h, m, s) = (number(&token[..2])?, number(&token[3..5])?, number(&token[6..])?);
            time = Some(h * 3600 + m * 60 + s).filter(|_| h < 24 && m < 60 && s < 61);
        } else if let Some(n) = number(token) {
            match (day, token.len()) {
                (None, 1 | 2) => day = Some(n).filter(|d| (1..=31).contains(d)),
                (Some(_), 2) if year.is_none() => year = Some(if n >= 70 { 1900 + n } else { 2000 + n }),
                (Some(_), 4) if year.is_none() => year = Some(n),
                _ => return None,
            }
        }
    }
    let days = days_from_civil(year? as i64, month? as i64, day? as i64);
    Some(u64::try_from(days).ok()? * 86400 + time?)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_retry_after() {
        // 1994-11-06 08:49:27 UTC: ten seconds before the RFC's example date.
        let now = UNIX_EPOCH + Duration::from_secs(784_111_767);
        let cases: &[(&str, Option<u64>)] = &[
            ("1", Some(1)),
            (" 120 ", Some(120)),
            ("0", Some(0)),
            ("86400", Some(600)),
            ("99999999999999999999999", Some(600)),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(10)),
            ("Sunday, 06-Nov-94 08:49:37 GMT", Some(10)),
            ("Sun Nov  6 08:49:37 1994", Some(10)),
            ("Sun, 06 Nov 1994 08:49:17 GMT", Some(0)),
            ("Sun, 06 Nov 1994 08:59:27 GMT", Some(600)),
            ("Tue, 01 Mar 2000 00:00:00 GMT", Some(600)),
            ("-1", None),
            ("1.5", None),
            ("soon", None),
            ("", None),
            ("Sun, 06 Nov 1994 GMT", None),
            ("Sun, 32 Nov 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 25:49:37 GMT", None),
        ];
        for (value, want) in cases {
            assert_eq!(retry_after(value, now), want.map(Duration::from_secs), "{value:?}");
        }
    }

    #[test]
    fn knows_dates() {
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(http_date("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
        assert_eq!(http_date("Fri, 01 Jan 2100 00:00:00 GMT"), Some(4_102_444_800));
    }

    #[test]
    fn retries_only_what_may_change() {
        let retried: Vec<u16> = (100..600).filter(|&s| is_retried(s)).collect();
        assert_eq!(retried, [429, 500, 502, 503, 504]);
    }
}
