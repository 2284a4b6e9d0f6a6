//! Pages of sources (`GET /v1/sources`, up to 1,000 sources, about 300 KB:
//! the costliest answer) built a slice of `LIST_SLICE` sources per turn,
//! one page after another in the order asked, and answered in their
//! connection's order like an answer from storage. One account paging
//! through its sources on many connections then delays another account's
//! emit by a slice, not by a page (docs/benchmarks.md, fairness).

use std::collections::VecDeque;

use super::Reactor;
use crate::access::Access;
use crate::api::Listing;

/// Sources written per turn: a tenth of the largest page.
const LIST_SLICE: usize = 100;

/// A page being built for connection `key` (if it is still the same
/// connection), answered in its `slot`.
pub(super) struct Building {
    key: usize,
    generation: u32,
    slot: u32,
    listing: Box<Listing>,
    access: Option<Box<Access>>,
}

/// The pages asked for, the one being built first.
pub(super) type Listings = VecDeque<Building>;

impl Reactor {
    /// A page asked for: its first slice now if no page is being built
    /// and none was this turn, answered at once if that completes it;
    /// else it waits in line, holding its place among its connection's
    /// answers.
    pub(super) fn begin_listing(&mut self, key: usize, mut listing: Box<Listing>, access: Option<Box<Access>>) {
        if self.listings.is_empty() && !self.turn_listed {
            self.turn_listed = true;
            if listing.step(&mut self.hub.registry, LIST_SLICE) {
                let close = !listing.keep_alive();
                let bytes = listing.finish();
                if let Some(access) = access {
                    access.log(self.conns[key].peer, 200, bytes.len() as u64, self.clock_us());
                }
                return self.answer(key, None, 200, bytes, close);
            }
        }
        let (slot, generation) = self.await_slot(key, listing.keep_alive());
        self.listings.push_back(Building { key, generation, slot, listing, access });
    }

    /// This turn's slice of the page in line first (unless one was built
    /// already); a page complete is answered.
    pub(super) fn build_listing(&mut self) {
        if !self.turn_listed {
            self.step_listing();
        }
    }

    /// Every page in line built to its end (stopping: answers all that
    /// was asked).
    pub(super) fn build_listings_now(&mut self) {
        while !self.listings.is_empty() {
            self.step_listing();
        }
    }

    fn step_listing(&mut self) {
        while let Some(b) = self.listings.front_mut() {
            // The connection closed: nobody to answer.
            if self.conns.get(b.key).is_none_or(|c| c.generation != b.generation || c.closing.is_some()) {
                self.listings.pop_front();
                continue;
            }
            self.turn_listed = true;
            if !b.listing.step(&mut self.hub.registry, LIST_SLICE) {
                return;
            }
            let Some(Building { key, slot, listing, access, .. }) = self.listings.pop_front() else { return };
            let close = !listing.keep_alive();
            let bytes = listing.finish();
            if let Some(access) = access {
                access.log(self.conns[key].peer, 200, bytes.len() as u64, self.clock_us());
            }
            return self.answer(key, Some(slot), 200, bytes, close);
        }
    }
}
