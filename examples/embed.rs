//! Embeds ssehub: a server on a thread of its own, a counter emitted every
//! second from the main thread, Ctrl-C to stop.
//!
//! cargo run --example embed
//! curl -N -H 'Authorization: Bearer embed-key' localhost:8080/sources/ticks/sse

use std::time::Duration;

use ssehub::{Config, EngineKind, Server, StopSignals};

fn main() -> std::io::Result<()> {
    // Before any thread starts, so that Ctrl-C waits for `signals.wait()`.
    let signals = StopSignals::block();
    let server = Server::bind(Config { api_key: Some("embed-key".into()), engine: EngineKind::Memory, ..Config::default() })?;
    println!("serving on http://{}", server.local_addr());
    let handle = server.handle();
    let reactor = std::thread::spawn(move || server.run());

    let stopper = handle.clone();
    std::thread::spawn(move || {
        signals.wait();
        stopper.shutdown();
    });

    handle.create_source("ticks").expect("a new server has no sources");
    for n in 0u64.. {
        // Fails once the server has stopped.
        if handle.emit("ticks", &format!("{{\"n\":{n}}}")).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    reactor.join().expect("reactor thread")
}
