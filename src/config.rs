//! Server configuration: `Config` with its defaults, and how flags and
//! `SSEHUB_*` environment variables fill it (a flag wins over its variable).

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::EngineKind;
pub use crate::engine::log::Fsync;
pub use crate::engine::redis::RedisUrl;
use crate::limits::{self, Limits};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_HANDSHAKE_INTERVAL: Duration = Duration::from_secs(15);
pub const DEFAULT_HISTORY: usize = 100;
pub const DEFAULT_MAX_EVENT_BYTES: usize = 512 * 1024;
pub const DEFAULT_DATA_DIR: &str = "./ssehub-data";
pub const DEFAULT_MAX_SUBSCRIBER_BUFFER: usize = 1024 * 1024;
pub const DEFAULT_MAX_BODY_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;

/// Everything a server needs to start. `Default` serves a laptop with no
/// set-up: loopback port 8080 and a generated key.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind; port 0 picks a free one (see `Server::local_addr`).
    pub listen: SocketAddr,
    /// Key of the default account; if no key is configured at all, one is
    /// generated and logged once at start.
    pub api_key: Option<String>,
    /// A file of `KEY ACCOUNT` lines: more accounts.
    pub keys_file: Option<PathBuf>,
    /// Sources created in the default account at start.
    pub sources: Vec<String>,
    /// Period of the `:sse-handshake` comment on every stream.
    pub handshake_interval: Duration,
    /// Events kept per source for replay and `event_summaries`.
    pub history: usize,
    /// A source's default age bound (`--history-max-age`); `None`: none.
    pub history_max_age: Option<Duration>,
    /// A source's default bound of retained envelope bytes; `None`: none.
    pub history_max_bytes: Option<u64>,
    /// Idempotency keys remembered per source at most (`--idempotency-keys`).
    pub idempotency_keys: usize,
    /// Largest emit or webhook body; above it: 413.
    pub max_event_bytes: usize,
    /// Unsent bytes one subscriber may have queued before it is dropped.
    pub max_subscriber_buffer: usize,
    /// Open connections beyond which new ones are refused; `None`: from
    /// `RLIMIT_NOFILE`.
    pub max_connections: Option<usize>,
    /// Base of the URLs the API returns; `None`: from the request's Host.
    pub public_url: Option<String>,
    /// Where sources and their retained events are kept across a clean
    /// restart; `None`: memory only.
    pub state_file: Option<PathBuf>,
    /// Where sources and history live.
    pub engine: EngineKind,
    /// The `log` engine's directory.
    pub data_dir: PathBuf,
    /// When the `log` engine syncs what it wrote.
    pub fsync: Fsync,
    /// Start even if the log is damaged before its tail, cutting it there.
    pub repair: bool,
    /// Origins a browser page may call `/v1` from (`*` for any); empty: none.
    pub cors_origins: Vec<String>,
    /// A second listener that serves `/metrics` (which the main one then does not).
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain: the main listener speaks TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (both or neither).
    pub tls_key: Option<PathBuf>,
    /// Request bodies being read, summed over all connections, beyond which
    /// a new body is refused with 503 (a chunked body counts as `max_event_bytes`).
    pub max_body_bytes_in_flight: usize,
    /// The `redis` engine's server (`--redis`).
    pub redis: Option<RedisUrl>,
    /// Live partition streams in Redis (`--redis-partitions`).
    pub redis_partitions: u32,
    /// PEM roots trusted for a `rediss://` URL besides the system's (`--redis-cacert`).
    pub redis_cacert: Option<PathBuf>,
    /// Replicas that must have a change before it is acknowledged (`--redis-replicas`).
    pub redis_replicas: u32,
    /// `SO_REUSEPORT` on the listener: several processes share one port.
    pub reuse_port: bool,
    /// Names this process in every log line (`--node-name`); the binary
    /// defaults it to the pid with `--reuse-port`.
    pub node_name: Option<String>,
    /// Reverse proxies (addresses or CIDRs) whose `X-Forwarded-For` names
    /// the client in the access log (`--trusted-proxy`).
    pub trusted_proxies: Vec<String>,
    /// On `Handle::shutdown` (the binary: SIGTERM
    /// or SIGINT), end open streams spread evenly over this long, each after
    /// a `retry:` of 1 to 5 s, rather than all at once; zero: at once.
    pub drain: Duration,
    /// A `retry:` line (milliseconds, random per stream in this range) right
    /// after every new stream's first comment (`--client-retry`).
    pub client_retry: Option<RangeInclusive<u32>>,
    /// Tenant limits of every account (`--max-sources-per-account`,
    /// `--emit-rate` and the others); a keys file may set them per account.
    pub limits: Limits,
}

