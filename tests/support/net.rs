//! How a test reaches the server: plain TCP, or TLS with a test CA, so that
//! one test body runs over both (`tests/hostile.rs`). `Net` starts the
//! server (with `--tls-cert` for TLS) and opens connections, requests and
//! streams the same way over either.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Response, Sse, TestServer, metric_in, read_response};

pub enum Net {
    Plain,
    #[cfg(feature = "tls")]
    Tls {
        certs: super::tls::Certs,
        config: Arc<rustls::ClientConfig>,
    },
}

/// A connection to the server, plain or TLS (the handshake happens with
/// the first write or read).
pub enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket under it (for socket options, shutdown, resets).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Net {
    /// TLS with a fresh test CA and a server certificate for 127.0.0.1.
    #[cfg(feature = "tls")]
    pub fn tls() -> Net {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let certs = super::tls::certs();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(certs.path("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Net::Tls { certs, config: Arc::new(config) }
    }

    /// The URL scheme.
    pub fn scheme(&self) -> &'static str {
        match self {
            Net::Plain => "http",
            #[cfg(feature = "tls")]
            Net::Tls { .. } => "https",
        }
    }

    /// [`TestServer::start`], speaking TLS with the test certificate if TLS.
    pub fn start(&self, args: &[&str]) -> TestServer {
        self.start_env(args, &[])
    }

    /// [`Net::start`] with more environment (the hidden timeouts of tests).
    pub fn start_env(&self, args: &[&str], env: &[(&str, &str)]) -> TestServer {
        match self {
            Net::Plain => TestServer::start_env(args, env),
            #[cfg(feature = "tls")]
            Net::Tls { certs, .. } => {
                let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
                TestServer::start_env(&[&["--tls-cert", &cert, "--tls-key", &key][..], args].concat(), env)
            }
        }
    }

    /// A new connection (10 s read timeout, no Nagle).
    pub fn connect(&self, server: &TestServer) -> Stream {
        self.connect_to(server.addr)
    }

    /// [`Net::connect`] by the server's address (from threads of a test).
    pub fn connect_to(&self, addr: SocketAddr) -> Stream {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        match self {
            Net::Plain => Stream::Plain(s),
            #[cfg(feature = "tls")]
            Net::Tls { config, .. } => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, s)))
            }
        }
    }

    /// One request on a fresh connection (`Connection: close`) with the test key.
    pub fn request(&self, server: &TestServer, method: &str, path: &str, body: Option<&str>) -> Response {
        let mut s = self.connect(server);
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {}\r\n", server.addr, server.key);
        if let Some(body) = body {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body.unwrap_or(""));
        s.write_all(req.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let response = read_response(&mut r);
        // To the server's close: over TLS its close_notify follows the
        // answer, and a socket closed with it unread would reset.
        let _ = r.read_to_end(&mut Vec::new());
        response
    }

    /// Emits `json`; returns the event id.
    pub fn emit(&self, server: &TestServer, source: &str, json: &str) -> String {
        let r = self.request(server, "POST", &format!("/v1/sources/{source}/events"), Some(json));
        assert_eq!(r.status, 202, "{}", r.body);
        r.json()["id"].as_str().unwrap().to_string()
    }

    pub fn metric(&self, server: &TestServer, name: &str) -> u64 {
        metric_in(&self.request(server, "GET", "/metrics", None).body, name)
    }

    /// Waits until `metric` equals `want`.
    pub fn wait_metric(&self, server: &TestServer, name: &str, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.metric(server, name);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name} stayed {got}, wanted {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens `GET path` as a stream with the test key; checks the 200 head and the first handshake.
    pub fn subscribe(&self, server: &TestServer, path: &str) -> Sse<Stream> {
        let mut s = self.connect(server);
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {}\r\n\r\n",
            server.addr, server.key
        )
        .unwrap();
        let mut sse = Sse { r: BufReader::new(s) };
        let head = sse.head();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(sse.next(), super::Frame::Comment("sse-handshake".into()));
        sse
    }

    /// The path of `source`'s `endpoint_url` (`/e/<key>`), which starts with this scheme and the server's address.
    pub fn endpoint_path(&self, server: &TestServer, source: &str) -> String {
        let url = self.request(server, "GET", &format!("/v1/sources/{source}"), None).json()["data"]["endpoint_url"]
            .as_str()
            .unwrap()
            .to_string();
        let prefix = format!("{}://{}", self.scheme(), server.addr);
        url.strip_prefix(&prefix).unwrap_or_else(|| panic!("{url} is not under {prefix}")).to_string()
    }
}
