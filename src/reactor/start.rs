//! The start-up policy: what a server is bound with (the listeners, the
//! keys — configured, from `--keys-file`, or generated and kept —, the
//! engine opened, a `--state-file` to import), and what the reactor's hub
//! holds before the first turn (recovered sources and tokens, the import,
//! `--source`), and the one start-up line.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use log::{info, warn};
use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};

use super::{FD_RESERVE, LISTEN_BACKLOG, LISTENER, METRICS_LISTENER, WAKER, Waiter};
use crate::auth::{self, AccountId, Keys};
use crate::commands::Shared;
use crate::config::Config;
use crate::engine::{self, EngineKind, Recovered, StoredSource};
use crate::hub::Hub;
use crate::metrics::Published;
use crate::state;

/// A server bound but not running; everything in it is `Send`.
pub struct Bound {
    pub(super) poll: Poll,
    pub(super) listener: TcpListener,
    pub(super) metrics_listener: Option<TcpListener>,
    pub local_addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub default_key: Option<String>,
    /// A generated key the engine is to keep for the next start.
    pub(super) key_to_keep: Option<String>,
    pub(super) keys: Keys,
    pub(super) default_account: AccountId,
    pub(super) config: Config,
    pub(super) max_connections: usize,
    pub(super) engine: engine::Opened,
    pub(super) imported: Vec<engine::StoredSource>,
    #[cfg(feature = "tls")]
    pub(super) tls: Option<crate::tls::Server>,
}

impl Bound {
    pub fn new(config: Config) -> io::Result<Bound> {
        Bound::with_engine(config, engine::Opened::open)
    }

    /// Binds with the engine `open` gives (tests bring their own).
    pub fn with_engine(
        config: Config,
        open: impl FnOnce(&engine::Settings, Arc<Waker>) -> io::Result<engine::Opened>,
    ) -> io::Result<Bound> {
        #[cfg(feature = "tls")]
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                Some(crate::tls::Server::load(cert, key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?)
            }
            _ => None,
        };
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let engine = open(&config.engine_settings(), waker.clone())?;
        let mut keys = Keys::default();
        let mut default_key = config.api_key.clone();
        let mut key_to_keep = None;
        if let Some(key) = &default_key {
            keys.add(key, auth::DEFAULT_ACCOUNT);
        }
        if let Some(path) = &config.keys_file {
            let text =
                std::fs::read_to_string(path).map_err(|e| io::Error::new(e.kind(), format!("--keys-file {}: {e}", path.display())))?;
            keys.parse_file(&text)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--keys-file {}: {e}", path.display())))?;
        }
        let kept = engine.recovered().default_key.clone();
        if keys.is_empty() {
            // The whole key is logged once, by the start that generates it;
            // later starts say where to read it.
            let key = match kept {
                Some(key) => {
                    let read_it = where_to_read(&engine, &key);
                    warn!("no API key configured; using the generated key kept in {} ({}…; {read_it})", engine.describe(), key_start(&key));
                    key
                }
                None => {
                    let key = format!("sk_{}", auth::random_base62(32));
                    if config.engine == EngineKind::Memory {
                        warn!("no API key configured; generated one for this run: {key}");
                    } else {
                        let read_it = where_to_read(&engine, &key);
                        warn!("no API key configured; generated one, kept in {} ({read_it}): {key}", engine.describe());
                    }
                    key_to_keep = Some(key.clone());
                    key
                }
            };
            keys.add(&key, auth::DEFAULT_ACCOUNT);
            default_key = Some(key);
        } else if let Some(key) = kept {
            warn!(
                "the generated key kept in {} ({}…) is not in use: --api-key or --keys-file is given; a start without them uses it again",
                engine.describe(),
                key_start(&key)
            );
        }
        // Without --api-key, `--source` and handles act on the keys file's first account.
        let default_account = if default_key.is_some() { keys.account(auth::DEFAULT_ACCOUNT) } else { 0 };
        let imported = match &config.state_file {
            Some(path) if engine.recovered().sources.is_empty() => state::load(path)?,
            Some(path) => {
                info!("--state-file {}: not imported, {} already has sources", path.display(), engine.describe());
                Vec::new()
            }
            None => Vec::new(),
        };
        let bind = || match config.reuse_port {
            true => crate::sys::listen_reuse_port(config.listen, LISTEN_BACKLOG).map(TcpListener::from_std),
            false => TcpListener::bind(config.listen),
        };
        let mut listener = bind().map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen)))?;
        let local_addr = listener.local_addr()?;
        crate::sys::set_listen_backlog(listener.as_raw_fd(), LISTEN_BACKLOG);
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let mut l = TcpListener::bind(addr)
                    .map_err(|e| io::Error::new(e.kind(), format!("--metrics-listen: cannot listen on {addr}: {e}")))?;
                poll.registry().register(&mut l, METRICS_LISTENER, Interest::READABLE)?;
                Some(l)
            }
            None => None,
        };
        let max_connections = config.max_connections.unwrap_or_else(|| crate::sys::fd_limit().saturating_sub(FD_RESERVE).max(1) as usize);
        let shared = Arc::new(Shared {
            commands: Default::default(),
            stopped: AtomicBool::new(false),
            waker,
            published: Published::default(),
            max_event_bytes: config.max_event_bytes,
        });
        Ok(Bound {
            poll,
            listener,
            metrics_listener,
            local_addr,
            shared,
            default_key,
            key_to_keep,
            keys,
            default_account,
            config,
            max_connections,
            engine,
            imported,
            #[cfg(feature = "tls")]
            tls,
        })
    }
}

