//! An op between `submit` and its acknowledgement: what it acknowledges
//! and publishes, and what it changed in the engine's memory, taken back
//! if its write fails (the file then holds nothing of it, and memory must
//! say the same: a later snapshot is written from memory).

use super::snapshot::{Sources, Src};
use crate::engine::{Ack, IdemKey, Retention, Ring, Rings, SourceKey, Ticket};
use crate::history::History;
use crate::sse::Event;

/// An op written (or to be written), acknowledged when durable.
pub struct Staged {
    pub ticket: Ticket,
    pub ack: Ack,
    pub publish: Option<(SourceKey, Event)>,
    /// The emit's idempotency key, remembered with the event.
    pub idem: Option<IdemKey>,
    pub revert: Revert,
}

/// A deleted source (meta and tokens) and ring, until its record is written.
pub type Taken = (Option<Src>, Option<Ring>);

/// What an op changed in memory, put back if its write fails.
pub enum Revert {
    Nothing,
    Create(SourceKey),
    Delete(SourceKey, Box<Taken>),
    Clear(SourceKey, Option<History>),
    Verify(SourceKey, Option<crate::verify::Verify>),
    /// The retention before (what it evicted meanwhile stays evicted).
    Retention(SourceKey, Retention),
    Token(SourceKey, String),
    Revoke(SourceKey, Option<(String, u64)>),
}

/// A write failed: the changes of `staged` are taken back, newest first.
pub fn take_back(staged: &mut [Staged], sources: &mut Sources, rings: &mut Rings) {
    for s in staged.iter_mut().rev() {
        match std::mem::replace(&mut s.revert, Revert::Nothing) {
            Revert::Nothing => {}
            Revert::Create(key) => {
                sources.remove(key, rings);
                rings.remove(key);
            }
            Revert::Delete(key, taken) => {
                let (src, ring) = *taken;
                if let Some(src) = src {
                    sources.insert(key, src.meta, src.tokens);
                }
                if let Some(ring) = ring {
                    rings.put_back(key, ring);
                }
            }
            Revert::Clear(key, Some(history)) => rings.put_history(key, history),
            Revert::Clear(_, None) => {}
            Revert::Verify(key, before) => {
                if let Some(s) = sources.get_mut(key, rings) {
                    s.meta.verify = before;
                }
            }
            Revert::Retention(key, before) => {
                if let Some(s) = sources.get_mut(key, rings) {
                    s.meta.retention = before;
                    rings.set_retention(key, &before, 0);
                }
            }
            Revert::Token(key, token) => {
                if let Some(s) = sources.get_mut(key, rings) {
                    s.tokens.retain(|t| t.0 != token);
                }
            }
            Revert::Revoke(key, entry) => {
                if let Some(s) = sources.get_mut(key, rings) {
                    s.tokens.extend(entry);
                }
            }
        }
    }
}
