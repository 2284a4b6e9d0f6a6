//! One function per command: call the API, print the results.

use super::api::{Api, Source};
use super::args::{Secret, VerifyArgs};
use super::error::Error;
use super::follow;
use super::http::Progress;
use super::json;
use super::output::{notice, print, table, utc};
use super::signal;
use super::sse;
use std::io::{self, BufRead, IsTerminal, Read};
use std::time::{Duration, Instant};

/// The resume point when the history is empty: older than any id, so the
/// stream replays whatever arrived between the history call and the
/// stream call, none of which has been printed.
const BEFORE_ALL: &str = "0-0";
/// How long `events` waits to learn whether older events were dropped.
const PROBE_PATIENCE: Duration = Duration::from_secs(5);

pub fn list_streams(api: &Api) -> Result<(), Error> {
    let mut rows = vec![cells(["NAME", "TYPE", "VISIBILITY", "SSE"])];
    rows.extend(api.sources()?.into_iter().map(|s| cells([&s.name, "http", "private", &s.sse_url])));
    table(&rows).iter().try_for_each(|line| print(line))
}

pub fn list_sources(api: &Api) -> Result<(), Error> {
    let mut rows = vec![cells(["ID", "NAME", "ENDPOINT"])];
    rows.extend(api.sources()?.into_iter().map(|s| cells([&s.id, &s.name, &s.endpoint_url])));
    table(&rows).iter().try_for_each(|line| print(line))
}

pub fn create(api: &Api, name: &str, verify: Option<VerifyArgs>) -> Result<(), Error> {
    let verify = verify.map(verify_settings).transpose()?;
    let asked = verify.is_some();
    let source = api.create(name, verify.as_deref())?;
    if asked && source.verify.is_none() {
        notice("warning: the server created the source without the signature check (a version before it?)");
    }
    describe_source(&source)
}

/// The `verify` JSON of `create --verify`, with the secret read from the
/// environment or a file (a trailing newline is not part of it).
fn verify_settings(args: VerifyArgs) -> Result<String, Error> {
    let secret = match &args.secret {
        Secret::Env(var) => std::env::var(var).map_err(|_| Error::Usage(format!("create: the environment variable {var} is not set")))?,
        Secret::File(path) => std::fs::read_to_string(path).map_err(|e| Error::Usage(format!("create: cannot read {path}: {e}")))?,
    };
    let secret = secret.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(Error::Usage("create: the secret is empty".to_string()));
    }
    let mut settings = format!(
        "{{\"scheme\":{},\"secret\":{},\"reject_invalid\":{}",
        json::string(&args.scheme),
        json::string(secret),
        args.reject_invalid
    );
    for (key, value) in [("header", args.header), ("encoding", args.encoding), ("prefix", args.prefix)] {
        if let Some(value) = value {
            settings.push_str(&format!(",\"{key}\":{}", json::string(&value)));
        }
    }
    settings.push('}');
    Ok(settings)
}

pub fn delete(api: &Api, source: &str) -> Result<(), Error> {
    api.delete(source)?;
    notice(format!("deleted {source}"));
    Ok(())
}

pub fn describe(api: &Api, source: &str) -> Result<(), Error> {
    describe_source(&api.source(source)?)
}

fn describe_source(source: &Source) -> Result<(), Error> {
    let created = source.created_at.map_or_else(String::new, |ms| format!("{} ({ms})", utc(ms)));
    let rows = [
        cells(["id", &source.id]),
        cells(["name", &source.name]),
        cells(["sse_url", &source.sse_url]),
        cells(["endpoint_url", &source.endpoint_url]),
        cells(["created_at", &created]),
        cells(["verify", source.verify.as_deref().unwrap_or("none")]),
    ];
    table(&rows).iter().try_for_each(|line| print(line))
}

