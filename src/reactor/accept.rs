//! Accepting: the main listener and `--metrics-listen`, each up to a
//! budget per turn; the connection limit (`--max-connections`, a few more
//! for scrapers) and the `503` a connection over it gets; running out of
//! descriptors (a spare one freed to refuse, then a retry on a timer).

use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use super::{Due, Reactor};
use crate::conn::Conn;
use crate::throttle::throttled;

/// Connections accepted per turn on each listener.
const ACCEPT_BUDGET: usize = 1024;
/// Retry accepting after this when the process is out of descriptors.
const ACCEPT_RETRY_MS: u64 = 100;
/// Connections on `--metrics-listen` admitted past `--max-connections`:
/// a main port full of clients must not blind the monitoring that would
/// show it (nor the probe of `/healthz` there). A scraper or two is the
/// use; these few come out of `FD_RESERVE`, which has room for them, and
/// beyond them a scrape is refused like any other connection.
const METRICS_EXTRA: usize = 4;

const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Content-Length: 48\r\nConnection: close\r\n\r\n{\"error\":\"server is at its connection limit\"}\n\n\n";

impl Reactor {
    pub(super) fn accept(&mut self) {
        if self.metrics_ready {
            self.accept_metrics();
        }
        if !self.accept_ready {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.listener else { return self.accept_ready = false };
            match listener.accept() {
                Ok((sock, addr)) => self.admit(sock, addr, false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) => {
                    self.out_of_descriptors(&e);
                    return;
                }
                // The peer gave up before we accepted (ECONNABORTED and kin).
                Err(e) => debug!("accept: {e}"),
            }
        }
    }

    /// `--metrics-listen`: a few scrapers, so no spare descriptor to
    /// refuse with; out of descriptors, it retries on the accept timer.
    pub(super) fn accept_metrics(&mut self) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.metrics_listener else { return self.metrics_ready = false };
            match listener.accept() {
                Ok((sock, addr)) => self.admit(sock, addr, true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return self.metrics_ready = false,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) => {
                    self.timers.insert(self.now + ACCEPT_RETRY_MS, Due::AcceptRetry);
                    return self.metrics_ready = false;
                }
                Err(e) => debug!("accept on --metrics-listen: {e}"),
            }
        }
    }

    /// Out of descriptors: free the spare one to accept and refuse a
    /// waiting connection (rather than leave it hanging in the backlog),
    /// then retry on a timer, not in a busy loop.
    pub(super) fn out_of_descriptors(&mut self, e: &io::Error) {
        if self.last_fd_warning.is_none_or(|at| self.now >= at + 1000) {
            warn!("accept failed: {e}; refusing new connections until descriptors are free");
            self.last_fd_warning = Some(self.now);
        }
        if self.spare_fd.take().is_some() {
            if let Some(Ok((sock, _))) = self.listener.as_ref().map(TcpListener::accept) {
                self.refuse_connection(sock, false);
            }
            self.spare_fd = File::open("/dev/null").ok();
        }
        self.accept_ready = false;
        self.timers.insert(self.now + ACCEPT_RETRY_MS, Due::AcceptRetry);
    }

    /// A connection over the limit: the plain-HTTP `503`, or on the TLS
    /// port a close at once (a TLS client could not read a plain answer,
    /// and a handshake to send it costs what the limit is there to save;
    /// docs/operations.md).
    pub(super) fn refuse_connection(&mut self, mut sock: TcpStream, on_metrics: bool) {
        self.stats.connections_refused += 1;
        #[cfg(feature = "tls")]
        if self.tls.is_some() && !on_metrics {
            return drop(sock);
        }
        let _ = on_metrics;
        // Best effort: a fresh socket's send buffer is empty.
        let _ = sock.write(REFUSED);
    }

    pub(super) fn admit(&mut self, mut sock: TcpStream, addr: SocketAddr, on_metrics: bool) {
        let limit = self.max_connections + if on_metrics { METRICS_EXTRA } else { 0 };
        if self.conns.len() >= limit {
            self.refuse_connection(sock, on_metrics);
            let max = self.max_connections;
            throttled!(self.throttles.limit, Warn, "{max} connections open (--max-connections): refusing {addr}");
            return;
        }
        let key = self.conns.vacant_key();
        let _ = sock.set_nodelay(true);
        if let Err(e) = self.poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE) {
            warn!("register: {e}");
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        let mut conn = Conn::new(sock, addr, self.generation, self.now);
        conn.on_metrics = on_metrics;
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_ref().filter(|_| !on_metrics) {
            match tls.accept() {
                Ok(t) => conn.set_tls(t),
                Err(e) => return warn!("TLS: {e}"),
            }
        }
        self.conns.insert(conn);
        self.stats.connections_accepted += 1;
        self.arm(key, self.now + self.header_timeout_ms);
    }
}
