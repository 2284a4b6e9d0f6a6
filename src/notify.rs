//! systemd's readiness protocol (`sd_notify`): one datagram of `KEY=VALUE`
//! lines to the unix socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name written with a leading `@`). Without the variable every
//! call does nothing, so a server outside systemd pays nothing for it.
//! A message that cannot be sent is dropped: the next one says it again.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::text::push_u64;

/// Where to notify, if anywhere.
pub struct Notify {
    to: Option<(UnixDatagram, SocketAddr)>,
}

impl Notify {
    /// From `$NOTIFY_SOCKET`: an abstract name (`@…`) or a path. A name
    /// no socket can be sent to leaves it silent (systemd would not hear it
    /// either way).
    pub fn from_env() -> Notify {
        Notify { to: Self::open().ok() }
    }

    fn open() -> io::Result<(UnixDatagram, SocketAddr)> {
        let name = std::env::var_os("NOTIFY_SOCKET").ok_or(io::ErrorKind::NotFound)?;
        let addr = match name.as_bytes() {
            [b'@', abstract_name @ ..] => SocketAddr::from_abstract_name(abstract_name)?,
            _ => SocketAddr::from_pathname(&name)?,
        };
        let sock = UnixDatagram::unbound()?;
        // Never block the reactor on a full queue: a lost status line is harmless.
        sock.set_nonblocking(true)?;
        Ok((sock, addr))
    }

    /// Under systemd (the variable is set).
    pub fn enabled(&self) -> bool {
        self.to.is_some()
    }

    /// Sends `message`: newline-separated `KEY=VALUE` lines.
    pub fn send(&self, message: &str) {
        self.send_bytes(message.as_bytes());
    }

    /// Sends `head`, the number `n`, then `tail` (`"STATUS="`, 12, `" streams"`).
    pub fn send_number(&self, head: &str, n: u64, tail: &str) {
        if self.to.is_some() {
            let mut message = Vec::with_capacity(64);
            message.extend_from_slice(head.as_bytes());
            push_u64(&mut message, n);
            message.extend_from_slice(tail.as_bytes());
            self.send_bytes(&message);
        }
    }

    fn send_bytes(&self, message: &[u8]) {
        if let Some((sock, addr)) = &self.to {
            // Lost, the next message says it again (systemd reads promptly).
            let _ = sock.send_to_addr(message, addr);
        }
    }
}
