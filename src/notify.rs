//! systemd's readiness protocol (`sd_notify`): one datagram of `KEY=VALUE`
//! lines to the unix socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name written with a leading `@`). Without the variable every
//! call does nothing, so a server outside systemd pays nothing for it.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use log::debug;

/// Where to notify, if anywhere.
pub struct Notify {
    to: Option<(UnixDatagram, SocketAddr)>,
}

impl Notify {
    /// From `$NOTIFY_SOCKET`; a value that is not a unix socket's name (or
    /// a socket that cannot be made) is logged at debug and ignored.
    pub fn from_env() -> Notify {
        let to = std::env::var_os("NOTIFY_SOCKET").and_then(|name| {
            let addr = match name.as_bytes() {
                [b'@', abstract_name @ ..] => SocketAddr::from_abstract_name(abstract_name),
                [b'/', ..] => SocketAddr::from_pathname(&name),
                _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a unix socket's name")),
            };
            // Never block the reactor on a full queue: a lost status line is harmless.
            let sock = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s));
            match (sock, addr) {
                (Ok(sock), Ok(addr)) => Some((sock, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    debug!("NOTIFY_SOCKET: {e}; not notifying");
                    None
                }
            }
        });
        Notify { to }
    }

    /// Under systemd (the variable is set).
    pub fn enabled(&self) -> bool {
        self.to.is_some()
    }

    /// Sends `message`: newline-separated `KEY=VALUE` lines.
    pub fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.to
            && let Err(e) = sock.send_to_addr(message.as_bytes(), addr)
        {
            debug!("NOTIFY_SOCKET: {e}");
        }
    }
}
