//! Request heads: parsed with httparse into one reused buffer and an
//! index of spans; framing, keep-alive, `Expect` and the `Host` checked.

use super::{Framing, HttpError};

/// Largest request head; beyond it the answer is 431.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
pub const HEADERS_MAX: usize = 64;

/// A parsed request head: its bytes, and where in them the method, the
/// target and each header are (one buffer for the bytes and one for the
/// index, however many headers, both reused by `parse_head_into`).
#[derive(Debug, Clone, Default)]
pub struct Head {
    raw: Vec<u8>,
    method: Span,
    target: Span,
    /// (name, value) of each header, names as sent.
    headers: Vec<(Span, Span)>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// A range of `Head::raw`; a head is at most `HEAD_BYTES_MAX` bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Span(u16, u16);

impl Head {
    fn bytes(&self, span: Span) -> &[u8] {
        &self.raw[span.0 as usize..span.1 as usize]
    }

    fn text(&self, span: Span) -> &str {
        // Method, target and header names passed httparse's token and URI
        // checks, which admit ASCII only.
        std::str::from_utf8(self.bytes(span)).unwrap_or("")
    }

    pub fn method(&self) -> &str {
        self.text(self.method)
    }

    /// The request target as sent: path plus optional `?query`.
    pub fn target(&self) -> &str {
        self.text(self.target)
    }

    /// Every header as sent, in order: (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|&(n, v)| (self.text(n), self.bytes(v)))
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        // Compared as bytes: no UTF-8 check per header.
        self.headers.iter().find(|&&(n, _)| self.bytes(n).eq_ignore_ascii_case(name.as_bytes())).map(|&(_, v)| self.bytes(v))
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The path of the target; an absolute-form target
    /// (`http://host/path`, RFC 9112 §3.2.2) is reduced to its path.
    pub fn path(&self) -> &str {
        let target = self.target();
        let target = target.split_once('?').map_or(target, |(p, _)| p);
        if target.starts_with('/') {
            return target;
        }
        match target.split_once("://") {
            Some((scheme, rest)) if !scheme.contains('/') => rest.find('/').map_or("/", |i| &rest[i..]),
            _ => target,
        }
    }

    pub fn query(&self) -> &str {
        self.target().split_once('?').map_or("", |(_, q)| q)
    }
}

/// Parses a request head from the start of `buf`: `Ok(Some((head, len)))`
/// once complete, `Ok(None)` if more bytes are needed.
#[cfg(any(test, feature = "fuzzing"))]
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
    let mut head = Head::default();
    Ok(parse_head_into(buf, &mut head)?.map(|len| (head, len)))
}

