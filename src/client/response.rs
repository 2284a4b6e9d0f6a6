//! Sans-I/O HTTP/1.1 response parsing: the head, then a body decoder for
//! Content-Length, chunked and close-delimited bodies. "Need more bytes"
//! is a state, not an error, so the same code reads a whole JSON answer
//! and an endless event stream.

/// Heads larger than this are refused rather than buffered without end.
pub const HEAD_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// How the body is delimited (RFC 9112 §6.3; the client never sends HEAD).
    pub fn body(&self) -> Result<Body, String> {
        if self.status < 200 || self.status == 204 || self.status == 304 {
            return Ok(Body::new(Framing::Length(0)));
        }
        if let Some(codings) = self.header("transfer-encoding") {
            let last = codings.rsplit(',').next().unwrap_or("").trim();
            return match last.eq_ignore_ascii_case("chunked") {
                true => Ok(Body::new(Framing::Chunked)),
                // Only chunked can be last and still end before the close.
                false => Ok(Body::new(Framing::Close)),
            };
        }
        match self.header("content-length") {
            Some(len) => match len.trim().parse() {
                Ok(n) => Ok(Body::new(Framing::Length(n))),
                Err(_) => Err(format!("bad Content-Length {len:?}")),
            },
            None => Ok(Body::new(Framing::Close)),
        }
    }
}

/// Parses a response head at the start of `buf`: `Ok(None)` until the blank
/// line arrives, else the head and how many bytes it took. Bare LF line
/// ends are accepted as RFC 9112 §2.2 allows.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let mut lines = Vec::new();
    let mut at = 0;
    loop {
        let Some(len) = buf[at..].iter().position(|&b| b == b'\n') else {
            return match buf.len() > HEAD_BYTES_MAX {
                true => Err(format!("response head over {HEAD_BYTES_MAX} bytes")),
                false => Ok(None),
            };
        };
        let line = &buf[at..at + len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at += len + 1;
        if at > HEAD_BYTES_MAX {
            return Err(format!("response head over {HEAD_BYTES_MAX} bytes"));
        }
        if line.is_empty() {
            break;
        }
        lines.push(String::from_utf8_lossy(line).into_owned());
    }
    let (status_line, header_lines) = lines.split_first().ok_or("empty response head")?;
    let (status, reason) = parse_status(status_line).ok_or_else(|| format!("not an HTTP response: {status_line:?}"))?;
    let mut headers = Vec::with_capacity(header_lines.len());
    for line in header_lines {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(Some((Head { status, reason, headers }, at)))
}

fn parse_status(line: &str) -> Option<(u16, String)> {
    let rest = line.strip_prefix("HTTP/1.")?;
    let mut parts = rest.splitn(3, ' ');
    let _minor = parts.next()?;
    let code = parts.next()?;
    let status = code.parse().ok().filter(|_| code.len() == 3)?;
    Some((status, parts.next().unwrap_or("").to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Framing {
    Length(u64),
    Chunked,
    Close,
}

/// Turns body bytes as they arrive into payload bytes.
#[derive(Debug)]
pub struct Body {
    state: State,
}

#[derive(Debug, PartialEq)]
enum State {
    /// This many payload bytes still to come.
    Length(u64),
    /// Everything until the server closes.
    Close,
    /// Hex digits of a chunk size; extensions after `;` are skipped.
    ChunkSize {
        size: u64,
        digits: bool,
        in_ext: bool,
    },
    /// This many bytes of the current chunk still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk; `blank` while the line is empty.
    Trailer {
        blank: bool,
    },
    Done,
}

impl Body {
    pub fn new(framing: Framing) -> Body {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::chunk_size(),
            Framing::Close => State::Close,
        };
        Body { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// What the end of the connection means now: fine for a close-delimited
    /// or finished body, a truncated response otherwise.
    pub fn at_eof(&self) -> Result<(), String> {
        match self.state {
            State::Close | State::Done => Ok(()),
            _ => Err("the connection closed in the middle of the response".to_string()),
        }
    }

    /// Decodes `input` into `out`. Bytes after the end of the body are
    /// dropped: every request is sent with `Connection: close`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Close => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Length(left) | State::ChunkData(left) => {
                    let take = input.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = match self.state {
                            State::Length(_) => State::Done,
                            _ => State::ChunkEnd,
                        };
                    }
                }
                _ => {
                    self.framing_byte(input[0])?;
                    input = &input[1..];
                }
            }
        }
        Ok(())
    }

    /// One byte of chunked framing (sizes, CRLFs, trailers).
    fn framing_byte(&mut self, byte: u8) -> Result<(), String> {
        match &mut self.state {
            State::ChunkSize { size, digits, in_ext } => match byte {
                b'\n' if *digits => {
                    self.state = match *size {
                        0 => State::Trailer { blank: true },
                        n => State::ChunkData(n),
                    };
                }
                b'\r' => {}
                _ if *in_ext => {}
                b';' | b' ' | b'\t' if *digits => *in_ext = true,
                _ => {
                    let digit = (byte as char).to_digit(16).ok_or("bad chunk size")?;
                    *size = size.checked_mul(16).and_then(|s| s.checked_add(digit.into())).ok_or("chunk size overflows")?;
                    *digits = true;
                }
            },
            State::ChunkEnd => match byte {
                b'\r' => {}
                b'\n' => self.state = State::chunk_size(),
                _ => return Err("chunk data longer than its size".to_string()),
            },
            State::Trailer { blank } => match byte {
                b'\r' => {}
                b'\n' if *blank => self.state = State::Done,
                b'\n' => *blank = true,
                _ => *blank = false,
            },
            _ => unreachable!("payload states are handled in feed"),
        }
        Ok(())
    }
}

