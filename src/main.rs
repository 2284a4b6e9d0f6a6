//! The `ssehub` binary: with no command (or `serve`) it runs the server;
//! with a client command (`list`, `create`, `emit`, `events`, ...) it talks
//! to a running server.

mod client;

use std::process::ExitCode;

use log::{error, info};

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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match ssehub::Config::from_args(flags, |name| std::env::var(name).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ssehub: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the server on a thread of its own while this one waits for
/// SIGINT or SIGTERM, then shuts it down and waits for it.
fn serve(config: ssehub::Config) -> std::io::Result<()> {
    let signals = ssehub::StopSignals::block();
    info!("open-file limit: {}", ssehub::raise_fd_limit());
    let server = ssehub::Server::bind(config)?;
    let handle = server.handle();
    let reactor = std::thread::Builder::new().name("reactor".into()).spawn(move || server.run())?;
    let signal = signals.wait();
    info!("signal {signal}: shutting down");
    handle.shutdown();
    reactor.join().unwrap_or(Ok(()))
}

/// `ssehub`, `ssehub serve ...` and `ssehub --listen ...` serve; anything
/// naming a client command is a client call.
fn is_serve(args: &[String]) -> bool {
    match args.first().map(String::as_str) {
        None | Some("serve") => true,
        Some(first) if first.starts_with('-') => {
            !args.iter().any(|a| client::COMMANDS.contains(&a.as_str())) && !matches!(first, "-h" | "--help" | "-V" | "--version")
        }
        _ => false,
    }
}
