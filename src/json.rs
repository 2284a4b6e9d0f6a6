//! JSON in and out without a DOM: validate and compact an emitted payload,
//! and write strings escaped. Validation is serde_json's (strict RFC 8259,
//! UTF-8 checked, numbers within f64, no lone surrogates); compaction is then a byte pass that only drops
//! whitespace outside strings, so numbers, key order and duplicate keys are
//! delivered exactly as the emitter wrote them.

use std::fmt;

/// Why a payload is not JSON; `Display` is the sentence for the 400 answer.
#[derive(Debug)]
pub struct InvalidJson(String);

impl fmt::Display for InvalidJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "body is not valid JSON: {}", self.0)
    }
}

/// Deepest nesting of arrays and objects accepted in a payload. The
/// envelope adds a level, and JSON parsers commonly stop at 128 (serde_json
/// does): deeper payloads would make events subscribers cannot read.
pub const DEPTH_MAX: usize = 100;

/// Checks that `input` is one JSON value nested at most `DEPTH_MAX` deep,
/// and returns it compacted to one line.
pub fn compact(input: &[u8]) -> Result<Vec<u8>, InvalidJson> {
    let mut out = Vec::with_capacity(input.len());
    compact_into(input, &mut out)?;
    Ok(out)
}

/// `compact`, written to `out` (cleared first), a buffer the caller keeps.
pub fn compact_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), InvalidJson> {
    let text = std::str::from_utf8(input).map_err(|e| InvalidJson(format!("not UTF-8 ({e})")))?;
    out.clear();
    let depth = strip_whitespace(input, out);
    if depth > DEPTH_MAX {
        return Err(InvalidJson(format!("nested deeper than {DEPTH_MAX} levels")));
    }
    // Whitespace-stripping a non-JSON input proves nothing: validate the original.
    // (serde_json skips ignored strings without checking UTF-8: done above.)
    serde_json::from_str::<Strict>(text).map_err(|e| InvalidJson(e.to_string()))?;
    Ok(())
}

/// Validates exactly as parsing into a `serde_json::Value` would, without
/// building it. `IgnoredAny` is not enough: it skips numbers and `\u`
/// escapes unchecked, so it let through `1e400` (out of f64 range) and
/// `"\ud800"` (a lone surrogate), which then made events that serde_json
/// (and so a Rust subscriber) cannot parse. Found by `fuzz/json_compact`.
struct Strict;

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        while map.next_entry::<Strict, Strict>()?.is_some() {}
        Ok(Strict)
    }
}

/// Appends `input` without the JSON whitespace outside strings to `out`,
/// and returns the deepest nesting.
/// Only meaningful for valid JSON: inside a string a raw space is content,
/// and `\"` does not end it.
fn strip_whitespace(input: &[u8], out: &mut Vec<u8>) -> usize {
    // Runs between whitespace are copied whole, and strings are skipped to
    // their closing quote: most payloads are one run.
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut run, mut i) = (0, 0);
    while i < input.len() {
        match input[i] {
            b'"' => {
                i = string_end(input, i + 1);
                continue;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                out.extend_from_slice(&input[run..i]);
                run = i + 1;
            }
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    out.extend_from_slice(&input[run..]);
    deepest
}

/// Where the string whose content starts at `i` ends: just past its closing
/// quote (a backslash escapes the byte after it), or the input's end if it
/// has none (validation refuses that input).
fn string_end(input: &[u8], mut i: usize) -> usize {
    while let Some(at) = input[i..].iter().position(|&b| b == b'"' || b == b'\\') {
        if input[i + at] == b'"' {
            return i + at + 1;
        }
        i = (i + at + 2).min(input.len());
    }
    input.len()
}

/// Appends `s` as a JSON string literal, quotes included.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_escaped(out, s);
    out.push(b'"');
}

/// `s` escaped as inside a JSON string, without the quotes: a string
/// written in parts (`"{base}/e/{key}"`) is the parts escaped one by one.
pub fn write_escaped(out: &mut Vec<u8>, s: &str) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
}

