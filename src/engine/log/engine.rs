//! The log engine as the hub sees it (`impl Engine`): each op as its
//! records in the turn's batch and its change in memory (`submit`), the
//! batch written (`flush`, in `append.rs`), acknowledgements and
//! compaction taken up at `poll`, metrics and health, and `close`.

use std::time::Instant;

use super::Log;
use super::record::{self, Record};
use super::staged::Revert;
use crate::engine::{Ack, Engine, Op, Outcome, Rings, SourceKey, StoredSource, StoredToken, Ticket};

impl Engine for Log {
    fn submit(&mut self, op: Op<'_>, now_ms: u64) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        // A running snapshot gets the source as it is before the change.
        match op {
            Op::Delete { key }
            | Op::Clear { key }
            | Op::Verify { key, .. }
            | Op::Retention { key, .. }
            | Op::Append { key, .. }
            | Op::Import { key, .. }
            | Op::Token { key, .. }
            | Op::RevokeToken { key, .. } => self.sources.touch(key, &self.rings),
            Op::Create { .. } | Op::DefaultKey(_) => {}
        }
        match op {
            Op::Create { key, meta } => {
                self.rings.create(key, &meta.id);
                record::encode_meta(meta, &mut self.pending);
                self.rings.set_retention(key, &meta.retention, now_ms);
                self.sources.insert(key, meta.clone(), Vec::new());
                self.stage_change(ticket, Revert::Create(key));
            }
            Op::Delete { key } => {
                // Its tokens go with it (the record deletes them too, at recovery).
                let src = self.sources.remove(key, &self.rings);
                let ring = self.rings.remove(key);
                if let Some(s) = &src {
                    let id = s.meta.id.clone();
                    self.encode(Record::Deleted { id: &id });
                }
                self.stage_change(ticket, Revert::Delete(key, Box::new((src, ring))));
            }
            Op::Clear { key } => {
                let newest = self.rings.history(key).and_then(|h| h.newest(1).next().map(|e| e.id));
                let before = self.rings.clear(key);
                if let (Some(up_to), Some(s)) = (newest, self.sources.get(&key)) {
                    let id = s.meta.id.clone();
                    self.encode(Record::Cleared { source: &id, up_to });
                }
                self.stage_change(ticket, Revert::Clear(key, before));
            }
            Op::Verify { key, verify } => {
                let mut before = None;
                if let Some(s) = self.sources.get_mut(key, &self.rings) {
                    before = std::mem::replace(&mut s.meta.verify, verify.cloned());
                    let id = s.meta.id.clone();
                    let settings = verify.map(|v| v.stored_json()).unwrap_or_default();
                    self.encode(Record::Verify { source: &id, settings: &settings });
                }
                self.stage_change(ticket, Revert::Verify(key, before));
            }
            Op::Retention { key, retention } => {
                let mut before = retention;
                if let Some(s) = self.sources.get_mut(key, &self.rings) {
                    before = std::mem::replace(&mut s.meta.retention, retention);
                    let id = s.meta.id.clone();
                    self.rings.set_retention(key, &retention, now_ms);
                    let evicted = self.rings.history(key).and_then(|h| h.evicted());
                    self.encode(Record::Retention { source: &id, retention, evicted });
                }
                self.stage_change(ticket, Revert::Retention(key, before));
            }
            Op::Append { key, payload, idem } => match (self.rings.stage(key, payload, now_ms), self.sources.get(&key)) {
                (Some(event), Some(s)) => {
                    let id = s.meta.id.clone();
                    self.encode(Record::Event { source: &id, id: event.id, payload, key: idem });
                    self.stage(ticket, Ack::Appended(event.id), Some((key, event)));
                    if let Some(staged) = self.staged.last_mut() {
                        staged.idem = idem;
                    }
                }
                _ => self.stage(ticket, Ack::Stored, None),
            },
            Op::Import { key, source } => {
                let m = &source.meta;
                record::encode_meta(m, &mut self.pending);
                for (id, payload) in &source.events {
                    self.encode(Record::Event { source: &m.id, id: *id, payload, key: None });
                }
                if let Some(last_id) = source.last_id {
                    self.encode(Record::SourceState { source: &m.id, last_id, evicted: source.evicted });
                }
                self.sources.insert(key, m.clone(), Vec::new());
                self.rings.restore(key, source.clone());
                // Kept if the write fails, as the hub keeps it: written with the next snapshot.
                self.stage(ticket, Ack::Stored, None);
            }
            Op::DefaultKey(key) => {
                self.encode(Record::DefaultKey { key });
                // Kept if the write fails: the process uses the key, and the next snapshot writes it.
                self.default_key = Some(key.to_string());
                self.stage(ticket, Ack::Stored, None);
            }
            Op::Token { key, token } => {
                let t = token;
                self.encode(Record::Token { token: &t.token, source: &t.source_id, expires_at: t.expires_at });
                if let Some(s) = self.sources.get_mut(key, &self.rings) {
                    s.tokens.push((t.token.clone(), t.expires_at));
                }
                self.stage_change(ticket, Revert::Token(key, t.token.clone()));
            }
            Op::RevokeToken { key, token } => {
                // A source's tokens are at most `--max-tokens-per-source`.
                let mut revoked = None;
                if let Some(s) = self.sources.get_mut(key, &self.rings)
                    && let Some(at) = s.tokens.iter().position(|t| t.0 == token)
                {
                    revoked = Some(s.tokens.swap_remove(at));
                }
                if revoked.is_some() {
                    self.encode(Record::TokenRevoked { token });
                }
                self.stage_change(ticket, Revert::Revoke(key, revoked));
            }
        }
        ticket
    }

