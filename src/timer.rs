//! Hierarchical timer wheel: owns the pending timers and their payloads, nothing else
//! (no clock, no I/O: ticks in, expired values out; the reactor uses 1 tick = 1 ms).
//!
//! Guarantees: a timer fires at or after its tick, never before, and exactly once unless
//! removed; insert and remove are O(1); `expire` costs O(timers expired + cascades + levels),
//! not O(elapsed ticks), because empty slots are skipped via per-level occupancy bitmaps.
//! A timer at level L sits in the slot of its tick's L-th 6-bit digit and is re-filed to a
//! lower level when time reaches that slot, so each timer moves at most `LEVELS` times.

const SLOT_BITS: usize = 6;
const SLOTS_PER_LEVEL: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = SLOTS_PER_LEVEL as u64 - 1;
/// ceil(64 / 6): enough levels to file any u64 tick, so far-future timers need no clamping.
const LEVELS: usize = 64_usize.div_ceil(SLOT_BITS);
/// List of entries already due (at <= elapsed) but not yet handed out.
const READY: usize = LEVELS * SLOTS_PER_LEVEL;
const NIL: u32 = u32::MAX;
/// `Entry::list` value of a slot on the free list.
const FREE: u16 = u16::MAX;

/// Handle to a pending timer; the generation makes a stale handle harmless after slot reuse.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// Arena slot, linked into exactly one list (a wheel slot, READY, or the free list via `next`).
/// 32 bytes for T = (u32, u32).
#[derive(Clone, Copy)]
struct Entry<T> {
    at: u64,
    value: T,
    next: u32,
    prev: u32,
    generation: u32,
    list: u16,
}

pub struct Timers<T> {
    entries: Vec<Entry<T>>,
    free_head: u32,
    heads: [u32; READY + 1],
    /// Bit s of level L set iff wheel slot (L, s) is non-empty; every set bit is above the
    /// L-th digit of `elapsed`, so the lowest set bit of the lowest level is the next slot due.
    occupied: [u64; LEVELS],
    /// Tick the wheel has been advanced to; lags `now` only when `expire` hit its limit.
    elapsed: u64,
    now: u64,
    /// Lower bound of `at` over READY (removals only raise the true minimum).
    ready_min: u64,
    len: usize,
}

impl<T: Copy> Timers<T> {
    pub fn new(now: u64) -> Self {
        Self {
            entries: Vec::new(),
            free_head: NIL,
            heads: [NIL; READY + 1],
            occupied: [0; LEVELS],
            elapsed: now,
            now,
            ready_min: now,
            len: 0,
        }
    }

    /// Schedules `value` to expire at tick `at`; an `at` in the past (<= current tick) expires
    /// on the next `expire` call.
    pub fn insert(&mut self, at: u64, value: T) -> TimerId {
        let index = if self.free_head != NIL {
            let index = self.free_head;
            let e = &mut self.entries[index as usize];
            self.free_head = e.next;
            e.at = at;
            e.value = value;
            index
        } else {
            // u32 indices keep entries small; 2^32 timers would need > 128 GiB first.
            let index = self.entries.len() as u32;
            let entry = Entry { at, value, next: NIL, prev: NIL, generation: 0, list: FREE };
            self.entries.push(entry);
            index
        };
        self.place(index);
        self.len += 1;
        TimerId { index, generation: self.entries[index as usize].generation }
    }

    /// Cancels; returns the value, or None if the id already expired or was removed
    /// (generations make a stale id harmless even after its slot is reused).
    pub fn remove(&mut self, id: TimerId) -> Option<T> {
        let e = self.entries.get(id.index as usize)?;
        if e.list == FREE || e.generation != id.generation {
            return None;
        }
        let value = e.value;
        self.unlink(id.index);
        self.release(id.index);
        Some(value)
    }

    /// A tick at or before the earliest pending expiry (never later), or None when empty. Used
    /// to compute the poll timeout. Exact when the earliest timer is within the current 64-tick
    /// block, else the start of its slot's range (at most one early wakeup per level).
    pub fn next_expiry(&self) -> Option<u64> {
        if self.heads[READY] != NIL {
            return Some(self.ready_min);
        }
        self.next_slot().map(|(_, deadline)| deadline)
    }

