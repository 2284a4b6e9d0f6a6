//! The handles' commands (`Handle`: create, delete, emit, stop, reload),
//! run when the waker wakes the loop; a SIGHUP's reload of `--keys-file`
//! (streams of keys no longer there end).

use log::{info, warn};

use super::{Reactor, Waiter};
use crate::commands::{Command, Emitted, Error, SourceInfo};
use crate::engine::{self, Ack, StorageError};
use crate::hub::Repeat;
use crate::registry::CreateError;
use crate::tokens::Opener;

impl Reactor {
    /// Runs queued handle commands; true when asked to stop.
    pub(super) fn run_commands(&mut self) -> bool {
        let account = self.default_account;
        let now = self.unix_now;
        for command in self.shared.take_commands() {
            match command {
                Command::Shutdown if self.on_shutdown() => return true,
                Command::Shutdown => {}
                Command::ReloadKeys => {
                    self.reload_keys();
                    #[cfg(feature = "tls")]
                    self.reload_tls();
                }
                Command::Create { name, reply } => {
                    match self.hub.create(account, self.keys.account_name(account), &name, None, Default::default(), now) {
                        Ok((key, ticket)) => {
                            let s = self.hub.source(key);
                            let info =
                                SourceInfo { id: s.id.clone(), name: s.name.clone(), endpoint_path: format!("/e/{}", s.endpoint_key) };
                            let waiter = Waiter::Handle(Box::new(move |result| {
                                let _ = reply.send(result.map(|_| info).map_err(|e| match e {
                                    engine::StorageError::Conflict => Error::NameTaken,
                                    _ => Error::Unavailable,
                                }));
                            }));
                            self.hub.wait(ticket, waiter);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(match e {
                                CreateError::BadName => Error::BadName,
                                CreateError::Taken => Error::NameTaken,
                            }));
                        }
                    }
                }
                Command::Delete { source, reply } => match self.hub.registry.find(account, &source) {
                    Some(key) => {
                        let ticket = self.hub.delete(key, now);
                        let waiter = Waiter::Handle(Box::new(move |result| {
                            let _ = reply.send(result.map(|_| ()).map_err(|_| Error::Unavailable));
                        }));
                        self.hub.wait(ticket, waiter);
                    }
                    None => {
                        let _ = reply.send(Err(Error::NotFound));
                    }
                },
                Command::Emit { source, payload, idem, reply } => match self.hub.registry.find(account, &source) {
                    Some(key) => {
                        let ticket = match idem {
                            None => self.hub.emit(key, &payload, now),
                            Some(idem) => match self.hub.emit_idempotent(key, &payload, idem, now) {
                                Ok(ticket) => ticket,
                                Err(repeat) => {
                                    let _ = reply.send(match repeat {
                                        Repeat::Replayed(id) => Ok(Emitted { id: id.to_string(), replayed: true }),
                                        Repeat::OtherBody => Err(Error::IdempotencyKeyReused),
                                        Repeat::InFlight => Err(Error::IdempotencyKeyInFlight),
                                    });
                                    continue;
                                }
                            },
                        };
                        let waiter = Waiter::Handle(Box::new(move |result| {
                            let _ = reply.send(match result {
                                Ok(Ack::Appended(id)) => Ok(Emitted { id: id.to_string(), replayed: false }),
                                Ok(Ack::Stored) => Err(Error::NotFound),
                                Ok(Ack::Replayed(id)) => Ok(Emitted { id: id.to_string(), replayed: true }),
                                Err(StorageError::KeyReused) => Err(Error::IdempotencyKeyReused),
                                Err(_) => Err(Error::Unavailable),
                            });
                        }));
                        self.hub.wait(ticket, waiter);
                    }
                    None => {
                        let _ = reply.send(Err(Error::NotFound));
                    }
                },
            }
            self.settle();
        }
        false
    }

    /// SIGHUP: the keys file read again; streams of keys no longer there
    /// (or now naming another account) end after what is queued.
    pub(super) fn reload_keys(&mut self) {
        self.notify.send_number("RELOADING=1\nMONOTONIC_USEC=", crate::sys::monotonic_micros(), "");
        self.reload_keys_file();
        self.notify.send_number("READY=1\nSTATUS=", self.stats.subscribers, " streams");
    }

    pub(super) fn reload_keys_file(&mut self) {
        let Some(path) = self.config.keys_file.clone() else {
            return info!("SIGHUP: no --keys-file to reload; keys unchanged");
        };
        let keys = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| self.keys.reloaded(self.default_key.as_deref(), &text).map_err(|e| e.to_string()));
        let keys = match keys {
            Ok(keys) => keys,
            Err(e) => return warn!("SIGHUP: --keys-file {}: {e}; keeping the keys in use", path.display()),
        };
        let mut ended = 0;
        for key in 0..self.conns.capacity() {
            let Some(conn) = self.conns.get(key).filter(|c| c.closing.is_none() && c.is_stream()) else { continue };
            match conn.opener {
                Opener::Key(id) if !keys.has(id) => {}
                _ => continue,
            }
            self.unsubscribe(key);
            ended += 1;
        }
        let (n_keys, accounts) = keys.counts();
        self.keys = keys;
        info!(
            "SIGHUP: reloaded --keys-file {}: {n_keys} keys in {accounts} accounts; {ended} streams of removed keys ended",
            path.display()
        );
    }
}
