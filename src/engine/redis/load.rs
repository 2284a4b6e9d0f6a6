//! The load at start, over a blocking connection before the reactor runs:
//! the partition count, the partitions' newest ids (where the live reads
//! begin), then every source with its newest `--history` events. Cursors
//! first: an event that lands meanwhile is then both loaded and read live,
//! and the engine drops the second copy by its id. What it found is the
//! engine `Opened` at bind, started on the reactor thread.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use log::{info, warn};

use super::keys::KeyNames;
use super::link::Endpoint;
use super::master::Locator;
use super::records::{field, parse_id, parse_retention};
use super::resp::{self, Value};
use super::sentinel::{self, ASK_TIMEOUT};
use super::url::{Addr, RedisUrl};
use crate::engine::{Recovered, SourceMeta, StoredSource, StoredToken};
use crate::sse::EventId;
use crate::verify::Verify;

/// Connect, and each reply, within this (start fails rather than hangs).
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Connected and loaded at bind; started on the reactor thread.
pub struct Opened {
    pub locator: Locator,
    pub keys: KeyNames,
    pub history: usize,
    /// A source's bounds where its retention sets none (`--history` is
    /// `history`), and `--idempotency-keys`.
    pub bounds: crate::engine::Bounds,
    /// Ids start above this millisecond (the process's start), as the other engines'.
    pub floor_ms: u64,
    pub partitions: u32,
    pub cursors: Vec<Vec<u8>>,
    pub epoch: Vec<u8>,
    pub default_key: Option<String>,
    pub recovered: Recovered,
    /// `--redis-replicas` (set by the caller).
    pub replicas: u32,
}

impl Opened {
    pub fn describe(&self) -> String {
        self.locator.url.describe()
    }
}

/// Loads what Redis holds (blocking: before the reactor runs).
pub fn open(url: &RedisUrl, partitions: u32, history: usize, prefix: &str) -> io::Result<Opened> {
    let keys = KeyNames::new(prefix);
    let mut locator = Locator::new(url.clone())?;
    let loaded = load(&mut locator, &keys, partitions, history)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot load from Redis at {}: {e}", url.describe())))?;
    if loaded.partitions != partitions {
        warn!("--redis-partitions {partitions}: Redis already has {} partitions; using those", loaded.partitions);
    }
    let events: usize = loaded.recovered.sources.iter().map(|s| s.events.len()).sum();
    info!("loaded {} sources and {events} events from Redis at {}", loaded.recovered.sources.len(), url.describe());
    Ok(Opened {
        locator,
        keys,
        history,
        bounds: crate::engine::Bounds::count(history),
        floor_ms: 0,
        partitions: loaded.partitions,
        cursors: loaded.cursors,
        epoch: loaded.epoch,
        default_key: loaded.recovered.default_key.clone(),
        recovered: loaded.recovered,
        replicas: 0,
    })
}

/// What Redis holds, as read.
struct Loaded {
    pub recovered: Recovered,
    pub partitions: u32,
    /// Per partition: the id the live read starts after.
    pub cursors: Vec<Vec<u8>>,
    /// Redis's data generation (set by the first node).
    pub epoch: Vec<u8>,
}

/// A plain enum, not `Box<dyn Read + Write>`: a trait object's vtable
/// brings every provided method of both traits into the binary.
enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Sock {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.write_all(b),
            Sock::Unix(s) => s.write_all(b),
            #[cfg(feature = "tls")]
            Sock::Tls(s) => s.write_all(b),
        }
    }

    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(b),
            Sock::Unix(s) => s.read(b),
            #[cfg(feature = "tls")]
            Sock::Tls(s) => s.read(b),
        }
    }
}

pub struct Blocking {
    sock: Sock,
    inbuf: Vec<u8>,
}

impl Blocking {
    /// Connects where `url` says (the master, for a Sentinel URL).
    #[cfg(test)]
    pub fn open(url: &RedisUrl) -> io::Result<Blocking> {
        let mut locator = Locator::new(url.clone())?;
        Blocking::connect(&locate(&mut locator)?, LOAD_TIMEOUT)
    }