    fn flush(&mut self) {
        self.write_batch();
    }

    /// Also while a snapshot is handed over: the next slice is due at once.
    fn wants_flush(&self) -> bool {
        !self.pending.is_empty() || !self.staged.is_empty() || self.sources.capturing()
    }

    fn poll(&mut self, out: &mut Vec<Outcome>) {
        if self.sync.as_ref().is_some_and(|s| s.failed()) {
            self.break_down();
        }
        self.probe_writes();
        let durable = self.durable();
        while self.unsynced.front().is_some_and(|(at, _)| *at <= durable) {
            if let Some((_, s)) = self.unsynced.pop_front() {
                self.acknowledge(s);
            }
        }
        self.maybe_compact();
        out.append(&mut self.ready);
    }

    fn rings(&self) -> &Rings {
        &self.rings
    }

    fn metrics(&self, out: &mut String) {
        let (synced, syncs, ns) = self.sync.as_ref().map_or((0, 0, 0), |s| s.counts());
        let rows: [(&str, &str, &str, String); 7] = [
            ("log_bytes", "gauge", "Bytes of the log's segments on disk.", (self.older_bytes + self.active_len).to_string()),
            ("log_written_bytes_total", "counter", "Bytes written to the log since start.", self.written.to_string()),
            ("log_synced_bytes_total", "counter", "Bytes of the log covered by a completed fdatasync since start.", synced.to_string()),
            ("log_syncs_total", "counter", "fdatasync calls on the log.", syncs.to_string()),
            ("log_sync_seconds_total", "counter", "Seconds spent in fdatasync of the log.", {
                let us = (ns + 500) / 1000;
                format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
            }),
            ("log_cut_bytes_total", "counter", "Bytes cut off the log at recovery (torn tail, --repair).", self.cut_bytes.to_string()),
            ("log_compactions_total", "counter", "Compactions of the log.", self.compactions.to_string()),
        ];
        for (name, kind, help, value) in rows {
            out.push_str(&format!("# HELP ssehub_{name} {help}\n# TYPE ssehub_{name} {kind}\nssehub_{name} {value}\n"));
        }
    }

    /// Unhealthy while writes fail (until one succeeds) and after a failed sync.
    fn healthy(&self) -> bool {
        !self.broken && !self.write_failing
    }

    fn next_wake(&self) -> Option<Instant> {
        self.probe.map(|(at, _)| at)
    }

    /// Age evictions write nothing: recovery applies the same bound to
    /// the same ids (and a snapshot holds only what is retained).
    fn expire(&mut self, key: SourceKey, now_ms: u64) -> Option<u64> {
        self.sources.touch(key, &self.rings);
        self.rings.expire(key, now_ms)
    }

    fn restore(&mut self, key: SourceKey, source: StoredSource) {
        self.sources.insert(key, source.meta.clone(), Vec::new());
        self.rings.restore(key, source);
    }

    fn restore_token(&mut self, key: SourceKey, token: StoredToken) {
        if let Some(s) = self.sources.get_mut(key, &self.rings) {
            s.tokens.push((token.token, token.expires_at));
        }
    }

    /// The sync thread stops and a running compaction ends, so nothing of
    /// this process touches the dir any more; then its lock is released.
    fn close(&mut self) {
        if let Some(s) = &mut self.sync {
            s.stop();
        }
        // An unfinished snapshot is dropped (the older segments stay).
        self.sources.abandon_capture();
        if let Some(t) = self.compactor.take() {
            let _ = t.join();
        }
        self.lock = None;
    }
}
