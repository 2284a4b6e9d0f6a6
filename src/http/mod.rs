//! HTTP/1.1, sans I/O: request heads (httparse, `head.rs`), request bodies
//! (Content-Length and chunked, `body.rs`), query strings (`query.rs`),
//! and response heads (`response.rs`); here, what is wrong with a request
//! and how its body is delimited, which heads and bodies share.
//! "Need more bytes" is `Ok(None)`, never an error.

mod body;
mod head;
#[cfg(test)]
mod properties;
mod query;
mod response;

use std::fmt;

pub use body::BodyReader;
use head::HEADERS_MAX;
#[cfg(any(test, feature = "fuzzing"))]
pub use head::parse_head;
pub use head::{HEAD_BYTES_MAX, Head, parse_head_into};
pub use query::{percent_decode, query_pairs, query_param};
pub use response::{CONTINUE, STREAM_HEAD, response};

/// What is wrong with a request; each maps to a status and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    Malformed(&'static str),
    HeadTooLarge,
    /// More than `HEADERS_MAX` header fields (also 431).
    TooManyHeaders,
    BodyTooLarge,
    LengthRequired,
    /// A body being read fell below the floor rate (`bodies::Floor`).
    BodyTooSlow,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::LengthRequired => 411,
            HttpError::BodyTooSlow => 408,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(why) => write!(f, "malformed request: {why}"),
            HttpError::HeadTooLarge => write!(f, "request head larger than {HEAD_BYTES_MAX} bytes"),
            HttpError::TooManyHeaders => write!(f, "request head has more than {HEADERS_MAX} headers"),
            HttpError::BodyTooLarge => write!(f, "request body too large"),
            HttpError::LengthRequired => write!(f, "a request body needs Content-Length or chunked encoding"),
            HttpError::BodyTooSlow => write!(f, "request body too slow"),
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    #[default]
    None,
    Length(u64),
    Chunked,
}
