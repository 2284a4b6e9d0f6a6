//! The log's records, sans I/O. Each is
//!
//! ```text
//! len: u32 LE (of type + body)   crc: u32 LE (CRC32C of type + body)   type: u8   body
//! ```
//!
//! Strings and payloads in a body are a u32 LE length and the bytes; ids
//! are two u64 LE (ms, seq). A record that runs past the end of the bytes,
//! or whose CRC does not match, is `Bad`: a torn write or damage.

use crate::engine::{IdemKey, Retention, SourceMeta};
use crate::sse::EventId;

/// Bytes before a record's type: length and CRC.
pub const HEADER: usize = 8;
/// Largest record accepted when reading (a payload is at most
/// `--max-event-bytes`, well below it): a bigger length is damage.
const RECORD_MAX: usize = 64 * 1024 * 1024;

const SOURCE: u8 = 1;
const DELETED: u8 = 2;
const EVENT: u8 = 3;
const CLEARED: u8 = 4;
const DEFAULT_KEY: u8 = 5;
const SOURCE_STATE: u8 = 6;
const SNAPSHOT: u8 = 7;
const VERIFY: u8 = 8;
const TOKEN: u8 = 9;
const TOKEN_REVOKED: u8 = 10;
const RETENTION: u8 = 11;
const EVENT_KEYED: u8 = 12;
const KEY: u8 = 13;

/// One record, borrowing what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Source {
        id: &'a str,
        account: &'a str,
        name: &'a str,
        endpoint_key: &'a str,
        created_at: u64,
    },
    Deleted {
        id: &'a str,
    },
    /// An event; with the idempotency key of its emit, if it had one
    /// (written as one record, so the key is kept exactly when the event is).
    Event {
        source: &'a str,
        id: EventId,
        payload: &'a [u8],
        key: Option<IdemKey>,
    },
    /// In a snapshot: an idempotency key the source remembers (its event
    /// may be evicted already).
    Key {
        source: &'a str,
        key: IdemKey,
        id: EventId,
    },
    /// History cleared; `up_to` is the newest id it held.
    Cleared {
        source: &'a str,
        up_to: EventId,
    },
    DefaultKey {
        key: &'a str,
    },
    /// In a snapshot: the source's newest id ever and newest evicted id.
    SourceState {
        source: &'a str,
        last_id: EventId,
        evicted: Option<EventId>,
    },
    /// The first record of a snapshot: everything before it is replaced.
    Snapshot,
    /// The source's signature check, as JSON with its secret (`verify::Verify::stored_json`);
    /// empty when removed. After the `Source` record, in the log and in snapshots.
    Verify {
        source: &'a str,
        settings: &'a [u8],
    },
    /// A subscribe token of `source`, until `expires_at` (unix ms).
    Token {
        token: &'a str,
        source: &'a str,
        expires_at: u64,
    },
    TokenRevoked {
        token: &'a str,
    },
    /// The source's retention as set (after its `Source` record; a source
    /// without one has the defaults). Set by a change: `evicted` is the
    /// newest id evicted then, so that the events a smaller bound evicted
    /// stay evicted whatever the bounds set later.
    Retention {
        source: &'a str,
        retention: Retention,
        evicted: Option<EventId>,
    },
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// The record runs past the end: a write cut short.
    Short,
    /// Length, CRC or fields are wrong.
    Corrupt,
}

