//! Webhook query decoding: `query_pairs` agrees with an independent
//! `application/x-www-form-urlencoded` parser (the URL crate's), and
//! `percent_decode` inverts percent-encoding of any string. Never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::fuzzing::{percent_decode, query_pairs, query_param};

fuzz_target!(|data: &[u8]| {
    // A request target is text (httparse hands it over as &str).
    let query = String::from_utf8_lossy(data);
    let ours: Vec<(String, String)> = query_pairs(&query).collect();
    let theirs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert_eq!(ours, theirs, "query {query:?}");
    if let Some((key, value)) = ours.first() {
        assert_eq!(query_param(&query, key).as_ref(), Some(value));
    }

    // Decoding never grows the text by more than the U+FFFD replacements.
    let decoded = percent_decode(&query);
    assert!(decoded.len() <= 3 * query.len());

    // Every byte escaped, upper or lower case hex: decodes back exactly.
    for digits in [b"0123456789ABCDEF", b"0123456789abcdef"] {
        let mut escaped = String::with_capacity(3 * query.len());
        for b in query.bytes() {
            escaped.extend(['%', char::from(digits[usize::from(b >> 4)]), char::from(digits[usize::from(b & 15)])]);
        }
        assert_eq!(percent_decode(&escaped), query);
    }
});
