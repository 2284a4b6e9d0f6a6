//! Chunked bodies built from fuzzed chunks (sizes in either case, leading
//! zeros, extensions, trailers), decoded in fuzzed pieces: the body is the
//! chunks' bytes joined, exactly the encoding is consumed (not the next
//! request), and a body over the limit is refused with 413.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use ssehub::fuzzing::{BodyReader, Framing};

#[derive(Arbitrary, Debug)]
struct Chunk {
    data: Vec<u8>,
    upper: bool,
    zeros: u8,
    ext: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    chunks: Vec<Chunk>,
    trailers: u8,
    max: u16,
    pieces: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let mut wire = Vec::new();
    let mut want = Vec::new();
    for c in input.chunks.iter().filter(|c| !c.data.is_empty()) {
        let zeros = usize::from(c.zeros % 4);
        let size = if c.upper { format!("{:0zeros$X}", c.data.len()) } else { format!("{:0zeros$x}", c.data.len()) };
        wire.extend_from_slice(size.as_bytes());
        if let Some(e) = c.ext {
            wire.extend_from_slice(format!(";e{e}=\"v {e}\"").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&c.data);
        wire.extend_from_slice(b"\r\n");
        want.extend_from_slice(&c.data);
    }
    wire.extend_from_slice(b"0\r\n");
    for t in 0..input.trailers % 4 {
        wire.extend_from_slice(format!("X-Trailer-{t}: {t}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    let end = wire.len();
    wire.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");

    let max = usize::from(input.max);
    let mut reader = BodyReader::new(Framing::Chunked, max).unwrap().expect("chunked has a body");
    let (mut body, mut rbuf, mut consumed, mut at) = (Vec::new(), Vec::new(), 0, 0);
    let mut sizes = input.pieces.iter().map(|&p| usize::from(p) + 1).chain(std::iter::repeat(wire.len()));
    let result = loop {
        let stop = (at + sizes.next().unwrap()).min(wire.len());
        rbuf.extend_from_slice(&wire[at..stop]);
        at = stop;
        match reader.feed(&rbuf, &mut body) {
            Ok(n) => {
                rbuf.drain(..n);
                consumed += n;
            }
            Err(e) => break Err(e.status()),
        }
        if reader.is_done() {
            break Ok(());
        }
        assert!(at < wire.len(), "a complete chunked body was not finished");
    };
    if want.len() > max {
        assert_eq!(result, Err(413), "{} bytes over a limit of {max}", want.len());
    } else {
        assert_eq!(result, Ok(()));
        assert_eq!(body, want);
        assert_eq!(consumed, end, "consumed into the next request");
    }
});