impl Record<'_> {
    /// Appends the record's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        match *self {
            Record::Source { id, account, name, endpoint_key, created_at } => {
                out.push(SOURCE);
                for s in [id, account, name, endpoint_key] {
                    put_bytes(out, s.as_bytes());
                }
                out.extend_from_slice(&created_at.to_le_bytes());
            }
            Record::Deleted { id } => {
                out.push(DELETED);
                put_bytes(out, id.as_bytes());
            }
            Record::Event { source, id, payload, key } => {
                out.push(if key.is_some() { EVENT_KEYED } else { EVENT });
                put_bytes(out, source.as_bytes());
                put_id(out, id);
                put_bytes(out, payload);
                if let Some(k) = key {
                    out.extend_from_slice(&k.key);
                    out.extend_from_slice(&k.body);
                }
            }
            Record::Key { source, key, id } => {
                out.push(KEY);
                put_bytes(out, source.as_bytes());
                out.extend_from_slice(&key.key);
                out.extend_from_slice(&key.body);
                put_id(out, id);
            }
            Record::Cleared { source, up_to } => {
                out.push(CLEARED);
                put_bytes(out, source.as_bytes());
                put_id(out, up_to);
            }
            Record::DefaultKey { key } => {
                out.push(DEFAULT_KEY);
                put_bytes(out, key.as_bytes());
            }
            Record::SourceState { source, last_id, evicted } => {
                out.push(SOURCE_STATE);
                put_bytes(out, source.as_bytes());
                put_id(out, last_id);
                put_opt_id(out, evicted);
            }
            Record::Snapshot => out.push(SNAPSHOT),
            Record::Verify { source, settings } => {
                out.push(VERIFY);
                put_bytes(out, source.as_bytes());
                put_bytes(out, settings);
            }
            Record::Token { token, source, expires_at } => {
                out.push(TOKEN);
                put_bytes(out, token.as_bytes());
                put_bytes(out, source.as_bytes());
                out.extend_from_slice(&expires_at.to_le_bytes());
            }
            Record::TokenRevoked { token } => {
                out.push(TOKEN_REVOKED);
                put_bytes(out, token.as_bytes());
            }
            Record::Retention { source, retention, evicted } => {
                out.push(RETENTION);
                put_bytes(out, source.as_bytes());
                // 0 is no bound's value: none set.
                for bound in [retention.max_events, retention.max_age_s, retention.max_bytes] {
                    out.extend_from_slice(&bound.unwrap_or(0).to_le_bytes());
                }
                put_opt_id(out, evicted);
            }
        }
        let body = &out[start + HEADER..];
        let (len, crc) = (body.len() as u32, crc32c(body));
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A source's meta as records: `Source`, then `Verify` and `Retention`
/// where it has a signature check and a retention of its own.
pub fn encode_meta(m: &SourceMeta, out: &mut Vec<u8>) {
    Record::Source { id: &m.id, account: &m.account, name: &m.name, endpoint_key: &m.endpoint_key, created_at: m.created_at }.encode(out);
    if let Some(v) = &m.verify {
        Record::Verify { source: &m.id, settings: &v.stored_json() }.encode(out);
    }
    if !m.retention.is_default() {
        Record::Retention { source: &m.id, retention: m.retention, evicted: None }.encode(out);
    }
}

/// Decodes the record at the start of `buf`: it and its length in bytes.
pub fn decode(buf: &[u8]) -> Result<(Record<'_>, usize), Bad> {
    if buf.len() < HEADER {
        return Err(Bad::Short);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
    if len == 0 || len > RECORD_MAX {
        return Err(Bad::Corrupt);
    }
    let Some(body) = buf.get(HEADER..HEADER + len) else { return Err(Bad::Short) };
    if crc32c(body) != crc {
        return Err(Bad::Corrupt);
    }
    let mut r = Reader { buf: &body[1..] };
    let record = match body[0] {
        SOURCE => Record::Source { id: r.str()?, account: r.str()?, name: r.str()?, endpoint_key: r.str()?, created_at: r.u64()? },
        DELETED => Record::Deleted { id: r.str()? },
        EVENT => Record::Event { source: r.str()?, id: r.id()?, payload: r.bytes()?, key: None },
        EVENT_KEYED => Record::Event { source: r.str()?, id: r.id()?, payload: r.bytes()?, key: Some(r.idem()?) },
        KEY => Record::Key { source: r.str()?, key: r.idem()?, id: r.id()? },
        CLEARED => Record::Cleared { source: r.str()?, up_to: r.id()? },
        DEFAULT_KEY => Record::DefaultKey { key: r.str()? },
        SOURCE_STATE => {
            let (source, last_id) = (r.str()?, r.id()?);
            Record::SourceState { source, last_id, evicted: r.opt_id()? }
        }
        RETENTION => {
            let source = r.str()?;
            let mut bound = || r.u32().map(|n| (n != 0).then_some(n));
            let retention = Retention { max_events: bound()?, max_age_s: bound()?, max_bytes: bound()? };
            Record::Retention { source, retention, evicted: r.opt_id()? }
        }
        SNAPSHOT => Record::Snapshot,
        VERIFY => Record::Verify { source: r.str()?, settings: r.bytes()? },
        TOKEN => Record::Token { token: r.str()?, source: r.str()?, expires_at: r.u64()? },
        TOKEN_REVOKED => Record::TokenRevoked { token: r.str()? },
        _ => return Err(Bad::Corrupt),
    };
    if !r.buf.is_empty() {
        return Err(Bad::Corrupt);
    }
    Ok((record, HEADER + len))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_id(out: &mut Vec<u8>, id: EventId) {
    out.extend_from_slice(&id.ms.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
}

fn put_opt_id(out: &mut Vec<u8>, id: Option<EventId>) {
    match id {
        Some(id) => {
            out.push(1);
            put_id(out, id);
        }
        None => out.push(0),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if self.buf.len() < n {
            return Err(Bad::Corrupt);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Bad> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, Bad> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| Bad::Corrupt)?))
    }

    fn u32(&mut self) -> Result<u32, Bad> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| Bad::Corrupt)?))
    }

    fn id(&mut self) -> Result<EventId, Bad> {
        Ok(EventId { ms: self.u64()?, seq: self.u64()? })
    }

    fn idem(&mut self) -> Result<IdemKey, Bad> {
        let key = self.take(16)?.try_into().map_err(|_| Bad::Corrupt)?;
        let body = self.take(16)?.try_into().map_err(|_| Bad::Corrupt)?;
        Ok(IdemKey { key, body })
    }

    fn opt_id(&mut self) -> Result<Option<EventId>, Bad> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.id()?)),
            _ => Err(Bad::Corrupt),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], Bad> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| Bad::Corrupt)?) as usize;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'a str, Bad> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Bad::Corrupt)
    }
}

