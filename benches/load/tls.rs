//! TLS in the load tool (`--url https://…`): a rustls client with the
//! *ring* provider, as the server uses. The tool checks no certificate (it
//! speaks only to loopback, to a certificate the bench script just made):
//! its CPU per handshake is then key exchange and record work only, so it
//! limits a pinned server's handshake rate as little as it can. Session
//! resumption is off: every connect is a full handshake. It offers what a
//! browser offers first: X25519, then P-256, and AES-128-GCM (servers
//! follow the client's order; *ring*'s own default puts P-384 first, whose
//! key exchange costs about 1 ms of CPU on each side here against ~0.1 ms).

use super::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::os::fd::RawFd;
use std::sync::Arc;

/// Accepts any certificate and signature (loopback, a bench certificate).
#[derive(Debug)]
struct AnyCert(Vec<SignatureScheme>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

/// The client's configuration: TLS 1.2 and 1.3, ALPN http/1.1, no resumption.
#[allow(deprecated)] // ring's provider: see src/tls.rs
pub fn config() -> Arc<ClientConfig> {
    use rustls::crypto::ring::{cipher_suite as cs, kx_group};
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1];
    provider.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    let provider = Arc::new(provider);
    let schemes = provider.signature_verification_algorithms.supported_schemes();
    let mut c = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(schemes)))
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::disabled();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

pub fn connection(config: &Arc<ClientConfig>) -> Res<ClientConnection> {
    let name = ServerName::try_from("localhost").expect("a valid name");
    ClientConnection::new(config.clone(), name).map_err(|e| format!("tls: {e}"))
}

/// A nonblocking socket as `Read` and `Write`, for `read_tls`/`write_tls`.
pub struct Fd(pub RawFd);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: read writes at most buf.len() bytes into buf.
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: write reads at most buf.len() bytes from buf.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes what rustls has queued until done or the socket is full.
pub fn flush(tls: &mut ClientConnection, fd: RawFd) -> Result<(), String> {
    while tls.wants_write() {
        match tls.write_tls(&mut Fd(fd)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("tls write: {e}")),
        }
    }
    Ok(())
}

/// Feeds raw bytes read from a blocking socket to rustls and appends the
/// plaintext they carry to `out`.
pub fn feed(tls: &mut ClientConnection, mut raw: &[u8], out: &mut Vec<u8>) -> Res<()> {
    while !raw.is_empty() {
        tls.read_tls(&mut raw).map_err(|e| format!("tls read: {e}"))?;
        let state = tls.process_new_packets().map_err(|e| format!("tls: {e}"))?;
        let n = state.plaintext_bytes_to_read();
        let at = out.len();
        out.resize(at + n, 0);
        tls.reader().read_exact(&mut out[at..]).map_err(|e| format!("tls read: {e}"))?;
    }
    Ok(())
}
