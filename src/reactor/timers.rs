//! Timers: a connection's phase deadline (head, body and its floor rate,
//! keep-alive, send, linger), armed lazily (a later deadline keeps the
//! armed timer, which re-arms when it fires early), and what each timer
//! is for when it fires (`Due`): handshake ticks, accept retries, token
//! expiry, a source's age bound, the drain, systemd's status.

use super::{Due, Reactor};
use crate::bodies::Pace;
use crate::conn::{Phase, Reason};
use crate::engine::SourceKey;

/// From accept until the first request head is complete (slowloris; a TLS
/// handshake included).
pub(super) const HEADER_TIMEOUT_MS: u64 = 10_000;
/// A hidden variable for tests that sets `HEADER_TIMEOUT_MS`.
pub(super) const HEADER_TIMEOUT_VAR: &str = "SSEHUB_HEAD_TIMEOUT_MS";
/// An idle keep-alive connection between requests.
pub(super) const KEEPALIVE_TIMEOUT_MS: u64 = 60_000;
/// From a complete head until its body is complete (and meanwhile at
/// least the floor rate, `bodies::Floor`).
pub(super) const BODY_TIMEOUT_MS: u64 = 30_000;
/// A stream or a last answer with queued output whose peer takes no byte for this long is dropped.
pub(super) const SEND_TIMEOUT_MS: u64 = 30_000;
/// A hidden variable for tests that sets `SEND_TIMEOUT_MS`.
pub(super) const SEND_TIMEOUT_VAR: &str = "SSEHUB_SEND_TIMEOUT_MS";
/// After an answer that closes: how long to wait for the peer's FIN.
pub(super) const LINGER_TIMEOUT_MS: u64 = 2_000;
/// Timers expired per turn; the rest fire next turn.
const TIMER_BUDGET: usize = 4096;

impl Reactor {
    /// Sets the connection's deadline. A later deadline keeps the armed
    /// timer, which re-arms itself when it fires early.
    pub(super) fn arm(&mut self, key: usize, at: u64) {
        let conn = &mut self.conns[key];
        let later = at >= conn.deadline;
        conn.deadline = at;
        if later && conn.timer.is_some() {
            return;
        }
        if let Some(id) = conn.timer.take() {
            self.timers.remove(id);
        }
        conn.timer = Some(self.timers.insert(at, Due::Conn(key as u32, conn.generation)));
    }

    pub(super) fn disarm(&mut self, key: usize) {
        if let Some(id) = self.conns[key].timer.take() {
            self.timers.remove(id);
        }
    }

    pub(super) fn expire_timers(&mut self) {
        let mut due = Vec::new();
        self.timers.expire(self.now, TIMER_BUDGET, &mut due);
        for d in due {
            match d {
                Due::Handshake => self.handshake_tick(),
                Due::AcceptRetry => {
                    self.accept_ready = true;
                    self.metrics_ready = self.metrics_listener.is_some();
                }
                Due::Tokens => {
                    self.token_timer = None;
                    self.hub.expire_tokens(self.unix_now);
                    self.apply_effects();
                }
                Due::Conn(key, generation) => self.on_conn_timer(key as usize, generation),
                Due::Retention(key) => {
                    let Some(source) = self.hub.registry.get_mut(key) else { continue };
                    source.age_timer = None;
                    if let Some(next) = self.hub.expire(key, self.unix_now) {
                        self.arm_retention_timer(key, next);
                    }
                }
                Due::Drain => self.drain_tick(),
                // Told in `publish`, at the end of this turn.
                Due::Status => self.status_armed = false,
                #[cfg(feature = "tls")]
                Due::TlsFiles => self.check_tls_files(),
            }
        }
    }

    /// Arms the age timer of each source whose deadline may have come nearer.
    pub(super) fn arm_retention_timers(&mut self) {
        let mut aging = std::mem::take(&mut self.hub.aging);
        for key in aging.drain(..) {
            if let Some(deadline) = self.hub.engine().rings().deadline(key) {
                self.arm_retention_timer(key, deadline);
            }
        }
        self.hub.aging = aging;
    }

    /// Arms `key`'s timer (one per source with an age bound and events,
    /// `Source::age_timer`) for `deadline` (unix ms) unless it is armed for
    /// that or earlier (an early one re-arms when it fires); a deadline passed (a bound just made smaller, a
    /// restart after the events expired) evicts at once. Unix time is
    /// mapped onto the reactor's clock.
    pub(super) fn arm_retention_timer(&mut self, key: SourceKey, mut deadline: u64) {
        while deadline <= self.unix_now {
            let Some(next) = self.hub.expire(key, self.unix_now) else { return };
            deadline = next;
        }
        let Some(source) = self.hub.registry.get_mut(key) else { return };
        if source.age_timer.is_some_and(|(armed, _)| armed <= deadline) {
            return;
        }
        if let Some((_, id)) = source.age_timer.take() {
            self.timers.remove(id);
        }
        let at = self.now + deadline.saturating_sub(self.unix_now);
        source.age_timer = Some((deadline, self.timers.insert(at, Due::Retention(key))));
    }

    /// Arms the token timer for the earliest expiry, unless it is armed
    /// for that or earlier. Unix time is mapped onto the reactor's clock.
    pub(super) fn arm_token_timer(&mut self) {
        let Some(expires_at) = self.hub.tokens.next_expiry() else { return };
        let at = self.now + expires_at.saturating_sub(self.unix_now);
        if self.token_timer.is_some_and(|(armed, _)| armed <= at) {
            return;
        }
        if let Some((_, id)) = self.token_timer.take() {
            self.timers.remove(id);
        }
        self.token_timer = Some((at, self.timers.insert(at, Due::Tokens)));
    }

    pub(super) fn on_conn_timer(&mut self, key: usize, generation: u32) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.generation == generation) else { return };
        conn.timer = None;
        if self.now < conn.deadline {
            let at = conn.deadline;
            return self.arm(key, at);
        }
        let reason = match &conn.phase {
            // Storage answers in its own time; the last answer re-arms.
            Phase::Head | Phase::Waiting if conn.awaiting() > 0 => return,
            Phase::Head if conn.served && conn.rbuf.is_empty() => Reason::IdleTimeout,
            Phase::Head => Reason::HeaderTimeout,
            Phase::Body(read) if self.now >= read.started + BODY_TIMEOUT_MS => Reason::BodyTimeout,
            Phase::Body(read) => match self.floor.pace(read.started, read.received, self.now) {
                Pace::TooSlow => return self.too_slow(key),
                Pace::CheckAt(at) => {
                    let at = at.min(read.started + BODY_TIMEOUT_MS);
                    return self.arm(key, at);
                }
            },
            // Storage answers in its own time (and fails what it cannot take).
            Phase::Waiting => return,
            // Flushed (over TLS, records rustls holds are output too): the peer's FIN did not come in time.
            Phase::Linger if !conn.has_output() => Reason::Done,
            // Lazily re-armed: progress since arming moves the deadline.
            Phase::Stream { .. } if !conn.has_output() => return,
            Phase::Stream { .. } | Phase::Linger if self.now < conn.last_progress + self.send_timeout_ms => {
                let at = conn.last_progress + self.send_timeout_ms;
                return self.arm(key, at);
            }
            Phase::Stream { .. } | Phase::Linger => Reason::SendTimeout,
        };
        self.close(key, reason);
    }
}