/// CRC32C (Castagnoli, reflected 0x82F63B78), slicing by 8.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLES: std::sync::OnceLock<[[u32; 256]; 8]> = std::sync::OnceLock::new();
    let t = TABLES.get_or_init(|| {
        let mut t = [[0u32; 256]; 8];
        for (i, slot) in t[0].iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            }
            *slot = c;
        }
        for i in 0..256 {
            for k in 1..8 {
                t[k][i] = (t[k - 1][i] >> 8) ^ t[0][(t[k - 1][i] & 0xff) as usize];
            }
        }
        t
    });
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ b as u32) & 0xff) as usize];
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> EventId {
        EventId { ms, seq }
    }

    fn samples() -> Vec<Record<'static>> {
        vec![
            Record::Source { id: "dc_a", account: "default", name: "orders", endpoint_key: "k", created_at: 7 },
            Record::Event { source: "dc_a", id: id(10, 0), payload: b"{\"n\":1}", key: None },
            Record::Event { source: "dc_a", id: id(10, 1), payload: b"", key: None },
            Record::Event { source: "dc_a", id: id(10, 2), payload: b"[]", key: Some(IdemKey { key: [7; 16], body: [9; 16] }) },
            Record::Key { source: "dc_a", key: IdemKey { key: [1; 16], body: [2; 16] }, id: id(8, 0) },
            Record::Cleared { source: "dc_a", up_to: id(10, 1) },
            Record::DefaultKey { key: "sk_x" },
            Record::SourceState { source: "dc_a", last_id: id(10, 1), evicted: Some(id(9, 3)) },
            Record::SourceState { source: "dc_a", last_id: id(10, 1), evicted: None },
            Record::Deleted { id: "dc_a" },
            Record::Snapshot,
            Record::Verify { source: "dc_a", settings: br#"{"scheme":"github","secret":"s","reject_invalid":false}"# },
            Record::Verify { source: "dc_a", settings: b"" },
            Record::Token { token: "st_x", source: "dc_a", expires_at: 9 },
            Record::TokenRevoked { token: "st_x" },
            Record::Retention {
                source: "dc_a",
                retention: Retention { max_events: Some(5), max_age_s: Some(30), max_bytes: Some(4096) },
                evicted: Some(id(9, 2)),
            },
            Record::Retention { source: "dc_a", retention: Retention { max_age_s: Some(1), ..Retention::default() }, evicted: None },
            Record::Retention { source: "dc_a", retention: Retention::default(), evicted: None },
        ]
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let bytewise = long.iter().fold(!0u32, |crc, &b| {
            let mut c = crc ^ b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            }
            c
        });
        assert_eq!(crc32c(&long), !bytewise, "slicing by 8 = bit by bit");
    }

    #[test]
    fn round_trips_every_record() {
        for record in samples() {
            let mut buf = Vec::new();
            record.encode(&mut buf);
            assert_eq!(decode(&buf), Ok((record.clone(), buf.len())));
            for cut in 0..buf.len() {
                assert_eq!(decode(&buf[..cut]).unwrap_err(), Bad::Short, "{record:?} cut at {cut}");
            }
            for bit in 0..buf.len() * 8 {
                let mut bad = buf.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(decode(&bad).is_err(), "bit {bit} of {record:?} went unnoticed");
            }
        }
    }
}
