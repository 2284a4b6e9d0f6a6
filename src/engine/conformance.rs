//! The storage conformance suite: what every engine must do, checked
//! through the seam alone. Each engine's tests call `check_all` with a
//! way to open it (and, for engines that keep data, to reopen the same
//! data); `Delayed` wraps an engine to acknowledge late and in batches.

use std::path::Path;

use super::{Ack, Engine, IdemKey, Op, Outcome, Recovered, Retention, SourceKey, SourceMeta, StoredSource, StoredToken, Ticket};
use crate::sse::EventId;
use crate::sse::Gap;
use crate::verify::Verify;

/// Opens an engine on `dir` with `history` slots, ids above `floor_ms`:
/// the engine and what it found there.
pub type Open<'a> = &'a dyn Fn(&Path, usize, u64) -> (Box<dyn Engine>, Recovered);
type Check = fn(Open<'_>, &Path);

/// Runs every check; `persistent` engines are also reopened.
pub fn check_all(open: Open<'_>, persistent: bool) {
    let dir = TempDir::new();
    let checks: &[(&str, Check)] = &[
        ("replay seam", replay_seam),
        ("summaries", summaries),
        ("delete", delete),
        ("clear and gap", clear_and_gap),
        ("eviction gap", eviction_gap),
        ("ids increase", ids_increase),
        ("late acks", late_acks),
    ];
    for (i, (name, check)) in checks.iter().enumerate() {
        let sub = dir.0.join(format!("{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        eprintln!("conformance: {name}");
        check(open, &sub);
    }
    let retention: &[(&str, Check)] = &[
        ("age eviction", age_eviction),
        ("bytes eviction", bytes_eviction),
        ("retention set later", retention_set_later),
        ("idempotency keys", idempotency_keys),
    ];
    for (name, check) in retention {
        let sub = dir.0.join(name.replace(' ', "-"));
        std::fs::create_dir_all(&sub).unwrap();
        eprintln!("conformance: {name}");
        check(open, &sub);
    }
    if persistent {
        let sub = dir.0.join("retention-reopen");
        std::fs::create_dir_all(&sub).unwrap();
        retention_kept(open, &sub);
    }
    // Engines shared by nodes (redis) keep the keys in storage and decide there: a node
    // loads none (its ring remembers only its own emits' keys, a shortcut).
    let shared = {
        let sub = dir.0.join("probe");
        std::fs::create_dir_all(&sub).unwrap();
        open(&sub, 5, 1_000_000).0.shared()
    };
    if persistent {
        let sub = dir.0.join("keys-reopen");
        std::fs::create_dir_all(&sub).unwrap();
        if shared { keys_kept_in_storage(open, &sub) } else { keys_kept(open, &sub) }
    }
    if persistent {
        let sub = dir.0.join("reopen");
        std::fs::create_dir_all(&sub).unwrap();
        reopen(open, &sub);
        let sub = dir.0.join("tokens");
        std::fs::create_dir_all(&sub).unwrap();
        tokens_kept(open, &sub);
    }
}

pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ssehub-conformance-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn meta(n: u64) -> SourceMeta {
    SourceMeta {
        id: format!("dc_conformance{n:04}"),
        account: "default".into(),
        name: format!("s{n}"),
        endpoint_key: format!("endpoint{n}"),
        created_at: 1000 + n,
        verify: None,
        retention: Retention::default(),
    }
}

/// Submits, then flushes and polls until every ticket is done (bounded):
/// the outcomes in the order they came.
pub fn settle(engine: &mut dyn Engine, tickets: &[Ticket]) -> Vec<Outcome> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        engine.flush();
        engine.poll(&mut out);
        let done = out.iter().filter(|o| matches!(o, Outcome::Done { ticket, .. } if tickets.contains(ticket))).count();
        if done == tickets.len() {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    panic!("tickets not acknowledged: {tickets:?}, got {out:?}");
}

pub fn create(engine: &mut dyn Engine, key: SourceKey, now: u64) {
    let m = meta(key);
    let t = engine.submit(Op::Create { key, meta: &m }, now);
    settle(engine, &[t]);
}

/// Appends payloads `{"n":i}`; returns the acknowledged ids in order and
/// checks that each was published after its ack, in the same order.
fn append(engine: &mut dyn Engine, key: SourceKey, range: std::ops::Range<u64>, now: u64) -> Vec<EventId> {
    append_payloads(engine, key, range.map(|n| format!("{{\"n\":{n}}}")).collect(), now)
}

fn append_payloads(engine: &mut dyn Engine, key: SourceKey, payloads: Vec<String>, now: u64) -> Vec<EventId> {
    let tickets: Vec<Ticket> = payloads.iter().map(|p| engine.submit(Op::Append { key, payload: p.as_bytes(), idem: None }, now)).collect();
    let out = settle(engine, &tickets);
    let mut acked = Vec::new();
    let mut published = Vec::new();
    for o in out {
        match o {
            Outcome::Done { ticket, result: Ok(Ack::Appended(id)) } => {
                assert_eq!(ticket, tickets[acked.len()], "acknowledged in submission order");
                acked.push(id);
            }
            Outcome::Done { result, .. } => panic!("append not stored: {result:?}"),
            Outcome::Publish { key: k, event } => {
                assert_eq!(k, key);
                assert!(acked.contains(&event.id), "published only once acknowledged");
                assert!(std::str::from_utf8(event.envelope()).unwrap().contains(&payloads[published.len()]));
                published.push(event.id);
            }
            o => panic!("an engine alone is told of no other node's change: {o:?}"),
        }
    }
    assert_eq!(acked, published, "every acknowledged event is published once, in order");
    assert!(acked.windows(2).all(|w| w[0] < w[1]), "ids increase: {acked:?}");
    acked
}

fn replayed(engine: &dyn Engine, key: SourceKey, after: EventId) -> (Option<Gap>, Vec<EventId>) {
    let (gap, events) = engine.rings().replay(key, after);
    (gap, events.map(|e| e.id).collect())
}

fn replay_seam(open: Open<'_>, dir: &Path) {
    let (mut e, _) = open(dir, 100, 1_000_000);
    create(&mut *e, 1, 2_000_000);
    let ids = append(&mut *e, 1, 0..5, 2_000_000);
    assert_eq!(replayed(&*e, 1, ids[1]), (None, ids[2..].to_vec()), "after an id: exactly the later ones");
    assert_eq!(replayed(&*e, 1, EventId::default()), (None, ids.clone()), "never evicted: no gap");
    assert_eq!(replayed(&*e, 1, ids[4]), (None, vec![]));
    // A resume point, then live: the next appends continue the replay with no gap or duplicate.
    let more = append(&mut *e, 1, 5..8, 2_000_000);
    assert!(more[0] > ids[4]);
    assert_eq!(replayed(&*e, 1, ids[4]).1, more);
}

fn summaries(open: Open<'_>, dir: &Path) {
    let (mut e, _) = open(dir, 4, 1_000_000);
    create(&mut *e, 7, 2_000_000);
    let ids = append(&mut *e, 7, 0..6, 2_000_000);
    let history = e.rings().history(7).unwrap();
    assert_eq!(history.len(), 4);
    let newest: Vec<EventId> = history.newest(2).map(|e| e.id).collect();
    assert_eq!(newest, [ids[5], ids[4]], "newest first");
    assert!(e.rings().history(8).is_none(), "an unknown source has no history");
}

fn delete(open: Open<'_>, dir: &Path) {
    let (mut e, _) = open(dir, 10, 1_000_000);
    create(&mut *e, 1, 2_000_000);
    create(&mut *e, 2, 2_000_000);
    append(&mut *e, 1, 0..3, 2_000_000);
    let ids2 = append(&mut *e, 2, 0..2, 2_000_000);
    // An append submitted just before the delete is answered; the source is gone after.
    let late = e.submit(Op::Append { key: 1, payload: b"1", idem: None }, 2_000_000);
    let del = e.submit(Op::Delete { key: 1 }, 2_000_000);
    let out = settle(&mut *e, &[late, del]);
    let done: Vec<Ticket> = out.iter().filter_map(|o| if let Outcome::Done { ticket, .. } = o { Some(*ticket) } else { None }).collect();
    assert_eq!(done, [late, del], "in submission order");
    assert!(e.rings().history(1).is_none());
    assert_eq!(replayed(&*e, 2, EventId::default()).1, ids2, "other sources untouched");
}

fn clear_and_gap(open: Open<'_>, dir: &Path) {
    let (mut e, _) = open(dir, 10, 1_000_000);
    create(&mut *e, 1, 2_000_000);
    let ids = append(&mut *e, 1, 0..3, 2_000_000);
    let t = e.submit(Op::Clear { key: 1 }, 2_000_000);
    settle(&mut *e, &[t]);
    assert_eq!(replayed(&*e, 1, ids[0]), (Some(Gap { after: ids[0], resumed_from: None }), vec![]));
    assert_eq!(replayed(&*e, 1, ids[2]), (None, vec![]), "from the newest cleared id nothing is lost");
    let after = append(&mut *e, 1, 3..5, 2_000_000);
    assert!(after[0] > ids[2], "ids go on above the cleared ones");
    assert_eq!(replayed(&*e, 1, ids[1]), (Some(Gap { after: ids[1], resumed_from: Some(after[0]) }), after.clone()));
}

fn eviction_gap(open: Open<'_>, dir: &Path) {
    let (mut e, _) = open(dir, 5, 1_000_000);
    create(&mut *e, 1, 2_000_000);
    let ids = append(&mut *e, 1, 0..12, 2_000_000);
    let (gap, replay) = replayed(&*e, 1, ids[1]);
    assert_eq!(gap, Some(Gap { after: ids[1], resumed_from: Some(ids[7]) }));
    assert_eq!(replay, ids[7..].to_vec(), "the 5 retained");
    assert_eq!(replayed(&*e, 1, ids[6]), (None, ids[7..].to_vec()), "exactly the newest evicted: no gap");
    assert_eq!(replayed(&*e, 1, ids[8]).0, None, "inside history: no gap");
}

fn ids_increase(open: Open<'_>, dir: &Path) {
    let (mut e, _) = open(dir, 100, 5_000);
    create(&mut *e, 1, 6_000);
    let mut ids = Vec::new();
    // The clock steps back and stands still: ids still increase, above the floor.
    for now in [4_000, 6_000, 6_000, 5_000, 7_000] {
        ids.extend(append(&mut *e, 1, 0..2, now));
    }
    assert!(ids[0] > EventId { ms: 5_000, seq: u64::MAX }, "above every id of an earlier process");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

fn late_acks(open: Open<'_>, dir: &Path) {
    let (inner, _) = open(dir, 100, 1_000_000);
    let mut e = Delayed::new(inner, 3);
    create(&mut e, 1, 2_000_000);
    let ids = append(&mut e, 1, 0..20, 2_000_000);
    assert_eq!(ids.len(), 20);
    assert!(e.batches > 0, "acknowledged late, in batches");
}

fn create_with(engine: &mut dyn Engine, key: SourceKey, retention: Retention, now: u64) {
    let m = SourceMeta { retention, ..meta(key) };
    let t = engine.submit(Op::Create { key, meta: &m }, now);
    settle(engine, &[t]);
}

fn set_retention(engine: &mut dyn Engine, key: SourceKey, retention: Retention, now: u64) {
    let t = engine.submit(Op::Retention { key, retention }, now);
    settle(engine, &[t]);
}

fn age(s: u32) -> Retention {
    Retention { max_age_s: Some(s), ..Retention::default() }
}

/// A fake clock: events at t0 and t0+5 s with a 10 s bound go at their
/// deadlines and not a millisecond before; the gap frame tells of them.
fn age_eviction(open: Open<'_>, dir: &Path) {
    let (mut e, _) = open(dir, 100, 1_000_000);
    let t0 = 2_000_000;
    create_with(&mut *e, 1, age(10), t0);
    let old = append(&mut *e, 1, 0..3, t0);
    let new = append(&mut *e, 1, 3..5, t0 + 5_000);
    assert_eq!(e.rings().deadline(1), Some(t0 + 10_000));
    assert_eq!(e.expire(1, t0 + 9_999), Some(t0 + 10_000), "not before its deadline");
    assert_eq!(replayed(&*e, 1, EventId::default()), (None, [&old[..], &new[..]].concat()));
    assert_eq!(e.expire(1, t0 + 10_000), Some(t0 + 15_000), "the next deadline: the oldest left");
    assert_eq!(replayed(&*e, 1, old[0]), (Some(Gap { after: old[0], resumed_from: Some(new[0]) }), new.clone()));
    assert_eq!(replayed(&*e, 1, old[2]), (None, new.clone()), "exactly the newest evicted: no gap");
    assert_eq!(e.rings().history(1).unwrap().newest(10).count(), 2, "summaries show only what is left");
    assert_eq!(e.expire(1, t0 + 60_000), None, "empty: no deadline");
    assert_eq!(replayed(&*e, 1, old[2]), (Some(Gap { after: old[2], resumed_from: None }), vec![]));
    let after = append(&mut *e, 1, 5..6, t0 + 61_000);
    assert!(after[0] > new[1], "ids go on");
    assert_eq!(e.rings().deadline(1), Some(t0 + 71_000));
    assert_eq!(e.expire(2, t0), None, "an unknown source has no deadline");
}

/// Mixed sizes under a bytes bound: the oldest go first; the newest stays
/// even when it alone is larger than the bound.
fn bytes_eviction(open: Open<'_>, dir: &Path) {
    let (mut e, _) = open(dir, 100, 1_000_000);
    create_with(&mut *e, 1, Retention { max_bytes: Some(4096), ..Retention::default() }, 2_000_000);
    let text = |n: usize| format!("\"{}\"", "x".repeat(n));
    let ids = append_payloads(&mut *e, 1, vec![text(100), text(1000), text(600), text(800)], 2_000_000);
    let bytes = |e: &dyn Engine| e.rings().history(1).unwrap().iter().map(|ev| ev.envelope().len()).sum::<usize>();
    assert_eq!(replayed(&*e, 1, EventId::default()), (None, ids.clone()), "all four fit");
    let more = append_payloads(&mut *e, 1, vec![text(1500)], 2_000_000);
    assert_eq!(replayed(&*e, 1, EventId::default()).1, [&ids[2..], &more[..]].concat(), "the oldest two go");
    assert!(bytes(&*e) <= 4096);
    assert_eq!(replayed(&*e, 1, ids[0]).0, Some(Gap { after: ids[0], resumed_from: Some(ids[2]) }));
    assert_eq!(replayed(&*e, 1, ids[1]).0, None, "exactly the newest evicted: no gap");
    let big = append_payloads(&mut *e, 1, vec![text(5000)], 2_000_000);
    assert_eq!(replayed(&*e, 1, EventId::default()).1, big, "the newest stays, larger than the bound");
    assert_eq!(replayed(&*e, 1, ids[3]).0, Some(Gap { after: ids[3], resumed_from: Some(big[0]) }));
    let small = append_payloads(&mut *e, 1, vec![text(10)], 2_000_000);
    assert_eq!(replayed(&*e, 1, EventId::default()).1, small, "and goes when a newer one comes");
}

/// A retention set on a source with events applies at once; a count
/// bound per source overrides the server's.
fn retention_set_later(open: Open<'_>, dir: &Path) {
    let (mut e, _) = open(dir, 5, 1_000_000);
    create_with(&mut *e, 1, Retention { max_events: Some(8), ..Retention::default() }, 2_000_000);
    let ids = append(&mut *e, 1, 0..10, 2_000_000);
    assert_eq!(replayed(&*e, 1, EventId::default()).1, ids[2..].to_vec(), "8, not the server's 5");
    set_retention(&mut *e, 1, Retention { max_events: Some(3), ..Retention::default() }, 2_000_000);
    assert_eq!(replayed(&*e, 1, ids[0]), (Some(Gap { after: ids[0], resumed_from: Some(ids[7]) }), ids[7..].to_vec()));
    set_retention(&mut *e, 1, age(1), 2_000_500);
    assert_eq!(replayed(&*e, 1, EventId::default()).1, ids[7..].to_vec(), "a larger bound brings nothing back");
    set_retention(&mut *e, 1, age(1), 2_001_000);
    assert_eq!(replayed(&*e, 1, ids[9]), (None, vec![]), "past its age at once");
    assert_eq!(e.rings().history(1).unwrap().len(), 0);
}

/// Retention survives a reopen; what a smaller bound evicted stays
/// evicted after a larger one is set; what expired while closed goes at
/// the first expiry after the reopen.
fn retention_kept(open: Open<'_>, dir: &Path) {
    let t0 = 2_000_000;
    let set = Retention { max_events: Some(20), max_age_s: Some(100), max_bytes: Some(1_000_000) };
    let (ids, late) = {
        let (mut e, _) = open(dir, 5, 1_000_000);
        create_with(&mut *e, 1, set, t0);
        create_with(&mut *e, 2, Retention::default(), t0);
        let ids = append(&mut *e, 1, 0..12, t0);
        set_retention(&mut *e, 2, Retention { max_events: Some(2), ..Retention::default() }, t0);
        append(&mut *e, 2, 0..6, t0);
        set_retention(&mut *e, 2, Retention { max_events: Some(50), ..Retention::default() }, t0);
        let late = append(&mut *e, 1, 12..14, t0 + 50_000);
        (ids, late)
    };
    let (mut e, recovered) = open(dir, 5, 1_000_000);
    let mut sources = recovered.sources;
    sources.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
    assert_eq!(sources[0].meta.retention, set, "the retention survives");
    assert_eq!(sources[1].meta.retention, Retention { max_events: Some(50), ..Retention::default() });
    assert_eq!(sources[1].events.len(), 2, "a larger bound set later brings nothing back");
    let stored = sources.remove(0);
    assert_eq!(stored.events.len(), 14, "20 kept, not the server's 5");
    e.restore(9, stored);
    assert_eq!(e.rings().deadline(9), Some(t0 + 100_000));
    assert_eq!(e.expire(9, t0 + 120_000), Some(t0 + 150_000), "what expired while closed goes at the first expiry");
    assert_eq!(replayed(&*e, 9, ids[0]), (Some(Gap { after: ids[0], resumed_from: Some(late[0]) }), late.clone()));
}

/// Appends one payload with an idempotency key; its id.
fn append_keyed(engine: &mut dyn Engine, key: SourceKey, payload: &str, idem: IdemKey, now: u64) -> EventId {
    let t = engine.submit(Op::Append { key, payload: payload.as_bytes(), idem: Some(idem) }, now);
    let out = settle(engine, &[t]);
    match out.iter().find_map(|o| if let Outcome::Done { result: Ok(Ack::Appended(id)), .. } = o { Some(*id) } else { None }) {
        Some(id) => id,
        None => panic!("not appended: {out:?}"),
    }
}

/// A key is remembered with its event once acknowledged, 24 hours, per
/// source, even after the event itself is evicted.
fn idempotency_keys(open: Open<'_>, dir: &Path) {
    let (mut e, _) = open(dir, 2, 1_000_000);
    let t0 = 2_000_000;
    create(&mut *e, 1, t0);
    create(&mut *e, 2, t0);
    let (a, b) = (IdemKey::new(b"key-a", b"1"), IdemKey::new(b"key-b", b"2"));
    assert_eq!(e.rings().repeat(1, &a.key, t0), None);
    let id = append_keyed(&mut *e, 1, "1", a, t0);
    append_keyed(&mut *e, 1, "2", b, t0);
    assert_eq!(e.rings().repeat(1, &a.key, t0), Some((a.body, id)));
    assert_eq!(e.rings().repeat(2, &a.key, t0), None, "per source");
    append(&mut *e, 1, 0..5, t0);
    assert_eq!(e.rings().history(1).unwrap().len(), 2);
    assert_eq!(e.rings().repeat(1, &a.key, t0 + 1000), Some((a.body, id)), "kept after its event was evicted");
    let day = super::IDEMPOTENCY_KEY_LIFE_MS;
    assert_eq!(e.rings().repeat(1, &a.key, id.ms + day - 1), Some((a.body, id)));
    assert_eq!(e.rings().repeat(1, &a.key, id.ms + day), None, "forgotten after 24 hours");
}

/// Keys survive a reopen, with their ids and body hashes.
/// An engine shared by nodes keeps its keys in storage and decides there:
/// a node opened later (which loads no keys) replays the first emit's id
/// for the same body, refuses another body, and appends nothing.
fn keys_kept_in_storage(open: Open<'_>, dir: &Path) {
    let t0 = 2_000_000;
    let a = IdemKey::new(b"key-a", b"{}");
    let id = {
        let (mut e, _) = open(dir, 5, 1_000_000);
        create(&mut *e, 1, t0);
        let id = append_keyed(&mut *e, 1, "{}", a, t0);
        append(&mut *e, 1, 0..3, t0);
        id
    };
    let (mut e, recovered) = open(dir, 5, 1_000_000);
    e.restore(5, recovered.sources.into_iter().next().unwrap());
    assert_eq!(e.rings().repeat(5, &a.key, t0), None, "no key loaded");
    let mut result = |payload: &str, idem: IdemKey| {
        let t = e.submit(Op::Append { key: 5, payload: payload.as_bytes(), idem: Some(idem) }, t0 + 1_000);
        settle(&mut *e, &[t]).into_iter().find_map(|o| match o {
            Outcome::Done { ticket, result } if ticket == t => Some(result),
            _ => None,
        })
    };
    assert_eq!(result("{}", a), Some(Ok(Ack::Replayed(id))));
    assert_eq!(result("[1]", IdemKey::new(b"key-a", b"[1]")), Some(Err(super::StorageError::KeyReused)));
    assert_eq!(e.rings().history(5).unwrap().len(), 4, "nothing appended");
}

fn keys_kept(open: Open<'_>, dir: &Path) {
    let t0 = 2_000_000;
    let a = IdemKey::new(b"key-a", b"{}");
    let id = {
        let (mut e, _) = open(dir, 2, 1_000_000);
        create(&mut *e, 1, t0);
        let id = append_keyed(&mut *e, 1, "{}", a, t0);
        append(&mut *e, 1, 0..3, t0);
        id
    };
    let (mut e, recovered) = open(dir, 2, 1_000_000);
    let stored = recovered.sources.into_iter().next().unwrap();
    assert_eq!(stored.keys, vec![(a, id)]);
    e.restore(5, stored);
    assert_eq!(e.rings().repeat(5, &a.key, t0), Some((a.body, id)));
}

/// A signature check as a source keeps it.
pub fn verify(scheme: &str, secret: &str) -> Verify {
    Verify::from_json(&serde_json::json!({"scheme": scheme, "secret": secret, "reject_invalid": true})).unwrap()
}

fn reopen(open: Open<'_>, dir: &Path) {
    let (ids, last) = {
        let (mut e, _) = open(dir, 5, 1_000_000);
        create(&mut *e, 1, 2_000_000);
        create(&mut *e, 2, 2_000_000);
        // Created with a check, which is then changed; created with one, which is then removed.
        let with = SourceMeta { verify: Some(verify("github", "first")), ..meta(3) };
        let t = e.submit(Op::Create { key: 3, meta: &with }, 2_000_000);
        settle(&mut *e, &[t]);
        let (changed, removed) = (verify("stripe", "second"), SourceMeta { verify: Some(verify("github", "x")), ..meta(4) });
        let t1 = e.submit(Op::Create { key: 4, meta: &removed }, 2_000_000);
        let t2 = e.submit(Op::Verify { key: 3, verify: Some(&changed) }, 2_000_000);
        let t3 = e.submit(Op::Verify { key: 4, verify: None }, 2_000_000);
        settle(&mut *e, &[t1, t2, t3]);
        let ids = append(&mut *e, 1, 0..8, 2_000_000);
        let t = e.submit(Op::Delete { key: 2 }, 2_000_000);
        settle(&mut *e, &[t]);
        (ids.clone(), *ids.last().unwrap())
    };
    let (mut e, recovered) = open(dir, 5, 1_000_000);
    let mut sources = recovered.sources;
    sources.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
    assert_eq!(sources.len(), 3, "the deleted source stays deleted");
    assert_eq!(sources[1].meta, SourceMeta { verify: Some(verify("stripe", "second")), ..meta(3) }, "the changed check survives");
    assert_eq!(sources[2].meta, meta(4), "the removed check stays removed");
    let stored: StoredSource = sources.into_iter().next().unwrap();
    assert_eq!(stored.meta, meta(1));
    assert_eq!(stored.events.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids[3..].to_vec(), "the newest 5");
    assert_eq!(stored.last_id, Some(last));
    assert_eq!(stored.evicted, Some(ids[2]));
    e.restore(9, stored);
    assert_eq!(replayed(&*e, 9, ids[0]).0, Some(Gap { after: ids[0], resumed_from: Some(ids[3]) }), "the gap survives");
    let next = append(&mut *e, 9, 0..1, 2_000_000);
    assert!(next[0] > last, "ids go on above the last one before the reopen");
}

/// Tokens survive a reopen unless revoked or their source deleted.
fn tokens_kept(open: Open<'_>, dir: &Path) {
    let token = |n: u64, source: u64| StoredToken { token: format!("st_{n}"), source_id: meta(source).id, expires_at: 9_000_000 + n };
    {
        let (mut e, _) = open(dir, 5, 1_000_000);
        create(&mut *e, 1, 2_000_000);
        create(&mut *e, 2, 2_000_000);
        let (kept, revoked, of_deleted) = (token(1, 1), token(2, 1), token(3, 2));
        let mut tickets = vec![];
        for (key, t) in [(1, &kept), (1, &revoked), (2, &of_deleted)] {
            tickets.push(e.submit(Op::Token { key, token: t }, 2_000_000));
        }
        tickets.push(e.submit(Op::RevokeToken { key: 1, token: &revoked.token }, 2_000_000));
        tickets.push(e.submit(Op::Delete { key: 2 }, 2_000_000));
        settle(&mut *e, &tickets);
    }
    let (_, recovered) = open(dir, 5, 1_000_000);
    assert_eq!(recovered.tokens, vec![token(1, 1)]);
}

/// Wraps an engine: acknowledges only every `every`-th poll, all that
/// is due at once (late, and in batches).
pub struct Delayed {
    inner: Box<dyn Engine>,
    every: u32,
    polls: u32,
    held: Vec<Outcome>,
    pub batches: u32,
}

impl Delayed {
    pub fn new(inner: Box<dyn Engine>, every: u32) -> Delayed {
        Delayed { inner, every, polls: 0, held: Vec::new(), batches: 0 }
    }
}

impl Engine for Delayed {
    fn submit(&mut self, op: Op<'_>, now_ms: u64) -> Ticket {
        self.inner.submit(op, now_ms)
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn wants_flush(&self) -> bool {
        !self.held.is_empty() || self.inner.wants_flush()
    }

    fn poll(&mut self, out: &mut Vec<Outcome>) {
        self.inner.poll(&mut self.held);
        self.polls += 1;
        if self.polls.is_multiple_of(self.every) && !self.held.is_empty() {
            self.batches += 1;
            out.append(&mut self.held);
        }
    }

    fn rings(&self) -> &super::Rings {
        self.inner.rings()
    }

    fn restore_token(&mut self, key: SourceKey, token: super::StoredToken) {
        self.inner.restore_token(key, token);
    }

    fn restore(&mut self, key: SourceKey, source: StoredSource) {
        self.inner.restore(key, source);
    }
}

#[test]
fn memory_engine_conforms() {
    check_all(&|_, history, floor| (Box::new(super::Memory::new(history, floor)), Recovered::default()), false);
}
