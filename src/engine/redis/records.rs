//! The engine's records in Redis, sans I/O: a partition stream's entries
//! taken apart into `Record`s, the events of a history stream, a script
//! call's reply to one emit, and emit ids (`<node>:<counter>`).
//!
//! A partition entry is either the events of one script call for that
//! partition, two fields each (`e`: `<source> <id> <id before> <emit id>`,
//! `p`: the payload: the fewer the entries and fields, the less Redis
//! builds and a node takes apart per event), or one control record (`t`
//! its type, `s` its source, more fields by type). `script.lua` writes
//! them; the table tests below spell out its format.

use std::collections::VecDeque;

use super::resp::Value;
use crate::engine::{Retention, SourceMeta};
use crate::sse::EventId;
use crate::text::push_u64;
use crate::verify::Verify;

/// A partition record.
#[cfg_attr(test, derive(Debug, PartialEq))]
pub enum Record {
    Event {
        source: String,
        id: EventId,
        prev: EventId,
        emit: Vec<u8>,
        payload: Vec<u8>,
    },
    Created(SourceMeta),
    Deleted(String),
    /// Cleared up to this id (the source's last when it was cleared).
    Cleared(String, EventId),
    /// The signature check's stored settings (empty: none).
    Verify(String, Vec<u8>),
    /// A subscribe token made: (source, token, expires_at).
    Token(String, String, u64),
    /// A subscribe token revoked: (source, token).
    Revoked(String, String),
    /// The source's retention set (`retention_text`).
    Retention(String, Retention),
}

/// A source's retention as the hash and the records keep it: `max_events
/// max_age_s max_bytes`, `-` for a bound not set (the server's).
pub fn retention_text(r: &Retention) -> String {
    let one = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
    format!("{} {} {}", one(r.max_events), one(r.max_age_s), one(r.max_bytes))
}

/// `retention_text` read back; nothing set for what is not one.
pub fn parse_retention(b: &[u8]) -> Retention {
    let text = std::str::from_utf8(b).unwrap_or("");
    let mut parts = text.split(' ').map(|p| p.parse::<u32>().ok());
    let mut next = || parts.next().flatten();
    Retention { max_events: next(), max_age_s: next(), max_bytes: next() }
}

/// The value after `name` in a flat field list (a hash or a stream entry).
pub fn field<'a>(fields: &'a [Value], name: &str) -> Option<&'a [u8]> {
    fields.chunks(2).find(|kv| kv[0].as_bytes() == Some(name.as_bytes())).and_then(|kv| kv.get(1)?.as_bytes())
}

pub fn parse_id(b: &[u8]) -> Option<EventId> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// An XREAD reply for one partition, `[[stream, [[id, [k, v, …]], …]]]`,
/// taken apart (payloads move, not copied): its records appended to
/// `out`, `cursor` set to the last entry's id.
pub fn read(reply: Value, cursor: &mut Vec<u8>, out: &mut VecDeque<Record>) {
    let read = reply.into_array().and_then(|s| s.into_iter().next()?.into_array()?.into_iter().nth(1)?.into_array());
    for e in read.unwrap_or_default() {
        let mut e = e.into_array().unwrap_or_default().into_iter();
        let (Some(Value::Bulk(id)), Some(fields)) = (e.next(), e.next()) else { continue };
        *cursor = id;
        if let Some(fields) = fields.into_array() {
            entries(fields, out);
        }
    }
}

/// A partition entry's records, in order.
fn entries(f: Vec<Value>, out: &mut VecDeque<Record>) {
    if f.first().and_then(Value::as_bytes) != Some(b"e") {
        out.extend(control(&f));
        return;
    }
    let mut f = f.into_iter();
    while let (Some(_), Some(head), Some(_), Some(Value::Bulk(payload))) = (f.next(), f.next(), f.next(), f.next()) {
        out.extend(event(head.as_bytes().unwrap_or_default(), payload));
    }
}

fn event(head: &[u8], payload: Vec<u8>) -> Option<Record> {
    let mut head = head.split(|&b| b == b' ');
    let (source, id, prev, emit) = (head.next()?, head.next()?, head.next()?, head.next()?);
    Some(Record::Event {
        source: String::from_utf8_lossy(source).into_owned(),
        id: parse_id(id)?,
        prev: parse_id(prev)?,
        emit: emit.to_vec(),
        payload,
    })
}

