//! RESP2, sans I/O: commands out as arrays of bulk strings; replies in as
//! bytes, parsed into a [`Value`] once a whole one is buffered ("need
//! more" is `Ok(None)`, not an error). Sizes are bounded, so a broken or
//! hostile peer costs a refused reply, never unbounded memory or stack.
//!
//! A partial reply is re-scanned from its start when more bytes come; the
//! scan skips bulk bodies by their length, so its cost is the number of
//! elements, not of bytes.

use std::fmt;

use crate::text::push_u64;

/// Largest bulk string taken (a `--max-event-bytes` event is far below).
pub const BULK_MAX: usize = 64 * 1024 * 1024;
/// Most elements in one array.
pub const ARRAY_MAX: usize = 1 << 20;
/// Arrays nested deeper than this are refused (XREAD replies are 5 deep).
pub const DEPTH_MAX: usize = 8;
/// Longest `+`/`-`/`:`/`$`/`*` line, CRLF excluded.
pub const LINE_MAX: usize = 64 * 1024;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`.
    Nil,
    Array(Vec<Value>),
}

impl Value {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn into_array(self) -> Option<Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Bulk(b) | Value::Simple(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// Bytes that are not a RESP2 reply within our bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespError {
    /// Not RESP: an unknown type byte, a bad number, a missing CRLF.
    Malformed,
    /// Over `BULK_MAX`, `ARRAY_MAX`, `DEPTH_MAX` or `LINE_MAX`.
    TooLarge,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::Malformed => write!(f, "malformed RESP reply"),
            RespError::TooLarge => write!(f, "RESP reply over its size bounds"),
        }
    }
}

/// Appends a command: an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_u64(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_u64(out, arg.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `value` as a reply (tests and the fuzz target: the server's side).
#[cfg(any(test, feature = "fuzzing"))]
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    let head = |kind: u8, n: &[u8], out: &mut Vec<u8>| {
        out.push(kind);
        out.extend_from_slice(n);
        out.extend_from_slice(b"\r\n");
    };
    match value {
        Value::Simple(s) => head(b'+', s, out),
        Value::Error(s) => head(b'-', s, out),
        Value::Int(n) => head(b':', n.to_string().as_bytes(), out),
        Value::Nil => head(b'$', b"-1", out),
        Value::Bulk(b) => {
            head(b'$', b.len().to_string().as_bytes(), out);
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Array(items) => {
            head(b'*', items.len().to_string().as_bytes(), out);
            for item in items {
                encode(item, out);
            }
        }
    }
}

/// What `parse` gives: a value and the bytes it took, or "need more".
pub type Parsed = Result<Option<(Value, usize)>, RespError>;

/// Parses one reply at the start of `buf`: the value and the bytes it
/// took, `Ok(None)` if it is not all there yet.
pub fn parse(buf: &[u8]) -> Parsed {
    // Scan first (no allocation), build only once it is whole.
    let Some(len) = scan(buf, 0, 0)? else { return Ok(None) };
    let (value, at) = build(buf, 0);
    debug_assert_eq!(at, len);
    Ok(Some((value, len)))
}

/// The line at `at` (without CRLF) and where the next starts.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = &buf[at.min(buf.len())..];
    match rest.iter().take(LINE_MAX + 2).position(|&b| b == b'\r') {
        Some(i) => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&rest[..i], at + i + 2))),
            Some(_) => Err(RespError::Malformed),
        },
        None if rest.len() > LINE_MAX + 1 => Err(RespError::TooLarge),
        None => Ok(None),
    }
}

/// A length or an integer: an optional `-` and 1 to 19 digits.
fn number(text: &[u8]) -> Result<i64, RespError> {
    let (neg, digits) = match text.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RespError::Malformed);
    }
    let n = digits.iter().try_fold(0i64, |n, d| n.checked_mul(10)?.checked_add(i64::from(d - b'0'))).ok_or(RespError::Malformed)?;
    Ok(if neg { -n } else { n })
}

/// The end of the whole value at `at`, or `None` if more bytes are needed.
fn scan(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, RespError> {
    let Some(&kind) = buf.get(at) else { return Ok(None) };
    let Some((text, next)) = line(buf, at + 1)? else { return Ok(None) };
    match kind {
        b'+' | b'-' => Ok(Some(next)),
        b':' => number(text).map(|_| Some(next)),
        b'$' => match number(text)? {
            -1 => Ok(Some(next)),
            n if n < 0 => Err(RespError::Malformed),
            n if n as usize > BULK_MAX => Err(RespError::TooLarge),
            n => {
                let end = next + n as usize;
                match buf.get(end..end + 2) {
                    None => Ok(None),
                    Some(b"\r\n") => Ok(Some(end + 2)),
                    Some(_) => Err(RespError::Malformed),
                }
            }
        },
        b'*' => match number(text)? {
            -1 => Ok(Some(next)),
            n if n < 0 => Err(RespError::Malformed),
            n if n as usize > ARRAY_MAX => Err(RespError::TooLarge),
            _ if depth >= DEPTH_MAX => Err(RespError::TooLarge),
            n => {
                let mut at = next;
                for _ in 0..n {
                    match scan(buf, at, depth + 1)? {
                        Some(end) => at = end,
                        None => return Ok(None),
                    }
                }
                Ok(Some(at))
            }
        },
        _ => Err(RespError::Malformed),
    }
}

/// Builds the value `scan` accepted at `at`.
fn build(buf: &[u8], at: usize) -> (Value, usize) {
    let end = at + 1 + buf[at + 1..].iter().position(|&b| b == b'\r').unwrap_or(0);
    let text = &buf[at + 1..end];
    let next = end + 2;
    let n = || number(text).unwrap_or(0);
    match buf[at] {
        b'+' => (Value::Simple(text.to_vec()), next),
        b'-' => (Value::Error(text.to_vec()), next),
        b':' => (Value::Int(n()), next),
        b'$' if n() < 0 => (Value::Nil, next),
        b'$' => {
            let len = n() as usize;
            (Value::Bulk(buf[next..next + len].to_vec()), next + len + 2)
        }
        b'*' if n() < 0 => (Value::Nil, next),
        _ => {
            let count = n() as usize;
            let mut items = Vec::with_capacity(count);
            let mut at = next;
            for _ in 0..count {
                let (v, end) = build(buf, at);
                items.push(v);
                at = end;
            }
            (Value::Array(items), at)
        }
    }
}

/// The parser's property on any bytes (the unit tests' and the fuzz
/// target's): it never panics; what it accepts encodes back to a reply that
/// parses to the same value; every cut of an accepted reply is "need more".
#[cfg(any(test, feature = "fuzzing"))]
pub fn check(input: &[u8]) {
    let Ok(Some((v, len))) = parse(input) else { return };
    assert!(len <= input.len());
    let mut again = Vec::new();
    encode(&v, &mut again);
    assert_eq!(parse(&again), Ok(Some((v, again.len()))));
    for cut in 0..len {
        assert_eq!(parse(&input[..cut]), Ok(None), "cut at {cut}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Value::*;

    fn bulk(s: &str) -> Value {
        Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn table() {
        let table: &[(&[u8], Parsed)] = &[
            (b"+OK\r\n", Ok(Some((Simple(b"OK".to_vec()), 5)))),
            (b"-ERR no\r\n", Ok(Some((Error(b"ERR no".to_vec()), 9)))),
            (b":42\r\n", Ok(Some((Int(42), 5)))),
            (b":-7\r\n", Ok(Some((Int(-7), 5)))),
            (b"$3\r\nabc\r\n", Ok(Some((bulk("abc"), 9)))),
            (b"$0\r\n\r\n", Ok(Some((bulk(""), 6)))),
            (b"$-1\r\n", Ok(Some((Nil, 5)))),
            (b"*-1\r\n", Ok(Some((Nil, 5)))),
            (b"*0\r\n", Ok(Some((Array(vec![]), 4)))),
            (b"*2\r\n$1\r\na\r\n:1\r\n+next", Ok(Some((Array(vec![bulk("a"), Int(1)]), 15)))),
            (b"*1\r\n*1\r\n$2\r\n\r\n\r\n", Ok(Some((Array(vec![Array(vec![bulk("\r\n")])]), 16)))),
            (b"", Ok(None)),
            (b"+OK", Ok(None)),
            (b"+OK\r", Ok(None)),
            (b"$3\r\nab", Ok(None)),
            (b"$3\r\nabc", Ok(None)),
            (b"$3\r\nabc\r", Ok(None)),
            (b"*2\r\n:1\r\n", Ok(None)),
            (b"?\r\n", Err(RespError::Malformed)),
            (b"+OK\rx", Err(RespError::Malformed)),
            (b":\r\n", Err(RespError::Malformed)),
            (b":1a\r\n", Err(RespError::Malformed)),
            (b":99999999999999999999\r\n", Err(RespError::Malformed)),
            (b"$-2\r\n", Err(RespError::Malformed)),
            (b"$3\r\nabcde", Err(RespError::Malformed)),
            (b"*-2\r\n", Err(RespError::Malformed)),
            (b"$67108865\r\n", Err(RespError::TooLarge)),
            (b"*1048577\r\n", Err(RespError::TooLarge)),
            (b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", Err(RespError::TooLarge)),
        ];
        for (input, want) in table {
            assert_eq!(&parse(input), want, "{:?}", String::from_utf8_lossy(input));
            if let Ok(Some((v, _))) = want {
                let mut again = Vec::new();
                encode(v, &mut again);
                assert_eq!(parse(&again), Ok(Some((v.clone(), again.len()))), "re-encoded");
            }
        }
    }

    #[test]
    fn a_line_without_end_is_bounded() {
        let mut long = vec![b'+'];
        long.extend(std::iter::repeat_n(b'x', LINE_MAX));
        assert_eq!(parse(&long), Ok(None));
        long.extend_from_slice(b"xx");
        assert_eq!(parse(&long), Err(RespError::TooLarge));
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"XADD", b"k", b"*", b"p", b"{\"a\":\r\n1}"]);
        assert_eq!(out, b"*5\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n*\r\n$1\r\np\r\n$9\r\n{\"a\":\r\n1}\r\n");
        let (v, n) = parse(&out).unwrap().unwrap();
        assert_eq!(n, out.len());
        assert_eq!(v, Array(vec![bulk("XADD"), bulk("k"), bulk("*"), bulk("p"), bulk("{\"a\":\r\n1}")]));
    }

    /// Every reply, cut at every byte, is "need more" until it is whole,
    /// and then the same value, whatever the split.
    #[test]
    fn every_byte_split() {
        let mut stream = Vec::new();
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"-NOSCRIPT No matching script\r\n",
            b":1764262800123\r\n",
            b"$-1\r\n",
            b"*2\r\n$15\r\n1764262800123-0\r\n$3\r\n0-0\r\n",
            b"*1\r\n*2\r\n$10\r\nssehub:p:3\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$1\r\nt\r\n$1\r\ne\r\n$1\r\np\r\n$5\r\n[1,2]\r\n",
        ];
        for reply in replies {
            stream.extend_from_slice(reply);
            let whole = parse(reply).unwrap().unwrap();
            assert_eq!(whole.1, reply.len());
            for cut in 0..reply.len() {
                assert_eq!(parse(&reply[..cut]), Ok(None), "{:?} cut at {cut}", String::from_utf8_lossy(reply));
            }
        }
        // As a connection reads them: pieces of any size, values drained as they complete.
        for piece in 1..=7 {
            let (mut buf, mut got) = (Vec::new(), Vec::new());
            for chunk in stream.chunks(piece) {
                buf.extend_from_slice(chunk);
                while let Some((v, n)) = parse(&buf).unwrap() {
                    got.push(v);
                    buf.drain(..n);
                }
            }
            assert!(buf.is_empty());
            let want: Vec<Value> = replies.iter().map(|r| parse(r).unwrap().unwrap().0).collect();
            assert_eq!(got, want, "pieces of {piece}");
        }
    }
}

/// The fuzz target's invariants (fuzz/fuzz_targets/resp_reply.rs) on every
/// `cargo test`: any bytes, and valid replies with noise after them.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,8}".prop_map(|s| Value::Simple(s.into_bytes())),
            "[a-zA-Z0-9 ]{0,8}".prop_map(|s| Value::Error(s.into_bytes())),
            any::<i64>().prop_filter("i64::MIN has no positive twin", |&n| n != i64::MIN).prop_map(Value::Int),
            prop::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bulk),
            Just(Value::Nil),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| prop::collection::vec(inner, 0..4).prop_map(Value::Array))
    }

    proptest! {
        #[test]
        fn any_bytes(input in prop::collection::vec(any::<u8>(), 0..64)) {
            check(&input);
        }

        #[test]
        fn replies_then_noise(v in value(), noise in prop::collection::vec(any::<u8>(), 0..8)) {
            let mut input = Vec::new();
            encode(&v, &mut input);
            let len = input.len();
            input.extend_from_slice(&noise);
            prop_assert_eq!(parse(&input), Ok(Some((v, len))));
            check(&input);
        }
    }
}
