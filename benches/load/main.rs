//! Load generator for ssehub (issue 7): holds many SSE subscribers, emits
//! timestamped events, and reports loss, duplicates, delivery latency,
//! per-event completion time, and the server's RSS and CPU from `/proc`.
//!
//! ```text
//! cargo bench --bench load -- idle      --n 10000 [--hold 5s]
//! cargo bench --bench load -- ladder    --steps 5000,10000,15000,19500 [--hold 2s]
//! cargo bench --bench load -- fanout    --n 10000 --events 1000 --bytes 100 --rate 200
//! cargo bench --bench load -- handshake --n 19000 --secs 60
//! cargo bench --bench load -- storm     --n 10000 --events 1000 --rate 200
//! cargo bench --bench load -- churn     --secs 60 --rate 500 [--reads 3 --emit-rate 50]
//! cargo bench --bench load -- drain     --n 19000 --drains 10s,0s --server target/release/ssehub
//! cargo bench --bench load -- connects  --secs 20 --inflight 32
//! cargo bench --bench load -- surge     --n 1000 --crowd 10000 --events 3000 --rate 200
//! common: --url http[s]://127.0.0.1:8080  --key KEY ($SSEHUB_API_KEY)  --source load
//!         --pid SERVER_PID[,PID..]  --src-count 253  --per-worker 19000  --workers K  --inflight 128
//!         --window 64  --timeout 120s  --target ssehub|nchan
//! ```
//!
//! `--target nchan` points the same scenarios at nginx + nchan for a side by
//! side comparison (`scripts/bench.sh`): subscribe `GET /sub/<source>`
//! (EventSource), publish `POST /pub/<source>` with the raw JSON body (201 or
//! 202), read the payload from the `data:` line itself rather than from an
//! envelope's `.event`, no API key, and no source to create. A stream counts
//! as open at its first comment: ssehub's `:sse-handshake`, nchan's `: hi`.
//!
//! `storm`: N subscribers stream while events go out at `--rate`; halfway
//! through, every worker closes all its sockets at once and reconnects each
//! at once (at most `--reconnect-inflight` in flight, default N: no pacing)
//! with `Last-Event-ID` = the last id
//! that subscriber saw. It reports how many came back, the time from the drop
//! until the last one had its handshake, and, per subscriber across both
//! connections, loss and duplicates. Run the server with `--history` above
//! the events emitted while reconnecting (rate x window; 1000 is ample), or
//! replay cannot cover the gap and the run reports loss.
//!
//! `churn`: subscribers connect at a steady `--rate` per second, each reads
//! `--reads` events and leaves, while events go out at `--emit-rate` for
//! `--secs` (plus a short tail so the last ones finish). Every other one
//! resumes with `Last-Event-ID` from the newest event seen, so replay is
//! churned too. Each checks its events are consecutive (a replay must start
//! right after its id). `scripts/soak.sh` runs it and watches the server.
//!
//! `drain`: the tool starts the servers itself (`--server`, with
//! `--reuse-port --source <source> --drain D --data-dir <tmp>` and
//! `--node-args`, default `--engine memory`), on the `--url` port: node 0
//! alone, N subscribers on it; then, for each of `--drains` in turn, the
//! next node (with the next drain, `0s` for the last) is started, its
//! `READY=1` awaited (systemd notify), and the current one gets SIGTERM.
//! The subscribers act as EventSource: when the server ends a stream each
//! waits its `retry:` (`--default-retry`, 3 s as Chrome, without one) and
//! reconnects, through the port, so to the sibling; a failed reconnect is
//! retried after the same wait. Each worker counts its reconnects per 100 ms
//! window (when the connect is issued, when its handshake arrives, and when
//! it was due: a stall of the tool's own bunches the first two, not this);
//! for each drain it reports the largest window, the p99 and mean over the
//! windows from the SIGTERM to the last reconnect (empty ones included),
//! and that span.
//!
//! With no scenario (as under `cargo test --benches`) it runs its own table
//! tests, so a bare `cargo bench` never opens 20k sockets.
//!
//! `fanout --idle D` (`scripts/bench.sh --million`): once all are connected
//! the subscribers sit idle for D before the first emit (handshake comments
//! only); the servers' and the tool's CPU over it, the servers' RSS and PSS,
//! and the kernel's Slab and TCP pages are reported apart. `--pid a,b,..`
//! sums RSS, PSS and CPU over several server processes (`--reuse-port`).
//!
//! `--url https://…` speaks TLS everywhere (`tls`: rustls, no certificate
//! check, no resumption, so every connect is a full handshake).
//!
//! `connects`: `--inflight` threads each connect (blocking), handshake,
//! `GET /healthz` with `Connection: close`, read the answer and close, again
//! and again for `--secs`: connects (full TLS handshakes) per second, and
//! the server's CPU per connect.
//!
//! `surge`: N subscribers stream while events go out at `--rate`; a second
//! fleet of workers then opens `--crowd` more (at most `--crowd-inflight`
//! connecting at once) while the emits go on, on a source of their own
//! (`<source>-crowd`) that nothing emits to. The measured subscribers'
//! workers run 5 below the tool's nice value where allowed (root), so that
//! what delays them is the server rather than the crowd's handshakes in the
//! tool. It reports the measured streams' delivery
//! latency over the whole run and the completion time of the events emitted
//! while the crowd connected. Give it `--events` enough to outlast the crowd.
//!
//! Shape: this process (the coordinator) creates the source, emits over one
//! keep-alive connection and samples `/proc`. Subscribers live in workers (this
//! executable re-run as `__worker`) because the hard `RLIMIT_NOFILE` (20,000
//! here) caps one process. A worker holds its sockets on one edge-triggered
//! epoll, each bound to a source address in 127.0.0.2..=254 so that N is not
//! capped by one address's ephemeral ports.
//!
//! Worker protocol, one line per message. Config: JSON in `$SSEHUB_LOAD_WORKER`
//! (keeps the key off the command line). Coordinator -> worker on stdin:
//! `open <count>`, `measure <run> <events>`, `drop <in-flight>` (close every
//! stream, reconnect each), `churn <run> <per_s> <reads>`, `churn stop`, `report`,
//! `redial <default_ms>` (streams the server ends reconnect after their
//! `retry:`), `quit`. Worker -> coordinator on stdout: `opened <held> <failed>` (every
//! new or reconnecting socket has its first handshake or has failed; also the
//! answer to `drop`), `measuring`, `complete` (every measured subscriber has
//! every event or is gone), `churning`, `churned` (stopped, and the last churn
//! subscriber is gone), and for `report`: `stat k=v...`,
//! `ev <seq> <count> <first_ns> <last_ns>`, `lat <bucket> <count>`,
//! `cl <bucket> <count>` (connect -> first handshake; after a `drop`, from the
//! drop), `storm <drop_ns> <closed_ns> <last_up_ns>`,
//! `hs <100ms-window> <count>`, `redialing`, `redialed <back> <failed>`
//! (every stream open at `redial` is back), for `report` after `redial`:
//! `redial <expect> <ended> <back> <failed> <first_end_ns> <last_end_ns>
//! <last_up_ns> <late_max_ns>`, `rc <100ms-window> <reconnects begun>`,
//! `ru <100ms-window> <reconnects up>`, `rd <100ms-window> <reconnects due>`, and `err <count> <reason>`, `end`.
//! Times are CLOCK_MONOTONIC nanoseconds, comparable across processes.
//!
//! Method: `fanout` emits open-loop (on schedule, or back-to-back for
//! `--rate 0`, at most `--window` unanswered), stamps each payload just before
//! its write, and a subscriber stamps each read as it returns. Memory numbers
//! are RSS deltas: run `idle` and `ladder` against a freshly started server,
//! since an allocator keeps what an earlier run freed.