impl Config {
    /// A source's bounds when its retention sets none.
    pub(crate) fn retention_bounds(&self) -> crate::engine::Bounds {
        crate::engine::Bounds {
            max_events: self.history,
            max_age_ms: self.history_max_age.map(|d| d.as_millis() as u64),
            max_bytes: self.history_max_bytes,
            max_keys: self.idempotency_keys,
        }
    }

    /// The part of the configuration storage is opened with.
    pub(crate) fn engine_settings(&self) -> crate::engine::Settings {
        crate::engine::Settings {
            kind: self.engine,
            bounds: self.retention_bounds(),
            data_dir: self.data_dir.clone(),
            fsync: self.fsync,
            repair: self.repair,
            redis: self.redis.clone().map(|mut url| {
                if let Some(tls) = &mut url.tls {
                    tls.cacert = self.redis_cacert.clone();
                }
                url
            }),
            redis_partitions: self.redis_partitions,
            redis_replicas: self.redis_replicas,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            api_key: None,
            keys_file: None,
            sources: Vec::new(),
            handshake_interval: DEFAULT_HANDSHAKE_INTERVAL,
            history: DEFAULT_HISTORY,
            history_max_age: None,
            history_max_bytes: None,
            idempotency_keys: crate::engine::DEFAULT_IDEMPOTENCY_KEYS,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_subscriber_buffer: DEFAULT_MAX_SUBSCRIBER_BUFFER,
            max_connections: None,
            public_url: None,
            state_file: None,
            engine: EngineKind::default(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            fsync: Fsync::default(),
            repair: false,
            cors_origins: Vec::new(),
            metrics_listen: None,
            tls_cert: None,
            tls_key: None,
            max_body_bytes_in_flight: DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
            redis: None,
            redis_partitions: crate::engine::redis::DEFAULT_PARTITIONS,
            redis_replicas: 0,
            redis_cacert: None,
            reuse_port: false,
            node_name: None,
            trusted_proxies: Vec::new(),
            drain: Duration::ZERO,
            client_retry: None,
            limits: Limits::default(),
        }
    }
}

/// A flag or variable that could not be used; `Display` is the one line
/// the binary prints before exiting 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The flags of `ssehub serve`, each also read from `SSEHUB_<FLAG>`: name,
/// the placeholder of its value (empty for a switch), help.
const FLAGS: &[(&str, &str, &str)] = &[
    ("listen", "ADDR", "address to bind [default: 127.0.0.1:8080]"),
    ("api-key", "KEY", "key of the default account [default: generated and logged]"),
    ("keys-file", "FILE", "file of `KEY ACCOUNT` lines: more accounts"),
    ("source", "NAME", "create this source in the default account at start (repeatable)"),
    ("handshake-interval", "DURATION", "period of the :sse-handshake comment [default: 15s]"),
    ("history", "N", "events kept per source [default: 100]"),
    ("history-max-age", "DURATION", "a source's events are evicted this long after their emit, e.g. 7d, 12h, 30s [default: never]"),
    ("history-max-bytes", "BYTES", "envelope bytes kept per source, 1024 to 2147483648 [default: no bound]"),
    ("idempotency-keys", "N", "Idempotency-Key values remembered per source (24 h), 1 to 1000000 [default: 10000]"),
    ("max-event-bytes", "BYTES", "largest emit or webhook body [default: 524288]"),
    ("max-subscriber-buffer", "BYTES", "bytes queued for one subscriber before it is dropped [default: 1048576]"),
    ("max-connections", "N", "open connections beyond which new ones are refused [default: from RLIMIT_NOFILE]"),
    ("public-url", "URL", "base of the URLs the API returns [default: from the request's Host]"),
    ("state-file", "FILE", "import sources and retained events from this file of an earlier version"),
    ("engine", "ENGINE", "where sources and history live: log, memory or redis [default: log; redis with --redis]"),
    ("data-dir", "DIR", "the log engine's directory [default: ./ssehub-data]"),
    ("fsync", "MODE", "when the log is synced: always, everysec or never [default: everysec]"),
    ("cors-origin", "ORIGINS", "origins allowed to call /v1 from a browser: * or a comma list [default: none]"),
    ("metrics-listen", "ADDR", "serve /metrics on this address instead of the main one [default: none]"),
    ("tls-cert", "FILE", "PEM certificate chain: the main listener speaks HTTPS (with --tls-key; SIGHUP reloads both)"),
    ("tls-key", "FILE", "PEM private key (PKCS#8, SEC1 or PKCS#1) of --tls-cert"),
    ("max-body-bytes-in-flight", "BYTES", "request body bytes read at once over all connections; beyond: 503 [default: 67108864]"),
    ("repair", "", "start even if the log is damaged before its tail, cutting it at the last good record (--repair or --repair=true)"),
    ("redis", "URL", "redis[s]://[user:pass@]host:port[/db], redis[s]-sentinel://host:port,…#MASTER or unix:///path: the redis engine"),
    ("redis-cacert", "FILE", "PEM CA certificates trusted for rediss:// besides the system's"),
    ("redis-partitions", "N", "live partition streams in Redis; the first node's count wins [default: 16]"),
    ("redis-replicas", "N", "acknowledge a change once N replicas have it (WAIT N 1000); fewer: 503 [default: 0]"),
    ("reuse-port", "", "SO_REUSEPORT: several processes listen on one port (--reuse-port or --reuse-port=true)"),
    ("trusted-proxy", "ADDRS", "proxies (IPs or CIDRs, comma list) whose X-Forwarded-For names the client in the access log"),
    ("node-name", "NAME", "name of this process in every log line [default: the pid with --reuse-port, else none]"),
    ("drain", "DURATION", "on SIGTERM, end streams spread over this long, each after a retry: [default: 0s]"),
    ("client-retry", "MS", "retry: on every new stream, MS or random in MIN-MAX [default: none]"),
    ("max-sources-per-account", "N", "sources one account may hold; beyond: 403 (none: no limit) [default: 10000]"),
    ("max-tokens-per-source", "N", "live subscribe tokens of one source; beyond: 403 (none: no limit) [default: 1000]"),
    ("max-streams-per-account", "N", "open streams of one account's sources; beyond: 429 [default: none]"),
    ("emit-rate", "R[:BURST]", "events per second one source may emit (API and webhooks); beyond: 429 [default: none]"),
    ("account-emit-rate", "R[:BURST]", "events per second one account's sources may emit together; beyond: 429 [default: none]"),
];

/// Whether `--name` is a server flag followed by its value (`--listen
/// ADDR`), so that the value is never mistaken for a command word.
pub fn takes_value(name: &str) -> bool {
    FLAGS.iter().any(|(n, placeholder, _)| *n == name && !placeholder.is_empty())
}

/// The help text of `ssehub serve`.
pub fn usage() -> String {
    let mut s = String::from(
        "Usage: ssehub [serve] [FLAGS]\n\nRuns the ssehub server. Every flag can also be set as SSEHUB_<FLAG>\n\
         (upper case, - as _); the flag wins. Logging: RUST_LOG (default info;\n\
         the access log with RUST_LOG=ssehub::access=info). SIGHUP reloads --keys-file\n\
         and the --tls-cert pair; a second SIGTERM or SIGINT ends a --drain at once.\n\nFlags:\n",
    );
    for (name, placeholder, help) in FLAGS {
        let flag = format!("--{name} {placeholder}");
        s.push_str(&format!("  {flag:<36}{help}\n"));
    }
    s.push_str(&format!("  {:<36}print this help\n", "-h, --help"));
    s.push_str(&format!("  {:<36}print the version\n", "-V, --version"));
    s
}

impl Config {
    /// Builds a config from `--flag value` / `--flag=value` arguments and
    /// `env` (a lookup of `SSEHUB_*` variables).
    pub fn from_args(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut given: Vec<(&str, String)> = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(ConfigError(format!("unexpected argument `{arg}` (see ssehub --help)")));
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let Some(&(name, _, _)) = FLAGS.iter().find(|(n, _, _)| *n == name) else {
                return Err(ConfigError(format!("unknown flag `--{name}` (see ssehub --help)")));
            };
            let value = match inline {
                Some(v) => v,
                None if !takes_value(name) => String::new(),
                None => it.next().cloned().ok_or_else(|| ConfigError(format!("--{name} needs a value")))?,
            };
            given.push((name, value));
        }
        let mut config = Config::default();
        for &(name, _, _) in FLAGS {
            let from_flags: Vec<String> = given.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.clone()).collect();
            let values = if from_flags.is_empty() {
                let var = format!("SSEHUB_{}", name.to_uppercase().replace('-', "_"));
                match env(&var) {
                    // A variable for a repeatable flag lists values split by commas.
                    Some(v) if name == "source" => v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
                    Some(v) => vec![v],
                    None => continue,
                }
            } else {
                from_flags
            };
            config.set(name, values)?;
        }
        let engine_given = given.iter().any(|(n, _)| *n == "engine") || env("SSEHUB_ENGINE").is_some();
        if config.redis.is_some() && !engine_given {
            config.engine = EngineKind::Redis;
        }
        if config.reuse_port && config.node_name.is_none() {
            config.node_name = Some(std::process::id().to_string());
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            return Err(ConfigError("--tls-cert and --tls-key go together".into()));
        }
        if config.redis_cacert.is_some() && config.redis.as_ref().is_none_or(|u| u.tls.is_none()) {
            return Err(ConfigError("--redis-cacert needs a rediss:// or rediss-sentinel:// URL".into()));
        }
        if config.engine == EngineKind::Redis && config.redis.is_none() {
            return Err(ConfigError("--engine redis needs --redis URL".into()));
        }
        Ok(config)
    }

    fn set(&mut self, name: &str, mut values: Vec<String>) -> Result<(), ConfigError> {
        let bad = |why: &str| ConfigError(format!("--{name}: {why}"));
        if name == "source" {
            self.sources = values;
            return Ok(());
        }
        let v = values.pop().unwrap_or_default();
        match name {
            "listen" => self.listen = v.parse().map_err(|_| bad("expected an address such as 127.0.0.1:8080"))?,
            "api-key" if v.is_empty() => return Err(bad("the key is empty (give one, or leave --api-key out to have one generated)")),
            "api-key" if v.chars().any(char::is_whitespace) => return Err(bad("a key cannot contain spaces")),
            "api-key" => self.api_key = Some(v),
            "keys-file" => self.keys_file = Some(v.into()),
            // One call of the parser for both: it is inlined.
            "handshake-interval" | "drain" => {
                let duration = parse_duration(&v).ok_or_else(|| bad("expected a duration such as 15s or 500ms"))?;
                if name == "drain" {
                    self.drain = duration;
                } else if duration < Duration::from_millis(10) {
                    return Err(bad("must be at least 10ms"));
                } else {
                    self.handshake_interval = duration;
                }
            }
            "history" => self.history = v.parse().map_err(|_| bad("expected a count"))?,
            "history-max-age" => {
                let d = parse_duration(&v).filter(|d| d.as_millis() % 1000 == 0);
                let s = d.map(|d| d.as_secs()).filter(|s| crate::engine::Retention::MAX_AGE_S.contains(s));
                let s = s.ok_or_else(|| bad("expected a duration of whole seconds from 1s to 365d, such as 7d, 12h or 30s"))?;
                self.history_max_age = Some(Duration::from_secs(s));
            }
            "idempotency-keys" => {
                self.idempotency_keys =
                    parse_positive(&v).filter(|&n| n <= 1_000_000).ok_or_else(|| bad("expected a count from 1 to 1000000"))?
            }
            "history-max-bytes" => {
                let n = v.parse().ok().filter(|n| crate::engine::Retention::MAX_BYTES.contains(n));
                self.history_max_bytes = Some(n.ok_or_else(|| bad("expected a byte count from 1024 to 2147483648"))?);
            }
            "max-event-bytes" => self.max_event_bytes = parse_positive(&v).ok_or_else(|| bad("expected a byte count"))?,
            "max-subscriber-buffer" => self.max_subscriber_buffer = parse_positive(&v).ok_or_else(|| bad("expected a byte count"))?,
            "max-connections" => self.max_connections = Some(parse_positive(&v).ok_or_else(|| bad("expected a count"))?),
            "public-url" if !valid_public_url(&v) => {
                return Err(bad("expected an http:// or https:// URL such as https://hooks.example.com"));
            }
            "public-url" => self.public_url = Some(v.trim_end_matches('/').to_string()),
            "state-file" => self.state_file = Some(v.into()),
            "engine" => self.engine = EngineKind::parse(&v).ok_or_else(|| bad("expected log, memory or redis"))?,
            "redis" => self.redis = Some(RedisUrl::parse(&v).map_err(|e| bad(&e))?),
            "redis-cacert" => self.redis_cacert = Some(v.into()),
            "redis-replicas" => {
                self.redis_replicas = v.parse().ok().filter(|&n| n <= 16).ok_or_else(|| bad("expected a count from 0 to 16"))?
            }
            "redis-partitions" => {
                self.redis_partitions =
                    parse_positive(&v).filter(|&n| n <= 1024).ok_or_else(|| bad("expected a count from 1 to 1024"))? as u32
            }
            "reuse-port" => self.reuse_port = parse_bool(&v).ok_or_else(|| bad("expected true or false"))?,
            "data-dir" => self.data_dir = v.into(),
            "node-name" if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(bad("expected 1 to 64 visible characters, no spaces"));
            }
            "node-name" => self.node_name = Some(v),
            "trusted-proxy" => {
                self.trusted_proxies = v.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
                if self.trusted_proxies.iter().any(|p| crate::proxy::Cidr::parse(p).is_none()) {
                    return Err(bad("expected a comma list of addresses or networks such as 127.0.0.1,10.0.0.0/8"));
                }
            }
            "cors-origin" => {
                self.cors_origins = v.split(',').map(|o| o.trim().trim_end_matches('/').to_string()).filter(|o| !o.is_empty()).collect();
                // An origin is a scheme and a host (and port), no path.
                if self.cors_origins.iter().any(|o| o != "*" && (!valid_public_url(o) || o.splitn(4, '/').nth(3).is_some())) {
                    return Err(bad("expected * or a comma list of origins such as https://app.example.com"));
                }
            }
            "tls-cert" | "tls-key" if !cfg!(feature = "tls") => {
                return Err(bad("this ssehub is built without TLS (the `tls` feature)"));
            }
            "tls-cert" => self.tls_cert = Some(v.into()),
            "tls-key" => self.tls_key = Some(v.into()),
            "metrics-listen" => self.metrics_listen = Some(v.parse().map_err(|_| bad("expected an address such as 127.0.0.1:9090"))?),
            "max-body-bytes-in-flight" => self.max_body_bytes_in_flight = parse_positive(&v).ok_or_else(|| bad("expected a byte count"))?,
            "fsync" => self.fsync = Fsync::parse(&v).ok_or_else(|| bad("expected always, everysec or never"))?,
            "max-sources-per-account" => self.limits.sources = limits::parse_count(&v).map_err(bad)?,
            "max-tokens-per-source" => self.limits.tokens = limits::parse_count(&v).map_err(bad)?,
            "max-streams-per-account" => self.limits.streams = limits::parse_count(&v).map_err(bad)?,
            "emit-rate" => self.limits.emit_rate = limits::parse_rate(&v).map_err(bad)?,
            "account-emit-rate" => self.limits.account_emit_rate = limits::parse_rate(&v).map_err(bad)?,
            "repair" => self.repair = parse_bool(&v).ok_or_else(|| bad("expected true or false"))?,
            "client-retry" => {
                self.client_retry =
                    Some(parse_retry(&v).ok_or_else(|| bad("expected milliseconds such as 3000, or a range such as 1000-5000"))?)
            }
            _ => unreachable!("every flag in FLAGS is handled"),
        }
        Ok(())
    }
}

