//! The client's one error type. Every failure ends as one line on stderr
//! and an exit status, so each variant knows both.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum Error {
    /// A bad command line or configuration; nothing was sent.
    Usage(String),
    /// The server could not be reached at all.
    Connect { url: String, err: io::Error },
    /// The TLS handshake failed; `cause` names why (unknown issuer, name mismatch, expired).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Tls { url: String, cause: String },
    /// A socket error after connecting.
    Io(io::Error),
    /// The server stopped answering in time.
    Timeout,
    /// The answer was not the HTTP or JSON the client expects.
    Protocol(String),
    /// The server answered with an error status; `message` is its `error`.
    Status { status: u16, message: String },
    /// JSON given to `emit` that does not parse; refused before sending.
    BadJson(String),
    /// Reading stdin or writing stdout failed.
    Local(String),
    /// Ctrl-C or SIGTERM while following: a normal end.
    Stopped,
    /// Whoever reads stdout went away (`| head`): a normal end.
    StdoutClosed,
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Stopped | Error::StdoutClosed => 0,
            Error::Usage(_) => 2,
            _ => 1,
        }
    }

    /// Normal ends print nothing.
    pub fn is_quiet(&self) -> bool {
        self.exit_code() == 0
    }

    /// Worth retrying in follow mode: the server may come back. A refusal
    /// (401, 404, other 4xx) will not change by retrying, so it stops.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Io(_) | Error::Timeout | Error::Protocol(_) => true,
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Connect { url, err } => write!(f, "cannot connect to {url}: {err}"),
            Error::Tls { url, cause } => write!(f, "cannot connect to {url}: TLS handshake failed: {cause}"),
            Error::Io(err) => write!(f, "connection to the server failed: {err}"),
            Error::Timeout => write!(f, "timed out waiting for the server"),
            Error::Protocol(msg) => write!(f, "unexpected answer from the server: {msg}"),
            Error::Status { status: 401, message } => {
                write!(f, "unauthorized (HTTP 401): {message}; check --api-key, SSEHUB_API_KEY or the config file")
            }
            Error::Status { status, message } => write!(f, "{message} (HTTP {status})"),
            Error::BadJson(msg) => write!(f, "invalid JSON, not sent: {msg}"),
            Error::Local(msg) => write!(f, "{msg}"),
            Error::Stopped => write!(f, "stopped"),
            Error::StdoutClosed => write!(f, "stdout closed"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        match err.kind() {
            // A read timeout shows as EAGAIN on Unix; say what it means.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
            _ => Error::Io(err),
        }
    }
}
