//! The `ssehub` command-line client (SPEC §3): list streams, manage
//! sources, emit, and print or follow events. It speaks plain HTTP/1.1 to
//! any ssehub server through a small blocking client of its own, and does
//! not use the server's code.
//!
//! Layout: `args` and `config` decide what to do and where; `commands` and
//! `follow` do it through `api`, which sits on `http` (sockets) over the
//! sans-I/O `response` and `sse` parsers; `json` reads payloads without
//! altering them; `output` prints.

mod api;
mod args;
mod commands;
mod config;
mod error;
mod follow;
mod forward;
mod help;
mod http;
mod json;
mod output;
mod response;
mod retry;
mod signal;
mod sse;
#[cfg(feature = "tls")]
pub(crate) mod tls;
pub(crate) mod url;

use api::Api;
use args::Command;
use error::Error;

/// The command words; any of them on the line makes it a client call.
pub const COMMANDS: &[&str] = &["list", "create", "delete", "describe", "emit", "events", "forward", "key", "help"];

/// Whether `flag` is a global option of the client followed by its value
/// (`--profile NAME`).
pub fn takes_value(flag: &str) -> bool {
    args::GLOBAL_VALUED.contains(&flag)
}

/// Runs a client command; `args` are the process arguments after the
/// binary's name. Returns the exit status.
pub fn main(args: Vec<String>) -> i32 {
    match run(&args) {
        Ok(()) => 0,
        Err(err) => {
            if !err.is_quiet() {
                output::notice(&err);
            }
            err.exit_code()
        }
    }
}

fn run(args: &[String]) -> Result<(), Error> {
    let (globals, command) = args::parse(args)?;
    let api = || config::load(&globals).map(Api::new);
    match command {
        Command::Help(topic) => output::print(help::text(topic.as_deref()).map_err(Error::Usage)?),
        Command::Version => output::print(concat!("ssehub ", env!("CARGO_PKG_VERSION"))),
        Command::ListStreams => commands::list_streams(&api()?),
        Command::ListSources => commands::list_sources(&api()?),
        Command::Create { name, verify } => commands::create(&api()?, &name, verify),
        Command::Delete { source } => commands::delete(&api()?, &source),
        Command::Describe { source } => commands::describe(&api()?, &source),
        Command::Emit { source, json, lines } => commands::emit(&api()?, &source, json, lines),
        Command::Events { source, limit, follow, envelope } => commands::events(&api()?, &source, limit, follow, envelope),
        Command::Forward { source, to, to_cacert, to_insecure, cursor, max_retries } => {
            let target = forward::target(&to, to_cacert, to_insecure)?;
            forward::run(&api()?, &source, &target, cursor.as_deref(), max_retries)
        }
        Command::Key { data_dir } => output::print(&kept_key(data_dir)?),
    }
}

/// The key a server generated, as it keeps it in `<data dir>/key`
/// (`--data-dir`, else `SSEHUB_DATA_DIR`, else the server's default).
fn kept_key(data_dir: Option<String>) -> Result<String, Error> {
    let dir = data_dir.or_else(|| std::env::var("SSEHUB_DATA_DIR").ok()).unwrap_or_else(|| "./ssehub-data".to_string());
    let path = std::path::Path::new(&dir).join("key");
    let none = |why: String| {
        Error::Local(format!("no generated key kept in {dir} ({why}); a server started there without --api-key or --keys-file keeps one"))
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(_) => Err(none(format!("{} is empty", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(none(format!("no file {}", path.display()))),
        Err(e) => Err(Error::Local(format!("{}: {e}", path.display()))),
    }
}