/// `parse_head` into a head kept from an earlier request, whose buffers
/// are reused: `Ok(Some(len))` once complete. On `Ok(None)` or an error
/// `head` holds nothing of use.
pub fn parse_head_into(buf: &[u8], head: &mut Head) -> Result<Option<usize>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > HEAD_BYTES_MAX => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Token) if method_is_token(buf) => return Err(HttpError::Malformed("invalid character in the request target")),
        Err(e) => return Err(HttpError::Malformed(parse_error(e))),
    };
    if len > HEAD_BYTES_MAX {
        return Err(HttpError::HeadTooLarge);
    }
    // httparse's slices point into `buf`: keep their offsets.
    // (An empty slice may point anywhere.)
    let span = |s: &[u8]| {
        if s.is_empty() {
            return Span(0, 0);
        }
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        Span(start as u16, (start + s.len()) as u16)
    };
    let minor = req.version.unwrap_or(1);
    head.raw.clear();
    head.raw.extend_from_slice(&buf[..len]);
    head.method = span(req.method.unwrap_or("").as_bytes());
    head.target = span(req.path.unwrap_or("").as_bytes());
    head.headers.clear();
    head.minor = minor;
    head.framing = Framing::None;
    head.keep_alive = minor >= 1;
    head.expect_continue = false;
    let (mut length, mut chunked, mut hosts, mut authorizations) = (None, false, 0, 0);
    for h in req.headers.iter() {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        if is("host") {
            hosts += 1;
            // It becomes the base of the URLs the API returns (without --public-url).
            if !valid_host(h.value) {
                return Err(HttpError::Malformed("invalid Host header"));
            }
        } else if is("authorization") {
            authorizations += 1;
        } else if is("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HttpError::Malformed("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        } else if is("transfer-encoding") {
            // Only plain `chunked`: we decode no compression, and passing
            // gzip bytes on as the body would corrupt the event.
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(HttpError::Malformed("unsupported Transfer-Encoding"));
            }
            chunked = true;
        } else if is("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                    head.keep_alive = true;
                }
            }
        } else if is("expect") {
            head.expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        }
        head.headers.push((span(h.name.as_bytes()), span(h.value)));
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1. Two Authorization
    // headers would leave which key counts to whoever reads first.
    match (hosts, minor) {
        (0, 1..) => return Err(HttpError::Malformed("missing Host header")),
        (2.., _) => return Err(HttpError::Malformed("more than one Host header")),
        _ if authorizations > 1 => return Err(HttpError::Malformed("more than one Authorization header")),
        _ => {}
    }
    head.framing = match (chunked, length) {
        // Both present is a smuggling vector (RFC 9112 §6.3): refuse.
        (true, Some(_)) => return Err(HttpError::Malformed("both Content-Length and Transfer-Encoding")),
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::None,
    };
    Ok(Some(len))
}

/// A `Host` value as RFC 9110 §7.2 has it, `host [":" port]`: empty (no
/// authority), a name or IPv4 address (letters, digits, `-`, `.`, `_`: the
/// characters of DNS names, IDNs in punycode and the names containers
/// get), or a bracketed IPv6 address; a port of at most 5 digits.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value {
        [b'[', rest @ ..] => match rest.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = std::str::from_utf8(&rest[..end]).ok();
                if literal.and_then(|l| l.parse::<std::net::Ipv6Addr>().ok()).is_none() {
                    return false;
                }
                (&rest[..0], &rest[end + 1..])
            }
            None => return false,
        },
        _ => match value.iter().position(|&b| b == b':') {
            Some(at) => (&value[..at], &value[at..]),
            None => (value, &value[value.len()..]),
        },
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let named = !host.is_empty() || port.is_empty() || value.starts_with(b"[");
    port_ok && named && host.len() <= 255 && host.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// httparse says `Token` for a bad method and for a bad target alike:
