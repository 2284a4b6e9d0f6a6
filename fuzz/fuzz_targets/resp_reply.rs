//! The RESP2 reply parser on any bytes: it never panics; what it accepts
//! encodes back to a reply that parses to the same value; every cut of an
//! accepted reply is "need more" (never an error, never a value).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::fuzzing::{encode_resp, parse_resp};

fuzz_target!(|input: &[u8]| {
    let Ok(Some((value, len))) = parse_resp(input) else { return };
    assert!(len <= input.len());
    let mut again = Vec::new();
    encode_resp(&value, &mut again);
    assert_eq!(parse_resp(&again), Ok(Some((value, again.len()))));
    for cut in 0..len {
        assert_eq!(parse_resp(&input[..cut]), Ok(None), "cut at {cut}");
    }
});
