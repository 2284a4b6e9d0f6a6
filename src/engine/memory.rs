//! The `memory` engine: the rings alone. Every change is acknowledged as
//! it is submitted; nothing survives a stop.

use super::{Ack, Bounds, Engine, Op, Outcome, Rings, SourceKey, StoredSource, Ticket};

pub struct Memory {
    rings: Rings,
    next_ticket: u64,
    ready: Vec<Outcome>,
}

impl Memory {
    #[cfg(test)]
    pub fn new(history: usize, floor_ms: u64) -> Memory {
        Memory::with_limits(Bounds::count(history), floor_ms)
    }

    pub fn with_limits(defaults: Bounds, floor_ms: u64) -> Memory {
        Memory { rings: Rings::with_limits(defaults, floor_ms), next_ticket: 0, ready: Vec::new() }
    }
}

impl Engine for Memory {
    fn submit(&mut self, op: Op<'_>, now_ms: u64) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        let mut ack = Ack::Stored;
        match op {
            Op::Create { key, meta } => {
                self.rings.create(key, &meta.id);
                self.rings.set_retention(key, &meta.retention, now_ms);
            }
            Op::Retention { key, retention } => drop(self.rings.set_retention(key, &retention, now_ms)),
            Op::Delete { key } => drop(self.rings.remove(key)),
            Op::Clear { key } => drop(self.rings.clear(key)),
            Op::Verify { .. } => {}
            Op::Import { key, source } => self.rings.restore(key, source.clone()),
            Op::DefaultKey(_) | Op::Token { .. } | Op::RevokeToken { .. } => {}
            Op::Append { key, payload, idem } => {
                if let Some(event) = self.rings.stage(key, payload, now_ms) {
                    ack = Ack::Appended(event.id);
                    if let Some(idem) = idem {
                        self.rings.remember(key, idem, event.id);
                    }
                    self.rings.retain(key, event.clone());
                    self.ready.push(Outcome::Done { ticket, result: Ok(ack) });
                    self.ready.push(Outcome::Publish { key, event });
                    return ticket;
                }
            }
        }
        self.ready.push(Outcome::Done { ticket, result: Ok(ack) });
        ticket
    }

    fn poll(&mut self, out: &mut Vec<Outcome>) {
        out.append(&mut self.ready);
    }

    fn rings(&self) -> &Rings {
        &self.rings
    }

    fn expire(&mut self, key: SourceKey, now_ms: u64) -> Option<u64> {
        self.rings.expire(key, now_ms)
    }

    fn restore(&mut self, key: SourceKey, source: StoredSource) {
        self.rings.restore(key, source);
    }
}
