//! The one rustls `CryptoProvider` of the server and the clients (feature
//! `tls`): rustls's *ring* provider (no aws-lc-rs, no OpenSSL, SPEC §9)
//! without ChaCha20-Poly1305, and a session-ticket key in AES-256-GCM
//! rather than rustls's ChaCha20-Poly1305 one, so *ring*'s ChaCha20 and
//! Poly1305 code is never linked (56,760 bytes; docs/benchmarks.md, what
//! TLS costs in bytes). Every TLS 1.2 and 1.3 client and server offers an
//! AES-GCM suite; key exchange (X25519, P-256, P-384), server keys and the
//! signatures a client verifies are the *ring* provider's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::SystemRandom;
use rustls::SignatureScheme;
use rustls::crypto::ring::cipher_suite as suite;
use rustls::crypto::{CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms};
use rustls::pki_types::PrivateKeyDer;
use rustls::server::ProducesTickets;
use rustls::sign::SigningKey;
use webpki::ring as alg;

/// rustls's *ring* provider with the AES-GCM suites only (AES-256 first, as
/// rustls orders them). Built from its parts, not from
/// `ring::default_provider()`, whose list of every suite would link
/// ChaCha20-Poly1305 even when dropped.
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: rustls::crypto::ring::DEFAULT_KX_GROUPS.to_vec(),
        signature_verification_algorithms: SIGNATURES,
        secure_random: &Ring,
        key_provider: &Ring,
    }
}

/// The signatures a client verifies, as the *ring* provider's (its table
/// is private): ECDSA P-256 and P-384, Ed25519, RSA PSS and PKCS#1.
static SIGNATURES: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        alg::ECDSA_P256_SHA256,
        alg::ECDSA_P256_SHA384,
        alg::ECDSA_P384_SHA256,
        alg::ECDSA_P384_SHA384,
        alg::ED25519,
        alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        alg::RSA_PKCS1_2048_8192_SHA256,
        alg::RSA_PKCS1_2048_8192_SHA384,
        alg::RSA_PKCS1_2048_8192_SHA512,
        alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    mapping: &[
        // In TLS 1.2 the scheme does not fix the curve; in 1.3 it does.
        (SignatureScheme::ECDSA_NISTP384_SHA384, &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384]),
        (SignatureScheme::ECDSA_NISTP256_SHA256, &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256]),
        (SignatureScheme::ED25519, &[alg::ED25519]),
        (SignatureScheme::RSA_PSS_SHA512, &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY]),
        (SignatureScheme::RSA_PSS_SHA384, &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY]),
        (SignatureScheme::RSA_PSS_SHA256, &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY]),
        (SignatureScheme::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
        (SignatureScheme::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
        (SignatureScheme::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
    ],
};

/// Randomness and private keys, as the *ring* provider's: the server's key
/// may be ECDSA (P-256, P-384), RSA or Ed25519, in PKCS#8, SEC1 or PKCS#1.
#[derive(Debug)]
struct Ring;

impl SecureRandom for Ring {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        ring::rand::SecureRandom::fill(&SystemRandom::new(), buf).map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for Ring {
    fn load_private_key(&self, der: PrivateKeyDer<'static>) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        rustls::crypto::ring::sign::any_supported_type(&der)
    }
}

/// Session tickets (TLS 1.3 resumption): a new key every 6 hours, tickets
/// taken for 12 (rustls's rotation, as its *ring* `Ticketer`).
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    Ok(Arc::new(rustls::ticketer::TicketRotator::new(6 * 60 * 60, || Ok(Box::new(Tickets::new()?)))?))
}

/// One ticket key: a ticket is the key's name (16 random bytes, the
/// additional data), a random nonce, the sealed state and its tag.
struct Tickets {
    key: LessSafeKey,
    name: [u8; 16],
    /// The longest ticket made: longer ones are refused unopened.
    longest: AtomicUsize,
}

impl Tickets {
    fn new() -> Result<Tickets, GetRandomFailed> {
        let (mut key, mut name) = ([0u8; 32], [0u8; 16]);
        Ring.fill(&mut key)?;
        Ring.fill(&mut name)?;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).map_err(|_| GetRandomFailed)?);
        Ok(Tickets { key, name, longest: AtomicUsize::new(0) })
    }
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tickets")
    }
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        12 * 60 * 60
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; 12];
        Ring.fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(16 + 12 + plain.len() + 16);
        ticket.extend_from_slice(&self.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let nonce = Nonce::assume_unique_for_key(nonce);
        let tag = self.key.seal_in_place_separate_tag(nonce, Aad::from(self.name), &mut ticket[28..]).ok()?;
        ticket.extend_from_slice(tag.as_ref());
        self.longest.fetch_max(ticket.len(), Ordering::Relaxed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() > self.longest.load(Ordering::Relaxed) || ticket.len() < 28 || ticket[..16] != self.name {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&ticket[16..28]).ok()?;
        let mut sealed = ticket[28..].to_vec();
        let n = self.key.open_in_place(nonce, Aad::from(self.name), &mut sealed).ok()?.len();
        sealed.truncate(n);
        Some(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_with_its_key_only() {
        let (a, b) = (Tickets::new().unwrap(), Tickets::new().unwrap());
        let ticket = a.encrypt(b"session state").unwrap();
        assert_eq!(a.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));
        assert_eq!(b.decrypt(&ticket), None);
        let mut forged = ticket.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(a.decrypt(&forged), None);
        assert_eq!(a.decrypt(&ticket[..20]), None);
    }

    #[test]
    fn no_chacha20_suite_is_offered() {
        let names: Vec<String> = provider().cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect();
        assert_eq!(names.len(), 6);
        assert!(names.iter().all(|n| n.contains("AES_") && n.contains("_GCM_")), "{names:?}");
    }
}
