//! TLS to Redis (`rediss://`, `rediss-sentinel://`): the CLI's client
//! TLS (`crate::client::tls`: the system's roots plus `--redis-cacert`,
//! the same verification, the same one-line causes), driven over a
//! non-blocking socket for the links (`TlsSock`) and over a blocking one
//! for the load at start.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::url::RedisUrl;
use crate::client::tls::{cause, config};
use crate::client::url::Tls;

/// The client config of a TLS URL, built once.
#[derive(Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    tls: Tls,
}

impl Connector {
    /// `None` for a plain URL; an error for a `--redis-cacert` that holds no CA.
    pub fn new(url: &RedisUrl) -> io::Result<Option<Connector>> {
        let Some(t) = &url.tls else { return Ok(None) };
        let tls = Tls { cacert: t.cacert.clone(), cacert_flag: "--redis-cacert", insecure: false };
        let config = config(&tls).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        // Redis speaks no ALPN: the CLI's `http/1.1` is left out.
        let mut config = (*config).clone();
        config.alpn_protocols.clear();
        Ok(Some(Connector { config: Arc::new(config), tls }))
    }

    /// A new session with the server named `name` (its certificate must name it).
    pub fn session(&self, name: &str) -> io::Result<ClientConnection> {
        let name =
            ServerName::try_from(name.to_string()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {e}")))?;
        ClientConnection::new(self.config.clone(), name).map_err(io::Error::other)
    }

    /// A TLS error as one line that names its cause.
    fn error(&self, e: &rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("TLS handshake failed: {}", cause(e, &self.tls)))
    }

    /// The blocking handshake of the load at start.
    pub fn blocking(
        &self,
        sock: std::net::TcpStream,
        name: &str,
    ) -> io::Result<rustls::StreamOwned<ClientConnection, std::net::TcpStream>> {
        let mut conn = self.session(name)?;
        let mut sock = sock;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                return Err(match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(tls) => self.error(tls),
                    None => e,
                });
            }
        }
        Ok(rustls::StreamOwned::new(conn, sock))
    }
}

/// A non-blocking TLS connection to Redis on the reactor's poll: plaintext
/// in and out, records to and from the socket as it takes and gives them.
pub struct TlsSock {
    pub tcp: TcpStream,
    conn: Box<ClientConnection>,
    connector: Connector,
}

impl TlsSock {
    pub fn new(tcp: TcpStream, connector: &Connector, name: &str) -> io::Result<TlsSock> {
        let mut conn = connector.session(name)?;
        // What the link queues is bounded by the link (as its plain `out`):
        // rustls takes it all, so a write never blocks on rustls alone.
        conn.set_buffer_limit(None);
        Ok(TlsSock { tcp, conn: Box::new(conn), connector: connector.clone() })
    }

    /// Plaintext read; `WouldBlock` once the socket is drained and no
    /// plaintext is left (a short read says nothing here: callers read
    /// until `WouldBlock`).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let eof = match self.conn.read_tls(&mut self.tcp) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => return Err(e),
            };
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.conn.write_tls(&mut self.tcp);
                return Err(self.connector.error(&e));
            }
            // Handshake messages, and what was written before it ended.
            self.drain()?;
            if eof {
                return match self.conn.reader().read(buf) {
                    Ok(n) => Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    Err(e) => Err(e),
                };
            }
        }
    }

    /// Takes all the plaintext (rustls holds it until the handshake is
    /// done) and writes what records the socket takes; the rest go out
    /// with `drain` when the socket is writable again.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.drain()?;
        let n = self.conn.writer().write(buf)?;
        self.drain()?;
        Ok(n)
    }

    /// Records wait for the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes pending records until none are left or the socket is full.
    pub fn drain(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
