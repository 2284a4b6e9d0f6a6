//! SSE framing, sans I/O: an event becomes one immutable frame, shared by
//! the history ring and every subscriber's output queue (never copied per
//! subscriber).
//!
//! Rules (WHATWG `text/event-stream`): a field value never holds CR or LF,
//! so data is split on every line ending into several `data:` lines, which
//! the client joins back with `\n`; one space follows the colon, so a value
//! that starts with spaces keeps them; a blank line ends the frame.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::text::push_u64;

/// The comment sent first on every stream and then every handshake interval.
pub const HANDSHAKE: &[u8] = b":sse-handshake\n\n";

/// An immutable, shared, framed event (atomically counted: a snapshot's
/// thread encodes the events it is handed while subscribers still hold them).
pub type Frame = Arc<[u8]>;

/// `<unix-ms>-<seq>`, ordered as (ms, seq) like a Redis stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    /// The id after `self` at wall-clock `now_ms`: a new millisecond starts
    /// at seq 0; the same (or an earlier: the clock stepped back) one
    /// continues the sequence, so ids never go down.
    pub fn next(self, now_ms: u64) -> EventId {
        if now_ms > self.ms { EventId { ms: now_ms, seq: 0 } } else { EventId { ms: self.ms, seq: self.seq + 1 } }
    }

    /// Appends `<ms>-<seq>` (what `Display` writes, without `fmt`).
    pub fn write(&self, out: &mut Vec<u8>) {
        push_u64(out, self.ms);
        out.push(b'-');
        push_u64(out, self.seq);
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The `Last-Event-ID` a client sent could not be an id of ours.
#[derive(Debug, PartialEq, Eq)]
pub struct BadEventId;

impl FromStr for EventId {
    type Err = BadEventId;

    /// Accepts `<ms>-<seq>` and, as Redis does, a bare `<ms>` (= `<ms>-0`).
    fn from_str(s: &str) -> Result<Self, BadEventId> {
        let digits = |t: &str| -> Result<u64, BadEventId> {
            if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadEventId);
            }
            t.parse().map_err(|_| BadEventId)
        };
        match s.trim().split_once('-') {
            Some((ms, seq)) => Ok(EventId { ms: digits(ms)?, seq: digits(seq)? }),
            None => Ok(EventId { ms: digits(s.trim())?, seq: 0 }),
        }
    }
}

/// One event as stored and sent: its id, its frame, and where the JSON
/// envelope sits inside the frame (for `event_summaries`).
#[derive(Clone, Debug)]
pub struct Event {
    pub id: EventId,
    pub frame: Frame,
    envelope_at: u32,
}

impl Event {
    /// Frames the Pipedream-style envelope of `payload` (compact JSON):
    /// `{"id","indexed_at_ms","event","metadata":{"emitter_id","emit_id","name"}}`;
    /// `indexed_at_ms` is the id's millisecond, so the two always agree.
    ///
    /// `scratch` is any buffer the caller keeps: the frame is written there
    /// and copied once into its shared allocation.
    pub fn new(id: EventId, emitter_id: &str, payload: &[u8], scratch: &mut Vec<u8>) -> Event {
        // Compact JSON is one line, so the envelope is one `data:` value
        // and needs no splitting.
        let f = scratch;
        f.clear();
        f.extend_from_slice(b"id: ");
        // The id's text is written once and copied where it recurs.
        let start = f.len();
        push_u64(f, id.ms);
        let ms_text = start..f.len();
        f.push(b'-');
        push_u64(f, id.seq);
        let id_text = start..f.len();
        f.extend_from_slice(b"\ndata: ");
        let envelope_at = f.len() as u32;
        f.extend_from_slice(b"{\"id\":\"");
        f.extend_from_within(id_text.clone());
        f.extend_from_slice(b"\",\"indexed_at_ms\":");
        f.extend_from_within(ms_text);
        f.extend_from_slice(b",\"event\":");
        f.extend_from_slice(payload);
        f.extend_from_slice(b",\"metadata\":{\"emitter_id\":");
        crate::json::write_str(f, emitter_id);
        f.extend_from_slice(b",\"emit_id\":\"");
        f.extend_from_within(id_text);
        f.extend_from_slice(b"\",\"name\":\"\"}}\n\n");
        Event { id, frame: Arc::from(&f[..]), envelope_at }
    }

    /// The envelope JSON (the frame's single `data:` value).
    pub fn envelope(&self) -> &[u8] {
        &self.frame[self.envelope_at as usize..self.frame.len() - 2]
    }
}

