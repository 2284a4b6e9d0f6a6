//! Reading the server's JSON without changing what users emitted: payloads
//! are kept as raw text (`serde_json`'s `RawValue`), so key order and
//! number spelling survive, and only compacted as SPEC §2.2 does.

use serde_json::value::RawValue;
use std::collections::BTreeMap;

type Object = BTreeMap<String, Box<RawValue>>;

/// One stored event as `event_summaries` and the stream carry it.
#[derive(Debug, PartialEq)]
pub struct Envelope {
    pub id: String,
    /// The whole envelope, compacted.
    pub raw: String,
    /// The emitted payload, compacted.
    pub event: String,
}

/// Parses an envelope; the message says what is wrong with it.
pub fn envelope(text: &str) -> Result<Envelope, String> {
    let fields: Object = serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let event = fields.get("event").ok_or("no \"event\" field")?;
    let id = match fields.get("id") {
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| "\"id\" is not a string")?,
        None => return Err("no \"id\" field".to_string()),
    };
    Ok(Envelope { id, raw: compact(text), event: compact(event.get()) })
}

/// The envelopes of an `event_summaries` answer, as the server orders them.
pub fn summaries(body: &str) -> Result<Vec<Envelope>, String> {
    let fields: Object = serde_json::from_str(body).map_err(|e| format!("not a JSON object: {e}"))?;
    let data = fields.get("data").ok_or("no \"data\" field")?;
    let items: Vec<Box<RawValue>> = serde_json::from_str(data.get()).map_err(|_| "\"data\" is not a list")?;
    items.iter().map(|item| envelope(item.get())).collect()
}

/// `page_info.total_count` of an `event_summaries` answer: how many events
/// the server keeps of the source.
pub fn total_count(body: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("page_info")?.get("total_count")?.as_u64()
}

/// The `resumed_from` id of a `gap` frame's data, when there is one.
pub fn gap_resumed_from(data: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    Some(value.get("resumed_from")?.as_str()?.to_string())
}

/// `text` as a JSON string, quoted and escaped.
pub fn string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// Checks that `text` is one JSON value, before it is sent anywhere.
pub fn validate(text: &str) -> Result<(), String> {
    serde_json::from_str::<&RawValue>(text).map(drop).map_err(|e| e.to_string())
}

/// The `error` sentence of an error answer, if it is the usual JSON.
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(value.get("error")?.as_str()?.to_string())
}

/// Removes whitespace outside strings and changes nothing else.
pub fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_outside_strings_only() {
        let cases = [
            ("{ \"b\" : 1,\n \"a\" : [ 1.50, 2e3 ] }", "{\"b\":1,\"a\":[1.50,2e3]}"),
            ("\" a \\\" b \\\\\" ", "\" a \\\" b \\\\\""),
            ("[\"\\\\\", \" x \"]", "[\"\\\\\",\" x \"]"),
            ("\t\r\n 7 ", "7"),
        ];
        for (input, want) in cases {
            assert_eq!(compact(input), want, "{input}");
        }
    }

    #[test]
    fn reads_envelopes_keeping_the_payload_as_emitted() {
        let text = r#"{"id":"5-1","indexed_at_ms":5,"event":{"z":1,"a":12345678901234567890123,"s":"x  y"},"metadata":{}}"#;
        let env = envelope(text).unwrap();
        assert_eq!(env.id, "5-1");
        assert_eq!(env.event, r#"{"z":1,"a":12345678901234567890123,"s":"x  y"}"#);
        assert_eq!(env.raw, text);

        for bad in ["[1]", "{\"id\":\"1-0\"}", "{\"event\":1}", "{\"id\":1,\"event\":1}", "nope"] {
            assert!(envelope(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_summaries_in_server_order() {
        let body = r#"{"page_info":{"total_count":2},"data":[
            {"id":"2-0","event":"new"},
            {"id":"1-0","event":{"old":true}}]}"#;
        let got: Vec<_> = summaries(body).unwrap().into_iter().map(|e| (e.id, e.event)).collect();
        assert_eq!(got, [("2-0".into(), "\"new\"".into()), ("1-0".into(), "{\"old\":true}".into())]);
        assert_eq!((total_count(body), total_count(r#"{"data":[]}"#)), (Some(2), None));
        assert_eq!(summaries(r#"{"data":[]}"#).unwrap(), []);
        assert!(summaries(r#"{"data":{}}"#).is_err());
        assert!(summaries(r#"{"data":[{"id":"1-0"}]}"#).is_err());
    }

    #[test]
    fn validates_before_sending() {
        for good in ["1", " {\"a\": [1, 2]} \n", "\"s\"", "null", "-1.5e3"] {
            assert!(validate(good).is_ok(), "{good}");
        }
        for bad in ["", "{", "{'a':1}", "1 2", "tru", "{\"a\":1,}"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_error_sentences() {
        assert_eq!(error_message(br#"{"error":"no such source"}"#).as_deref(), Some("no such source"));
        assert_eq!(error_message(b"<html>"), None);
        assert_eq!(error_message(br#"{"error":3}"#), None);
    }
}
