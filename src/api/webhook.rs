//! Webhook ingest (`/e/<endpoint-key>[/path]`): any HTTP request to a
//! source's endpoint becomes one event, with the exact body bytes kept so
//! that receivers can check the sender's signature.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::reply::{Answer, Fail, Reply, ok};
use crate::base64;
use crate::engine::SourceKey;
use crate::http::{self, Head};
use crate::hub::Hub;
use crate::json;
use crate::verify::{self, Outcome};
use log::debug;

/// Methods named in CORS preflight answers.
const CORS_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// A CORS preflight of an endpoint: answered, not an event.
pub fn is_preflight(head: &Head) -> bool {
    head.method() == "OPTIONS" && head.header("access-control-request-method").is_some()
}

/// Emits the request as an event of the endpoint's source; answered once
/// storage has it.
pub fn ingest<W>(hub: &mut Hub<W>, head: &Head, source: SourceKey, suffix: &str, body: &[u8], now_ms: u64) -> Result<Reply, Fail> {
    let mut signature = None;
    if let Some(verify) = &hub.source(source).verify {
        let outcome = verify.check(|name| head.header(name), body, now_ms / 1000);
        if let (true, Outcome::Invalid(reason)) = (verify.reject_invalid, &outcome) {
            debug!("webhook delivery to source {} refused: {reason}", hub.source(source).id);
            let body = json::error_body(&format!("invalid signature: {reason}"));
            return Ok(ok(head, 401, "application/json", "Access-Control-Allow-Origin: *\r\n", &body));
        }
        let mut out = Vec::with_capacity(96);
        verify::write_signature(&mut out, &verify.scheme, &outcome);
        signature = Some(out);
    }
    let payload = event(head, suffix, body, signature.as_deref());
    let ticket = hub.emit(source, &payload, now_ms);
    Ok(Reply::Wait { ticket, answer: Answer::ingested(head) })
}

/// The answer to a CORS preflight (not an event): any origin, the methods,
/// and the headers the page asked for, echoed (every one is accepted).
pub fn preflight(head: &Head) -> Reply {
    let mut extra = format!("Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Methods: {CORS_METHODS}\r\n");
    // httparse has refused CR and LF in values, so echoing cannot split the head.
    let requested: Vec<&str> = head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("access-control-request-headers"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok().map(str::trim))
        .filter(|v| !v.is_empty())
        .collect();
    if !requested.is_empty() {
        extra.push_str(&format!("Access-Control-Allow-Headers: {}\r\n", requested.join(", ")));
    }
    extra.push_str("Access-Control-Max-Age: 86400\r\n");
    ok(head, 204, "", &extra, b"")
}

/// `{"method","path","query","headers","body","bodyRaw"[,"bodyRawEncoding"][,"signature"]}`
/// as compact JSON; `signature` is the check's JSON, when the source has one.
pub fn event(head: &Head, suffix: &str, body: &[u8], signature: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 2 + 512);
    out.extend_from_slice(b"{\"method\":");
    json::write_str(&mut out, head.method());
    out.extend_from_slice(b",\"path\":");
    json::write_str(&mut out, if suffix.is_empty() { "/" } else { suffix });
    out.extend_from_slice(b",\"query\":");
    let query: Vec<(String, String)> = http::query_pairs(head.query()).collect();
    write_grouped(&mut out, &query, true);
    out.extend_from_slice(b",\"headers\":");
    let headers: Vec<(String, String)> =
        head.headers().map(|(n, v)| (n.to_ascii_lowercase(), String::from_utf8_lossy(v).into_owned())).collect();
    write_grouped(&mut out, &headers, false);
    out.extend_from_slice(b",\"body\":");
    // JSON (no deeper than json::DEPTH_MAX, so the event stays readable), else text.
    let text = std::str::from_utf8(body);
    match (json::compact(body), text) {
        (Ok(compacted), _) => out.extend_from_slice(&compacted),
        (Err(_), Ok(text)) => json::write_str(&mut out, text),
        (Err(_), Err(_)) => json::write_str(&mut out, &base64::encode(body)),
    }
    out.extend_from_slice(b",\"bodyRaw\":");
    match text {
        Ok(text) => json::write_str(&mut out, text),
        Err(_) => {
            json::write_str(&mut out, &base64::encode(body));
            out.extend_from_slice(b",\"bodyRawEncoding\":\"base64\"");
        }
    }
    if let Some(signature) = signature {
        out.extend_from_slice(b",\"signature\":");
        out.extend_from_slice(signature);
    }
    out.push(b'}');
    out
}

/// A JSON object of `pairs` in first-seen order. A repeated key becomes an
/// array of its values (`as_array`, for queries) or one value joined with
/// ", " (for headers, as HTTP allows; `cookie` with "; ", as RFC 6265
/// §5.4 has a client send them, since a cookie value may hold a comma). Linear: a 16 KiB query can hold
/// thousands of keys, and this runs on the reactor thread.
fn write_grouped(out: &mut Vec<u8>, pairs: &[(String, String)], as_array: bool) {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(pairs.len());
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match index.entry(k) {
            Entry::Occupied(e) => groups[*e.get()].1.push(v),
            Entry::Vacant(e) => {
                e.insert(groups.len());
                groups.push((k, vec![v]));
            }
        }
    }
    out.push(b'{');
    for (i, (key, values)) in groups.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(out, key);
        out.push(b':');
        match values.as_slice() {
            [one] => json::write_str(out, one),
            many if as_array => {
                out.push(b'[');
                for (j, v) in many.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    json::write_str(out, v);
                }
                out.push(b']');
            }
            many => json::write_str(out, &many.join(if *key == "cookie" { "; " } else { ", " })),
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        http::parse_head(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn builds_events() {
        let h = head(
            "POST /e/k/hook?a=1&a=2&b=%20x HTTP/1.1\r\nHost: h\r\nX-Sig: s1\r\nX-Sig: s2\r\nContent-Type: application/json\r\n\
             Cookie: a=1\r\ncookie: b=2,3\r\n\r\n",
        );
        let got: serde_json::Value = serde_json::from_slice(&event(&h, "/hook", b"{ \"n\": 1 }", None)).unwrap();
        let want = serde_json::json!({
            "method": "POST", "path": "/hook",
            "query": {"a": ["1", "2"], "b": " x"},
            "headers": {"host": "h", "x-sig": "s1, s2", "content-type": "application/json", "cookie": "a=1; b=2,3"},
            "body": {"n": 1}, "bodyRaw": "{ \"n\": 1 }"
        });
        assert_eq!(got, want);
        let got: serde_json::Value = serde_json::from_slice(&event(&h, "", b"a=1&b=2", None)).unwrap();
        assert_eq!((got["path"].as_str(), got["body"].as_str()), (Some("/"), Some("a=1&b=2")));
        let got: serde_json::Value =
            serde_json::from_slice(&event(&h, "", b"\xff\x00", Some(b"{\"scheme\":\"github\",\"valid\":true}"))).unwrap();
        assert_eq!((got["bodyRaw"].as_str(), got["bodyRawEncoding"].as_str()), (Some("/wA="), Some("base64")));
        assert_eq!(got["signature"], serde_json::json!({"scheme": "github", "valid": true}));
    }
}
