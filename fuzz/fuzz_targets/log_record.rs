//! The log's record decoder on any bytes: it never panics; what it accepts
//! encodes back to exactly the bytes it consumed; any cut of an accepted
//! record is `Short` and any single flipped bit in it is refused.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::fuzzing::{Bad, decode_record};

fuzz_target!(|input: &[u8]| {
    let Ok((record, len)) = decode_record(input) else { return };
    assert!(len <= input.len());
    let mut again = Vec::new();
    record.encode(&mut again);
    assert_eq!(again, &input[..len], "{record:?}");
    for cut in 0..len {
        assert_eq!(decode_record(&input[..cut]).err(), Some(Bad::Short), "cut at {cut}");
    }
    for bit in 0..len * 8 {
        let mut flipped = input[..len].to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        if let Ok((_, n)) = decode_record(&flipped) {
            panic!("a record with bit {bit} flipped was accepted ({n} bytes)");
        }
    }
});
