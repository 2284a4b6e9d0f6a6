//! Decimal numbers appended to byte buffers without `core::fmt`. Every emit
//! writes its event id four times (frame, envelope, metadata, answer) and
//! its answer's head holds two more numbers; through the formatting
//! machinery these cost more than the rest of framing together.

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edges() {
        for n in [0, 1, 9, 10, 99, 100, 1764262800123, u64::MAX] {
            let mut out = b"x".to_vec();
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    proptest! {
        #[test]
        fn same_as_display(n in any::<u64>()) {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            prop_assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
