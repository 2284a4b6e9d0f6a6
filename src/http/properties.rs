//! The invariants of `fuzz/http_request` and `fuzz/chunked_roundtrip`,
//! checked on every `cargo test`: parsing does not depend on how the bytes
//! were split across reads, and chunked encoding round-trips.

use super::*;
use proptest::prelude::*;

/// Cuts `input` into pieces of the given sizes (cycled), at least 1 byte each.
fn pieces<'a>(input: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut at = 0;
    let mut sizes = sizes.iter().cycle();
    std::iter::from_fn(move || {
        (at < input.len()).then(|| {
            let end = (at + sizes.next().copied().unwrap_or(1).max(1)).min(input.len());
            let piece = &input[at..end];
            at = end;
            piece
        })
    })
}

/// The first answer the reactor acts on when the bytes come in pieces.
fn head_in_pieces(input: &[u8], sizes: &[usize]) -> String {
    let mut end = 0;
    for piece in pieces(input, sizes) {
        end += piece.len();
        let r = parse_head(&input[..end]);
        if !matches!(r, Ok(None)) {
            return format!("{r:?}");
        }
    }
    format!("{:?}", parse_head(input))
}

/// (refusal status, body, bytes consumed, done), reading as the reactor does.
fn body_in_pieces(framing: Framing, max: usize, input: &[u8], sizes: &[usize]) -> (Option<u16>, Vec<u8>, usize, bool) {
    let mut reader = match BodyReader::new(framing, max) {
        Ok(Some(r)) => r,
        Ok(None) => return (None, Vec::new(), 0, true),
        Err(e) => return (Some(e.status()), Vec::new(), 0, false),
    };
    let (mut body, mut rbuf, mut used) = (Vec::new(), Vec::new(), 0);
    for piece in pieces(input, sizes) {
        rbuf.extend_from_slice(piece);
        match reader.feed(&rbuf, &mut body) {
            Ok(n) => {
                rbuf.drain(..n);
                used += n;
            }
            Err(e) => return (Some(e.status()), Vec::new(), 0, false),
        }
        if reader.is_done() {
            break;
        }
    }
    (None, body, used, reader.is_done())
}

/// Request heads made of plausible parts, some of them wrong.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "HEAD", "OPTIONS", "G@T", ""]);
    let target = prop::sample::select(vec!["/", "/healthz", "/e/k/x?a=1&b=%41", "http://h:1/e/k", "*", "/\x01", "/a b"]);
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1."]);
    let header = prop::sample::select(vec![
        "Host: x",
        "Content-Length: 5",
        "Content-Length: 7",
        "Content-Length: 99999999999999999999999",
        "Content-Length: -1",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip",
        "Connection: close",
        "Connection: keep-alive",
        "Expect: 100-continue",
        "X-Nul: a\0b",
        "Bad Name: v",
        ": empty",
    ]);
    let eol = prop::sample::select(vec!["\r\n", "\n", "\r"]);
    let body = prop::sample::select(vec![
        "",
        "hello",
        "5\r\nhello\r\n0\r\n\r\n",
        "3\r\nabc\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    ]);
    (method, target, version, prop::collection::vec((header, eol.clone()), 0..6), eol, body).prop_map(|(m, t, v, headers, end, body)| {
        let mut r = format!("{m} {t} {v}\r\nHost: h\r\n");
        for (h, eol) in headers {
            r.push_str(h);
            r.push_str(eol);
        }
        r.push_str(end);
        r.push_str(body);
        r.into_bytes()
    })
}

/// Bytes drawn mostly from the alphabet of chunked framing.
fn chunkish() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => prop::sample::select(b"0123456789abcdefABCDEF;=\r\n \t:xX".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..120)
}

proptest! {
    #[test]
    fn head_parsing_does_not_depend_on_the_split(
        req in request(),
        flip in any::<Option<(prop::sample::Index, u8)>>(),
        sizes in prop::collection::vec(1usize..9, 1..8),
    ) {
        let mut req = req;
        if let Some((at, byte)) = flip.filter(|_| !req.is_empty()) {
            let at = at.index(req.len());
            req[at] = byte;
        }
        prop_assert_eq!(format!("{:?}", parse_head(&req)), head_in_pieces(&req, &sizes));
        if let Ok(Some((head, len))) = parse_head(&req) {
            prop_assert!(len <= req.len() && len <= HEAD_BYTES_MAX);
            prop_assert!(head.headers().all(|(n, _)| head.header(&n.to_ascii_lowercase()).is_some()), "found in any case");
            let max = 64;
            let at_once = body_in_pieces(head.framing, max, &req[len..], &[usize::MAX]);
            prop_assert_eq!(&at_once, &body_in_pieces(head.framing, max, &req[len..], &sizes));
            prop_assert!(at_once.1.len() <= max);
        }
    }

    #[test]
    fn body_reading_does_not_depend_on_the_split(
        input in chunkish(),
        max in 0usize..64,
        n in 0u64..80,
        chunked in any::<bool>(),
        sizes in prop::collection::vec(1usize..9, 1..8),
    ) {
        let framing = if chunked { Framing::Chunked } else { Framing::Length(n) };
        let at_once = body_in_pieces(framing, max, &input, &[usize::MAX]);
        prop_assert_eq!(&at_once, &body_in_pieces(framing, max, &input, &sizes));
        let (refused, body, used, done) = at_once;
        prop_assert!(body.len() <= max && used <= input.len());
        if let (None, Framing::Length(n)) = (refused, framing) {
            prop_assert_eq!(body.as_slice(), &input[..used]);
            prop_assert_eq!(done, used as u64 == n || n == 0);
        }
    }

    #[test]
    fn chunked_bodies_round_trip(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..8),
        upper in any::<bool>(),
        max in 0usize..200,
        sizes in prop::collection::vec(1usize..16, 1..8),
    ) {
        let mut wire = Vec::new();
        for c in &chunks {
            let size = if upper { format!("{:X}", c.len()) } else { format!("{:x};ext=1", c.len()) };
            wire.extend_from_slice(size.as_bytes());
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\nX-T: 1\r\n\r\n");
        let end = wire.len();
        wire.extend_from_slice(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let joined = chunks.concat();
        let got = body_in_pieces(Framing::Chunked, max, &wire, &sizes);
        if joined.len() > max {
            prop_assert_eq!(got.0, Some(413));
        } else {
            prop_assert_eq!(got, (None, joined, end, true));
        }
    }

    #[test]
    fn percent_decoding_inverts_encoding(s in any::<String>(), upper in any::<bool>()) {
        let encoded: String = s.bytes().map(|b| if upper { format!("%{b:02X}") } else { format!("%{b:02x}") }).collect();
        prop_assert_eq!(percent_decode(&encoded), s);
    }

    #[test]
    fn query_pairs_decode_what_a_form_encodes(
        pairs in prop::collection::vec((any::<String>(), any::<String>()), 0..6),
        raw in any::<String>(),
    ) {
        let encode = |s: &str| -> String {
            s.bytes().map(|b| match b {
                b' ' => "+".to_string(),
                b if b.is_ascii_alphanumeric() => (b as char).to_string(),
                b => format!("%{b:02X}"),
            }).collect()
        };
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        let decoded: Vec<(String, String)> = query_pairs(&query.join("&")).collect();
        prop_assert_eq!(decoded, pairs);
        // Any text: never panics, and no pair spans an `&`.
        let n = query_pairs(&raw).count();
        prop_assert_eq!(n, raw.split('&').filter(|p| !p.is_empty()).count());
    }
}
