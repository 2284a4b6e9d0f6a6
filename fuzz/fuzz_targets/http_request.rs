//! The request head parser and the body reader, fed as a socket feeds the
//! reactor: in arbitrary pieces, re-parsing the head from the start of the
//! buffer after each piece, and draining what the body reader consumed.
//! Whatever the split, the outcome is the one of parsing everything at once
//! (same head, same body, same bytes consumed, same status on refusal);
//! nothing panics; the limits hold.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::fuzzing::{BodyReader, Framing, HEAD_BYTES_MAX, Head, HttpError, parse_head, pieces};

type HeadResult = Result<Option<(Head, usize)>, HttpError>;

fn summary(r: &HeadResult) -> String {
    format!("{r:?}")
}

/// The first answer the reactor would act on: parse after every piece
/// until the result is not "need more bytes".
fn head_in_pieces(input: &[u8], seed: u16) -> HeadResult {
    let mut end = 0;
    for size in pieces(seed, 16, 4096, 8) {
        end = (end + size).min(input.len());
        let r = parse_head(&input[..end]);
        if !matches!(r, Ok(None)) || end == input.len() {
            return r;
        }
    }
    unreachable!()
}

#[derive(Debug, PartialEq, Eq)]
struct BodyOutcome {
    /// The status of the refusal, if refused.
    refused: Option<u16>,
    body: Vec<u8>,
    consumed: usize,
    done: bool,
}

fn body_at_once(framing: Framing, max: usize, input: &[u8]) -> Option<BodyOutcome> {
    let mut reader = match BodyReader::new(framing, max) {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(e) => return Some(BodyOutcome { refused: Some(e.status()), body: Vec::new(), consumed: 0, done: false }),
    };
    let mut body = Vec::new();
    match reader.feed(input, &mut body) {
        Ok(n) => {
            assert!(n <= input.len());
            Some(BodyOutcome { refused: None, body, consumed: n, done: reader.is_done() })
        }
        Err(e) => Some(BodyOutcome { refused: Some(e.status()), body: Vec::new(), consumed: 0, done: false }),
    }
}

fn body_in_pieces(framing: Framing, max: usize, input: &[u8], seed: u16) -> Option<BodyOutcome> {
    let mut reader = match BodyReader::new(framing, max) {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(e) => return Some(BodyOutcome { refused: Some(e.status()), body: Vec::new(), consumed: 0, done: false }),
    };
    let (mut body, mut rbuf, mut consumed, mut at) = (Vec::new(), Vec::new(), 0, 0);
    for size in pieces(seed, 16, 4096, 8) {
        let end = (at + size).min(input.len());
        rbuf.extend_from_slice(&input[at..end]);
        at = end;
        match reader.feed(&rbuf, &mut body) {
            Ok(n) => {
                assert!(n <= rbuf.len());
                rbuf.drain(..n);
                consumed += n;
            }
            Err(e) => return Some(BodyOutcome { refused: Some(e.status()), body: Vec::new(), consumed: 0, done: false }),
        }
        assert!(body.len() <= max, "body of {} bytes passed the limit {max}", body.len());
        if reader.is_done() || at == input.len() {
            break;
        }
    }
    Some(BodyOutcome { refused: None, body, consumed, done: reader.is_done() })
}

fn check_head(input: &[u8], head: &Head, len: usize) {
    assert!(len <= input.len() && len <= HEAD_BYTES_MAX);
    assert!(input[..len].ends_with(b"\n"), "a head ends with its blank line");
    assert!(!head.method().is_empty());
    assert!(head.headers().all(|(n, _)| !n.is_empty() && head.header(&n.to_ascii_lowercase()).is_some()));
    let has = |name: &str| head.header(name).is_some();
    match head.framing {
        Framing::Length(n) => {
            assert!(!has("transfer-encoding"));
            for (_, v) in head.headers().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
                assert_eq!(std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok()), Some(n));
            }
        }
        Framing::Chunked => assert!(!has("content-length") && has("transfer-encoding")),
        Framing::None => assert!(!has("content-length") && !has("transfer-encoding")),
    }
    // The path is a suffix of the target, so routing never reads outside it.
    let path = head.path();
    assert!(head.target().contains(path) || path == "/");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let seed = u16::from_le_bytes([data[0], data[1]]);
    let max = usize::from(data[2]) * 8;
    let input = &data[3..];

    let whole = parse_head(input);
    let split = head_in_pieces(input, seed);
    assert_eq!(summary(&whole), summary(&split), "head parse depends on the split");
    let Ok(Some((head, len))) = whole else { return };
    check_head(input, &head, len);

    let rest = &input[len..];
    let at_once = body_at_once(head.framing, max, rest);
    let in_pieces = body_in_pieces(head.framing, max, rest, seed.rotate_left(7));
    assert_eq!(at_once, in_pieces, "body depends on the split (framing {:?}, max {max})", head.framing);
    if let Some(BodyOutcome { refused: None, body, consumed, done }) = at_once {
        assert!(body.len() <= max && consumed <= rest.len());
        if let Framing::Length(n) = head.framing {
            assert_eq!(done, consumed as u64 == n);
            assert_eq!(body, &rest[..consumed]);
        }
        if done && head.framing == Framing::Chunked {
            assert!(rest[..consumed].ends_with(b"\r\n"));
        }
    }
});