// One file per part: `scenario` (each scenario and its report) drives a
// `fleet` of `worker` processes (each `worker` opens its subscribers'
// `socket`s on one epoll, and counts what they receive in its `tally`);
// `sse`, `http` and `hist` are the sans-I/O parsers and the histogram they
// share; `sys` wraps libc and /proc; `selftest` holds the table tests.
mod connects;
mod fleet;
mod hist;
mod http;
mod nodes;
mod scenario;
mod selftest;
mod socket;
mod sse;
mod sys;
mod tally;
mod tls;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Coordinator errors are one human sentence each, printed once at exit.
type Res<T> = Result<T, String>;

/// Sockets per worker: the hard RLIMIT_NOFILE here is 20,000, and a worker
/// needs a few descriptors of its own.
const PER_WORKER: &str = "19000";
/// Source addresses 127.0.0.SRC_FIRST.. (SRC_COUNT of them), each with its own ports.
const SRC_FIRST: usize = 2;
const SRC_COUNT: usize = 253;
const HS_WINDOW_NS: u64 = 100_000_000;
const READ_BUF_BYTES: usize = 64 * 1024;
const HEAD_MAX_BYTES: usize = 16 * 1024;
const WORKER_ENV: &str = "SSEHUB_LOAD_WORKER";
const STDIN_TOKEN: u64 = u64::MAX;