/// A resume point older than events that are gone: what the `gap` frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The client's resume point.
    pub after: EventId,
    /// The first id replayed, if any is left.
    pub resumed_from: Option<EventId>,
}

/// `retry: <ms>`: the client's reconnection delay from now on. A frame of
/// its own with no `data:`, so no event is dispatched (WHATWG: a frame
/// with an empty data buffer is dropped once its fields are applied).
pub fn retry_frame(ms: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(b"retry: ");
    push_u64(&mut out, u64::from(ms));
    out.extend_from_slice(b"\n\n");
    out
}

/// The `gap` frame sent before a replay that cannot be whole (no `id:`
/// line, so the client's resume point stays; an `event:` name, so
/// `onmessage` consumers do not see it).
pub fn gap_frame(gap: &Gap) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"event: gap\ndata: {\"after\":\"");
    gap.after.write(&mut out);
    out.extend_from_slice(b"\",\"resumed_from\":");
    match gap.resumed_from {
        Some(id) => {
            out.push(b'"');
            id.write(&mut out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"lost\":\"unknown\"}\n\n");
    out
}

/// Frames arbitrary data as one event: `id:` (if any) then one `data:` line
/// per line of `data`. Ids with a line ending are cut at it: an id is one line.
#[cfg(any(test, feature = "fuzzing"))]
pub fn frame(id: Option<&[u8]>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    if let Some(id) = id {
        let id = id.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id);
        out.push(b'\n');
    }
    for line in lines(data) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Splits on `\r\n`, `\r` and `\n`, as an SSE parser does; "" is one empty line.
#[cfg(any(test, feature = "fuzzing"))]
fn lines(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.iter().position(|&b| b == b'\r' || b == b'\n') {
            Some(i) => {
                let skip = if s[i..].starts_with(b"\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_text() {
        let table: &[(Option<&str>, &str, &str)] = &[
            (None, "hello", "data: hello\n\n"),
            (Some("1-0"), "x", "id: 1-0\ndata: x\n\n"),
            (None, "", "data: \n\n"),
            (None, "a\nb", "data: a\ndata: b\n\n"),
            (None, "a\r\nb\rc", "data: a\ndata: b\ndata: c\n\n"),
            (None, "a\n", "data: a\ndata: \n\n"),
            (None, "  lead", "data:   lead\n\n"),
            (Some("7-1\nevil: x"), "d", "id: 7-1\ndata: d\n\n"),
            // A lone CR at the end, and CRLFs back to back: each ends one line.
            (None, "a\r", "data: a\ndata: \n\n"),
            (Some("\r"), "\r\n\r\n", "id: \ndata: \ndata: \ndata: \n\n"),
        ];
        for (id, data, want) in table {
            let got = frame(id.map(str::as_bytes), data.as_bytes());
            assert_eq!(String::from_utf8(got).unwrap(), *want, "data {data:?}");
        }
    }

    #[test]
    fn frames_retry() {
        for (ms, want) in [(0, "retry: 0\n\n"), (2000, "retry: 2000\n\n"), (u32::MAX, "retry: 4294967295\n\n")] {
            assert_eq!(String::from_utf8(retry_frame(ms)).unwrap(), want);
        }
    }

    #[test]
    fn frames_an_envelope_once() {
        let e = Event::new(EventId { ms: 1764262800123, seq: 0 }, "dc_abc", b"{\"total\":12}", &mut Vec::new());
        let want = "id: 1764262800123-0\ndata: {\"id\":\"1764262800123-0\",\"indexed_at_ms\":1764262800123,\
                    \"event\":{\"total\":12},\"metadata\":{\"emitter_id\":\"dc_abc\",\"emit_id\":\"1764262800123-0\",\"name\":\"\"}}\n\n";
        assert_eq!(std::str::from_utf8(&e.frame).unwrap(), want);
        let env: serde_json::Value = serde_json::from_slice(e.envelope()).unwrap();
        assert_eq!(env["event"]["total"], 12);
    }

    #[test]
    fn ids_parse_order_and_advance() {
        let table: &[(&str, Option<(u64, u64)>)] = &[
            ("1764262800123-0", Some((1764262800123, 0))),
            ("5-17", Some((5, 17))),
            ("42", Some((42, 0))),
            (" 9-1 ", Some((9, 1))),
            ("", None),
            ("-1", None),
            ("1-", None),
            ("1-2-3", None),
            ("a-1", None),
            ("+1-2", None),
            ("99999999999999999999999-0", None),
            // Edges met by fuzz/history_replay: 20 digits, u64 bounds, Unicode spaces and digits.
            ("00000000000000000000-0", Some((0, 0))),
            ("18446744073709551615-18446744073709551615", Some((u64::MAX, u64::MAX))),
            ("18446744073709551616", None),
            ("000000000000000000001", None),
            ("\u{a0}5\u{3000}", Some((5, 0))),
            ("\u{ff15}", None),
            ("1 -2", None),
            ("1-\n2", None),
        ];
        for (text, want) in table {
            let got = text.parse::<EventId>().ok().map(|id| (id.ms, id.seq));
            assert_eq!(got, *want, "{text:?}");
        }
        let id = EventId { ms: 10, seq: 3 };
        assert_eq!(id.next(11), EventId { ms: 11, seq: 0 });
        assert_eq!(id.next(10), EventId { ms: 10, seq: 4 });
        assert_eq!(id.next(2), EventId { ms: 10, seq: 4 }, "clock stepped back");
        assert!(EventId { ms: 10, seq: 9 } < EventId { ms: 11, seq: 0 });
    }
}

/// The invariants of `fuzz/sse_frame` and of the id half of
/// `fuzz/history_replay`, checked on every `cargo test`.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A client's reading of one stream (WHATWG rules, bytes in): the
    /// (last event id, data) of each dispatched event.
    fn parse(stream: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (mut events, mut data, mut id) = (Vec::new(), Vec::new(), Vec::new());
        let mut rest = stream;
        while let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            let line = &rest[..i];
            rest = &rest[i + if rest[i..].starts_with(b"\r\n") { 2 } else { 1 }..];
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    events.push((id.clone(), std::mem::take(&mut data)));
                }
                continue;
            }
            let c = line.iter().position(|&b| b == b':').unwrap_or(line.len());
            let value = line.get(c + 1..).unwrap_or_default();
            let value = value.strip_prefix(b" ").unwrap_or(value);
            match &line[..c] {
                b"data" => data.extend_from_slice(&[value, b"\n"].concat()),
                b"id" if !value.contains(&0) => id = value.to_vec(),
                _ => {}
            }
        }
        assert!(rest.is_empty(), "a frame ends with a complete line");
        events
    }

    fn text() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![4 => prop::sample::select(b"\r\n :ab\0".to_vec()), 1 => any::<u8>()];
        prop::collection::vec(byte, 0..40)
    }

    proptest! {
        #[test]
        fn framed_data_reads_back_as_one_event(id in prop::option::of(text()), data in text()) {
            let events = parse(&frame(id.as_deref(), &data));
            let want_data = String::from_utf8_lossy(&data).replace("\r\n", "\n").replace('\r', "\n");
            let want_id = id.map(|id| id.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default().to_vec())
                .filter(|id| !id.contains(&0)).unwrap_or_default();
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(&events[0].0, &want_id);
            prop_assert_eq!(String::from_utf8_lossy(&events[0].1), want_data);
        }

        #[test]
        fn ids_print_and_parse_back(ms in any::<u64>(), seq in any::<u64>(), now in any::<u64>()) {
            let id = EventId { ms, seq: seq / 2 };
            prop_assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
            prop_assert_eq!(format!(" {ms} ").parse::<EventId>(), Ok(EventId { ms, seq: 0 }));
            prop_assert!(id.next(now) > id);
            let event = Event::new(id, "dc_p", b"[1]", &mut Vec::new());
            prop_assert_eq!(parse(&event.frame), vec![(id.to_string().into_bytes(), event.envelope().to_vec())]);
        }

        #[test]
        fn only_ids_parse(text in "[0-9]{1,21}(-[0-9]{1,21})?|[0-9 -]{0,8}|\\PC{0,8}") {
            if let Ok(id) = text.parse::<EventId>() {
                // What parsed is `<ms>[-<seq>]` in digits, naming the same numbers.
                let t = text.trim();
                let (ms, seq) = t.split_once('-').unwrap_or((t, "0"));
                prop_assert!(!ms.is_empty() && !seq.is_empty() && (ms.to_string() + seq).bytes().all(|b| b.is_ascii_digit()), "{:?}", text);
                let canon = |digits: &str| digits.trim_start_matches('0').to_string();
                prop_assert_eq!((canon(ms), canon(seq)), (canon(&id.ms.to_string()), canon(&id.seq.to_string())));
            }
        }
    }
}
