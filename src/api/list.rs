//! A page of `GET /v1/sources`, built a slice at a time: the reactor
//! calls `step` once a turn, so a page of 1,000 sources (about 300 KB of
//! JSON, the costliest answer) holds the loop no longer than a slice does.
//! A page goes on from the position of the last source written, so it
//! keeps its order whatever is created or deleted between its slices;
//! `total_count` is the account's count at its first slice.

use super::sources::source_json;
use crate::auth::AccountId;
use crate::engine::{self, SourceKey};
use crate::http::{self, Head};
use crate::registry::Registry;

pub struct Listing {
    account: AccountId,
    /// The position the next slice goes on after (`None`: the first source).
    from: Option<(u64, SourceKey)>,
    /// Sources still to write, at most.
    left: usize,
    total: Option<usize>,
    count: usize,
    /// The ids of the first and the last source written: the page's cursors.
    first: Option<String>,
    last: Option<String>,
    /// The `data` array's members so far, comma-separated.
    data: Vec<u8>,
    base: String,
    bounds: engine::Bounds,
    keep_alive: bool,
    head_only: bool,
    cors: String,
}

impl Listing {
    pub(super) fn new(
        account: AccountId,
        from: Option<(u64, SourceKey)>,
        limit: usize,
        base: String,
        bounds: engine::Bounds,
        head: &Head,
        cors: &str,
    ) -> Listing {
        Listing {
            account,
            from,
            left: limit,
            total: None,
            count: 0,
            first: None,
            last: None,
            data: Vec::new(),
            base,
            bounds,
            keep_alive: head.keep_alive,
            head_only: head.method() == "HEAD",
            cors: cors.to_string(),
        }
    }

    /// Writes up to `slice` more sources; true when the page is complete.
    pub fn step(&mut self, registry: &mut Registry, slice: usize) -> bool {
        let asked = self.left.min(slice);
        let page = registry.page_from(self.account, self.from, asked);
        self.total.get_or_insert(page.total);
        if self.data.is_empty() {
            // About 300 bytes a source.
            self.data.reserve(self.left.min(page.total) * 320);
        }
        for source in &page.sources {
            if self.count > 0 {
                self.data.push(b',');
            }
            source_json(&mut self.data, source, &self.base, self.bounds);
            self.count += 1;
        }
        if let (Some(first), None) = (page.sources.first(), &self.first) {
            self.first = Some(first.id.clone());
        }
        if let Some(last) = page.sources.last() {
            self.last = Some(last.id.clone());
        }
        let found = page.sources.len();
        self.from = page.last.or(self.from);
        self.left -= found;
        self.left == 0 || found < asked
    }

    /// Keeps the connection open after its answer.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// The complete answer, its head and body.
    pub fn finish(self) -> Vec<u8> {
        let cursor = |id: Option<String>| id.map_or("null".to_string(), |id| format!("\"{id}\""));
        let mut body = format!(
            "{{\"page_info\":{{\"total_count\":{},\"count\":{},\"start_cursor\":{},\"end_cursor\":{}}},\"data\":[",
            self.total.unwrap_or(0),
            self.count,
            cursor(self.first),
            cursor(self.last)
        )
        .into_bytes();
        body.reserve(self.data.len() + 2);
        body.extend_from_slice(&self.data);
        body.extend_from_slice(b"]}");
        http::response(200, "application/json", &self.cors, &body, self.keep_alive, self.head_only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(registry: &Registry, after: Option<SourceKey>, limit: usize) -> Listing {
        let mut head = Head::default();
        http::parse_head_into(b"GET /v1/sources HTTP/1.1\r\nHost: x\r\n\r\n", &mut head).unwrap();
        let from = after.and_then(|k| registry.position(k));
        Listing::new(0, from, limit, "http://x".into(), engine::Bounds::count(100), &head, "")
    }

    /// The answer's page_info and the names on it.
    fn page(answer: Vec<u8>) -> (serde_json::Value, Vec<String>) {
        let at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body: serde_json::Value = serde_json::from_slice(&answer[at..]).unwrap();
        let names = body["data"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
        (body["page_info"].clone(), names)
    }

    fn add(r: &mut Registry, n: u64) -> SourceKey {
        r.insert(0, format!("dc_{n}"), format!("s{n}"), format!("e{n}"), n)
    }

    #[test]
    fn a_page_built_in_slices_is_the_page_built_at_once() {
        let mut r = Registry::default();
        let keys: Vec<SourceKey> = (0..25).map(|n| add(&mut r, n)).collect();
        r.hide(keys[3]);
        for (after, limit) in [(None, 10), (Some(keys[4]), 7), (Some(keys[20]), 10), (None, 100), (Some(keys[24]), 5)] {
            for slice in [1, 2, 3, 10] {
                let mut sliced = listing(&r, after, limit);
                while !sliced.step(&mut r, slice) {}
                assert_eq!(
                    page(sliced.finish()),
                    page(listing_done(&mut r, after, limit)),
                    "after {after:?}, limit {limit}, slices of {slice}"
                );
            }
        }
    }

    fn listing_done(r: &mut Registry, after: Option<SourceKey>, limit: usize) -> Vec<u8> {
        let mut l = listing(r, after, limit);
        assert!(l.step(r, usize::MAX));
        l.finish()
    }

    #[test]
    fn a_page_goes_on_in_order_whatever_changes_between_its_slices() {
        let mut r = Registry::default();
        let keys: Vec<SourceKey> = (0..10).map(|n| add(&mut r, n)).collect();
        let mut l = listing(&r, Some(keys[0]), 6);
        assert!(!l.step(&mut r, 2));
        // s1 s2 written; then the next one goes, one before it goes, a later one comes.
        r.remove(keys[3]);
        r.remove(keys[1]);
        add(&mut r, 100);
        assert!(!l.step(&mut r, 2));
        assert!(l.step(&mut r, 2));
        let (info, names) = page(l.finish());
        assert_eq!(names, ["s1", "s2", "s4", "s5", "s6", "s7"]);
        assert_eq!(info["count"], 6);
        assert_eq!(info["total_count"], 10, "the count at the first slice");
        assert_eq!((info["start_cursor"].as_str(), info["end_cursor"].as_str()), (Some("dc_1"), Some("dc_7")));
        // The last page ends where the sources do.
        let mut l = listing(&r, Some(keys[8]), 6);
        assert!(!l.step(&mut r, 1));
        assert!(!l.step(&mut r, 1), "a full slice: more may follow");
        assert!(l.step(&mut r, 1), "none left");
        assert_eq!(page(l.finish()).1, ["s9", "s100"]);
    }
}
