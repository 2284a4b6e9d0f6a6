//! Replay after an arbitrary `Last-Event-ID`: the text parses exactly when
//! it is `<ms>[-<seq>]` in u64 digits (spaces around allowed), a parsed id
//! prints back to itself, and `History::after` replays exactly the retained
//! events with a greater id, in order (checked against a brute-force filter).

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use ssehub::fuzzing::{Event, EventId, History};

#[derive(Arbitrary, Debug)]
struct Input {
    capacity: u8,
    /// Wall-clock readings for successive emits (may step back).
    clock: Vec<u16>,
    last_event_id: String,
}

/// The accepted syntax, written independently of `EventId::from_str`.
fn reference(text: &str) -> Option<EventId> {
    let number = |t: &str| -> Option<u64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Leading zeros are fine as long as the value fits.
        let mut n: u64 = 0;
        for b in t.bytes() {
            n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        (t.len() <= 20).then_some(n)
    };
    let t = text.trim();
    match t.split_once('-') {
        Some((ms, seq)) => Some(EventId { ms: number(ms)?, seq: number(seq)? }),
        None => Some(EventId { ms: number(t)?, seq: 0 }),
    }
}

fuzz_target!(|input: Input| {
    let parsed = input.last_event_id.parse::<EventId>().ok();
    assert_eq!(parsed, reference(&input.last_event_id), "{:?}", input.last_event_id);

    let capacity = usize::from(input.capacity % 32);
    let mut history = History::new(capacity);
    let mut all = Vec::new();
    let (mut id, mut scratch) = (EventId { ms: 1_000, seq: 0 }, Vec::new());
    for &now in &input.clock {
        id = id.next(u64::from(now) * 3);
        history.push(Event::new(id, "dc_fuzz", b"1", &mut scratch));
        all.push(id);
    }
    assert!(all.windows(2).all(|w| w[0] < w[1]), "ids strictly increase");
    let retained = &all[all.len().saturating_sub(capacity)..];
    assert_eq!(history.len(), retained.len());

    let Some(last) = parsed else { return };
    assert_eq!(last.to_string().parse::<EventId>(), Ok(last), "an id prints back to itself");
    let replayed: Vec<EventId> = history.after(last).map(|e| e.id).collect();
    let want: Vec<EventId> = retained.iter().copied().filter(|&i| i > last).collect();
    assert_eq!(replayed, want, "replay after {last}");
    // Each id also used as Last-Event-ID replays exactly what follows it.
    for (i, &r) in retained.iter().enumerate() {
        assert_eq!(history.after(r).count(), retained.len() - i - 1);
    }
});
