//! How results look and where they go: results to stdout, flushed line by
//! line so a pipe sees each event at once; notices to stderr.

use super::error::Error;
use std::fmt::Display;
use std::io::{self, Write};

/// Prints one line of results.
pub fn print(line: &str) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|err| match err.kind() {
        // The reader left (`| head -3`): as for `cat`, that is not a failure.
        io::ErrorKind::BrokenPipe => Error::StdoutClosed,
        _ => Error::Local(format!("cannot write to stdout: {err}")),
    })
}

/// Progress and reconnect notices, never results.
pub fn notice(message: impl Display) {
    eprintln!("ssehub: {message}");
}

/// Aligns columns two spaces apart; the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().filter_map(|row| row.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                match c + 1 == row.len() {
                    true => line.push_str(cell),
                    false => line.push_str(&format!("{cell:<width$}  ", width = widths[c])),
                }
            }
            line
        })
        .collect()
}

/// Unix milliseconds as RFC 3339 UTC, e.g. `2025-11-27T16:20:00.123Z`.
pub fn utc(unix_ms: i64) -> String {
    let (days, ms) = (unix_ms.div_euclid(86_400_000), unix_ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`), which spares a date crate for one column.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_tables() {
        let rows: Vec<Vec<String>> = [["NAME", "TYPE", "SSE"], ["orders-eu", "http", "http://x"], ["a", "http", "http://y"]]
            .iter()
            .map(|row| row.iter().map(|c| c.to_string()).collect())
            .collect();
        assert_eq!(table(&rows), ["NAME       TYPE  SSE", "orders-eu  http  http://x", "a          http  http://y"]);
        assert!(table(&[]).is_empty());
    }

    #[test]
    fn formats_times() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_764_262_800_123, "2025-11-27T17:00:00.123Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(utc(ms), want, "{ms}");
        }
    }
}