impl State {
    fn chunk_size() -> State {
        State::ChunkSize { size: 0, digits: false, in_ext: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn parses_heads() {
        let text = "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\ncontent-length: 5\r\n\r\nhello";
        let (h, used) = parse_head(text.as_bytes()).unwrap().unwrap();
        assert_eq!((h.status, h.reason.as_str(), used), (404, "Not Found", text.len() - 5));
        assert_eq!(h.header("Content-Length"), Some("5"));
        assert_eq!(h.header("x-missing"), None);

        let (h, used) = parse_head(b"HTTP/1.0 200\n\nx").unwrap().unwrap();
        assert_eq!((h.status, h.reason.as_str(), used), (200, "", 14));
    }

    #[test]
    fn waits_for_whole_heads_and_refuses_bad_ones() {
        let partial: &[&[u8]] = &[b"", b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nA: b\r\n\r"];
        for buf in partial {
            assert!(parse_head(buf).unwrap().is_none(), "{buf:?}");
        }
        let bad: &[&[u8]] = &[b"\r\n", b"SSH-2.0\r\n\r\n", b"HTTP/1.1 20 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n"];
        for buf in bad {
            assert!(parse_head(buf).is_err(), "{buf:?}");
        }
        assert!(parse_head(&vec![b'a'; HEAD_BYTES_MAX + 1]).is_err());
    }

    #[test]
    fn picks_the_framing() {
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", Some(Framing::Length(3))),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\nContent-Length: 3\r\n\r\n", Some(Framing::Chunked)),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Some(Framing::Close)),
            ("HTTP/1.1 200 OK\r\n\r\n", Some(Framing::Close)),
            ("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", Some(Framing::Length(0))),
            ("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", None),
        ];
        for (text, want) in cases {
            let got = head(text).body().ok().map(|b| b.state);
            let want = want.map(|f| Body::new(f).state);
            assert_eq!(got, want, "{text}");
        }
    }

    /// Feeds `wire` in pieces of every size; the payload must not depend on it.
    fn decode(framing: Framing, wire: &[u8]) -> Vec<Result<(Vec<u8>, bool), String>> {
        (1..=wire.len().max(1))
            .map(|step| {
                let mut body = Body::new(framing);
                let mut out = Vec::new();
                for piece in wire.chunks(step) {
                    body.feed(piece, &mut out)?;
                }
                Ok((out, body.is_done()))
            })
            .collect()
    }

    /// Framing, bytes on the wire, then the payload and whether it is
    /// complete, or `Err` for a broken body.
    type Case = (Framing, &'static str, Result<(&'static str, bool), ()>);

    #[test]
    fn decodes_bodies_in_any_pieces() {
        let cases: &[Case] = &[
            (Framing::Length(5), "hello, and more", Ok(("hello", true))),
            (Framing::Length(5), "hel", Ok(("hel", false))),
            (Framing::Close, "all of it", Ok(("all of it", false))),
            (Framing::Chunked, "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n", Ok(("hello, world", true))),
            (Framing::Chunked, "A\nabcdefghij\n0\nX-Trailer: 1\n\n", Ok(("abcdefghij", true))),
            (Framing::Chunked, "3\r\nabc\r\n", Ok(("abc", false))),
            (Framing::Chunked, "zz\r\n", Err(())),
            (Framing::Chunked, "\r\n", Err(())),
            (Framing::Chunked, "2\r\nabc\r\n", Err(())),
            (Framing::Chunked, "fffffffffffffffff\r\n", Err(())),
        ];
        for (framing, wire, want) in cases {
            for got in decode(*framing, wire.as_bytes()) {
                let got = got.as_ref().map(|(out, done)| (std::str::from_utf8(out).unwrap(), *done)).map_err(|_| ());
                assert_eq!(got, *want, "{framing:?} {wire:?}");
            }
        }
    }

    #[test]
    fn knows_a_truncated_body() {
        assert!(Body::new(Framing::Close).at_eof().is_ok());
        assert!(Body::new(Framing::Length(0)).at_eof().is_ok());
        assert!(Body::new(Framing::Length(1)).at_eof().is_err());
        assert!(Body::new(Framing::Chunked).at_eof().is_err());
    }
}
