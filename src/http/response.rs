//! Response heads: a whole response with its body, the SSE stream's
//! head, and `100 Continue`.

use crate::text::push_u64;

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete response with a body. `extra` holds whole header lines, each
/// ending in CRLF. `head_only` answers HEAD: the same head, no body.
pub fn response(status: u16, content_type: &str, extra: &str, body: &[u8], keep_alive: bool, head_only: bool) -> Vec<u8> {
    // Built by hand, not with `write!`: this runs for every request.
    let mut out = Vec::with_capacity(96 + content_type.len() + extra.len() + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(&mut out, status.into());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    // 204 and 304 carry no body, so no length either.
    let bodiless = status == 204 || status == 304;
    if !bodiless {
        if !content_type.is_empty() {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(content_type.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Length: ");
        push_u64(&mut out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(extra.as_bytes());
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !bodiless {
        out.extend_from_slice(body);
    }
    out
}

/// The head of an SSE stream: no length, no chunking; the body runs until
/// either side closes.
pub const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
Connection: keep-alive\r\n\
X-Accel-Buffering: no\r\n\
Access-Control-Allow-Origin: *\r\n\r\n";

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