fn main() {
    // cargo appends `--bench` when it runs a bench target.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let code = match args.first().map(String::as_str) {
        Some("__worker") => worker::run(),
        None | Some("selftest") => selftest::run(),
        Some(_) => match Opts::parse(&args).and_then(|o| scenario::run(&o)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("load: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}

const USAGE: &str = "usage: load <idle|ladder|fanout|handshake|storm|churn|drain|connects|surge|selftest> \
    [--n N] [--hold 5s] [--crowd N] [--crowd-inflight N] \
    [--steps a,b,..] [--events N] [--bytes N] [--rate PER_S] [--secs 60s] [--reads N] \
    [--emit-rate PER_S] [--reconnect-inflight N] [--drains 10s,0s] [--server PATH] \
    [--node-args 'ARGS'] [--default-retry 3s] [--url URL] \
    [--key KEY] [--source NAME] [--pid PID[,PID..]] [--src-count N] [--idle 0s] [--per-worker N] [--workers K] [--inflight N] \
    [--window N] [--timeout 120s] [--target ssehub|nchan]";

/// The server the tool speaks to: ssehub's API, or nchan's for comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Ssehub,
    Nchan,
}

impl FromStr for Target {
    type Err = ();
    fn from_str(s: &str) -> Result<Target, ()> {
        match s {
            "ssehub" => Ok(Target::Ssehub),
            "nchan" => Ok(Target::Nchan),
            _ => Err(()),
        }
    }
}

impl Target {
    fn sub_path(self, source: &str) -> String {
        match self {
            Target::Ssehub => format!("/sources/{source}/sse"),
            Target::Nchan => format!("/sub/{source}"),
        }
    }

    fn emit_path(self, source: &str) -> String {
        match self {
            Target::Ssehub => format!("/v1/sources/{source}/events"),
            Target::Nchan => format!("/pub/{source}"),
        }
    }

    /// ssehub answers an emit 202; nchan 201 with subscribers, 202 without.
    fn emit_ok(self, status: u16) -> bool {
        status == 202 || (self == Target::Nchan && status == 201)
    }

    /// ssehub wraps the payload in an envelope (`.event`); nchan sends it as is.
    fn envelope(self) -> bool {
        self == Target::Ssehub
    }
}

/// Command-line options; every flag but the key has a default.
struct Opts {
    scenario: String,
    target: Target,
    addr: SocketAddrV4,
    host: String,
    /// `https://`: the client's TLS configuration.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    key: String,
    source: String,
    /// The server's processes (`--pid a,b,c`): RSS and CPU are their sums.
    pids: Vec<u32>,
    /// Subscribers bind to 127.0.0.2 and the next `src_count - 1` addresses.
    src_count: usize,
    /// `fanout`: how long the subscribers sit idle (handshakes only)
    /// between connecting and the first emit; its CPU is reported apart.
    idle: Duration,
    n: usize,
    hold: Duration,
    steps: Vec<usize>,
    events: u32,
    bytes: usize,
    rate: f64,
    secs: Duration,
    /// `churn`: events each subscriber reads before it leaves.
    reads: u32,
    /// `churn`: emits per second (`--rate` is connects per second there).
    emit_rate: f64,
    per_worker: usize,
    /// At least this many workers (0: as many as the fd limit needs).
    workers: usize,
    /// Connects in flight over all workers; at most the server's listen
    /// backlog (128 is std's), as an overflow costs a 1 s SYN retransmit.
    inflight: usize,
    /// `storm`: reconnects in flight over all workers (default: all at once).
    reconnect_inflight: usize,
    /// Emits sent but not yet answered, at most.
    window: usize,
    /// `drain`: the nodes' `--drain`, one stop each, in order.
    drains: Vec<Duration>,
    /// `drain`: the ssehub binary, and arguments every node gets.
    server: String,
    node_args: Vec<String>,
    /// `drain`: the reconnect wait of a stream that sent no `retry:`.
    default_retry: Duration,
    /// `surge`: subscribers that connect while the measured ones stream,
    /// and how many of them connect at once, at most.
    crowd: usize,
    crowd_inflight: usize,
    /// Bound on every wait: connecting, delivery, reports.
    timeout: Duration,
}

/// `5s`, `500ms`, `2m`, or bare seconds.
struct Secs(Duration);

impl FromStr for Secs {
    type Err = ();
    fn from_str(s: &str) -> Result<Secs, ()> {
        let at = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
        let n: f64 = s[..at].parse().map_err(|_| ())?;
        let scale = match &s[at..] {
            "ms" => 0.001,
            "" | "s" => 1.0,
            "m" => 60.0,
            _ => return Err(()),
        };
        Duration::try_from_secs_f64(n * scale).map(Secs).map_err(|_| ())
    }
}

impl Opts {
    fn parse(args: &[String]) -> Res<Opts> {
        let scenario = args[0].clone();
        if !["idle", "ladder", "fanout", "handshake", "storm", "churn", "drain", "connects", "surge"].contains(&scenario.as_str()) {
            return Err(format!("unknown scenario {scenario:?}\n{USAGE}"));
        }
        let mut flags = BTreeMap::new();
        let mut it = args[1..].iter();
        while let Some(a) = it.next() {
            let k = a.strip_prefix("--").ok_or(format!("unexpected argument {a:?}"))?;
            let v = it.next().ok_or(format!("--{k} needs a value"))?;
            flags.insert(k.to_owned(), v.clone());
        }
        let mut get = |k: &str, default: &str| flags.remove(k).unwrap_or(default.into());
        fn parse<T: FromStr>(k: &str, v: String) -> Res<T> {
            v.replace('_', "").parse().map_err(|_| format!("bad --{k} {v:?}"))
        }
        let (addr, host, https) = parse_url(&get("url", "http://127.0.0.1:8080"))?;
        let env_key = std::env::var("SSEHUB_API_KEY").unwrap_or_default();
        let n = if ["handshake", "drain"].contains(&scenario.as_str()) { "19000" } else { "10000" };
        let hold = if scenario == "ladder" { "2s" } else { "5s" };
        let steps = get("steps", "5000,10000,15000,19500");
        let n: usize = parse("n", get("n", n))?;
        let rate = if scenario == "churn" { "500" } else { "200" };
        let o = Opts {
            target: parse("target", get("target", "ssehub"))?,
            addr,
            host,
            tls: https.then(tls::config),
            key: get("key", &env_key),
            source: get("source", "load"),
            pids: get("pid", "").split(',').filter(|p| !p.is_empty()).map(|p| parse("pid", p.into())).collect::<Res<_>>()?,
            src_count: parse("src-count", get("src-count", &SRC_COUNT.to_string()))?,
            idle: parse::<Secs>("idle", get("idle", "0s"))?.0,
            n,
            hold: parse::<Secs>("hold", get("hold", hold))?.0,
            steps: steps.split(',').map(|s| parse("steps", s.into())).collect::<Res<_>>()?,
            events: parse("events", get("events", "1000"))?,
            bytes: parse("bytes", get("bytes", "100"))?,
            rate: parse("rate", get("rate", rate))?,
            secs: parse::<Secs>("secs", get("secs", "60s"))?.0,
            reads: parse("reads", get("reads", "3"))?,
            emit_rate: parse("emit-rate", get("emit-rate", "50"))?,
            per_worker: parse("per-worker", get("per-worker", PER_WORKER))?,
            workers: parse("workers", get("workers", "0"))?,
            inflight: parse("inflight", get("inflight", "128"))?,
            // A storm's subscribers all reconnect at once, as real clients would.
            reconnect_inflight: parse("reconnect-inflight", get("reconnect-inflight", &n.to_string()))?,
            window: parse("window", get("window", "64"))?,
            drains: get("drains", "10s,0s").split(',').map(|s| parse::<Secs>("drains", s.into()).map(|d| d.0)).collect::<Res<_>>()?,
            server: get("server", "target/release/ssehub"),
            node_args: get("node-args", "--engine memory").split_whitespace().map(String::from).collect(),
            default_retry: parse::<Secs>("default-retry", get("default-retry", "3s"))?.0,
            crowd: parse("crowd", get("crowd", "10000"))?,
            crowd_inflight: parse("crowd-inflight", get("crowd-inflight", "256"))?,
            timeout: parse::<Secs>("timeout", get("timeout", "120s"))?.0,
            scenario,
        };
        if let Some(k) = flags.keys().next() {
            return Err(format!("unknown flag --{k}\n{USAGE}"));
        }
        if ["fanout", "storm"].contains(&o.scenario.as_str()) && o.events == 0 {
            return Err(format!("{} needs --events of at least 1", o.scenario));
        }
        if o.scenario == "storm" && o.rate <= 0.0 {
            return Err("storm needs a --rate above 0: it drops everyone halfway through the emits".into());
        }
        if o.scenario == "churn" && (o.reads == 0 || !(o.rate > 0.0 && o.emit_rate > 0.0)) {
            return Err("churn needs --reads, --rate and --emit-rate above 0".into());
        }
        if o.scenario == "drain" && (o.target != Target::Ssehub || o.drains.is_empty()) {
            return Err("drain starts ssehub nodes itself (--target ssehub) and needs --drains".into());
        }
        if o.key.is_empty() && o.target == Target::Ssehub {
            return Err("no API key: pass --key or set SSEHUB_API_KEY".into());
        }
        let name_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if o.source.is_empty() || !o.source.bytes().all(name_ok) {
            return Err(format!("bad source name {:?}", o.source));
        }
        if !(1..=SRC_COUNT).contains(&o.src_count) {
            return Err(format!("--src-count must be 1..={SRC_COUNT}"));
        }
        if [o.per_worker, o.inflight, o.reconnect_inflight, o.window].contains(&0) || o.rate.is_nan() || o.rate < 0.0 {
            return Err("--per-worker, --inflight, --reconnect-inflight, --window must be > 0, --rate >= 0".into());
        }
        Ok(o)
    }

    /// Workers for `n` subscribers: as the fd limit needs, or more if asked.
    fn workers_for(&self, n: usize) -> usize {
        n.div_ceil(self.per_worker).max(self.workers).max(1)
    }
}

/// Accepts `http[s]://host:port[/]`, loopback only: the subscribers bind to
/// 127.0.0.x, which reaches nothing but this machine. True for `https`.
fn parse_url(url: &str) -> Res<(SocketAddrV4, String, bool)> {
    let bad = || format!("--url must be http[s]://<loopback host>:<port>, not {url:?}");
    let (rest, https) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("http://").ok_or_else(bad)?, false),
    };
    let host = rest.trim_end_matches('/');
    let addrs = host.to_socket_addrs().map_err(|e| format!("{host}: {e}"))?;
    match addrs.into_iter().find(SocketAddr::is_ipv4) {
        Some(SocketAddr::V4(a)) if a.ip().is_loopback() => Ok((a, host.to_owned(), https)),
        _ => Err(bad()),
    }
}

/// `Authorization: Bearer <key>` and its CRLF, or nothing without a key (nchan).
fn auth_header(key: &str) -> String {
    if key.is_empty() { String::new() } else { format!("Authorization: Bearer {key}\r\n") }
}