/// a request line whose method is a valid token has a bad target.
fn method_is_token(buf: &[u8]) -> bool {
    let method = buf.split(|&b| b == b' ').next().unwrap_or(&[]);
    buf.len() > method.len() && !method.is_empty() && method.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine | httparse::Error::Status => "invalid line ending",
        httparse::Error::Token => "invalid method",
        httparse::Error::Version => "invalid HTTP version",
        _ => "invalid request line",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        type Want = Result<Option<(&'static str, &'static str, Framing, bool)>, HttpError>;
        let table: &[(&[u8], Want)] = &[
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", Ok(Some(("GET", "/healthz", Framing::None, true)))),
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", Ok(None)),
            (b"GET /healthz HTT", Ok(None)),
            (b"", Ok(None)),
            (b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n", Ok(Some(("POST", "/e", Framing::Length(12), true)))),
            (b"POST /e HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", Ok(Some(("POST", "/e", Framing::Chunked, true)))),
            (b"GET / HTTP/1.0\r\n\r\n", Ok(Some(("GET", "/", Framing::None, false)))),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Ok(Some(("GET", "/", Framing::None, true)))),
            (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", Ok(Some(("GET", "/", Framing::None, false)))),
            (b"GET /q?a=1 HTTP/1.1\r\nHost: h\r\n\r\n", Ok(Some(("GET", "/q?a=1", Framing::None, true)))),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", Err(HttpError::Malformed("bad Content-Length"))),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", Err(HttpError::Malformed("bad Content-Length"))),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                Err(HttpError::Malformed("conflicting Content-Length")),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(HttpError::Malformed("both Content-Length and Transfer-Encoding")),
            ),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", Err(HttpError::Malformed("unsupported Transfer-Encoding"))),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Err(HttpError::Malformed("unsupported Transfer-Encoding")),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(HttpError::Malformed("unsupported Transfer-Encoding")),
            ),
            (b"GET http://h:1/healthz?x HTTP/1.1\r\nHost: h\r\n\r\n", Ok(Some(("GET", "http://h:1/healthz?x", Framing::None, true)))),
            (b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", Err(HttpError::Malformed("invalid method"))),
            (b"GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", Err(HttpError::Malformed("invalid character in the request target"))),
            (b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n", Err(HttpError::Malformed("invalid character in the request target"))),
            (b"GET / HTTP/1.1\r\n\r\n", Err(HttpError::Malformed("missing Host header"))),
            (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Err(HttpError::Malformed("more than one Host header"))),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a\r\nauthorization: Bearer b\r\n\r\n",
                Err(HttpError::Malformed("more than one Authorization header")),
            ),
            (b"GET / HTTP/2.0\r\n\r\n", Err(HttpError::Malformed("invalid HTTP version"))),
            (b"\x16\x03\x01\x02\x00\x01", Err(HttpError::Malformed("invalid method"))),
        ];
        for (input, want) in table {
            let got = parse_head(input).map(|o| o.map(|(h, _)| (h.method().to_string(), h.target().to_string(), h.framing, h.keep_alive)));
            let want = want.clone().map(|o| o.map(|(m, t, f, k)| (m.to_string(), t.to_string(), f, k)));
            assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn host_is_a_name_or_address_and_an_optional_port() {
        let good = [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "[::1]",
            "[2001:db8::7]:443",
            "[::ffff:10.0.0.1]",
            "example.com",
            "Example.COM.",
            "xn--bcher-kva.example",
            "my_service:3000",
            "h",
            "",
            "example.com:",
        ];
        for host in good {
            assert!(valid_host(host.as_bytes()), "{host:?}");
        }
        let bad = [
            "evil.example\"<x>",
            "evil.example:80\"",
            "a b",
            "a/b",
            "user@host",
            "host:port",
            "host:123456",
            "host:80:81",
            "[::1",
            "[not-v6]",
            "[::1]x",
            "[::1]:80a",
            ":8080",
            "h%41",
            "é.example",
        ];
        for host in bad {
            assert!(!valid_host(host.as_bytes()), "{host:?}");
        }
        let request = b"POST /v1/sources HTTP/1.1\r\nHost: evil.example\"<x>\r\n\r\n";
        assert_eq!(parse_head(request).unwrap_err(), HttpError::Malformed("invalid Host header"));
    }

    #[test]
    fn head_size_and_header_count_are_bounded() {
        let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        big.resize(HEAD_BYTES_MAX + 10, b'a');
        assert_eq!(parse_head(&big).unwrap_err(), HttpError::HeadTooLarge);
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many).unwrap_err(), HttpError::TooManyHeaders);
    }

    #[test]
    fn headers_are_lower_cased_and_pipelined_bytes_left() {
        let input = b"GET /a?x=%41 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer k\r\nExpect: 100-continue\r\n\r\nGET /b";
        let (head, len) = parse_head(input).unwrap().unwrap();
        assert_eq!(&input[len..], b"GET /b");
        assert_eq!(head.header("authorization"), Some(&b"Bearer k"[..]));
        assert!(head.expect_continue);
        assert_eq!((head.path(), head.query()), ("/a", "x=%41"));
        for (target, path) in [("http://h/e/k/x?q", "/e/k/x"), ("https://h:8/", "/"), ("http://h", "/"), ("/a://b", "/a://b")] {
            let (head, _) = parse_head(format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).unwrap().unwrap();
            assert_eq!(head.path(), path, "{target}");
        }
    }
}