/// Emits the argument, all of stdin, or each line of stdin (`--lines`).
/// Every event is checked to be JSON before it is sent.
pub fn emit(api: &Api, source: &str, json: Option<String>, lines: bool) -> Result<(), Error> {
    let stdin = io::stdin();
    if json.is_none() && stdin.is_terminal() {
        notice("reading JSON from stdin; end it with Ctrl-D");
    }
    if lines {
        for (number, line) in stdin.lock().lines().enumerate() {
            let line = line.map_err(read_failed)?;
            if line.trim().is_empty() {
                continue;
            }
            json::validate(&line).map_err(|e| Error::BadJson(format!("line {}: {e}", number + 1)))?;
            print(&api.emit(source, &line)?)?;
        }
        return Ok(());
    }
    let event = match json {
        Some(text) => text,
        None => {
            let mut text = String::new();
            stdin.lock().read_to_string(&mut text).map_err(read_failed)?;
            text
        }
    };
    if event.trim().is_empty() {
        return Err(Error::Usage("emit: no JSON given, as an argument or on stdin".to_string()));
    }
    json::validate(&event).map_err(Error::BadJson)?;
    print(&api.emit(source, &event)?)
}

/// Prints the newest `limit` events oldest first, then follows if asked.
pub fn events(api: &Api, source: &str, limit: usize, follow: bool, envelope: bool) -> Result<(), Error> {
    if follow {
        signal::install();
    }
    // Following needs the newest id even with `-n 0`: the stream resumes there.
    let fetch = if follow { limit.max(1) } else { limit };
    let (recent, kept) = if fetch == 0 { (Vec::new(), None) } else { api.recent_counted(source, fetch)? };
    for event in &recent[recent.len().saturating_sub(limit)..] {
        print(if envelope { &event.raw } else { &event.event })?;
    }
    if let Some(why) = shortfall(api, source, limit, recent.len(), kept) {
        notice(why);
    }
    if !follow {
        return Ok(());
    }
    let after = recent.last().map_or(BEFORE_ALL, |event| &event.id);
    follow::run(api, source, after.to_string(), &mut |event| print(if envelope { &event.raw } else { &event.event }))
}

/// Why fewer than the `asked` events came back, when it is not simply
/// that the source has no more: the server returned fewer than it keeps
/// (a cap on one answer), or it keeps no events older than these (they
/// fell out of its --history, or were cleared). A user who asked for 1000
/// and got 100 should not take them for the source's whole past.
fn shortfall(api: &Api, source: &str, asked: usize, got: usize, kept: Option<u64>) -> Option<String> {
    if got >= asked || got == 0 {
        return None;
    }
    match kept {
        Some(kept) if kept > got as u64 => {
            Some(format!("the server returns at most {got} events at a time; printed {got} of the {kept} it keeps of this source"))
        }
        Some(kept) if kept == got as u64 && dropped_older(api, source) => Some(format!(
            "the server keeps only the newest {got} events of this source (older ones were dropped: see its --history); printed {got}"
        )),
        _ => None,
    }
}

/// Whether events older than those kept were dropped: a stream resumed
/// from before every id then begins with a `gap` frame (SPEC §2.2), else
/// with the oldest kept event. Unknown counts as no.
fn dropped_older(api: &Api, source: &str) -> bool {
    let Ok(mut stream) = api.stream(source, Some(BEFORE_ALL), PROBE_PATIENCE) else { return false };
    let mut parser = sse::Parser::default();
    let (mut bytes, mut events) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while started.elapsed() < PROBE_PATIENCE {
        bytes.clear();
        match stream.read(&mut bytes) {
            Ok(Progress::Bytes) => {}
            Ok(Progress::Quiet) => continue,
            Ok(Progress::End) | Err(_) => return false,
        }
        if parser.feed(&bytes, &mut events).is_err() {
            return false;
        }
        if let Some(first) = events.first() {
            return first.name.as_deref() == Some("gap");
        }
    }
    false
}

fn cells<const N: usize>(values: [&str; N]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn read_failed(err: io::Error) -> Error {
    Error::Local(format!("cannot read stdin: {err}"))
}
