//! SSE framing against an independent parser written from the WHATWG
//! `text/event-stream` rules (not from `sse.rs`): a framed payload comes
//! out as exactly one event whose data is the payload (line endings read
//! as `\n`, as every client does) and whose id is the id up to its first
//! line ending. An envelope built by `Event::new` parses back to the id
//! and the emitted JSON value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::fuzzing::{Event, EventId, compact, frame};

#[derive(Debug, Default, PartialEq, Eq)]
struct Dispatched {
    last_event_id: Vec<u8>,
    data: Vec<u8>,
    event_type: Vec<u8>,
}

/// The WHATWG "interpret an event stream" algorithm over bytes (the UTF-8
/// decode step is left out: it maps bytes one to one for UTF-8 input).
/// Returns the dispatched events and the bytes left after the last line.
fn parse(stream: &[u8]) -> (Vec<Dispatched>, Vec<u8>) {
    let (mut out, mut data, mut event_type, mut last_id) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rest = stream;
    while let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        let line = &rest[..i];
        // A CR at the very end might be the start of CRLF: the line is not
        // complete until the next byte is seen, so treat it as left over.
        let skip = match (rest[i], rest.get(i + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r', None) => break,
            _ => 1,
        };
        rest = &rest[i + skip..];
        if line.is_empty() {
            if !data.is_empty() {
                if data.last() == Some(&b'\n') {
                    data.pop();
                }
                out.push(Dispatched {
                    last_event_id: last_id.clone(),
                    data: std::mem::take(&mut data),
                    event_type: std::mem::take(&mut event_type),
                });
            }
            event_type.clear();
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, mut value) = match line.iter().position(|&b| b == b':') {
            Some(c) => (&line[..c], &line[c + 1..]),
            None => (line, &b""[..]),
        };
        if value.first() == Some(&b' ') {
            value = &value[1..];
        }
        match field {
            b"event" => event_type = value.to_vec(),
            b"data" => {
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            b"id" if !value.contains(&0) => last_id = value.to_vec(),
            b"retry" | b"id" => {}
            _ => {}
        }
    }
    (out, rest.to_vec())
}

/// What a client joins the data lines back into: every line ending is `\n`.
fn normalized(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                out.push(b'\n');
                i += 1;
            }
            b'\r' => out.push(b'\n'),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else { return };
    // The first byte says whether an id is given and where it ends.
    let (id, data) = if mode & 1 == 1 {
        let at = usize::from(mode >> 1).min(rest.len());
        (Some(&rest[..at]), &rest[at..])
    } else {
        (None, rest)
    };
    let framed = frame(id, data);
    let (events, left) = parse(&framed);
    assert!(left.is_empty(), "frame does not end with a complete line: {left:?}");
    assert_eq!(events.len(), 1, "one frame, one event: {framed:?}");
    let want_id = match id {
        Some(id) => {
            let cut = id.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
            if cut.contains(&0) { Vec::new() } else { cut.to_vec() }
        }
        None => Vec::new(),
    };
    assert_eq!(events[0], Dispatched { last_event_id: want_id, data: normalized(data), event_type: Vec::new() });

    // Two frames back to back stay two events: the frame is self-delimited.
    let mut two = framed.clone();
    two.extend_from_slice(&framed);
    assert_eq!(parse(&two).0.len(), 2);

    // The envelope of an event whose payload is JSON.
    if let Ok(payload) = compact(data) {
        let seed = u64::from(mode);
        let id = EventId { ms: seed * 1_000_003, seq: seed % 7 };
        let event = Event::new(id, "dc_fuzz", &payload, &mut Vec::new());
        let (events, left) = parse(&event.frame);
        assert!(left.is_empty() && events.len() == 1);
        assert_eq!(events[0].last_event_id, id.to_string().into_bytes());
        assert_eq!(events[0].data, event.envelope());
        let envelope: serde_json::Value = serde_json::from_slice(&events[0].data).expect("envelope is JSON");
        let value: serde_json::Value = serde_json::from_slice(data).expect("payload is JSON");
        assert_eq!(envelope["event"], value);
        assert_eq!(envelope["id"], id.to_string());
    }
});
