//! Sans-I/O SSE parsing (WHATWG "interpreting an event stream") and the probe
//! that finds our timestamp in an event's data.

use crate::sys::{find, find_byte};

#[derive(Debug, PartialEq)]
pub enum Item<'a> {
    Comment(&'a [u8]),
    Event { id: &'a [u8], data: &'a [u8] },
}

/// Incremental parser: feed it reads of any size; frames split anywhere.
#[derive(Default)]
pub struct Parser {
    partial: Vec<u8>,
    data: Vec<u8>,
    id: Vec<u8>,
    /// The last chunk ended in CR, so an LF starting the next belongs to it.
    skip_lf: bool,
    /// The last `retry:` (milliseconds): how long an EventSource waits
    /// before it reconnects once this stream ends.
    pub retry: Option<u32>,
}

impl Parser {
    pub fn feed(&mut self, mut input: &[u8], on: &mut impl FnMut(Item<'_>)) {
        if self.skip_lf && !input.is_empty() {
            self.skip_lf = false;
            input = input.strip_prefix(b"\n").unwrap_or(input);
        }
        while let Some((end, next)) = line_end(input) {
            self.skip_lf = next == input.len() && input[end] == b'\r';
            if self.partial.is_empty() {
                self.line(&input[..end], on);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&input[..end]);
                self.line(&line, on);
                line.clear();
                self.partial = line; // keeps its capacity
            }
            input = &input[next..];
        }
        self.partial.extend_from_slice(input);
    }

    fn line(&mut self, line: &[u8], on: &mut impl FnMut(Item<'_>)) {
        if line.is_empty() {
            // An empty data buffer dispatches nothing; else drop its last LF.
            if let Some((b'\n', data)) = self.data.split_last() {
                on(Item::Event { id: &self.id, data });
            }
            return self.data.clear();
        }
        if let Some(text) = line.strip_prefix(b":") {
            return on(Item::Comment(text));
        }
        let (field, value) = match find_byte(line, b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"id" if find_byte(value, 0).is_none() => value.clone_into(&mut self.id),
            // Only ASCII digits count; anything else is ignored, as by EventSource.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).or(Some(u32::MAX));
            }
            _ => {} // event and unknown fields do not matter here
        }
    }
}

/// (end of line, start of next) for LF, CRLF or a lone CR.
fn line_end(input: &[u8]) -> Option<(usize, usize)> {
    let lf = find_byte(input, b'\n');
    match (find_byte(&input[..lf.unwrap_or(input.len())], b'\r'), lf) {
        (Some(r), Some(n)) if n == r + 1 => Some((r, n + 1)),
        (Some(r), _) => Some((r, r + 1)),
        (None, Some(n)) => Some((n, n + 1)),
        (None, None) => None,
    }
}

/// What the tool embeds in each emitted payload.
#[derive(Debug, PartialEq)]
pub struct Probe {
    pub run: u64,
    pub seq: u64,
    pub t_ns: u64,
}

/// Finds `{run,seq,t_ns}` in an envelope's `.event` or, without
/// `envelope` (nchan), in the data itself. The fast path relies on the
/// server keeping our key order (the contract only strips whitespace)
/// and saves a full JSON parse per delivery, which counts at 10M
/// deliveries on cores the server shares; any other shape goes to serde_json.
pub fn probe(data: &[u8], envelope: bool) -> Option<Probe> {
    fast_probe(data, envelope).or_else(|| {
        let v: serde_json::Value = serde_json::from_slice(data).ok()?;
        let p = if envelope { v.get("event")? } else { &v };
        let field = |k: &str| p.get(k)?.as_u64();
        Some(Probe { run: field("run")?, seq: field("seq")?, t_ns: field("t_ns")? })
    })
}

fn fast_probe(data: &[u8], envelope: bool) -> Option<Probe> {
    const START: &[u8] = br#""event":{"run":"#;
    const RAW: &[u8] = br#"{"run":"#;
    let rest = match envelope {
        true => &data[find(data, START)? + START.len()..],
        false => data.strip_prefix(RAW)?,
    };
    let (run, rest) = digits(rest)?;
    let (seq, rest) = digits(rest.strip_prefix(br#","seq":"#)?)?;
    let (t_ns, _) = digits(rest.strip_prefix(br#","t_ns":"#)?)?;
    Some(Probe { run, seq, t_ns })
}

fn digits(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let v = s[..n].iter().try_fold(0u64, |v, b| v.checked_mul(10)?.checked_add(u64::from(b - b'0')));
    Some((v.filter(|_| n > 0)?, &s[n..]))
}
