//! Ctrl-C (SIGINT) and SIGTERM while following events. The handler only
//! sets a flag; every blocking wait in the client looks at it at least once
//! per `http::TICK`, so `events -f` stops between two events and exits 0
//! instead of dying by the signal (status 130).

use std::sync::atomic::{AtomicBool, Ordering};

/// Process-wide because signals are.
static STOP: AtomicBool = AtomicBool::new(false);
/// A stop waits while this is set (`forward` finishing a request in flight).
static HOLD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The handler only stores to an atomic, which is async-signal-safe.
pub fn install() {
    crate::sys::on_stop_signals(on_signal);
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst) && !HOLD.load(Ordering::SeqCst)
}

/// While held, a stop is remembered but not reported.
pub fn hold(held: bool) {
    HOLD.store(held, Ordering::SeqCst);
}