    /// Advances the wheel to `now` and pushes into `out` the values of timers with at <= now,
    /// at most `limit` of them; the rest stay pending and come out on the next call (a budget
    /// carried over, not dropped). Returns how many were pushed. `now` never goes backwards
    /// (a smaller now is treated as the current tick).
    pub fn expire(&mut self, now: u64, limit: usize, out: &mut Vec<T>) -> usize {
        self.now = self.now.max(now);
        let mut pushed = 0;
        loop {
            while pushed < limit && self.heads[READY] != NIL {
                let index = self.heads[READY];
                self.unlink(index);
                out.push(self.entries[index as usize].value);
                self.release(index);
                pushed += 1;
            }
            if pushed >= limit {
                // Budget spent: the wheel stays behind `now` and the next call resumes here.
                return pushed;
            }
            match self.next_slot() {
                Some((list, deadline)) if deadline <= self.now => {
                    self.elapsed = deadline;
                    self.cascade(list);
                }
                _ => {
                    // Nothing filed before `now`, so no slot's digit is crossed by the jump.
                    self.elapsed = self.now;
                    return pushed;
                }
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The earliest non-empty wheel slot and the first tick of its range.
    fn next_slot(&self) -> Option<(usize, u64)> {
        let level = self.occupied.iter().position(|&bits| bits != 0)?;
        let slot = self.occupied[level].trailing_zeros() as u64;
        let span_bits = ((level + 1) * SLOT_BITS) as u32;
        let prefix = self.elapsed.checked_shr(span_bits).map_or(0, |p| p << span_bits);
        let deadline = prefix | slot << (level * SLOT_BITS);
        Some((level * SLOTS_PER_LEVEL + slot as usize, deadline))
    }

    /// Re-files every entry of a wheel slot relative to the (just advanced) `elapsed`.
    fn cascade(&mut self, list: usize) {
        let mut index = self.heads[list];
        self.heads[list] = NIL;
        self.occupied[list / SLOTS_PER_LEVEL] &= !(1 << (list % SLOTS_PER_LEVEL));
        while index != NIL {
            let next = self.entries[index as usize].next;
            self.place(index);
            index = next;
        }
    }

    /// Links an entry into READY if due, else into the wheel slot of the highest 6-bit
    /// digit where `at` differs from `elapsed`.
    fn place(&mut self, index: u32) {
        let at = self.entries[index as usize].at;
        let list = if at <= self.elapsed {
            if self.heads[READY] == NIL || at < self.ready_min {
                self.ready_min = at;
            }
            READY
        } else {
            let high_bit = 63 - ((self.elapsed ^ at) | SLOT_MASK).leading_zeros() as usize;
            let level = high_bit / SLOT_BITS;
            let slot = (at >> (level * SLOT_BITS)) & SLOT_MASK;
            self.occupied[level] |= 1 << slot;
            level * SLOTS_PER_LEVEL + slot as usize
        };
        let head = self.heads[list];
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        let e = &mut self.entries[index as usize];
        e.list = list as u16;
        e.prev = NIL;
        e.next = head;
        self.heads[list] = index;
    }

    fn unlink(&mut self, index: u32) {
        let Entry { prev, next, list, .. } = self.entries[index as usize];
        let list = list as usize;
        if prev != NIL {
            self.entries[prev as usize].next = next;
        } else {
            self.heads[list] = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
        if list < READY && self.heads[list] == NIL {
            self.occupied[list / SLOTS_PER_LEVEL] &= !(1 << (list % SLOTS_PER_LEVEL));
        }
    }

    /// Returns an unlinked entry to the free list, invalidating its ids.
    fn release(&mut self, index: u32) {
        let e = &mut self.entries[index as usize];
        e.list = FREE;
        e.generation = e.generation.wrapping_add(1);
        e.next = self.free_head;
        self.free_head = index;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain<T: Copy>(t: &mut Timers<T>, now: u64) -> Vec<T> {
        let mut out = Vec::new();
        t.expire(now, usize::MAX, &mut out);
        out
    }

    #[test]
    fn entry_is_small() {
        assert_eq!(std::mem::size_of::<Entry<(u32, u32)>>(), 32);
    }

    #[test]
    fn fires_exactly_at_tick() {
        // Level and block boundaries from aligned and unaligned starts, up to the u64 edge.
        for start in [0, 5, 63, 1000, 4095, u64::MAX - 5000] {
            for delay in [0, 1, 63, 64, 65, 4095, 4096, 262_144, u64::MAX] {
                let at = start.saturating_add(delay);
                let mut t = Timers::new(start);
                t.insert(at, 7u32);
                assert!(t.next_expiry().is_some_and(|hint| hint <= at));
                if at > start {
                    assert!(drain(&mut t, at - 1).is_empty(), "{start}+{delay} early");
                    assert_eq!(t.next_expiry(), Some(at), "{start}+{delay} exact when next");
                }
                assert_eq!(drain(&mut t, at), [7], "{start}+{delay}");
                assert!(t.is_empty() && t.next_expiry().is_none());
            }
        }
    }

    #[test]
    fn past_backwards_and_limit() {
        let mut t = Timers::new(100);
        t.insert(5, 1u32);
        t.insert(100, 2);
        assert_eq!(t.next_expiry(), Some(5));
        let mut out = Vec::new();
        assert_eq!(t.expire(50, 0, &mut out), 0); // limit 0: nothing, nothing lost
        assert_eq!(t.expire(50, 1, &mut out), 1); // smaller now is the current tick (100)
        assert_eq!(t.expire(0, 1, &mut out), 1);
        out.sort();
        assert_eq!(out, [1, 2]);
        t.insert(150, 3);
        assert!(drain(&mut t, 149).is_empty());
        assert_eq!(drain(&mut t, 150), [3]);
    }

    #[test]
    fn remove_stale_and_generation_reuse() {
        let mut t = Timers::new(0);
        let a = t.insert(10, 1u32);
        assert_eq!(t.remove(a), Some(1));
        assert_eq!(t.remove(a), None);
        let b = t.insert(10, 2); // reuses a's slot
        assert_ne!(a, b);
        assert_eq!((t.remove(a), t.len()), (None, 1));
        assert_eq!(drain(&mut t, 10), [2]);
        assert_eq!(t.remove(b), None);
        assert_eq!(t.remove(TimerId { index: 9, generation: 0 }), None);
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn random_against_oracle() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut t = Timers::new(1_000_000);
        let mut now = 1_000_000u64;
        let mut oracle: Vec<(u64, TimerId, u64)> = Vec::new();
        let mut stale: Vec<TimerId> = Vec::new();
        let (mut next_value, mut fired, mut out) = (0u64, 0usize, Vec::new());
        for _ in 0..60_000 {
            match rng.below(20) {
                0..=10 => {
                    let at = match rng.below(20) {
                        0 => now.saturating_sub(rng.below(1 << 20)),
                        1 => now.saturating_add(rng.next() >> rng.below(64)),
                        2 => u64::MAX - rng.below(3),
                        _ => now + rng.below(1 << 20),
                    };
                    oracle.push((at, t.insert(at, next_value), next_value));
                    next_value += 1;
                }
                11 | 12 if !oracle.is_empty() => {
                    let (_, id, v) = oracle.swap_remove(rng.below(oracle.len() as u64) as usize);
                    assert_eq!(t.remove(id), Some(v));
                    stale.push(id);
                }
                11 | 12 => {}
                13 => {
                    if let Some(&id) = stale.get(rng.below(stale.len() as u64 + 1) as usize) {
                        assert_eq!(t.remove(id), None);
                    }
                }
                _ => {
                    let asked = match rng.below(500) {
                        0..=49 => now.saturating_sub(rng.below(1000)),
                        50 => now.saturating_add(rng.below(1 << 30)),
                        51..=99 => now + rng.below(1 << 16),
                        _ => now + rng.below(1 << 10),
                    };
                    now = now.max(asked);
                    let limit = if rng.below(3) == 0 { rng.below(20) as usize } else { usize::MAX };
                    out.clear();
                    let n = t.expire(asked, limit, &mut out);
                    assert_eq!(n, out.len());
                    assert!(n <= limit);
                    for &v in &out {
                        let pos = oracle.iter().position(|e| e.2 == v).expect("fired twice or never inserted");
                        let (at, id, _) = oracle.swap_remove(pos);
                        assert!(at <= now, "fired early: at {at} now {now}");
                        stale.push(id);
                    }
                    if n < limit {
                        assert!(oracle.iter().all(|e| e.0 > now), "due timer left behind");
                    }
                    fired += n;
                }
            }
            assert_eq!(t.len(), oracle.len());
            let earliest = oracle.iter().map(|e| e.0).min();
            match (t.next_expiry(), earliest) {
                (Some(hint), Some(min)) => assert!(hint <= min, "hint {hint} > earliest {min}"),
                (hint, min) => assert_eq!(hint, min),
            }
        }
        let mut rest = drain(&mut t, u64::MAX);
        rest.sort();
        let mut pending: Vec<u64> = oracle.iter().map(|e| e.2).collect();
        pending.sort();
        assert_eq!(rest, pending);
        assert!(t.is_empty() && t.next_expiry().is_none());
        assert!(fired > 10_000, "test exercised expiry ({fired})");
    }

    #[test]
    fn hundred_thousand_over_fifteen_seconds() {
        const TIMERS: u64 = 100_000;
        const SPREAD_MS: u64 = 15_000;
        let mut rng = XorShift(42);
        for step_max_ms in [1, 40, SPREAD_MS] {
            let mut t = Timers::new(0);
            let mut ats = Vec::new();
            for v in 0..TIMERS {
                let at = rng.below(SPREAD_MS);
                ats.push(at);
                t.insert(at, v as u32);
            }
            let (mut now, mut seen, mut out) = (0, vec![false; TIMERS as usize], Vec::new());
            while !t.is_empty() {
                now += 1 + rng.below(step_max_ms);
                out.clear();
                t.expire(now, 1000, &mut out);
                for &v in &out {
                    assert!(ats[v as usize] <= now);
                    assert!(!std::mem::replace(&mut seen[v as usize], true), "fired twice");
                }
            }
            assert!(seen.iter().all(|&s| s));
        }
    }
}
