//! The `ssehub` binary: with no command (or `serve`) it runs the server;
//! with a client command (`list`, `create`, `emit`, `events`, ...) it talks
//! to a running server.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use log::{error, info};
use ssehub::client;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !is_serve(&args) {
        return ExitCode::from(client::main(args).clamp(0, 255) as u8);
    }
    let flags = if args.first().map(String::as_str) == Some("serve") { &args[1..] } else { &args[..] };
    if flags.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", ssehub::usage());
        return ExitCode::SUCCESS;
    }
    if flags.iter().any(|a| a == "-V" || a == "--version") {
        println!("ssehub {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let config = match ssehub::Config::from_args(flags, |name| std::env::var(name).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ssehub: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&std::env::var("RUST_LOG").unwrap_or_default(), config.node_name.clone());
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` (default `info`, also for the targets it does not name),
/// with the access log off unless it names it (`ssehub::access=info`).
/// Lines are env_logger's, with `node=NAME` after the target when the
/// process has a name (`--node-name`, or the pid with `--reuse-port`), so
/// the logs of processes sharing a port can be told apart.
fn init_logging(rust_log: &str, node: Option<String>) {
    let mut builder = env_logger::Builder::new();
    let node = node.map(|n| format!(" node={n}")).unwrap_or_default();
    builder.format(move |buf, record| {
        writeln!(buf, "[{} {:<5} {}{node}] {}", buf.timestamp(), record.level(), record.target(), record.args())
    });
    // A level of its own in RUST_LOG replaces this one.
    builder.filter_level(log::LevelFilter::Info).parse_filters(rust_log);
    if !rust_log.split(',').any(|d| d.trim_start().starts_with("ssehub::access")) {
        builder.filter_module("ssehub::access", log::LevelFilter::Off);
    }
    builder.init();
}

/// Runs the server on this thread while another waits for signals:
/// SIGINT or SIGTERM shuts it down (with `--drain`, a second one ends the
/// drain at once), SIGHUP reloads the keys file. The process ends when
/// the server does, whether or not another signal comes.
fn serve(config: ssehub::Config) -> std::io::Result<()> {
    let signals = ssehub::StopSignals::block_with_hangup();
    ssehub::raise_fd_limit();
    let server = ssehub::Server::bind(config)?;
    let handle = server.handle();
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        loop {
            match signals.wait() {
                hup if ssehub::StopSignals::is_hangup(hup) => handle.reload_keys(),
                signal => {
                    info!("signal {signal}: shutting down");
                    handle.shutdown();
                }
            }
        }
    })?;
    server.run_without_freeing()
}

/// `ssehub`, `ssehub serve ...` and `ssehub --listen ...` serve; a line
/// whose first word is a client command is a client call. A flag's value
/// is not a word (`--source events` names a source), so the server's and
/// the client's flags that take one skip it.
fn is_serve(args: &[String]) -> bool {
    match args.first().map(String::as_str) {
        None | Some("serve") => return true,
        Some("-h" | "--help" | "-V" | "--version") => return false,
        Some(first) if !first.starts_with('-') => return false,
        _ => {}
    }
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix('-') else { return !client::COMMANDS.contains(&arg.as_str()) };
        let name = flag.trim_start_matches('-');
        if !name.contains('=') && (ssehub::takes_value(name) || client::takes_value(arg)) {
            args.next();
        }
    }
    true
}
