//! The RESP2 reply parser on any bytes: it never panics; what it accepts
//! encodes back to a reply that parses to the same value; every cut of an
//! accepted reply is "need more" (never an error, never a value).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::fuzzing::check_resp_reply;

fuzz_target!(|input: &[u8]| check_resp_reply(input));