/// The first characters of a key, enough to tell which it is.
fn key_start(key: &str) -> &str {
    key.get(..7).unwrap_or("")
}

/// How a person reads the generated key: its file (written now if it is
/// missing, as after an upgrade), or the engine's own place.
fn where_to_read(engine: &engine::Opened, key: &str) -> String {
    match engine.show_key(key) {
        Ok(Some(path)) => format!("`ssehub key` prints it, from {}", path.display()),
        // Redis: the key the engine keeps it under.
        Ok(None) => format!("`GET ssehub:default_key` on {} reads it", engine.describe()),
        Err(e) => {
            warn!("cannot write the generated key's file: {e}");
            "the start that generated it logged it".to_string()
        }
    }
}

/// What the start-up line says of storage.
pub(super) fn storage_line(config: &Config, engine: &engine::Opened) -> String {
    match config.engine {
        EngineKind::Memory => "engine memory".to_string(),
        EngineKind::Log => format!("engine log, data dir {}, fsync {}", engine.describe(), config.fsync.name()),
        EngineKind::Redis => format!("engine redis at {}", engine.describe()),
    }
}

/// Fills the hub before the first turn: the generated key to keep, what
/// storage recovered, a `--state-file` import, and `--source`.
#[allow(clippy::too_many_arguments)]
pub(super) fn restore(
    hub: &mut Hub<Waiter>,
    keys: &mut Keys,
    config: &Config,
    default_account: AccountId,
    recovered: Recovered,
    imported: Vec<StoredSource>,
    key_to_keep: Option<String>,
    now: u64,
) {
    if let Some(key) = key_to_keep {
        hub.keep_default_key(&key, now);
    }
    for stored in recovered.sources {
        let account = keys.account(&stored.meta.account);
        hub.restore(account, stored);
    }
    for token in recovered.tokens {
        hub.restore_token(token, now);
    }
    if let Some(path) = config.state_file.as_ref().filter(|_| !imported.is_empty()) {
        let events: usize = imported.iter().map(|s| s.events.len()).sum();
        info!("imported {} sources and {events} events from --state-file {}", imported.len(), path.display());
        for stored in imported {
            let account = keys.account(&stored.meta.account);
            hub.import(account, stored, now);
        }
    }
    for name in &config.sources {
        if hub.registry.find(default_account, name).is_some() {
            continue;
        }
        match hub.create(default_account, keys.account_name(default_account), name, None, Default::default(), now) {
            Ok((key, _)) => {
                // Found at once, as the server starts: not one turn later, when storage has it.
                hub.registry.confirm(key);
                info!("source {name} ({}) ready", hub.source(key).id)
            }
            Err(e) => warn!("--source {name}: {e}"),
        }
    }
}

/// The one start-up line (SPEC §2); the addresses are each followed by a
/// space or the end of the line.
pub(super) fn log_started(
    keys: &Keys,
    storage: &str,
    scheme: &str,
    local_addr: SocketAddr,
    metrics_listener: Option<&TcpListener>,
    max_connections: usize,
) {
    let (n_keys, accounts) = keys.counts();
    let metrics = match metrics_listener.and_then(|l| l.local_addr().ok()) {
        Some(addr) => format!(", serving /metrics on http://{addr}"),
        None => String::new(),
    };
    info!(
        "ssehub {} started: {storage}; {n_keys} {} in {accounts} {}; listening on {scheme}://{local_addr} (up to {max_connections} connections, open-file limit {}){metrics}",
        env!("CARGO_PKG_VERSION"),
        if n_keys == 1 { "key" } else { "keys" },
        if accounts == 1 { "account" } else { "accounts" },
        crate::sys::fd_limit(),
    );
}