impl Config {
    /// The scheme of the main listener's URLs.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() { "https" } else { "http" }
    }
}

/// `http://` or `https://`, a host, and nothing that cannot be in a URL.
fn valid_public_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    !host.is_empty() && !host.starts_with(':') && url.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "" | "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn parse_positive(s: &str) -> Option<usize> {
    s.parse().ok().filter(|&n| n > 0)
}

/// The longest `retry:` a client is told: a day.
const CLIENT_RETRY_MAX_MS: usize = 86_400_000;

/// `MS` or `MIN-MAX` (milliseconds, 0 < `MIN` <= `MAX`).
fn parse_retry(s: &str) -> Option<RangeInclusive<u32>> {
    let ms = |t: &str| parse_positive(t).filter(|&n| n <= CLIENT_RETRY_MAX_MS).map(|n| n as u32);
    let (min, max) = s.split_once('-').unwrap_or((s, s));
    let (min, max) = (ms(min)?, ms(max)?);
    (min <= max).then_some(min..=max)
}

/// `15s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_win_over_environment() {
        let env = |k: &str| match k {
            "SSEHUB_LISTEN" => Some("127.0.0.1:9000".to_string()),
            "SSEHUB_HISTORY" => Some("5".to_string()),
            "SSEHUB_SOURCE" => Some("a, b".to_string()),
            _ => None,
        };
        let c = Config::from_args(&args("--history 7 --api-key=k"), env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.history, 7);
        assert_eq!(c.api_key.as_deref(), Some("k"));
        assert_eq!(c.sources, ["a", "b"]);
        let c = Config::from_args(&args("--source x --source y"), env).unwrap();
        assert_eq!(c.sources, ["x", "y"]);
        let c = Config::from_args(&args("--cors-origin https://a.example/,http://b:3000"), env).unwrap();
        assert_eq!(c.cors_origins, ["https://a.example", "http://b:3000"]);
    }

    #[test]
    fn refuses_bad_flags_in_one_line() {
        let none = |_: &str| None;
        let table = [
            ("--nope 1", "unknown flag `--nope` (see ssehub --help)"),
            ("--listen", "--listen needs a value"),
            ("--listen nowhere", "--listen: expected an address such as 127.0.0.1:8080"),
            ("--handshake-interval 5x", "--handshake-interval: expected a duration such as 15s or 500ms"),
            ("--max-event-bytes 0", "--max-event-bytes: expected a byte count"),
            ("stray", "unexpected argument `stray` (see ssehub --help)"),
            ("--api-key=", "--api-key: the key is empty (give one, or leave --api-key out to have one generated)"),
            ("--public-url not-a-url", "--public-url: expected an http:// or https:// URL such as https://hooks.example.com"),
            ("--public-url http://", "--public-url: expected an http:// or https:// URL such as https://hooks.example.com"),
            ("--public-url ftp://h", "--public-url: expected an http:// or https:// URL such as https://hooks.example.com"),
            ("--cors-origin https://a.example/x", "--cors-origin: expected * or a comma list of origins such as https://app.example.com"),
            ("--cors-origin app.example", "--cors-origin: expected * or a comma list of origins such as https://app.example.com"),
        ];
        for (input, want) in table {
            assert_eq!(Config::from_args(&args(input), none).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn limit_flags() {
        let none = |_: &str| None;
        let c = Config::from_args(&[], none).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!((c.limits.sources, c.limits.tokens, c.limits.streams), (Some(10_000), Some(1_000), None));
        let given = "--max-sources-per-account none --max-tokens-per-source 5 --max-streams-per-account 7 --emit-rate 0.5 --account-emit-rate 10:50";
        let c = Config::from_args(&args(given), none).unwrap();
        assert_eq!((c.limits.sources, c.limits.tokens, c.limits.streams), (None, Some(5), Some(7)));
        assert_eq!(c.limits.emit_rate.map(|r| r.to_string()).as_deref(), Some("0.5:1"));
        assert_eq!(c.limits.account_emit_rate.map(|r| r.to_string()).as_deref(), Some("10:50"));
        let env = |k: &str| (k == "SSEHUB_EMIT_RATE").then(|| "3".to_string());
        assert_eq!(Config::from_args(&[], env).unwrap().limits.emit_rate.map(|r| r.to_string()).as_deref(), Some("3:3"));
        let table = [
            ("--emit-rate 0", "--emit-rate: expected events per second and an optional burst, such as 100, 0.5 or 50:200"),
            ("--account-emit-rate 1:0", "--account-emit-rate: the burst is at least 1 event"),
            ("--max-streams-per-account x", "--max-streams-per-account: expected a count or none"),
        ];
        for (input, want) in table {
            assert_eq!(Config::from_args(&args(input), none).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn tls_flags_go_together_and_need_the_feature() {
        let none = |_: &str| None;
        let err = |a: &str| Config::from_args(&args(a), none).unwrap_err().0;
        if cfg!(feature = "tls") {
            let c = Config::from_args(&args("--tls-cert c.pem --tls-key k.pem"), none).unwrap();
            assert_eq!((c.scheme(), c.tls_key.unwrap().to_str()), ("https", Some("k.pem")));
            assert_eq!(err("--tls-key k.pem"), "--tls-cert and --tls-key go together");
        } else {
            assert_eq!(err("--tls-cert c.pem --tls-key k.pem"), "--tls-cert: this ssehub is built without TLS (the `tls` feature)");
        }
    }

    #[test]
    fn public_urls() {
        for ok in ["http://h", "https://hooks.example.com/", "http://10.0.0.1:8080/base", "http://[::1]:8080"] {
            assert!(valid_public_url(ok), "{ok}");
        }
        for bad in ["not a url", "hooks.example.com", "http://", "https:///x", "http://a b", "http://:80"] {
            assert!(!valid_public_url(bad), "{bad}");
        }
    }

    #[test]
    fn redis_flags() {
        let none = |_: &str| None;
        let c = Config::from_args(&args("--redis redis://127.0.0.1:6390 --redis-partitions 4 --reuse-port"), none).unwrap();
        assert_eq!(c.engine, EngineKind::Redis, "--redis selects the engine");
        assert_eq!((c.redis_partitions, c.reuse_port), (4, true));
        let env = |k: &str| match k {
            "SSEHUB_REDIS" => Some("unix:///tmp/r.sock".to_string()),
            "SSEHUB_REUSE_PORT" => Some("true".to_string()),
            _ => None,
        };
        let c = Config::from_args(&[], env).unwrap();
        assert_eq!((c.engine, c.reuse_port), (EngineKind::Redis, true));
        let c = Config::from_args(&args("--engine memory"), env).unwrap();
        assert_eq!(c.engine, EngineKind::Memory, "an engine given wins");
        let table = [
            ("--engine redis", "--engine redis needs --redis URL"),
            ("--redis-partitions 0", "--redis-partitions: expected a count from 1 to 1024"),
            (
                "--redis redis:/h:1",
                "--redis: expected redis://host:port, rediss://host:port, redis-sentinel://host:port,…#MASTER or unix:///path",
            ),
            ("--redis redis://h:1 --redis-cacert ca.pem", "--redis-cacert needs a rediss:// or rediss-sentinel:// URL"),
            ("--redis redis://h:1 --redis-replicas x", "--redis-replicas: expected a count from 0 to 16"),
        ];
        for (input, want) in table {
            assert_eq!(Config::from_args(&args(input), none).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn retention_defaults_come_from_flags() {
        let none = |_: &str| None;
        let c = Config::from_args(&args("--history 7"), none).unwrap();
        assert_eq!(
            c.retention_bounds(),
            crate::engine::Bounds { max_events: 7, max_age_ms: None, max_bytes: None, max_keys: 10_000 },
            "no age or bytes bound unless given"
        );
        let c = Config::from_args(&args("--history-max-age 7d --history-max-bytes 1048576"), none).unwrap();
        assert_eq!(
            c.retention_bounds(),
            crate::engine::Bounds { max_events: 100, max_age_ms: Some(604_800_000), max_bytes: Some(1_048_576), max_keys: 10_000 }
        );
        assert_eq!(Config::from_args(&args("--history-max-age 30s"), none).unwrap().retention_bounds().max_age_ms, Some(30_000));
        assert_eq!(Config::from_args(&args("--idempotency-keys 5"), none).unwrap().retention_bounds().max_keys, 5);
        let age = "--history-max-age: expected a duration of whole seconds from 1s to 365d, such as 7d, 12h or 30s";
        let bytes = "--history-max-bytes: expected a byte count from 1024 to 2147483648";
        let table = [
            ("--history-max-age 0s", age),
            ("--history-max-age 1500ms", age),
            ("--history-max-age 366d", age),
            ("--history-max-age forever", age),
            ("--history-max-bytes 1023", bytes),
            ("--history-max-bytes 2147483649", bytes),
            ("--history-max-bytes 1k", bytes),
            ("--idempotency-keys 0", "--idempotency-keys: expected a count from 1 to 1000000"),
            ("--idempotency-keys 1000001", "--idempotency-keys: expected a count from 1 to 1000000"),
        ];
        for (input, want) in table {
            assert_eq!(Config::from_args(&args(input), none).unwrap_err().to_string(), want, "{input}");
        }
    }

    #[test]
    fn drain_and_client_retry() {
        let none = |_: &str| None;
        let c = Config::from_args(&[], none).unwrap();
        assert_eq!((c.drain, c.client_retry), (Duration::ZERO, None));
        let c = Config::from_args(&args("--drain 30s --client-retry 1000-5000"), none).unwrap();
        assert_eq!((c.drain, c.client_retry), (Duration::from_secs(30), Some(1000..=5000)));
        let env = |k: &str| match k {
            "SSEHUB_DRAIN" => Some("500ms".to_string()),
            "SSEHUB_CLIENT_RETRY" => Some("2000".to_string()),
            _ => None,
        };
        let c = Config::from_args(&[], env).unwrap();
        assert_eq!((c.drain, c.client_retry), (Duration::from_millis(500), Some(2000..=2000)));
        let retry = "--client-retry: expected milliseconds such as 3000, or a range such as 1000-5000";
        let table = [
            ("--drain soon", "--drain: expected a duration such as 15s or 500ms"),
            ("--client-retry 5000-1000", retry),
            ("--client-retry 1s", retry),
            ("--client-retry -5", retry),
            ("--client-retry 0", retry),
            ("--client-retry 1000-", retry),
            ("--client-retry 99999999999", retry),
        ];
        for (input, want) in table {
            assert_eq!(Config::from_args(&args(input), none).unwrap_err().to_string(), want, "{input}");
        }
    }

    #[test]
    fn parses_durations() {
        let table = [
            ("15s", Some(15_000)),
            ("500ms", Some(500)),
            ("2m", Some(120_000)),
            ("3", Some(3000)),
            ("", None),
            ("7d", Some(604_800_000)),
            ("1w", None),
            ("s", None),
        ];
        for (input, want) in table {
            assert_eq!(parse_duration(input).map(|d| d.as_millis() as u64), want, "{input:?}");
        }
    }
}
