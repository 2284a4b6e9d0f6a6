//! `events -f` and `forward`: the stream, opened with `Last-Event-ID` = the
//! last delivered id on every connection, so nothing is lost or delivered
//! twice across drops and server restarts. Drops are retried with backoff;
//! a silent connection counts as dropped; a refusal (401, 404) ends the
//! command. A `gap` frame (events that were no longer kept) is a warning.

use super::api::Api;
use super::error::Error;
use super::http::{Exchange, Progress, TICK};
use super::json::{self, Envelope};
use super::output::notice;
use super::signal;
use super::sse;
use std::fmt;
use std::time::{Duration, Instant};

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Three missed handshakes at the server's default 15 s interval.
const IDLE_DEFAULT: Duration = Duration::from_secs(45);
/// Testing knob: the silence (in ms) after which a connection is dead.
pub const IDLE_ENV: &str = "SSEHUB_IDLE_TIMEOUT_MS";

/// Why a connection ended when it may be worth another.
enum Lost {
    Closed,
    Silent(Duration),
    Failed(Error),
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::Closed => write!(f, "the server closed the stream"),
            Lost::Silent(idle) => write!(f, "no data for {} ms, the connection looks dead", idle.as_millis()),
            Lost::Failed(err) => write!(f, "{err}"),
        }
    }
}

/// What a follower does with each new event, once each, in order (the
/// envelope's id is the resume point once it returns).
pub type Sink<'a> = &'a mut dyn FnMut(&Envelope) -> Result<(), Error>;

/// Follows `source` after the event `after` until stopped or refused.
pub fn run(api: &Api, source: &str, mut after: String, sink: Sink<'_>) -> Result<(), Error> {
    let idle = millis_from_env(IDLE_ENV, IDLE_DEFAULT)?;
    let mut backoff = BACKOFF_FIRST;
    let mut connected_before = false;
    loop {
        let lost = match api.stream(source, Some(&after), idle) {
            Ok(mut stream) => {
                if connected_before {
                    notice(format!("reconnected, resuming after {after}"));
                }
                connected_before = true;
                backoff = BACKOFF_FIRST;
                pump(&mut stream, &mut after, sink, idle)?
            }
            Err(err) if err.is_transient() => Lost::Failed(err),
            Err(err) => return Err(err),
        };
        notice(format!("{lost}; reconnecting in {} s", backoff.as_secs()));
        pause(backoff)?;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Delivers the stream's events until the connection is lost.
fn pump(stream: &mut Exchange, after: &mut String, sink: Sink<'_>, idle: Duration) -> Result<Lost, Error> {
    let mut parser = sse::Parser::default();
    let (mut bytes, mut events) = (Vec::new(), Vec::new());
    let mut heard = Instant::now();
    loop {
        bytes.clear();
        match stream.read(&mut bytes) {
            Ok(Progress::Bytes) => {}
            Ok(Progress::Quiet) if heard.elapsed() >= idle => return Ok(Lost::Silent(idle)),
            Ok(Progress::Quiet) => continue,
            Ok(Progress::End) => return Ok(Lost::Closed),
            Err(Error::Stopped) => return Err(Error::Stopped),
            Err(err) => return Ok(Lost::Failed(err)),
        }
        let fed = parser.feed(&bytes, &mut events);
        for event in events.drain(..) {
            deliver(event, after, sink)?;
        }
        // Bytes came; and a sink may have taken long (`forward` retrying),
        // a wait that was ours, not the server's silence.
        heard = Instant::now();
        if let Err(err) = fed {
            return Ok(Lost::Failed(Error::Protocol(err)));
        }
    }
}

/// Delivers one event unless it was delivered already, and moves `after` on.
fn deliver(event: sse::Event, after: &mut String, sink: Sink<'_>) -> Result<(), Error> {
    if event.name.as_deref() == Some("gap") {
        let resumed = json::gap_resumed_from(&event.data).unwrap_or_else(|| "the next event".to_string());
        notice(format!("warning: events after {after} were no longer kept by the server and are lost; resuming from {resumed}"));
        return Ok(());
    }
    if let Some(id) = &event.id {
        // Ids only grow (SPEC §1) and the server replays only later ones;
        // this guards against a server or proxy that replays more.
        if !is_after(id, after) {
            return Ok(());
        }
    }
    match json::envelope(&event.data) {
        Ok(env) => sink(&env)?,
        Err(err) => notice(format!("skipped event {}: {err}", event.id.as_deref().unwrap_or("without id"))),
    }
    if let Some(id) = event.id {
        *after = id;
    }
    Ok(())
}

/// Compares `<ms>-<seq>` ids; an id of another form is taken as new.
fn is_after(id: &str, previous: &str) -> bool {
    fn parts(id: &str) -> Option<(u64, u64)> {
        let (ms, seq) = id.split_once('-')?;
        Some((ms.parse().ok()?, seq.parse().ok()?))
    }
    match (parts(id), parts(previous)) {
        (Some(id), Some(previous)) => id > previous,
        _ => true,
    }
}

/// Sleeps, waking each tick to honour Ctrl-C.
pub(super) fn pause(duration: Duration) -> Result<(), Error> {
    let end = Instant::now() + duration;
    while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        if signal::stop_requested() {
            return Err(Error::Stopped);
        }
        std::thread::sleep(left.min(TICK));
    }
    Ok(())
}

/// A duration in milliseconds from a testing knob `var`, else `default`.
pub(super) fn millis_from_env(var: &str, default: Duration) -> Result<Duration, Error> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(ms) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(Error::Usage(format!("{var} must be a positive number of milliseconds, not {ms:?}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_ids() {
        let cases = [
            ("2-0", "1-0", true),
            ("1-1", "1-0", true),
            ("1-10", "1-9", true),
            ("10-0", "9-99", true),
            ("1-0", "1-0", false),
            ("1-0", "2-0", false),
            ("1-0", "0-0", true),
            ("odd", "1-0", true),
            ("1-0", "odd", true),
        ];
        for (id, previous, want) in cases {
            assert_eq!(is_after(id, previous), want, "{id} after {previous}");
        }
    }
}