/// A control record's fields.
fn control(f: &[Value]) -> Option<Record> {
    let text = |name| field(f, name).map(|v| String::from_utf8_lossy(v).into_owned());
    let source = text("s")?;
    Some(match field(f, "t")? {
        b"c" => Record::Created(SourceMeta {
            retention: field(f, "r").map(parse_retention).unwrap_or_default(),
            account: text("a")?,
            name: text("n")?,
            endpoint_key: text("k")?,
            created_at: text("at")?.parse().ok()?,
            verify: field(f, "j").and_then(Verify::from_stored),
            id: source,
        }),
        b"d" => Record::Deleted(source),
        b"x" => Record::Cleared(source, parse_id(field(f, "i")?)?),
        b"v" => Record::Verify(source, field(f, "j")?.to_vec()),
        b"T" => Record::Token(source, text("k")?, text("x")?.parse().ok()?),
        b"R" => Record::Revoked(source, text("k")?),
        b"r" => Record::Retention(source, parse_retention(field(f, "r")?)),
        _ => return None,
    })
}

/// What the script did with one emit.
#[derive(Debug, PartialEq, Eq)]
pub enum Emitted {
    /// Appended: its id and the id before it.
    Appended(EventId, EventId),
    /// Its idempotency key was used with the same body: the id it got.
    Replayed(EventId),
    /// Its idempotency key was used with another body.
    OtherBody,
}

/// One emit's part of a script call's reply: `[id, previous id]`,
/// `["R", id]` (replayed) or `["C"]` (the key's other body); nil: no
/// such source.
pub fn emitted(reply: &Value) -> Option<Emitted> {
    let a = reply.as_array()?;
    let first = a.first()?.as_bytes()?;
    Some(match first {
        b"R" => Emitted::Replayed(parse_id(a.get(1)?.as_bytes()?)?),
        b"C" => Emitted::OtherBody,
        _ => Emitted::Appended(parse_id(first)?, parse_id(a.get(1)?.as_bytes()?)?),
    })
}

/// An XREVRANGE of a history stream (newest first), oldest first: (id,
/// the id before it, payload) of each event up to `up_to`.
pub fn history(reply: &Value, up_to: EventId) -> Vec<(EventId, EventId, Vec<u8>)> {
    reply
        .as_array()
        .unwrap_or(&[])
        .iter()
        .rev()
        .filter_map(|e| {
            let e = e.as_array()?;
            let f = e.get(1)?.as_array()?;
            Some((parse_id(e.first()?.as_bytes()?)?, parse_id(field(f, "v")?)?, field(f, "p")?.to_vec()))
        })
        .filter(|e| e.0 <= up_to)
        .collect()
}

/// An emit's id: `<node>:<counter>`, unique across nodes.
pub fn emit_id(node: &str, counter: u64) -> Vec<u8> {
    let mut emit_id = node.as_bytes().to_vec();
    emit_id.push(b':');
    push_u64(&mut emit_id, counter);
    emit_id
}