    pub fn connect(at: &Endpoint, patience: Duration) -> io::Result<Blocking> {
        let sock = match &at.addr {
            Addr::Tcp(addr, _name) => {
                let s = TcpStream::connect_timeout(addr, patience)?;
                s.set_read_timeout(Some(patience))?;
                s.set_write_timeout(Some(patience))?;
                let _ = s.set_nodelay(true);
                #[cfg(feature = "tls")]
                if let Some(tls) = &at.tls {
                    Sock::Tls(Box::new(tls.blocking(s, _name)?))
                } else {
                    Sock::Tcp(s)
                }
                #[cfg(not(feature = "tls"))]
                Sock::Tcp(s)
            }
            Addr::Unix(path) => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(LOAD_TIMEOUT))?;
                s.set_write_timeout(Some(LOAD_TIMEOUT))?;
                Sock::Unix(s)
            }
        };
        let mut b = Blocking { sock, inbuf: Vec::new() };
        for command in &at.setup {
            b.call(&[command.iter().map(Vec::as_slice).collect()])?;
        }
        if at.role {
            let role = b.call(&[vec![b"ROLE"]]).ok();
            let role = role.as_ref().and_then(|r| r[0].as_array()).and_then(|r| r.first()).and_then(Value::as_bytes);
            if let Some(role) = role.filter(|r| *r != b"master") {
                return Err(io::Error::other(format!("not the master (its ROLE is {})", String::from_utf8_lossy(role))));
            }
        }
        Ok(b)
    }

    /// Sends the commands in one write, returns their replies in order;
    /// an error reply is an error.
    pub fn call(&mut self, commands: &[Vec<&[u8]>]) -> io::Result<Vec<Value>> {
        let mut out = Vec::new();
        for c in commands {
            resp::command(&mut out, c);
        }
        self.sock.write_all(&out)?;
        let mut replies = Vec::with_capacity(commands.len());
        let mut used = 0;
        while replies.len() < commands.len() {
            match resp::parse(&self.inbuf[used..]).map_err(|e| io::Error::other(e.to_string()))? {
                Some((Value::Error(e), _)) => return Err(io::Error::other(format!("Redis: {}", String::from_utf8_lossy(&e)))),
                Some((v, n)) => {
                    used += n;
                    replies.push(v);
                }
                None => {
                    let mut chunk = [0u8; 64 * 1024];
                    let n = self.sock.read(&mut chunk)?;
                    if n == 0 {
                        return Err(io::Error::other("Redis closed the connection"));
                    }
                    self.inbuf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        self.inbuf.drain(..used);
        Ok(replies)
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::other(format!("unexpected reply from Redis to {what}"))
}

/// Where the master is now: for a Sentinel URL, the Sentinels asked in
/// turn (blocking, each within `ASK_TIMEOUT`); the first that answers goes first.
fn locate(locator: &mut Locator) -> io::Result<Endpoint> {
    if let Some(sentinels) = &mut locator.sentinels {
        let mut why = Vec::new();
        for n in 0..sentinels.count() {
            let asked = sentinels.endpoint(n).and_then(|at| Blocking::connect(&at, ASK_TIMEOUT)).and_then(|mut b| {
                let question: Vec<&[u8]> = sentinels.question().to_vec();
                let reply = b.call(&[question])?;
                sentinel::address(&reply[0]).ok_or_else(|| io::Error::other("it does not know the master"))
            });
            match asked {
                Ok(addr) => {
                    sentinels.answered(n, addr);
                    break;
                }
                Err(e) => why.push(format!("Sentinel {}: {e}", n + 1)),
            }
        }
        if sentinels.found.is_none() {
            return Err(io::Error::other(format!("no Sentinel answered ({})", why.join("; "))));
        }
    }
    locator.endpoint_now()?.ok_or_else(|| io::Error::other("no master found"))
}

fn load(locator: &mut Locator, keys: &KeyNames, partitions: u32, history: usize) -> io::Result<Loaded> {
    let mut b = Blocking::connect(&locate(locator)?, LOAD_TIMEOUT)?;
    let wanted = partitions.to_string();
    let fresh = crate::auth::random_base62(16);
    let r = b.call(&[
        vec![b"SET", keys.partitions.as_bytes(), wanted.as_bytes(), b"NX"],
        vec![b"GET", keys.partitions.as_bytes()],
        vec![b"GET", keys.default_key.as_bytes()],
        vec![b"SET", keys.epoch.as_bytes(), fresh.as_bytes(), b"NX"],
        vec![b"GET", keys.epoch.as_bytes()],
    ])?;
    let epoch = r[4].as_bytes().ok_or_else(|| bad("GET epoch"))?.to_vec();
    let partitions: u32 = r[1].as_int().filter(|&n| n > 0 && n <= 1024).ok_or_else(|| bad("GET partitions"))? as u32;
    let default_key = r[2].as_bytes().map(|k| String::from_utf8_lossy(k).into_owned());
    let names: Vec<String> = (0..partitions).map(|p| keys.partition(p)).collect();
    let commands: Vec<Vec<&[u8]>> = names.iter().map(|n| vec![&b"XREVRANGE"[..], n.as_bytes(), b"+", b"-", b"COUNT", b"1"]).collect();
    let cursors = b
        .call(&commands)?
        .iter()
        .map(|v| match v.as_array().and_then(|a| a.first()).and_then(|e| e.as_array()).and_then(|e| e.first()) {
            Some(id) => id.as_bytes().map(<[u8]>::to_vec).ok_or_else(|| bad("XREVRANGE")),
            None => Ok(b"0-0".to_vec()),
        })
        .collect::<io::Result<Vec<_>>>()?;
    let members = b.call(&[vec![b"SMEMBERS", keys.sources.as_bytes()]])?;
    let ids: Vec<String> =
        members[0].as_array().unwrap_or(&[]).iter().filter_map(|v| v.as_bytes()).map(|b| String::from_utf8_lossy(b).into_owned()).collect();
    // The history streams keep one more than --history: the newest evicted.
    let count = (history + 1).to_string();
    let mut sources = Vec::with_capacity(ids.len());
    let mut tokens = Vec::new();
    // In batches: one round trip per 256 sources.
    for batch in ids.chunks(256) {
        let hashes: Vec<String> = batch.iter().map(|id| keys.source(id)).collect();
        let streams: Vec<String> = batch.iter().map(|id| keys.history(id)).collect();
        let mut commands: Vec<Vec<&[u8]>> = Vec::new();
        for (h, s) in hashes.iter().zip(&streams) {
            commands.push(vec![b"HGETALL", h.as_bytes()]);
            commands.push(vec![b"XREVRANGE", s.as_bytes(), b"+", b"-", b"COUNT", count.as_bytes()]);
        }
        let mut replies = b.call(&commands)?;
        for (n, id) in batch.iter().enumerate() {
            // A source that keeps more than --history: its history read again, as long as it keeps.
            let keep = field(replies[2 * n].as_array().unwrap_or(&[]), "ret")
                .map_or(history, |r| parse_retention(r).max_events.map_or(history, |m| m as usize));
            if keep > history {
                let (stream, count) = (keys.history(id), (keep + 1).to_string());
                let more = b.call(&[vec![b"XREVRANGE", stream.as_bytes(), b"+", b"-", b"COUNT", count.as_bytes()]])?;
                if let Some(more) = more.into_iter().next() {
                    replies[2 * n + 1] = more;
                }
            }
            if let Some(s) = stored(id, &replies[2 * n], &replies[2 * n + 1], keep) {
                tokens.extend(stored_tokens(id, &replies[2 * n]));
                sources.push(s);
            }
        }
    }
    Ok(Loaded { recovered: Recovered { sources, default_key, tokens }, partitions, cursors, epoch })
}

/// A source's subscribe tokens: its hash's `tok:<token>` fields (expired
/// ones are left out by the hub).
fn stored_tokens<'a>(id: &'a str, hash: &'a Value) -> impl Iterator<Item = StoredToken> + 'a {
    hash.as_array().unwrap_or(&[]).chunks(2).filter_map(move |pair| {
        let token = pair.first()?.as_bytes()?.strip_prefix(b"tok:")?;
        let expires_at = std::str::from_utf8(pair.get(1)?.as_bytes()?).ok()?.parse().ok()?;
        Some(StoredToken { token: String::from_utf8(token.to_vec()).ok()?, source_id: id.to_string(), expires_at })
    })
}

/// A source from its hash and its history (newest first); `None` if the
/// hash is gone (deleted between the two reads).
fn stored(id: &str, hash: &Value, history: &Value, keep: usize) -> Option<StoredSource> {
    let h = hash.as_array()?;
    let get = |name: &str| field(h, name).map(|v| String::from_utf8_lossy(v).into_owned());
    let meta = SourceMeta {
        retention: field(h, "ret").map(parse_retention).unwrap_or_default(),
        id: id.to_string(),
        account: get("account")?,
        name: get("name")?,
        endpoint_key: get("endpoint")?,
        created_at: get("created")?.parse().ok()?,
        verify: field(h, "verify").and_then(Verify::from_stored),
    };
    let mut events: Vec<(EventId, Vec<u8>)> = history
        .as_array()
        .unwrap_or(&[])
        .iter()
        .filter_map(|e| {
            let e = e.as_array()?;
            let id = parse_id(e.first()?.as_bytes()?)?;
            let payload = field(e.get(1)?.as_array()?, "p")?.to_vec();
            Some((id, payload))
        })
        .collect();
    // Newest first: past `keep`, the one more is the newest evicted.
    let beyond = (events.len() > keep).then(|| events.pop().map(|e| e.0)).flatten();
    events.reverse();
    let last = get("last").and_then(|l| l.parse().ok());
    let last_id = last.max(events.last().map(|e| e.0)).max(beyond);
    let evicted = get("evicted").and_then(|l| l.parse().ok()).max(beyond);
    // What a bound evicted may still be in the stream (`~` trims whole nodes).
    events.retain(|e| Some(e.0) > evicted);
    Some(StoredSource { meta, events, last_id, evicted, keys: Vec::new() })
}
