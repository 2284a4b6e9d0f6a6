//! The TLS port's first bytes, fed as a socket feeds the reactor: in
//! arbitrary pieces, to a fresh connection of a server with a fixed test
//! certificate. A first byte that starts a method (`A`-`Z`) is plain HTTP,
//! answered without rustls; anything else goes to rustls, which takes it
//! or refuses it with an error, and never yields plaintext (random bytes
//! cannot complete a handshake); nothing panics or loops.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ssehub::fuzzing::{Received, TlsServer, is_plain_http, pieces};

/// A self-signed ECDSA P-256 certificate and its key, made once with
/// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500`.
const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBgjCCASmgAwIBAgIUSAIpft3NvtgB8Sg7mfwD/vPoUuIwCgYIKoZIzj0EAwIw\nFjEUMBIGA1UEAwwLc3NlaHViLWZ1enowIBcNMjYxMjA2MTA1OTI4WhgPMjEyNjEx\nMTIxMDU5MjhaMBYxFDASBgNVBAMMC3NzZWh1Yi1mdXp6MFkwEwYHKoZIzj0CAQYI\nKoZIzj0DAQcDQgAEEdi7aa1MwvzYnRUWgjffbUDbHPBFQYIOB31ooDjA+II/s1tn\nX63oxNaLRgh31k+EA2qf80u5A+W6+TfnROh85KNTMFEwHQYDVR0OBBYEFE14aRMx\nce+oKW5n5Ddjyz0OkIMvMB8GA1UdIwQYMBaAFE14aRMxce+oKW5n5Ddjyz0OkIMv\nMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgHVJojn11h6tBnvXI\nXpcmsrGwF/L6V1n85zJ4RkoPE/8CIDdv9Tr8OMfGlqrHgUnWrJX/31JMFoa8BRx2\nJof2yNAX\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg1V/97SsUBtHBKHJk\nLf56dXuhh/Zak721iYY1GOQeus2hRANCAAQR2LtprUzC/NidFRaCN99tQNsc8EVB\ngg4HfWigOMD4gj+zW2dfrejE1otGCHfWT4QDap/zS7kD5br5N+dE6Hzk\n-----END PRIVATE KEY-----\n";

/// The server, loaded once from the pair written to a directory of its own.
fn server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ssehub-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, CERT).unwrap();
        std::fs::write(&key, KEY).unwrap();
        TlsServer::load(&cert, &key).unwrap()
    })
}

fuzz_target!(|input: (u16, Vec<u8>)| {
    let (seed, data) = input;
    let mut conn = server().accept().unwrap();
    let (mut rbuf, mut alerts) = (Vec::new(), Vec::new());
    let mut rest = &data[..];
    let mut sizes = pieces(seed, 8, 20_000, 16);
    let mut first = true;
    while !rest.is_empty() {
        let n = sizes.next().unwrap().min(rest.len());
        let (piece, after) = rest.split_at(n);
        rest = after;
        match conn.receive(&mut alerts, piece, &mut rbuf) {
            Ok(Received::PlainHttp) => {
                assert!(first && is_plain_http(data[0]), "plain HTTP only by the first byte");
                assert!(matches!(data[0], 0x41..=0x5a), "A-Z");
                return;
            }
            Ok(Received::Records) => assert!(!first || !is_plain_http(data[0]), "a method's first letter went to rustls"),
            // Refused: the reactor closes the connection.
            Err(_) => break,
        }
        first = false;
    }
    assert!(rbuf.is_empty(), "plaintext without a handshake: {} bytes", rbuf.len());
    assert!(conn.handshaking(), "a handshake completed from random bytes");
});
