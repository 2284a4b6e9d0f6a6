//! ssehub: a self-hosted server for private Server-Sent Events streams of
//! event sources, built to hold very many subscribers on a small machine.
//!
//! # The loop contract
//!
//! One thread runs one [mio] reactor. Sockets are registered once,
//! edge-triggered, for both directions; readiness is kept in user space
//! (`can_read`, `can_write`), since an event flag is only a hint that a
//! direction may have changed. Every ready direction is drained until
//! `WouldBlock` (or a short read, which on a Linux TCP socket means the
//! same: later bytes raise a new edge; unless the event hinted at a FIN,
//! which raises none), or until its per-turn budget runs out, in which case the
//! connection is remembered and served on the next turn. Output is never
//! written where it is produced: an event is framed once into a shared
//! buffer, queued on every subscriber, and each connection with queued
//! output is flushed once, with one vectored write, just before the
//! reactor polls again. Connections close at the end of a turn, so a stale
//! event never reaches a reused slab key.
//!
//! # Embedding
//!
//! ```no_run
//! use ssehub::{Config, EngineKind, Server};
//!
//! let config = Config { listen: "127.0.0.1:0".parse().unwrap(), api_key: Some("secret".into()), engine: EngineKind::Memory, ..Config::default() };
//! let server = Server::bind(config).unwrap();
//! let handle = server.handle();
//! println!("listening on {}", server.local_addr());
//! let thread = std::thread::spawn(move || server.run());
//! handle.create_source("orders").unwrap();
//! let id = handle.emit("orders", r#"{"total": 12}"#).unwrap();
//! println!("emitted {id}");
//! handle.shutdown();
//! thread.join().unwrap().unwrap();
//! ```

// The `fuzzing` feature makes internal items reachable; they are documented for the crate, not the public API.
#![cfg_attr(not(feature = "fuzzing"), warn(missing_docs))]
// Every call into libc is in `sys` (each with its SAFETY note).
#![deny(unsafe_code)]

mod access;
mod api;
mod auth;
#[doc(hidden)]
pub mod base64;
mod bodies;
mod commands;
mod config;
mod conn;
mod engine;
mod handle;
mod history;
mod http;
mod hub;
mod json;
mod limits;
mod metrics;
mod notify;
mod outq;
#[cfg(feature = "tls")]
mod provider;
mod proxy;
mod reactor;
mod registry;
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod sha1;
mod sse;
mod state;
#[allow(unsafe_code)]
mod sys;
mod text;
mod throttle;
mod timer;
#[cfg(feature = "tls")]
mod tls;
mod tokens;
mod verify;

/// The `ssehub` binary's client commands. Here rather than in the binary's
/// own crate so that the generic code both instantiate (serde_json, the
/// collections, formatting) is compiled once. Not a stable API.
#[doc(hidden)]
pub mod client;

pub use commands::{Emitted, Error, SourceInfo};
pub use config::{Config, ConfigError, takes_value, usage};
pub use engine::EngineKind;
pub use handle::{Handle, Server};
pub use limits::{Limits, Rate};
pub use metrics::Stats;
pub use sys::{StopSignals, raise_fd_limit};

/// The sans-I/O parsers, re-exported for the fuzz targets under `fuzz/`
/// (feature `fuzzing`, never on by default). Not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::engine::log::record::{Bad, Record, decode as decode_record};
    pub use crate::engine::redis::resp::check as check_resp_reply;
    pub use crate::history::History;
    pub use crate::http::{BodyReader, Framing, HEAD_BYTES_MAX, Head, HttpError, parse_head, percent_decode, query_pairs, query_param};
    pub use crate::json::{DEPTH_MAX, compact};
    pub use crate::sse::{Event, EventId, frame};
    #[cfg(feature = "tls")]
    pub use crate::tls::{Received, Server as TlsServer, TlsConn, is_plain_http};

    /// Piece sizes from a seed (xorshift), as a socket splits what it
    /// reads: one in `big_one_in` up to `big` bytes, the others up to
    /// `small`.
    pub fn pieces(seed: u16, big_one_in: u64, big: usize, small: usize) -> impl Iterator<Item = usize> {
        let mut x = u64::from(seed) | 0x9e37_79b9_0000_0000;
        std::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some(match (x >> 32) % big_one_in {
                0 => 1 + (x >> 8) as usize % big,
                _ => 1 + (x >> 8) as usize % small,
            })
        })
    }
}
