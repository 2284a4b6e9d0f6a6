//! The reactor's part of HTTPS (feature `tls`): the certificate pair
//! loaded again (SIGHUP, or its files changed).

use log::{info, warn};

use super::{Due, Reactor};

impl Reactor {
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