/// `{"error":"<message>"}`: the body of every error answer.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    out.extend_from_slice(b"{\"error\":");
    write_str(&mut out, message);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_only_outside_strings() {
        let table: &[(&str, &str)] = &[
            ("{\"total\": 12}", "{\"total\":12}"),
            (" [1, 2 ,\n3 ]\r\n", "[1,2,3]"),
            ("{\"a b\" : \" x  y \"}", "{\"a b\":\" x  y \"}"),
            ("\"esc \\\" still in  string\"", "\"esc \\\" still in  string\""),
            ("\"back\\\\\" ", "\"back\\\\\""),
            ("1.50e+3", "1.50e+3"),
            ("{\"k\":1,\"k\":2}", "{\"k\":1,\"k\":2}"),
            ("\t null \t", "null"),
            ("{\"u\": \"\\u00e9 é\"}", "{\"u\":\"\\u00e9 é\"}"),
            // Still valid under the stricter check: underflow, a u64 overflow (an f64), a surrogate pair.
            ("[1e-400, 18446744073709551616, \"\\ud83d\\ude00\"]", "[1e-400,18446744073709551616,\"\\ud83d\\ude00\"]"),
        ];
        for (input, want) in table {
            let got = compact(input.as_bytes()).unwrap();
            assert_eq!(std::str::from_utf8(&got).unwrap(), *want, "input {input:?}");
        }
    }

    #[test]
    fn rejects_what_is_not_one_json_value() {
        // Fuzz finds (serde_json's Value refuses them, so subscribers would
        // get events they cannot parse): out-of-range numbers, lone surrogates.
        let found = ["2E001615\t", "[-1e400]", "1e309", "\"\\ud800\"", "{\"\\udc00\":1}", "\"\\ud83d\\u0041\""];
        for input in ["", " ", "{", "{\"a\":}", "[1,]", "tru", "1 2", "{'a':1}", "\"\n\"", "NaN", "01"].into_iter().chain(found) {
            assert!(compact(input.as_bytes()).is_err(), "accepted {input:?}");
        }
        assert!(compact(b"\"\xff\"").is_err(), "accepted invalid UTF-8");
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(compact(deep(DEPTH_MAX).as_bytes()).is_ok());
        assert_eq!(
            compact(deep(DEPTH_MAX + 1).as_bytes()).unwrap_err().to_string(),
            "body is not valid JSON: nested deeper than 100 levels"
        );
        assert!(compact(format!("[\"{}\"]", "[".repeat(500)).as_bytes()).is_ok(), "brackets in strings are not nesting");
    }

    #[test]
    fn escapes_strings() {
        let table: &[(&str, &str)] = &[
            ("plain", "\"plain\""),
            ("q\"b\\", "\"q\\\"b\\\\\""),
            ("a\nb\rc\td", "\"a\\nb\\rc\\td\""),
            ("\u{1}", "\"\\u0001\""),
            ("é☃", "\"é☃\""),
        ];
        for (input, want) in table {
            let mut out = Vec::new();
            write_str(&mut out, input);
            assert_eq!(std::str::from_utf8(&out).unwrap(), *want);
            assert!(compact(&out).is_ok());
        }
    }
}

/// The invariants of `fuzz/json_compact`, checked on every `cargo test`.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// Bytes drawn mostly from JSON's alphabet, so that many are valid.
    fn jsonish() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            8 => prop::sample::select(b"{}[]\",:0123456789-+.eEtrufalsn \t\r\n\\u".to_vec()),
            1 => any::<u8>(),
        ];
        prop::collection::vec(byte, 0..40)
    }

    proptest! {
        #[test]
        fn compacts_pretty_json_to_serde_json_compact(v in value()) {
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            prop_assert_eq!(String::from_utf8(compact(pretty.as_bytes()).unwrap()).unwrap(), serde_json::to_string(&v).unwrap());
        }

        #[test]
        fn accepts_exactly_what_serde_json_parses(input in jsonish()) {
            let reference = serde_json::from_slice::<Value>(&input).ok().filter(|v| depth(v) <= DEPTH_MAX);
            match compact(&input) {
                Ok(out) => {
                    prop_assert!(reference.is_some(), "accepted {:?}", String::from_utf8_lossy(&input));
                    prop_assert_eq!(serde_json::from_slice::<Value>(&out).ok(), reference);
                    prop_assert_eq!(compact(&out).unwrap(), out);
                }
                Err(_) => prop_assert!(reference.is_none(), "refused {:?}", String::from_utf8_lossy(&input)),
            }
        }
    }
}
