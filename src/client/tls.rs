//! The client's TLS (feature `tls`): rustls with the *ring* provider,
//! verifying against the system's roots (the PEM bundle
//! `/etc/ssl/certs/ca-certificates.crt`, or `SSL_CERT_FILE`) plus
//! `--cacert`, or not at all with `--insecure`. A failed handshake is one
//! error that names its cause.

use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

use super::error::Error;
use super::url::Tls;

/// Debian's, Ubuntu's and Alpine's bundle of the system's roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

pub type Stream = StreamOwned<ClientConnection, TcpStream>;

/// The handshake over `sock` with `host`; `url` names the server in errors.
pub fn connect(mut sock: TcpStream, host: &str, tls: &Tls, url: &str, patience: Duration) -> Result<Stream, Error> {
    let config = config(tls)?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| Error::Usage(format!("{url}: {e}")))?;
    let mut conn = ClientConnection::new(config, name).map_err(|e| Error::Tls { url: url.to_string(), cause: e.to_string() })?;
    sock.set_read_timeout(Some(patience))?;
    sock.set_write_timeout(Some(patience))?;
    while conn.is_handshaking() {
        if let Err(err) = conn.complete_io(&mut sock) {
            return Err(handshake_error(url, err, tls));
        }
    }
    Ok(StreamOwned::new(conn, sock))
}

fn handshake_error(url: &str, err: io::Error, tls: &Tls) -> Error {
    let cause = match err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(e) => cause(e, tls),
        None if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => "no answer in time".to_string(),
        None => err.to_string(),
    };
    Error::Tls { url: url.to_string(), cause }
}

/// A failed handshake's cause in words (unknown issuer, name mismatch,
/// expired), and what would help; also the Redis link's (`rediss://`).
pub fn cause(err: &rustls::Error, tls: &Tls) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                let (flag, insecure) = match tls.cacert_flag {
                    "--redis-cacert" => ("--redis-cacert", ""),
                    "--to-cacert" => ("--to-cacert", ", or --to-insecure"),
                    _ => ("--cacert", ", or --insecure"),
                };
                let (what, why) = match cert {
                    // A trusted CA of the issuer's name did not sign it (another CA of the same name).
                    CertificateError::BadSignature => {
                        ("the certificate is not signed by the trusted CA of its issuer's name", "bad signature")
                    }
                    _ => ("the certificate's issuer is unknown", "unknown issuer"),
                };
                format!("{what} ({why}; pass its CA with {flag} FILE{insecure})")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the certificate is for another name (name mismatch)".to_string()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "the certificate has expired (expired)".to_string(),
            other => format!("the certificate is refused ({other:?})"),
        },
        other => other.to_string(),
    }
}

/// One config per set of options, built once (the system's roots are read
/// once); the Redis link's too (`rediss://`).
pub fn config(tls: &Tls) -> Result<Arc<ClientConfig>, Error> {
    static BUILT: Mutex<Vec<(Tls, Arc<ClientConfig>)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, config)) = built.iter().find(|(t, _)| t == tls) {
        return Ok(config.clone());
    }
    let provider = Arc::new(crate::provider::provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Usage(e.to_string()))?;
    let mut config = if tls.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))).with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let system = std::env::var_os("SSL_CERT_FILE").map_or_else(|| PathBuf::from(SYSTEM_ROOTS), PathBuf::from);
        // No system bundle: only --cacert's roots.
        if let Ok(certs) = CertificateDer::pem_file_iter(&system) {
            roots.add_parsable_certificates(certs.filter_map(Result::ok));
        }
        if let Some(path) = &tls.cacert {
            let (added, _) = roots.add_parsable_certificates(read_pem(path, tls.cacert_flag)?);
            if added == 0 {
                return Err(Error::Usage(format!("{} {}: no CA certificate in the file", tls.cacert_flag, path.display())));
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    built.push((tls.clone(), config.clone()));
    Ok(config)
}

fn read_pem(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Usage(format!("{flag} {}: {e}", path.display())))
}

/// `--insecure`: any certificate is taken; signatures are still checked,
/// so the handshake is sound, only the peer is unknown.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
