//! The reactor's part of HTTPS (feature `tls`): the certificate pair
//! loaded again (SIGHUP, or its files changed), and the handshake budget.

use log::{info, warn};

use super::{Due, Reactor};

/// Handshake flights per loop turn (a read after which the server has
/// handshake messages to send: the answer to a ClientHello, which agrees
/// keys and signs, and the last flight; two per full handshake);
/// handshakes beyond it wait for the next turn, so a storm of them cannot
/// stall delivery to open streams: 16 cost at most about 8 ms here with
/// ECDSA P-256, 16 ms with RSA-2048 (docs/architecture.md).
pub(super) const HANDSHAKE_BUDGET: usize = 16;

impl Reactor {
    /// A new turn's handshake budget; the handshakes deferred by the last
    /// turns' go first, in the order they waited, as far as the budget
    /// goes: a turn's cost is its budget, not the length of the queue (a
    /// surge of 10,000 defers thousands).
    pub(super) fn resume_handshakes(&mut self) {
        self.flights_left = HANDSHAKE_BUDGET;
        while self.flights_left > 0
            && let Some((key, generation)) = self.to_handshake.pop_front()
        {
            if self.conns.get(key).is_some_and(|c| c.generation == generation && c.can_read && c.closing.is_none()) {
                self.read(key);
            }
        }
    }

    /// SIGHUP: the certificate pair loaded again; a bad one is logged and the one in use stays.
    pub(super) fn reload_tls(&mut self) {
        let Some(tls) = &mut self.tls else { return };
        match tls.reload() {
            Ok(()) => {
                self.stats.tls_cert_not_after = tls.not_after.max(1) as u64;
                info!("SIGHUP: reloaded --tls-cert {} and --tls-key {}", tls.cert.display(), tls.key.display());
            }
            Err(e) => warn!("SIGHUP: {e}; keeping the certificate in use"),
        }
    }

    /// The timer's look at the certificate pair's files: changed (and
    /// settled), they are loaded as on SIGHUP; a bad pair is logged once
    /// per change and the one in use stays.
    pub(super) fn check_tls_files(&mut self) {
        let Some(tls) = &mut self.tls else { return };
        match tls.check_files() {
            None => {}
            Some(Ok(())) => {
                self.stats.tls_cert_not_after = tls.not_after.max(1) as u64;
                info!("--tls-cert {} or --tls-key {} changed: reloaded", tls.cert.display(), tls.key.display());
            }
            Some(Err(e)) => warn!("--tls-cert or --tls-key changed: {e}; keeping the certificate in use"),
        }
        self.timers.insert(self.now + crate::tls::check_interval_ms(), Due::TlsFiles);
    }
}