/// The counter of an emit id if `node` made it.
pub fn emit_counter(node: &str, emit: &[u8]) -> Option<u64> {
    let rest = emit.strip_prefix(node.as_bytes())?.strip_prefix(b":")?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Scheme;

    fn bulk(b: impl AsRef<[u8]>) -> Value {
        Value::Bulk(b.as_ref().to_vec())
    }

    fn id(ms: u64, seq: u64) -> EventId {
        format!("{ms}-{seq}").parse().unwrap()
    }

    /// A partition entry's fields as `script.lua` writes them: events of
    /// one call share an entry; a control record has one of its own.
    fn encode(records: &[Record]) -> Vec<Value> {
        let mut f = Vec::new();
        let mut put = |k: &str, v: &[u8]| f.extend([bulk(k), bulk(v)]);
        for record in records {
            match record {
                Record::Event { source, id, prev, emit, payload } => {
                    put("e", format!("{source} {id} {prev} {}", String::from_utf8_lossy(emit)).as_bytes());
                    put("p", payload);
                }
                Record::Created(m) => {
                    let j = m.verify.as_ref().map(Verify::stored_json).unwrap_or_default();
                    put("t", b"c");
                    put("s", m.id.as_bytes());
                    put("a", m.account.as_bytes());
                    put("n", m.name.as_bytes());
                    put("k", m.endpoint_key.as_bytes());
                    put("at", m.created_at.to_string().as_bytes());
                    put("j", &j);
                    put("r", retention_text(&m.retention).as_bytes());
                }
                Record::Deleted(s) => [("t", &b"d"[..]), ("s", s.as_bytes())].into_iter().for_each(|(k, v)| put(k, v)),
                Record::Cleared(s, up_to) => {
                    [("t", &b"x"[..]), ("s", s.as_bytes()), ("i", up_to.to_string().as_bytes())].into_iter().for_each(|(k, v)| put(k, v))
                }
                Record::Verify(s, j) => [("t", &b"v"[..]), ("s", s.as_bytes()), ("j", j)].into_iter().for_each(|(k, v)| put(k, v)),
                Record::Token(s, t, x) => [("t", &b"T"[..]), ("s", s.as_bytes()), ("k", t.as_bytes()), ("x", x.to_string().as_bytes())]
                    .into_iter()
                    .for_each(|(k, v)| put(k, v)),
                Record::Retention(s, r) => {
                    [("t", &b"r"[..]), ("s", s.as_bytes()), ("r", retention_text(r).as_bytes())].into_iter().for_each(|(k, v)| put(k, v))
                }
                Record::Revoked(s, t) => {
                    [("t", &b"R"[..]), ("s", s.as_bytes()), ("k", t.as_bytes())].into_iter().for_each(|(k, v)| put(k, v))
                }
            }
        }
        f
    }

    fn decode(fields: Vec<Value>) -> Vec<Record> {
        let mut out = VecDeque::new();
        entries(fields, &mut out);
        out.into()
    }

    fn ev(source: &str, at: EventId, prev: EventId, emit: &[u8], payload: &[u8]) -> Record {
        Record::Event { source: source.into(), id: at, prev, emit: emit.to_vec(), payload: payload.to_vec() }
    }

    fn meta(verify: Option<Verify>) -> SourceMeta {
        SourceMeta {
            id: "src1".into(),
            account: "acct".into(),
            name: "orders".into(),
            endpoint_key: "k3y".into(),
            created_at: 1_700_000_000_000,
            verify,
            retention: Default::default(),
        }
    }

    #[test]
    fn round_trips_every_record() {
        let github = Verify { scheme: Scheme::Github, secret: "s3cret".into(), reject_invalid: true };
        let entries: Vec<Vec<Record>> = vec![
            vec![ev("src1", id(5, 0), id(0, 0), b"node:1", b"{\"a\":1}")],
            // One call's events for a partition: several sources, in order; a payload may hold spaces and be empty.
            vec![
                ev("a", id(7, 1), id(7, 0), b"n:2", b"x y z"),
                ev("b", id(7, 2), id(3, 0), b"n:3", b""),
                ev("a", id(8, 0), id(7, 1), b"m:9", b"{}"),
            ],
            vec![Record::Created(meta(None))],
            vec![Record::Created(meta(Some(github)))],
            vec![Record::Deleted("src1".into())],
            vec![Record::Cleared("src1".into(), id(12, 3))],
            vec![Record::Verify("src1".into(), b"{\"scheme\":\"github\"}".to_vec())],
            vec![Record::Verify("src1".into(), Vec::new())],
            vec![Record::Token("src1".into(), "tok".into(), 1_700_000_060_000)],
            vec![Record::Revoked("src1".into(), "tok".into())],
            vec![Record::Retention("src1".into(), Retention { max_events: Some(5), max_age_s: None, max_bytes: Some(4096) })],
            vec![Record::Retention("src1".into(), Retention::default())],
        ];
        for records in entries {
            let fields = encode(&records);
            assert_eq!(decode(fields), records);
        }
    }

    #[test]
    fn bad_entries_yield_nothing() {
        let f = |pairs: &[(&str, &str)]| pairs.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect::<Vec<_>>();
        let table: [(&str, Vec<Value>); 12] = [
            ("empty", Vec::new()),
            ("no type", f(&[("s", "src1")])),
            ("no source", f(&[("t", "d")])),
            ("unknown type", f(&[("t", "z"), ("s", "src1")])),
            ("create without a name", f(&[("t", "c"), ("s", "src1"), ("a", "acct"), ("k", "k"), ("at", "1")])),
            ("create at no number", f(&[("t", "c"), ("s", "src1"), ("a", "acct"), ("n", "n"), ("k", "k"), ("at", "soon")])),
            ("clear without an id", f(&[("t", "x"), ("s", "src1")])),
            ("clear up to no id", f(&[("t", "x"), ("s", "src1"), ("i", "yesterday")])),
            ("token expiring at no number", f(&[("t", "T"), ("s", "src1"), ("k", "tok"), ("x", "-1")])),
            ("event head too short", f(&[("e", "src1 5-0 0-0"), ("p", "{}")])),
            ("event id no id", f(&[("e", "src1 five 0-0 n:1"), ("p", "{}")])),
            ("event payload not bulk", vec![bulk("e"), bulk("src1 5-0 0-0 n:1"), bulk("p"), Value::Int(1)]),
        ];
        for (what, fields) in table {
            assert_eq!(decode(fields), [], "{what}");
        }
        // A bad event among good ones is skipped alone; a torn last pair ends the entry.
        let mut fields = encode(&[ev("a", id(1, 0), id(0, 0), b"n:1", b"1")]);
        fields.extend(f(&[("e", "a 2-0 1-0"), ("p", "2")]));
        fields.extend(encode(&[ev("a", id(3, 0), id(2, 0), b"n:3", b"3")]));
        fields.extend([bulk("e"), bulk("a 4-0 3-0 n:4"), bulk("p")]);
        assert_eq!(decode(fields), [ev("a", id(1, 0), id(0, 0), b"n:1", b"1"), ev("a", id(3, 0), id(2, 0), b"n:3", b"3")]);
    }

    #[test]
    fn reads_take_every_entry_and_move_the_cursor() {
        let entry = |at: &str, records: &[Record]| Value::Array(vec![bulk(at), Value::Array(encode(records))]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("ssehub:p:0"),
            Value::Array(vec![
                entry("10-0", &[ev("a", id(10, 0), id(0, 0), b"n:1", b"1")]),
                entry("11-0", &[Record::Deleted("b".into())]),
                // Not understood: skipped, yet read past.
                entry("12-0", &[]),
            ]),
        ])]);
        let (mut cursor, mut out) = (b"0-0".to_vec(), VecDeque::new());
        read(reply, &mut cursor, &mut out);
        assert_eq!(cursor, b"12-0");
        assert_eq!(Vec::from(out), [ev("a", id(10, 0), id(0, 0), b"n:1", b"1"), Record::Deleted("b".into())]);
        for nothing in [Value::Nil, Value::Array(Vec::new()), Value::Int(3), Value::Array(vec![Value::Array(vec![bulk("p")])])] {
            let (mut cursor, mut out) = (b"5-0".to_vec(), VecDeque::new());
            read(nothing, &mut cursor, &mut out);
            assert_eq!((cursor, out.len()), (b"5-0".to_vec(), 0));
        }
    }

    #[test]
    fn emit_replies_and_histories() {
        assert_eq!(emitted(&Value::Array(vec![bulk("9-1"), bulk("9-0")])), Some(Emitted::Appended(id(9, 1), id(9, 0))));
        assert_eq!(emitted(&Value::Array(vec![bulk("R"), bulk("8-2")])), Some(Emitted::Replayed(id(8, 2))));
        assert_eq!(emitted(&Value::Array(vec![bulk("C")])), Some(Emitted::OtherBody));
        for bad in [
            Value::Nil,
            Value::Error(b"OOM".to_vec()),
            Value::Array(vec![bulk("9-1")]),
            Value::Array(vec![bulk("9-1"), bulk("x")]),
            Value::Array(vec![bulk("R")]),
        ] {
            assert_eq!(emitted(&bad), None, "{bad:?}");
        }
        let h = |at: &str, prev: &str, p: &str| Value::Array(vec![bulk(at), Value::Array(vec![bulk("p"), bulk(p), bulk("v"), bulk(prev)])]);
        // Newest first, as XREVRANGE answers; a malformed entry is left out.
        let reply = Value::Array(vec![h("4-0", "3-0", "d"), h("3-0", "2-0", "c"), Value::Array(vec![bulk("2-5")]), h("2-0", "1-0", "b")]);
        let want = vec![(id(2, 0), id(1, 0), b"b".to_vec()), (id(3, 0), id(2, 0), b"c".to_vec())];
        assert_eq!(history(&reply, id(3, 0)), want);
        assert_eq!(history(&Value::Nil, id(3, 0)), []);
    }

    #[test]
    fn emit_ids_name_their_node() {
        assert_eq!(emit_id("n0de", 42), b"n0de:42");
        for counter in [0, 1, 42, u64::MAX] {
            assert_eq!(emit_counter("n0de", &emit_id("n0de", counter)), Some(counter));
        }
        for (node, emit) in [("n0de", &b"othr:42"[..]), ("n0de", b"n0de42"), ("n0de", b"n0de:"), ("n0de", b"n0de:x"), ("n0", b"n0de:42")] {
            assert_eq!(emit_counter(node, emit), None, "{}", String::from_utf8_lossy(emit));
        }
    }
}
