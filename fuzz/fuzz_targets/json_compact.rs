//! The emit validator and compactor against serde_json's `Value`: it
//! accepts exactly what serde_json parses (nested at most `DEPTH_MAX`
//! deep); what it returns is one line, means the same value, and is its
//! own compaction.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use ssehub::fuzzing::{DEPTH_MAX, compact};

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let reference = serde_json::from_slice::<Value>(data);
    match compact(data) {
        Ok(out) => {
            let value = reference.unwrap_or_else(|e| panic!("accepted what serde_json refuses ({e})"));
            assert!(depth(&value) <= DEPTH_MAX);
            let text = std::str::from_utf8(&out).expect("compact output is UTF-8");
            assert!(!text.contains('\n') && !text.contains('\r'), "compact output is one line");
            let again: Value = serde_json::from_slice(&out).expect("compact output is JSON");
            assert_eq!(again, value, "compaction changed the value");
            assert_eq!(compact(&out).expect("compact output is accepted"), out, "compaction is not idempotent");
            assert!(out.len() <= data.len());
        }
        Err(e) => {
            if let Ok(value) = reference {
                assert!(depth(&value) > DEPTH_MAX, "refused what serde_json parses: {e}");
            }
        }
    }
});
