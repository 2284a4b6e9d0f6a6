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
//! common: --url http://127.0.0.1:8080  --key KEY ($SSEHUB_API_KEY)  --source load
//!         --pid SERVER_PID  --per-worker 19000  --workers K  --inflight 128
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
//! With no scenario (as under `cargo test --benches`) it runs its own table
//! tests, so a bare `cargo bench` never opens 20k sockets.
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
//! `quit`. Worker -> coordinator on stdout: `opened <held> <failed>` (every
//! new or reconnecting socket has its first handshake or has failed; also the
//! answer to `drop`), `measuring`, `complete` (every measured subscriber has
//! every event or is gone), `churning`, `churned` (stopped, and the last churn
//! subscriber is gone), and for `report`: `stat k=v...`,
//! `ev <seq> <count> <first_ns> <last_ns>`, `lat <bucket> <count>`,
//! `cl <bucket> <count>` (connect -> first handshake; after a `drop`, from the
//! drop), `storm <drop_ns> <closed_ns> <last_up_ns>`,
//! `hs <100ms-window> <count>`, `err <count> <reason>`, `end`.
//! Times are CLOCK_MONOTONIC nanoseconds, comparable across processes.
//!
//! Method: `fanout` emits open-loop (on schedule, or back-to-back for
//! `--rate 0`, at most `--window` unanswered), stamps each payload just before
//! its write, and a subscriber stamps each read as it returns. Memory numbers
//! are RSS deltas: run `idle` and `ladder` against a freshly started server,
//! since an allocator keeps what an earlier run freed.

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

const USAGE: &str = "usage: load <idle|ladder|fanout|handshake|storm|churn|selftest> [--n N] [--hold 5s] \
    [--steps a,b,..] [--events N] [--bytes N] [--rate PER_S] [--secs 60s] [--reads N] \
    [--emit-rate PER_S] [--reconnect-inflight N] [--url URL] \
    [--key KEY] [--source NAME] [--pid PID] [--per-worker N] [--workers K] [--inflight N] \
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
    key: String,
    source: String,
    pid: Option<u32>,
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
        if !["idle", "ladder", "fanout", "handshake", "storm", "churn"].contains(&scenario.as_str()) {
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
        let (addr, host) = parse_url(&get("url", "http://127.0.0.1:8080"))?;
        let env_key = std::env::var("SSEHUB_API_KEY").unwrap_or_default();
        let n = if scenario == "handshake" { "19000" } else { "10000" };
        let hold = if scenario == "ladder" { "2s" } else { "5s" };
        let steps = get("steps", "5000,10000,15000,19500");
        let n: usize = parse("n", get("n", n))?;
        let rate = if scenario == "churn" { "500" } else { "200" };
        let o = Opts {
            target: parse("target", get("target", "ssehub"))?,
            addr,
            host,
            key: get("key", &env_key),
            source: get("source", "load"),
            pid: Some(get("pid", "")).filter(|p| !p.is_empty()).map(|p| parse("pid", p)).transpose()?,
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
        if o.key.is_empty() && o.target == Target::Ssehub {
            return Err("no API key: pass --key or set SSEHUB_API_KEY".into());
        }
        let name_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if o.source.is_empty() || !o.source.bytes().all(name_ok) {
            return Err(format!("bad source name {:?}", o.source));
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

/// Accepts `http://host:port[/]`, loopback only: the subscribers bind to
/// 127.0.0.x, which reaches nothing but this machine.
fn parse_url(url: &str) -> Res<(SocketAddrV4, String)> {
    let bad = || format!("--url must be http://<loopback host>:<port>, not {url:?}");
    let host = url.strip_prefix("http://").ok_or_else(bad)?.trim_end_matches('/');
    let addrs = host.to_socket_addrs().map_err(|e| format!("{host}: {e}"))?;
    match addrs.into_iter().find(SocketAddr::is_ipv4) {
        Some(SocketAddr::V4(a)) if a.ip().is_loopback() => Ok((a, host.to_owned())),
        _ => Err(bad()),
    }
}

/// Thin safe wrappers over the libc calls the tool needs, and /proc readers.
mod sys {
    use std::io;

    pub fn now_ns() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime only writes the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    pub fn last_err(what: &str) -> String {
        format!("{what}: {}", io::Error::last_os_error())
    }

    /// Raises the soft fd limit to the hard one; returns the new limit.
    pub fn raise_nofile() -> Result<u64, String> {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the rlimit we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Err(last_err("getrlimit"));
        }
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the rlimit we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(last_err("setrlimit"));
        }
        Ok(lim.rlim_cur)
    }

    /// User + system CPU seconds of RUSAGE_SELF or RUSAGE_CHILDREN.
    pub fn rusage_cpu_s(who: libc::c_int) -> f64 {
        // SAFETY: rusage is plain data, for which all-zero is valid.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage only writes the rusage we own.
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }

    fn sysconf(name: libc::c_int) -> u64 {
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(name) }.max(1) as u64
    }

    /// CPU seconds (utime + stime) of a process, from /proc/PID/stat.
    pub fn proc_cpu_s(pid: u32) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces; count fields after its ')'.
        let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
        // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / sysconf(libc::_SC_CLK_TCK) as f64)
    }

    /// `key: value kB` from a /proc file, in bytes.
    fn proc_kb(path: &str, key: &str) -> Option<u64> {
        let text = std::fs::read_to_string(path).ok()?;
        let v = text.lines().find_map(|l| l.strip_prefix(key))?;
        Some(v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()? * 1024)
    }

    pub fn proc_rss(pid: u32) -> Option<u64> {
        proc_kb(&format!("/proc/{pid}/status"), "VmRSS:")
    }

    /// Kernel memory that sockets cost: slab (socket structs, epoll items,
    /// files; both ends of every loopback pair) plus TCP buffer pages.
    pub fn kernel_mem() -> Option<u64> {
        let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
        let tcp = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
        let pages: u64 = tcp.split(' ').skip_while(|w| *w != "mem").nth(1)?.parse().ok()?;
        Some(proc_kb("/proc/meminfo", "Slab:")? + pages * sysconf(libc::_SC_PAGESIZE))
    }

    /// glibc's vectorised memchr: every byte the server sends goes through
    /// the line search, the tool's hottest loop.
    pub fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
        // SAFETY: memchr reads at most hay.len() bytes from the start of hay.
        let p = unsafe { libc::memchr(hay.as_ptr().cast(), b.into(), hay.len()) };
        (!p.is_null()).then(|| p as usize - hay.as_ptr() as usize)
    }

    pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
}

/// Sans-I/O SSE parsing (WHATWG "interpreting an event stream") and the probe
/// that finds our timestamp in an event's data.
mod sse {
    use crate::sys::{find, find_byte};

    #[derive(Debug, PartialEq)]
    pub enum Item<'a> {
        Comment(&'a [u8]),
        Event { id: &'a [u8], data: &'a [u8] },
    }

    /// Incremental parser: feed it reads of any size; frames split anywhere.
    #[derive(Default)]
    pub struct Parser {
        partial: Vec<u8>,
        data: Vec<u8>,
        id: Vec<u8>,
        /// The last chunk ended in CR, so an LF starting the next belongs to it.
        skip_lf: bool,
    }

    impl Parser {
        pub fn feed(&mut self, mut input: &[u8], on: &mut impl FnMut(Item<'_>)) {
            if self.skip_lf && !input.is_empty() {
                self.skip_lf = false;
                input = input.strip_prefix(b"\n").unwrap_or(input);
            }
            while let Some((end, next)) = line_end(input) {
                self.skip_lf = next == input.len() && input[end] == b'\r';
                if self.partial.is_empty() {
                    self.line(&input[..end], on);
                } else {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&input[..end]);
                    self.line(&line, on);
                    line.clear();
                    self.partial = line; // keeps its capacity
                }
                input = &input[next..];
            }
            self.partial.extend_from_slice(input);
        }

        fn line(&mut self, line: &[u8], on: &mut impl FnMut(Item<'_>)) {
            if line.is_empty() {
                // An empty data buffer dispatches nothing; else drop its last LF.
                if let Some((b'\n', data)) = self.data.split_last() {
                    on(Item::Event { id: &self.id, data });
                }
                return self.data.clear();
            }
            if let Some(text) = line.strip_prefix(b":") {
                return on(Item::Comment(text));
            }
            let (field, value) = match find_byte(line, b':') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, &[][..]),
            };
            let value = value.strip_prefix(b" ").unwrap_or(value);
            match field {
                b"data" => {
                    self.data.extend_from_slice(value);
                    self.data.push(b'\n');
                }
                b"id" if find_byte(value, 0).is_none() => value.clone_into(&mut self.id),
                _ => {} // event, retry and unknown fields do not matter here
            }
        }
    }

    /// (end of line, start of next) for LF, CRLF or a lone CR.
    fn line_end(input: &[u8]) -> Option<(usize, usize)> {
        let lf = find_byte(input, b'\n');
        match (find_byte(&input[..lf.unwrap_or(input.len())], b'\r'), lf) {
            (Some(r), Some(n)) if n == r + 1 => Some((r, n + 1)),
            (Some(r), _) => Some((r, r + 1)),
            (None, Some(n)) => Some((n, n + 1)),
            (None, None) => None,
        }
    }

    /// What the tool embeds in each emitted payload.
    #[derive(Debug, PartialEq)]
    pub struct Probe {
        pub run: u64,
        pub seq: u64,
        pub t_ns: u64,
    }

    /// Finds `{run,seq,t_ns}` in an envelope's `.event` or, without
    /// `envelope` (nchan), in the data itself. The fast path relies on the
    /// server keeping our key order (the contract only strips whitespace)
    /// and saves a full JSON parse per delivery, which counts at 10M
    /// deliveries on cores the server shares; any other shape goes to serde_json.
    pub fn probe(data: &[u8], envelope: bool) -> Option<Probe> {
        fast_probe(data, envelope).or_else(|| {
            let v: serde_json::Value = serde_json::from_slice(data).ok()?;
            let p = if envelope { v.get("event")? } else { &v };
            let field = |k: &str| p.get(k)?.as_u64();
            Some(Probe { run: field("run")?, seq: field("seq")?, t_ns: field("t_ns")? })
        })
    }

    fn fast_probe(data: &[u8], envelope: bool) -> Option<Probe> {
        const START: &[u8] = br#""event":{"run":"#;
        const RAW: &[u8] = br#"{"run":"#;
        let rest = match envelope {
            true => &data[find(data, START)? + START.len()..],
            false => data.strip_prefix(RAW)?,
        };
        let (run, rest) = digits(rest)?;
        let (seq, rest) = digits(rest.strip_prefix(br#","seq":"#)?)?;
        let (t_ns, _) = digits(rest.strip_prefix(br#","t_ns":"#)?)?;
        Some(Probe { run, seq, t_ns })
    }

    fn digits(s: &[u8]) -> Option<(u64, &[u8])> {
        let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
        let v = s[..n].iter().try_fold(0u64, |v, b| v.checked_mul(10)?.checked_add(u64::from(b - b'0')));
        Some((v.filter(|_| n > 0)?, &s[n..]))
    }
}

/// Log-linear histogram: 64 sub-buckets per power of two, so a quantile is
/// within 1.6 %; merged across workers as `lat` lines.
mod hist {
    const SUB_BITS: u32 = 6;
    const SUB: u64 = 1 << SUB_BITS;

    #[derive(Clone)]
    pub struct Hist {
        pub counts: Vec<u64>,
        pub n: u64,
        pub max: u64,
    }

    impl Default for Hist {
        fn default() -> Self {
            let buckets = (65 - SUB_BITS as usize) * SUB as usize;
            Hist { counts: vec![0; buckets], n: 0, max: 0 }
        }
    }

    pub fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        (u64::from(e - SUB_BITS + 1) * SUB + (v >> (e - SUB_BITS)) - SUB) as usize
    }

    /// The middle of bucket `i`.
    pub fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        ((i % SUB + SUB) << shift) + ((1 << shift) >> 1)
    }

    impl Hist {
        pub fn record(&mut self, v: u64) {
            self.counts[index(v)] += 1;
            self.n += 1;
            self.max = self.max.max(v);
        }

        pub fn add(&mut self, bucket: usize, count: u64) {
            if let Some(c) = self.counts.get_mut(bucket) {
                *c += count;
                self.n += count;
                self.max = self.max.max(value(bucket));
            }
        }

        pub fn quantile(&self, q: f64) -> u64 {
            let want = ((q * self.n as f64).ceil() as u64).max(1);
            let mut seen = 0;
            let i = self.counts.iter().position(|c| {
                seen += c;
                seen >= want
            });
            i.map_or(self.max, |i| value(i).min(self.max))
        }
    }
}

/// Minimal blocking HTTP/1.1 client for the REST calls and emits: one
/// keep-alive connection, Content-Length bodies, requests may be pipelined.
mod http {
    use super::*;

    pub struct Http {
        stream: TcpStream,
        host: String,
        key: String,
        buf: Vec<u8>,
    }

    impl Http {
        pub fn connect(o: &Opts) -> Res<Http> {
            let stream = TcpStream::connect(o.addr).map_err(|e| format!("{}: {e}", o.addr))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let timeout = Some(Duration::from_secs(10));
            stream.set_read_timeout(timeout).map_err(|e| e.to_string())?;
            Ok(Http { stream, host: o.host.clone(), key: o.key.clone(), buf: Vec::new() })
        }

        /// A second handle on the same connection, to read answers while
        /// this one writes requests.
        pub fn try_clone(&self) -> Res<Http> {
            let stream = self.stream.try_clone().map_err(|e| e.to_string())?;
            Ok(Http { stream, host: self.host.clone(), key: self.key.clone(), buf: Vec::new() })
        }

        pub fn call(&mut self, method: &str, path: &str, body: &[u8]) -> Res<(u16, Vec<u8>)> {
            self.send(method, path, body)?;
            self.recv()
        }

        pub fn send(&mut self, method: &str, path: &str, body: &[u8]) -> Res<()> {
            let (host, auth, len) = (&self.host, auth_header(&self.key), body.len());
            let mut req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
            )
            .into_bytes();
            req.extend_from_slice(body);
            self.stream.write_all(&req).map_err(|e| format!("{method} {path}: {e}"))
        }

        /// Reads one response: (status, body).
        pub fn recv(&mut self) -> Res<(u16, Vec<u8>)> {
            let end = loop {
                match sys::find(&self.buf, b"\r\n\r\n") {
                    Some(i) => break i,
                    None => self.fill()?,
                }
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
            let status = head.get(9..12).and_then(|s| s.parse().ok());
            let status = status.ok_or(format!("bad status line {head:?}"))?;
            if head.contains("transfer-encoding: chunked") {
                return Err("chunked responses are not supported".into());
            }
            let len = head.lines().find_map(|l| l.strip_prefix("content-length:"));
            let len: usize = len.map_or(Some(0), |v| v.trim().parse().ok()).ok_or("bad length")?;
            while self.buf.len() < end + 4 + len {
                self.fill()?;
            }
            let body = self.buf[end + 4..end + 4 + len].to_vec();
            self.buf.drain(..end + 4 + len);
            Ok((status, body))
        }

        fn fill(&mut self) -> Res<()> {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => Err("server closed the connection".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    Ok(())
                }
                Err(e) => Err(format!("reading a response: {e}")),
            }
        }
    }
}

/// `Authorization: Bearer <key>` and its CRLF, or nothing without a key (nchan).
fn auth_header(key: &str) -> String {
    if key.is_empty() { String::new() } else { format!("Authorization: Bearer {key}\r\n") }
}

/// A worker: holds subscribers on one epoll and measures what they receive.
mod worker {
    use super::*;
    use std::os::fd::RawFd;

    #[derive(Default)]
    struct Cfg {
        dst: [u8; 4],
        port: u16,
        request: Vec<u8>,
        /// Connection j of worker `index` is global connection index + j * stride,
        /// which picks its source address.
        index: usize,
        stride: usize,
        inflight: usize,
        /// Payloads arrive in ssehub's envelope (else raw, as from nchan).
        envelope: bool,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Phase {
        /// Nonblocking connect issued; waits for writability.
        Connecting,
        /// Request sent; waits for the response head.
        AwaitHead,
        /// 200 received; waits for the first comment (`:sse-handshake`, nchan's `: hi`).
        AwaitHandshake,
        Streaming,
        Closed,
    }

    struct Conn {
        fd: RawFd,
        phase: Phase,
        head: Vec<u8>,
        sse: sse::Parser,
        sub: Sub,
        /// When its connect began (for a storm's reconnects: the drop).
        started_ns: u64,
    }

    /// One subscriber's counters, kept across a storm's reconnect. Order per
    /// connection is in the contract, so a seq below `next` is a duplicate
    /// or a reorder: both count as dups.
    #[derive(Default)]
    struct Sub {
        comments: u32,
        measured: bool,
        next: u32,
        got: u32,
        dups: u32,
        /// The id of the last event seen: the `Last-Event-ID` of its next connect.
        last_id: Vec<u8>,
        /// Dropped by a storm; reconnecting or reconnected.
        dropped: bool,
        /// A churn subscriber, and the seq it must get next, once known.
        churn: bool,
        expect: Option<u32>,
    }

    /// What a `drop` did, in this worker.
    #[derive(Default)]
    struct Storm {
        drop_ns: u64,
        closed_ns: u64,
        /// The last reconnected subscriber's first handshake.
        up_ns: u64,
        dropped: u64,
        reconnected: u64,
        /// Dropped before any event: reconnected without `Last-Event-ID`.
        no_last_id: u64,
        /// Reconnects in flight, at most.
        inflight: usize,
    }

    /// `churn`: subscribers opened at a steady rate, each leaving after
    /// `reads` events.
    #[derive(Default)]
    struct Churn {
        run: u64,
        /// Connects per second; 0 once stopped.
        per_s: f64,
        reads: u32,
        since_ns: u64,
        opened: u64,
        complete: u64,
        /// Gone before `reads` events: refused, or closed by the server.
        failed: u64,
        gaps: u64,
        dups: u64,
        /// Those that resumed with `Last-Event-ID`.
        replayed: u64,
        open_now: usize,
        peak: usize,
        /// Stopped opening: `churned` is said once the last one is gone.
        stopping: bool,
        /// The newest event any churn subscriber saw: (seq, id).
        latest: Option<(u64, Vec<u8>)>,
    }

    impl Churn {
        /// Connects due by `now`: the schedule is open-loop, so a stall is
        /// caught up rather than lowering the offered rate.
        fn due(&self, now: u64) -> u64 {
            if self.per_s <= 0.0 {
                return 0;
            }
            let target = (now.saturating_sub(self.since_ns) as f64 * self.per_s / 1e9) as u64 + 1;
            target.saturating_sub(self.opened)
        }

        /// Milliseconds until the next connect is due, for epoll_wait.
        fn wait_ms(&self, now: u64) -> i32 {
            if self.per_s <= 0.0 {
                return 1000;
            }
            let next = self.since_ns + (self.opened as f64 * 1e9 / self.per_s) as u64;
            next.saturating_sub(now).div_ceil(1_000_000).min(1000) as i32
        }

        /// Events must come consecutively; a replay must start right after its id.
        fn on_item(&mut self, item: sse::Item<'_>, sub: &mut Sub, envelope: bool) {
            let (id, data) = match item {
                sse::Item::Comment(_) => return sub.comments += 1,
                sse::Item::Event { id, data } => (id, data),
            };
            let Some(p) = sse::probe(data, envelope).filter(|p| p.run == self.run) else { return };
            let seq = p.seq as u32;
            match sub.expect {
                Some(e) if seq < e => return self.dups += 1,
                Some(e) => self.gaps += u64::from(seq - e),
                None => {}
            }
            sub.expect = Some(seq + 1);
            sub.got += 1;
            if self.latest.as_ref().is_none_or(|l| p.seq > l.0) {
                self.latest = Some((p.seq, id.to_vec()));
            }
        }
    }

    /// The selftest's view of the churn schedule: one connect at once, then
    /// one per period, caught up after a stall; a stopped churn opens none.
    pub(crate) fn churn_schedule_ok() -> bool {
        let mut c = Churn { per_s: 100.0, since_ns: 1_000_000_000, ..Churn::default() };
        let first = c.due(c.since_ns) == 1 && c.wait_ms(c.since_ns) == 0;
        c.opened = 1;
        let waits = c.wait_ms(c.since_ns) == 10 && c.due(c.since_ns + 9_999_999) == 0;
        let stalled = c.due(c.since_ns + 50_000_000) == 5;
        c.per_s = 0.0;
        first && waits && stalled && c.due(u64::MAX / 2) == 0 && c.wait_ms(0) == 1000
    }

    /// The current `measure` window.
    #[derive(Default)]
    struct Measure {
        active: bool,
        run: u64,
        events: u32,
        first: Vec<u64>,
        last: Vec<u64>,
        count: Vec<u32>,
        lat: hist::Hist,
        hs: BTreeMap<u64, u64>,
        /// Measured subscribers, and those that have all events or are gone.
        subs: usize,
        settled: usize,
        announced: bool,
        foreign: u64,
        bad: u64,
        envelope: bool,
    }

    impl Measure {
        fn on_item(&mut self, item: sse::Item<'_>, sub: &mut Sub, now: u64) {
            let data = match item {
                sse::Item::Event { id, data } => {
                    id.clone_into(&mut sub.last_id);
                    data
                }
                sse::Item::Comment(_) => {
                    sub.comments += 1;
                    // Measured subscribers had their connect-time handshake
                    // before, so these are the periodic ones.
                    if self.active && sub.measured {
                        *self.hs.entry(now / HS_WINDOW_NS).or_default() += 1;
                    }
                    return;
                }
            };
            let Some(p) = sse::probe(data, self.envelope) else {
                return self.bad += 1;
            };
            if !sub.measured || p.run != self.run || p.seq >= u64::from(self.events) {
                return self.foreign += 1;
            }
            let seq = p.seq as u32;
            if seq < sub.next {
                return sub.dups += 1;
            }
            sub.next = seq + 1;
            sub.got += 1;
            self.lat.record(now.saturating_sub(p.t_ns));
            let s = seq as usize;
            self.first[s] = self.first[s].min(now);
            self.last[s] = self.last[s].max(now);
            self.count[s] += 1;
            if sub.got == self.events {
                self.settled += 1;
            }
        }
    }

    #[derive(Default)]
    struct Worker {
        cfg: Cfg,
        ep: RawFd,
        conns: Vec<Conn>,
        to_open: usize,
        inflight: usize,
        failed: usize,
        closed: usize,
        /// An `open` or a `drop` awaits its `opened` answer.
        opening: bool,
        errors: BTreeMap<String, u64>,
        m: Measure,
        cmd: Vec<u8>,
        /// Connects attempted, which spreads them over the source addresses.
        attempts: usize,
        /// A `drop` to carry out after the current event batch.
        dropping: bool,
        /// Dropped slots waiting for their reconnect.
        reconnect: Vec<usize>,
        /// Churn slots free for reuse: closed during an event batch and reused
        /// after it, when no stale event for the old socket can follow.
        free: Vec<usize>,
        storm: Storm,
        churn: Churn,
        /// Connect -> first handshake; reset by a `drop` to time its reconnects.
        connect_lat: hist::Hist,
    }

    pub fn run() -> i32 {
        match Worker::new().and_then(|mut w| w.run()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("load worker: {e}");
                1
            }
        }
    }

    fn config() -> Res<Cfg> {
        let raw = std::env::var(WORKER_ENV).map_err(|_| format!("${WORKER_ENV} unset"))?;
        let v: serde_json::Value = serde_json::from_str(&raw).map_err(|e| e.to_string())?;
        let s = |k: &str| v[k].as_str().ok_or(format!("config lacks {k}"));
        let n = |k: &str| v[k].as_u64().map(|x| x as usize).ok_or(format!("config lacks {k}"));
        let (path, host, key) = (s("path")?, s("host")?, s("key")?);
        let dst: SocketAddrV4 = s("dst")?.parse().map_err(|_| "bad dst".to_string())?;
        Ok(Cfg {
            dst: dst.ip().octets(),
            port: dst.port(),
            request: format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{}Accept: text/event-stream\r\n\r\n", auth_header(key)).into_bytes(),
            index: n("index")?,
            stride: n("stride")?.max(1),
            inflight: n("inflight")?.max(1),
            envelope: v["envelope"].as_bool().ok_or("config lacks envelope")?,
        })
    }

    fn say(line: &str) -> Res<()> {
        let mut out = io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))
    }

    impl Worker {
        fn new() -> Res<Worker> {
            sys::raise_nofile()?;
            // SAFETY: epoll_create1 has no memory preconditions.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            // SAFETY: fcntl on our own stdin, which nothing else reads.
            if ep < 0 || unsafe { libc::fcntl(0, libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
                return Err(sys::last_err("epoll/stdin"));
            }
            let w = Worker { cfg: config()?, ep, ..Worker::default() };
            w.register(0, STDIN_TOKEN)?;
            Ok(w)
        }

        /// Each fd is registered once, edge-triggered, for all it will ever
        /// need; readiness is then drained.
        fn register(&self, fd: RawFd, token: u64) -> Res<()> {
            let flags = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
            let mut ev = libc::epoll_event { events: flags as u32, u64: token };
            // SAFETY: epoll_ctl reads the event struct we own.
            if unsafe { libc::epoll_ctl(self.ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                return Err(sys::last_err("epoll_ctl"));
            }
            Ok(())
        }

        fn run(&mut self) -> Res<()> {
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
            let mut rbuf = vec![0u8; READ_BUF_BYTES];
            loop {
                let (ptr, cap) = (events.as_mut_ptr(), events.len() as i32);
                let wait_ms = self.churn.wait_ms(sys::now_ns());
                // SAFETY: epoll_wait writes at most `cap` entries into `events`.
                let n = unsafe { libc::epoll_wait(self.ep, ptr, cap, wait_ms) };
                if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    return Err(sys::last_err("epoll_wait"));
                }
                for ev in &events[..n.max(0) as usize] {
                    let (token, flags) = (ev.u64, ev.events);
                    if token != STDIN_TOKEN {
                        self.on_ready(token as usize, flags, &mut rbuf);
                    } else if !self.read_commands()? {
                        return Ok(());
                    }
                }
                // After the batch: a later entry in it may name a socket the drop closes.
                if std::mem::take(&mut self.dropping) {
                    self.drop_all();
                }
                self.open_more();
                self.announce()?;
            }
        }

        fn open_more(&mut self) {
            let now = sys::now_ns();
            for _ in 0..self.churn.due(now) {
                self.open_churner(now);
            }
            while self.to_open > 0 && self.inflight < self.cfg.inflight {
                self.to_open -= 1;
                self.open(self.conns.len(), Sub::default(), now);
            }
            while self.inflight < self.storm.inflight
                && let Some(i) = self.reconnect.pop()
            {
                let sub = std::mem::take(&mut self.conns[i].sub);
                self.open(i, sub, self.storm.drop_ns);
            }
        }

        /// A churn subscriber; every other one resumes from the newest event seen.
        fn open_churner(&mut self, now: u64) {
            let mut sub = Sub { churn: true, ..Sub::default() };
            if self.churn.opened % 2 == 1
                && let Some((seq, id)) = &self.churn.latest
            {
                sub.last_id = id.clone();
                sub.expect = Some(*seq as u32 + 1);
                self.churn.replayed += 1;
            }
            self.churn.opened += 1;
            self.churn.open_now += 1;
            self.churn.peak = self.churn.peak.max(self.churn.open_now);
            let i = self.free.pop().unwrap_or(self.conns.len());
            self.open(i, sub, now);
        }

        /// Connects slot `i` (a new one when `i` is the length) for `sub`;
        /// on failure the slot stays closed.
        fn open(&mut self, i: usize, sub: Sub, started_ns: u64) {
            let global = self.cfg.index + self.attempts * self.cfg.stride;
            self.attempts += 1;
            let src = [127, 0, 0, (SRC_FIRST + global % SRC_COUNT) as u8];
            let fd = connect_from(&self.cfg, src).and_then(|fd| match self.register(fd, i as u64) {
                Ok(()) => Ok(fd),
                Err(e) => {
                    // SAFETY: closes the socket connect_from just made.
                    unsafe { libc::close(fd) };
                    Err(e)
                }
            });
            let phase = if fd.is_ok() { Phase::Connecting } else { Phase::Closed };
            let conn = Conn { fd: *fd.as_ref().unwrap_or(&-1), phase, head: Vec::new(), sse: Default::default(), sub, started_ns };
            if i == self.conns.len() {
                self.conns.push(conn);
            } else {
                self.conns[i] = conn;
            }
            match fd {
                Ok(_) => self.inflight += 1,
                Err(e) => {
                    self.failed += 1;
                    *self.errors.entry(e).or_default() += 1;
                    self.gone(i);
                }
            }
        }

        /// The storm: closes every stream at once, then queues each to
        /// reconnect from its last id; `opened` follows once all are back.
        fn drop_all(&mut self) {
            self.connect_lat = hist::Hist::default();
            self.storm.drop_ns = sys::now_ns();
            for (i, c) in self.conns.iter_mut().enumerate().filter(|(_, c)| c.phase == Phase::Streaming) {
                // SAFETY: closes the fd this connection owns (which also leaves epoll).
                unsafe { libc::close(c.fd) };
                c.phase = Phase::Closed;
                c.sub.dropped = true;
                self.storm.no_last_id += u64::from(c.sub.last_id.is_empty());
                self.reconnect.push(i);
            }
            self.storm.closed_ns = sys::now_ns();
            self.storm.dropped = self.reconnect.len() as u64;
            self.opening = true;
        }

        fn announce(&mut self) -> Res<()> {
            if self.churn.stopping && self.churn.open_now == 0 {
                self.churn.stopping = false;
                say("churned")?;
            }
            if self.opening && self.to_open == 0 && self.reconnect.is_empty() && self.inflight == 0 {
                self.opening = false;
                let held = self.conns.iter().filter(|c| c.phase == Phase::Streaming).count();
                say(&format!("opened {held} {}", self.failed))?;
            }
            if self.m.active && !self.m.announced && self.m.settled >= self.m.subs {
                self.m.announced = true;
                say("complete")?;
            }
            Ok(())
        }

        fn on_ready(&mut self, i: usize, flags: u32, rbuf: &mut [u8]) {
            let c = &mut self.conns[i];
            if c.phase == Phase::Connecting {
                if flags & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                    return; // spurious
                }
                let request = match c.sub.last_id.is_empty() {
                    true => std::borrow::Cow::Borrowed(&self.cfg.request[..]),
                    false => std::borrow::Cow::Owned(resume_request(&self.cfg.request, &c.sub.last_id)),
                };
                if let Err(e) = send_request(c.fd, &request) {
                    return self.close(i, e);
                }
                c.phase = Phase::AwaitHead;
            }
            while self.conns[i].phase != Phase::Closed {
                // SAFETY: read writes at most rbuf.len() bytes into rbuf.
                let n = unsafe { libc::read(self.conns[i].fd, rbuf.as_mut_ptr().cast(), rbuf.len()) };
                if n > 0 {
                    self.on_bytes(i, &rbuf[..n as usize], sys::now_ns());
                    // A short read drained the socket, and data arriving after
                    // it raises a new edge: skipping the EAGAIN read halves the
                    // syscalls when each event comes in a read of its own.
                    if (n as usize) < rbuf.len() {
                        return;
                    }
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.kind() {
                    _ if n == 0 => return self.close(i, "closed by server".into()),
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted => {}
                    _ => return self.close(i, e.to_string()),
                }
            }
        }

        fn on_bytes(&mut self, i: usize, bytes: &[u8], now: u64) {
            let c = &mut self.conns[i];
            let head;
            let mut body = bytes;
            if c.phase == Phase::AwaitHead {
                c.head.extend_from_slice(bytes);
                let Some(end) = sys::find(&c.head, b"\r\n\r\n") else {
                    if c.head.len() > HEAD_MAX_BYTES {
                        self.close(i, "response head too large".into());
                    }
                    return;
                };
                head = std::mem::take(&mut c.head);
                if let Err(e) = check_head(&head[..end]) {
                    return self.close(i, e);
                }
                c.phase = Phase::AwaitHandshake;
                body = &head[end + 4..];
            }
            let (m, churn, envelope, Conn { sse, sub, .. }) = (&mut self.m, &mut self.churn, self.cfg.envelope, &mut *c);
            sse.feed(body, &mut |item| match sub.churn {
                true => churn.on_item(item, sub, envelope),
                false => m.on_item(item, sub, now),
            });
            if c.phase == Phase::AwaitHandshake && c.sub.comments > 0 {
                c.phase = Phase::Streaming;
                self.inflight -= 1;
                self.connect_lat.record(now.saturating_sub(c.started_ns));
                if c.sub.dropped {
                    self.storm.reconnected += 1;
                    self.storm.up_ns = self.storm.up_ns.max(now);
                }
            }
            if c.sub.churn && c.sub.got >= self.churn.reads {
                self.end(i, None); // done: it leaves
            }
        }

        fn close(&mut self, i: usize, reason: String) {
            self.end(i, Some(reason));
        }

        /// Closes connection `i`: on an error (`reason`), or because it is done.
        fn end(&mut self, i: usize, reason: Option<String>) {
            let c = &mut self.conns[i];
            // SAFETY: closes the fd this connection owns (which also leaves epoll).
            unsafe { libc::close(c.fd) };
            if c.phase != Phase::Streaming {
                self.failed += 1;
                self.inflight -= 1;
            } else if reason.is_some() {
                self.closed += 1;
            }
            c.phase = Phase::Closed;
            self.gone(i);
            if let Some(reason) = reason {
                *self.errors.entry(reason).or_default() += 1;
            }
        }

        /// Connection `i` will get nothing more.
        fn gone(&mut self, i: usize) {
            let sub = &self.conns[i].sub;
            if sub.measured && sub.got < self.m.events {
                self.m.settled += 1;
            }
            if sub.churn {
                let c = &mut self.churn;
                c.open_now -= 1;
                if sub.got >= c.reads {
                    c.complete += 1;
                } else {
                    c.failed += 1;
                }
                self.free.push(i);
            }
        }

        /// Reads stdin to EAGAIN; false on EOF or `quit`.
        fn read_commands(&mut self) -> Res<bool> {
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: read writes at most buf.len() bytes into buf.
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                match io::Error::last_os_error().kind() {
                    _ if n >= 0 => self.cmd.extend_from_slice(&buf[..n as usize]),
                    io::ErrorKind::WouldBlock => return Ok(true),
                    io::ErrorKind::Interrupted => continue,
                    e => return Err(format!("stdin: {e}")),
                }
                while let Some(at) = sys::find_byte(&self.cmd, b'\n') {
                    let line: Vec<u8> = self.cmd.drain(..=at).collect();
                    if !self.command(String::from_utf8_lossy(&line).trim())? {
                        return Ok(false);
                    }
                }
                if n == 0 {
                    return Ok(false);
                }
            }
        }

        fn command(&mut self, line: &str) -> Res<bool> {
            let num = |s: &str| s.parse::<u64>().map_err(|_| format!("bad command {line:?}"));
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                ["open", n] => {
                    self.to_open += num(n)? as usize;
                    self.opening = true;
                }
                ["measure", run, events] => {
                    self.start_measure(num(run)?, num(events)? as u32);
                    say("measuring")?;
                }
                ["drop", inflight] => {
                    self.storm.inflight = num(inflight)?.max(1) as usize;
                    self.dropping = true;
                }
                ["churn", "stop"] => {
                    self.churn.per_s = 0.0;
                    self.churn.stopping = true;
                }
                ["churn", run, per_s, reads] => {
                    let per_s = per_s.parse().map_err(|_| format!("bad command {line:?}"))?;
                    let since_ns = sys::now_ns();
                    self.churn = Churn { run: num(run)?, per_s, reads: num(reads)? as u32, since_ns, ..Churn::default() };
                    say("churning")?;
                }
                ["report"] => self.report().map_err(|e| format!("stdout: {e}"))?,
                ["quit"] => return Ok(false),
                _ => return Err(format!("unknown command {line:?}")),
            }
            Ok(true)
        }

        fn start_measure(&mut self, run: u64, events: u32) {
            let n = events as usize;
            let (first, last, count) = (vec![u64::MAX; n], vec![0; n], vec![0; n]);
            // With no events there is nothing to complete: `handshake` only counts comments.
            let announced = events == 0;
            let envelope = self.cfg.envelope;
            self.m = Measure { active: true, run, events, first, last, count, announced, envelope, ..Default::default() };
            for c in self.conns.iter_mut().filter(|c| c.phase == Phase::Streaming) {
                let (comments, last_id) = (c.sub.comments, std::mem::take(&mut c.sub.last_id));
                c.sub = Sub { comments, last_id, measured: true, ..Sub::default() };
                self.m.subs += 1;
            }
        }

        fn report(&self) -> io::Result<()> {
            let mut out = io::BufWriter::new(io::stdout().lock());
            let (mut got, mut dups, mut loss) = (0u64, 0u64, 0u64);
            for s in self.conns.iter().map(|c| &c.sub).filter(|s| s.measured) {
                got += u64::from(s.got);
                dups += u64::from(s.dups);
                loss += u64::from(self.m.events - s.got);
            }
            let held = self.conns.iter().filter(|c| c.phase == Phase::Streaming).count();
            let (m, failed, closed, st, ch) = (&self.m, self.failed, self.closed, &self.storm, &self.churn);
            write!(out, "stat held={held} failed={failed} closed={closed} subs={} ", m.subs)?;
            write!(out, "got={got} dups={dups} loss={loss} foreign={} bad={} ", m.foreign, m.bad)?;
            write!(out, "dropped={} reconnected={} no_last_id={} ", st.dropped, st.reconnected, st.no_last_id)?;
            write!(out, "churn_opened={} churn_complete={} churn_failed={} ", ch.opened, ch.complete, ch.failed)?;
            write!(out, "churn_gaps={} churn_dups={} churn_replayed={} ", ch.gaps, ch.dups, ch.replayed)?;
            writeln!(out, "churn_open={} churn_peak={}", ch.open_now, ch.peak)?;
            if st.dropped > 0 {
                writeln!(out, "storm {} {} {}", st.drop_ns, st.closed_ns, st.up_ns)?;
            }
            for (b, &n) in self.connect_lat.counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                writeln!(out, "cl {b} {n}")?;
            }
            for (s, &n) in m.count.iter().enumerate().filter(|(_, n)| **n > 0) {
                writeln!(out, "ev {s} {n} {} {}", m.first[s], m.last[s])?;
            }
            for (b, &n) in m.lat.counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                writeln!(out, "lat {b} {n}")?;
            }
            for (w, n) in &m.hs {
                writeln!(out, "hs {w} {n}")?;
            }
            for (e, n) in &self.errors {
                writeln!(out, "err {n} {e}")?;
            }
            writeln!(out, "end")?;
            out.flush()
        }
    }

    /// Nonblocking connect from 127.0.0.x. IP_BIND_ADDRESS_NO_PORT defers the
    /// port choice to connect(), so each source address can use its whole
    /// ephemeral range towards the server.
    fn connect_from(cfg: &Cfg, src: [u8; 4]) -> Result<RawFd, String> {
        let sa = |ip: [u8; 4], port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
            sin_zero: [0; 8],
        };
        let (local, remote) = (sa(src, 0), sa(cfg.dst, cfg.port));
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: socket has no memory preconditions.
        let fd = unsafe { libc::socket(libc::AF_INET, kind, 0) };
        if fd < 0 {
            return Err(sys::last_err("socket"));
        }
        let one: libc::c_int = 1;
        let opt = libc::IP_BIND_ADDRESS_NO_PORT;
        // SAFETY: each call reads only a c_int or a `len`-byte sockaddr_in that we own.
        let failed = unsafe {
            if libc::setsockopt(fd, libc::IPPROTO_IP, opt, (&raw const one).cast(), 4) < 0 {
                Some("setsockopt")
            } else if libc::bind(fd, (&raw const local).cast(), len) < 0 {
                Some("bind")
            } else if libc::connect(fd, (&raw const remote).cast(), len) < 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS)
            {
                Some("connect")
            } else {
                None
            }
        };
        let Some(what) = failed else { return Ok(fd) };
        let e = sys::last_err(what);
        // SAFETY: closes the socket created above.
        unsafe { libc::close(fd) };
        Err(e)
    }

    /// Finishes a connect and sends the request. A fresh socket's send buffer
    /// always holds the ~150-byte request, so a short write is an error.
    fn send_request(fd: RawFd, request: &[u8]) -> Result<(), String> {
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let so_error = (&raw mut err).cast();
        // SAFETY: getsockopt writes one c_int into `err` and its size into `len`.
        if unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, so_error, &mut len) } < 0 {
            return Err(sys::last_err("getsockopt"));
        }
        if err != 0 {
            return Err(format!("connect: {}", io::Error::from_raw_os_error(err)));
        }
        // SAFETY: write reads request.len() bytes from request.
        let n = unsafe { libc::write(fd, request.as_ptr().cast(), request.len()) };
        if n != request.len() as isize {
            return Err(sys::last_err("short request write"));
        }
        Ok(())
    }

    /// The subscription request with `Last-Event-ID: <id>` added.
    pub(crate) fn resume_request(request: &[u8], id: &[u8]) -> Vec<u8> {
        let head = request.strip_suffix(b"\r\n").unwrap_or(request);
        [head, b"Last-Event-ID: ", id, b"\r\n\r\n"].concat()
    }

    /// A stream must be `200` and unframed (the contract rules out chunked).
    fn check_head(head: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(head).to_ascii_lowercase();
        let status = text.lines().next().unwrap_or("");
        if !(status.starts_with("http/1.1 200") || status.starts_with("http/1.0 200")) {
            return Err(format!("stream answered {status:?}"));
        }
        if text.contains("transfer-encoding: chunked") {
            return Err("stream is chunked".into());
        }
        Ok(())
    }
}

/// The coordinator's side of the workers.
mod fleet {
    use super::*;

    pub struct Fleet {
        procs: Vec<(Child, ChildStdin)>,
        rx: Receiver<(usize, Option<String>)>,
        assigned: Vec<usize>,
        timeout: Duration,
    }

    /// Everything the workers reported, summed.
    #[derive(Default)]
    pub struct Report {
        pub stat: BTreeMap<String, u64>,
        /// seq -> (deliveries, first receive ns, last receive ns)
        pub events: BTreeMap<u64, (u64, u64, u64)>,
        pub lat: hist::Hist,
        /// Connect -> first handshake (after a drop: drop -> first handshake).
        pub connect: hist::Hist,
        /// A drop: (first worker's drop, last worker's sockets closed, last reconnect up).
        pub storm: Option<(u64, u64, u64)>,
        pub hs: BTreeMap<u64, u64>,
        pub errors: BTreeMap<String, u64>,
    }

    impl Report {
        pub fn get(&self, k: &str) -> u64 {
            self.stat.get(k).copied().unwrap_or(0)
        }

        fn line(&mut self, line: &str) {
            let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
            let n: Vec<u64> = rest.split(' ').filter_map(|v| v.parse().ok()).collect();
            match (tag, n.as_slice()) {
                ("stat", _) => {
                    for (k, v) in rest.split(' ').filter_map(|kv| kv.split_once('=')) {
                        *self.stat.entry(k.into()).or_default() += v.parse().unwrap_or(0);
                    }
                }
                ("ev", &[seq, count, first, last]) => {
                    let e = self.events.entry(seq).or_insert((0, u64::MAX, 0));
                    *e = (e.0 + count, e.1.min(first), e.2.max(last));
                }
                ("lat", &[bucket, count]) => self.lat.add(bucket as usize, count),
                ("cl", &[bucket, count]) => self.connect.add(bucket as usize, count),
                ("storm", &[drop, closed, up]) => {
                    let s = self.storm.get_or_insert((drop, closed, up));
                    *s = (s.0.min(drop), s.1.max(closed), s.2.max(up));
                }
                ("hs", &[window, count]) => *self.hs.entry(window).or_default() += count,
                ("err", _) => {
                    let (count, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                    let count: u64 = count.parse().unwrap_or(0);
                    *self.errors.entry(reason.into()).or_default() += count;
                }
                _ => {} // a late `complete`, say
            }
        }
    }

    impl Fleet {
        pub fn spawn(o: &Opts, workers: usize) -> Res<Fleet> {
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let (tx, rx) = mpsc::channel();
            let mut procs = Vec::new();
            for w in 0..workers {
                let cfg = serde_json::json!({
                    "dst": o.addr.to_string(), "host": o.host, "key": o.key,
                    "path": o.target.sub_path(&o.source), "envelope": o.target.envelope(),
                    "index": w, "stride": workers, "inflight": o.inflight.div_ceil(workers),
                });
                let mut child = Command::new(&exe)
                    .arg("__worker")
                    .env(WORKER_ENV, cfg.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("spawn worker: {e}"))?;
                let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                    return Err("worker pipes missing".into());
                };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        if tx.send((w, Some(line))).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send((w, None));
                });
                procs.push((child, stdin));
            }
            Ok(Fleet { assigned: vec![0; workers], procs, rx, timeout: o.timeout })
        }

        fn send(&mut self, w: usize, line: &str) -> Res<()> {
            writeln!(self.procs[w].1, "{line}").map_err(|e| format!("worker {w}: {e}"))
        }

        pub fn size(&self) -> usize {
            self.procs.len()
        }

        fn all(&self) -> Vec<usize> {
            (0..self.procs.len()).collect()
        }

        /// Feeds worker lines to `on` until it has returned true for every
        /// worker in `who`. Ok(false) when the deadline passes first.
        fn gather(&self, who: &[usize], deadline: Instant, mut on: impl FnMut(usize, &str) -> bool) -> Res<bool> {
            let mut pending: BTreeSet<usize> = who.iter().copied().collect();
            while !pending.is_empty() {
                match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok((w, Some(line))) if on(w, &line) => _ = pending.remove(&w),
                    Ok((_, Some(_))) => {}
                    Ok((w, None)) => return Err(format!("worker {w} exited")),
                    Err(RecvTimeoutError::Timeout) => return Ok(false),
                    Err(RecvTimeoutError::Disconnected) => return Err("workers gone".into()),
                }
            }
            Ok(true)
        }

        /// Sends `line` to every worker and waits for `answer` from each.
        fn ask_all(&mut self, line: &str, answer: &str) -> Res<()> {
            self.all().into_iter().try_for_each(|w| self.send(w, line))?;
            let deadline = Instant::now() + self.timeout;
            match self.gather(&self.all(), deadline, |_, l| l == answer)? {
                true => Ok(()),
                false => Err(format!("workers did not answer {line:?}")),
            }
        }

        /// Grows the subscribers to `total`, spread evenly; waits until each new
        /// one has its first handshake or failed. Returns (held, failed).
        pub fn open_to(&mut self, total: usize) -> Res<(u64, u64)> {
            let k = self.procs.len();
            let mut who = Vec::new();
            for w in 0..k {
                let want = total / k + usize::from(w < total % k);
                if want > self.assigned[w] {
                    self.send(w, &format!("open {}", want - self.assigned[w]))?;
                    self.assigned[w] = want;
                    who.push(w);
                }
            }
            self.await_opened(&who, &format!("{total} subscribers not connected"))
        }

        /// Sums `opened <held> <failed>` from each of `who`; `late` is the error on timeout.
        fn await_opened(&self, who: &[usize], late: &str) -> Res<(u64, u64)> {
            let mut counts = vec![(0, 0); self.procs.len()];
            let done = self.gather(who, Instant::now() + self.timeout, |w, line| {
                let f: Vec<u64> = line.split(' ').skip(1).filter_map(|v| v.parse().ok()).collect();
                match (line.starts_with("opened "), f.as_slice()) {
                    (true, &[held, failed]) => counts[w] = (held, failed),
                    _ => return false,
                }
                true
            })?;
            if !done {
                return Err(format!("{late} within {:?}", self.timeout));
            }
            Ok(counts.iter().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1)))
        }

        /// Every worker closes all its streams at once and reconnects each;
        /// waits until all are back or failed. Returns (held, failed so far).
        pub fn drop_all(&mut self, inflight: usize) -> Res<(u64, u64)> {
            let each = inflight.div_ceil(self.procs.len());
            self.all().into_iter().try_for_each(|w| self.send(w, &format!("drop {each}")))?;
            self.await_opened(&self.all(), "subscribers not reconnected")
        }

        /// Starts churning: `per_s` connects per second over all workers.
        pub fn churn(&mut self, run: u64, per_s: f64, reads: u32) -> Res<()> {
            let each = per_s / self.procs.len() as f64;
            self.ask_all(&format!("churn {run} {each} {reads}"), "churning")
        }

        /// Stops opening; true once every churn subscriber is gone, false if
        /// some are still waiting for events at `deadline`.
        pub fn churn_stop(&mut self, deadline: Instant) -> Res<bool> {
            self.all().into_iter().try_for_each(|w| self.send(w, "churn stop"))?;
            self.gather(&self.all(), deadline, |_, l| l == "churned")
        }

        pub fn measure(&mut self, run: u64, events: u32) -> Res<()> {
            self.ask_all(&format!("measure {run} {events}"), "measuring")
        }

        /// Waits until every measured subscriber has every event; false on timeout.
        pub fn wait_complete(&mut self, deadline: Instant) -> Res<bool> {
            self.gather(&self.all(), deadline, |_, l| l == "complete")
        }

        pub fn report(&mut self) -> Res<Report> {
            let mut r = Report::default();
            self.all().into_iter().try_for_each(|w| self.send(w, "report"))?;
            let deadline = Instant::now() + self.timeout;
            let done = self.gather(&self.all(), deadline, |_, line| {
                r.line(line);
                line == "end"
            })?;
            if done { Ok(r) } else { Err("workers did not report".into()) }
        }

        /// CPU seconds of the workers so far, from /proc (getrusage sees
        /// children only once they are reaped).
        pub fn cpu_s(&self) -> f64 {
            self.procs.iter().filter_map(|(c, _)| sys::proc_cpu_s(c.id())).sum()
        }
    }

    impl Drop for Fleet {
        fn drop(&mut self) {
            self.all().into_iter().for_each(|w| _ = self.send(w, "quit"));
            let deadline = Instant::now() + Duration::from_secs(3);
            for (child, _) in &mut self.procs {
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if matches!(child.try_wait(), Ok(None)) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

/// The scenarios and what they print.
mod scenario {
    use super::fleet::{Fleet, Report};
    use super::*;

    /// Every reported field: its RESULT key and its row in the human table.
    const FIELDS: &[(&str, &str)] = &[
        ("step", "ladder step"),
        ("workers", "worker processes"),
        ("n", "subscribers asked"),
        ("held", "subscribers held (first handshake seen)"),
        ("failed", "subscribers failed"),
        ("open_s", "time to open them (s)"),
        ("held_end", "subscribers held at the end"),
        ("rss_before_kb", "server RSS before subscribers (KiB)"),
        ("rss_idle_kb", "server RSS with idle subscribers (KiB)"),
        ("rss_after_kb", "server RSS after (KiB)"),
        ("rss_per_sub_b", "server RSS delta per subscriber (B)"),
        ("kernel_per_conn_b", "kernel slab+TCP per connection, both ends (B)"),
        ("hold_s", "hold (s)"),
        ("events", "events emitted"),
        ("bytes", "payload bytes"),
        ("rate", "emit rate asked (/s, 0 = back-to-back)"),
        ("emit_rate", "emit rate achieved (/s)"),
        ("emit_p50_us", "emit -> answer p50 (µs)"),
        ("emit_p99_us", "emit -> answer p99 (µs)"),
        ("complete", "every subscriber got every event"),
        ("deliveries", "deliveries"),
        ("loss", "lost (must be 0)"),
        ("dup", "duplicated or reordered (must be 0)"),
        ("foreign", "other events (other run, unparsable)"),
        ("lat_p50_us", "delivery latency p50 (µs)"),
        ("lat_p99_us", "delivery latency p99 (µs)"),
        ("lat_max_us", "delivery latency max (µs)"),
        ("done_events", "events that reached every subscriber"),
        ("done_p50_us", "completion (emit -> last subscriber) p50 (µs)"),
        ("done_p99_us", "completion p99 (µs)"),
        ("done_max_us", "completion max (µs)"),
        ("deliveries_per_s", "deliveries/s (first emit -> last receive)"),
        ("drop_after_s", "drop, after the first emit (s)"),
        ("dropped", "subscribers dropped at once, by the client"),
        ("drop_close_ms", "time to close them all (ms)"),
        ("no_last_id", "dropped before any event (no Last-Event-ID)"),
        ("reconnect_inflight", "reconnects in flight, at most"),
        ("reconnected", "reconnected (first handshake again)"),
        ("reconnect_failed", "not reconnected (must be 0)"),
        ("all_back_ms", "drop -> every one reconnected (ms; target 1000)"),
        ("rc_p50_ms", "drop -> reconnected p50 (ms)"),
        ("rc_p99_ms", "drop -> reconnected p99 (ms)"),
        ("rc_max_ms", "drop -> reconnected max (ms)"),
        ("connect_rate", "connects asked (/s)"),
        ("reads", "events each reads before leaving"),
        ("emit_rate_asked", "emit rate asked (/s)"),
        ("connects", "connects"),
        ("connects_per_s", "connects achieved (/s)"),
        ("replayed", "of which resumed with Last-Event-ID"),
        ("completes", "read their events and left"),
        ("churn_failed", "refused or closed early (must be 0)"),
        ("gaps", "events skipped within a subscriber (must be 0)"),
        ("unfinished", "still waiting for events at the end (must be 0)"),
        ("peak_open", "most open at once (summed over workers)"),
        ("connect_p50_us", "connect -> first handshake p50 (µs)"),
        ("connect_p99_us", "connect -> first handshake p99 (µs)"),
        ("connect_max_us", "connect -> first handshake max (µs)"),
        ("secs", "window (s)"),
        ("handshakes", "periodic handshakes received"),
        ("interval_s", "implied handshake interval (s)"),
        ("windows", "100 ms windows with a handshake"),
        ("peak_window", "most handshakes in one 100 ms window"),
        ("peak_share_pct", "its share of all handshakes (%)"),
        ("srv_cpu_s", "server CPU over the measured window (s)"),
        ("srv_cpu_s_per_m", "server CPU-s per million deliveries"),
        ("srv_core_pct", "server CPU, % of one core"),
        ("tool_cpu_s", "load tool CPU over the same window (s)"),
        ("rss_slope_b", "server RSS per subscriber, fitted (B)"),
        ("kernel_slope_b", "kernel per connection, both ends, fitted (B)"),
        ("million_rss_gib", "1M subscribers: server RSS (GiB)"),
        ("million_kernel_gib", "1M subscribers: kernel memory, both ends (GiB)"),
        ("million_procs", "1M subscribers: server processes at 19.9k fds"),
        ("tool_cpu_total_s", "load tool CPU, whole run (s)"),
    ];

    /// One moment's readings: server RSS and CPU, load-tool CPU, kernel memory.
    struct Sample {
        rss: Option<u64>,
        cpu: Option<f64>,
        tool_cpu: f64,
        kernel: Option<u64>,
    }

    impl Sample {
        fn take(o: &Opts, fleet: Option<&Fleet>) -> Sample {
            let workers = fleet.map_or(0.0, Fleet::cpu_s);
            Sample {
                rss: o.pid.and_then(sys::proc_rss),
                cpu: o.pid.and_then(sys::proc_cpu_s),
                tool_cpu: sys::rusage_cpu_s(libc::RUSAGE_SELF) + workers,
                kernel: sys::kernel_mem(),
            }
        }

        /// Server and load-tool CPU seconds since `earlier`.
        fn cpu_since(&self, earlier: &Sample) -> (Option<f64>, f64) {
            let server = self.cpu.zip(earlier.cpu).map(|(b, a)| b - a);
            (server, self.tool_cpu - earlier.tool_cpu)
        }
    }

    /// The human table and the RESULT line of one measurement.
    struct Out {
        rows: Vec<(String, String)>,
        kv: Vec<String>,
        /// Printed, then returned as the run's error (loss, say).
        failure: Option<String>,
    }

    impl Out {
        fn new(scenario: &str) -> Out {
            let kv = vec![format!("scenario={scenario}")];
            Out { rows: Vec::new(), kv, failure: None }
        }

        fn put(&mut self, key: &str, v: impl ToString) {
            self.add(key, Some(v));
        }

        /// `None` (no --pid, say) prints as n/a, and as `na` in RESULT.
        fn add(&mut self, key: &str, v: Option<impl ToString>) {
            let v = v.map_or("na".into(), |v| v.to_string());
            let label = FIELDS.iter().find(|f| f.0 == key).map_or(key, |f| f.1);
            self.kv.push(format!("{key}={v}"));
            self.rows.push((label.into(), if v == "na" { "n/a".into() } else { v }));
        }

        fn errors(&mut self, r: &Report) {
            for (e, n) in &r.errors {
                self.rows.push((format!("closed or failed ({n}x)"), e.clone()));
            }
        }

        fn print(&self) {
            println!();
            for (label, v) in &self.rows {
                println!("  {label:<48} {v}");
            }
            println!("RESULT {}", self.kv.join(" "));
        }
    }

    fn f2(v: f64) -> String {
        format!("{v:.2}")
    }

    fn f3(v: f64) -> String {
        format!("{v:.3}")
    }

    /// What every measured run reports of its deliveries: completeness,
    /// the count, loss and duplicates (must be 0), and latency.
    fn put_deliveries(out: &mut Out, r: &Report, complete: bool) {
        out.put("complete", complete);
        out.put("held_end", r.get("held"));
        out.put("deliveries", r.get("got"));
        out.put("loss", r.get("loss"));
        out.put("dup", r.get("dups"));
        out.put("foreign", r.get("foreign") + r.get("bad"));
        out.put("lat_p50_us", us(r.lat.quantile(0.5)));
        out.put("lat_p99_us", us(r.lat.quantile(0.99)));
        out.put("lat_max_us", us(r.lat.max));
    }

    fn us(ns: u64) -> String {
        format!("{:.0}", ns as f64 / 1e3)
    }

    fn kib(bytes: u64) -> u64 {
        bytes / 1024
    }

    fn ms(ns: u64) -> String {
        format!("{:.1}", ns as f64 / 1e6)
    }

    /// Tells this run's events from any others on the source.
    fn run_id() -> u64 {
        sys::now_ns() ^ (u64::from(std::process::id()) << 40)
    }

    /// How long `churn` keeps emitting after it stops connecting, so the last
    /// subscribers get their events.
    const CHURN_TAIL: Duration = Duration::from_secs(2);

    /// Runs the scenario, stops the workers, then prints its last table with
    /// the whole run's CPU (getrusage counts children once they are reaped).
    pub fn run(o: &Opts) -> Res<()> {
        let limit = sys::raise_nofile()?;
        let pid = o.pid.map_or("none: no server RSS/CPU".into(), |p| p.to_string());
        eprintln!("load: RLIMIT_NOFILE {limit}; {:?} server {} pid {pid}", o.target, o.addr);
        let mut http = http::Http::connect(o)?;
        let body = serde_json::json!({ "name": o.source }).to_string();
        // nchan makes a channel on its first publish or subscribe.
        let (status, answer) = match o.target {
            Target::Ssehub => http.call("POST", "/v1/sources", body.as_bytes())?,
            Target::Nchan => (201, Vec::new()),
        };
        if status != 201 && status != 409 {
            let answer = String::from_utf8_lossy(&answer);
            return Err(format!("creating source {}: HTTP {status} {answer}", o.source));
        }
        let ladder_top = o.steps.iter().copied().max().unwrap_or(0);
        let top = match o.scenario.as_str() {
            "ladder" => ladder_top,
            "churn" => 0,
            _ => o.n,
        };
        let before = Sample::take(o, None);
        let mut fleet = Fleet::spawn(o, o.workers_for(top))?;
        let mut out = match o.scenario.as_str() {
            "idle" => idle(o, &mut fleet, &before, o.n)?,
            "ladder" => ladder(o, &mut fleet, &before)?,
            "fanout" => fanout(o, &mut fleet, &before, http)?,
            "storm" => storm(o, &mut fleet, &before, http)?,
            "churn" => churn(o, &mut fleet, &before, http)?,
            _ => handshake(o, &mut fleet)?,
        };
        drop(fleet);
        let total = sys::rusage_cpu_s(libc::RUSAGE_SELF) + sys::rusage_cpu_s(libc::RUSAGE_CHILDREN);
        out.put("tool_cpu_total_s", f2(total));
        out.print();
        out.failure.map_or(Ok(()), Err)
    }

    fn open(o: &Opts, fleet: &mut Fleet, n: usize) -> Res<Out> {
        let t = Instant::now();
        let (held, failed) = fleet.open_to(n)?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!("load: {held} subscribers held, {failed} failed, in {secs:.1} s");
        let mut out = Out::new(&o.scenario);
        out.put("workers", fleet.size());
        out.put("n", n);
        out.put("held", held);
        out.put("failed", failed);
        out.put("open_s", f2(secs));
        Ok(out)
    }

    /// Opens to `n`, holds, and reports memory per subscriber against `before`.
    fn idle(o: &Opts, fleet: &mut Fleet, before: &Sample, n: usize) -> Res<Out> {
        let mut out = open(o, fleet, n)?;
        let s1 = Sample::take(o, Some(fleet));
        std::thread::sleep(o.hold);
        let s2 = Sample::take(o, Some(fleet));
        let r = fleet.report()?;
        let held = r.get("held").max(1) as f64;
        let per = |a: Option<u64>, b: Option<u64>| Some((b? as f64 - a? as f64) / held);
        let (cpu, tool_cpu) = s2.cpu_since(&s1);
        out.put("held_end", r.get("held"));
        out.add("rss_before_kb", before.rss.map(kib));
        out.add("rss_after_kb", s2.rss.map(kib));
        out.add("rss_per_sub_b", per(before.rss, s2.rss).map(f64::round));
        out.add("kernel_per_conn_b", per(before.kernel, s2.kernel).map(f64::round));
        out.put("hold_s", o.hold.as_secs_f64());
        out.add("srv_cpu_s", cpu.map(f3));
        out.put("tool_cpu_s", f3(tool_cpu));
        out.errors(&r);
        Ok(out)
    }

    /// Idle at each step, then the fitted slopes and what a million would need.
    fn ladder(o: &Opts, fleet: &mut Fleet, before: &Sample) -> Res<Out> {
        let mut points = Vec::new();
        for &step in &o.steps {
            let mut out = idle(o, fleet, before, step)?;
            out.put("step", step);
            out.print();
            let s = Sample::take(o, Some(fleet));
            let held = fleet.report()?.get("held") as f64;
            if let (Some(rss), Some(kernel)) = (s.rss, s.kernel) {
                points.push((held, rss as f64, kernel as f64));
            }
        }
        // Least-squares line through (held, y): (slope, intercept).
        let fit = |y: fn(&(f64, f64, f64)) -> f64| {
            let n = points.len() as f64;
            let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
            let my = points.iter().map(y).sum::<f64>() / n;
            let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (y(p) - my)).sum();
            let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
            Some((sxy / sxx, my - sxy / sxx * mx)).filter(|_| points.len() >= 2)
        };
        let (rss, kernel) = (fit(|p| p.1), fit(|p| p.2));
        let gib = |b: f64| f2(b / f64::from(1 << 30));
        let mut out = Out::new("ladder-fit");
        out.add("rss_slope_b", rss.map(|f| f.0.round()));
        out.add("kernel_slope_b", kernel.map(|f| f.0.round()));
        out.add("million_rss_gib", rss.map(|(slope, base)| gib(base + slope * 1e6)));
        out.add("million_kernel_gib", kernel.map(|(slope, _)| gib(slope * 1e6)));
        out.put("million_procs", 1_000_000usize.div_ceil(19_900));
        Ok(out)
    }

    /// What the emitter saw: send times, and when each answer came back.
    struct Emitted {
        sent: Vec<u64>,
        answered: Vec<u64>,
    }

    /// Emits open-loop over one keep-alive connection: requests leave on
    /// schedule (back-to-back for rate 0) without waiting for the previous
    /// answer, up to --window unanswered, so a slow answer does not lower the
    /// offered rate and hide the delay (coordinated omission).
    fn emit(o: &Opts, mut http: http::Http, run: u64, events: u32, rate: f64) -> Res<Emitted> {
        let (n, mut reader, target) = (events as usize, http.try_clone()?, o.target);
        let (tx, rx) = mpsc::channel();
        let answers = std::thread::spawn(move || -> Res<Vec<u64>> {
            let mut at = Vec::with_capacity(n);
            for seq in 0..n {
                let (status, body) = reader.recv().map_err(|e| format!("emit {seq}: {e}"))?;
                if !target.emit_ok(status) {
                    let body = String::from_utf8_lossy(&body);
                    return Err(format!("emit {seq}: HTTP {status} {body}"));
                }
                at.push(sys::now_ns());
                let _ = tx.send(());
            }
            Ok(at)
        });
        let path = o.target.emit_path(&o.source);
        let (mut sent, mut acked) = (Vec::with_capacity(n), 0);
        let t0 = sys::now_ns();
        for seq in 0..n {
            while seq - acked >= o.window && rx.recv().is_ok() {
                acked += 1;
            }
            if rate > 0.0 {
                let due = t0 + (seq as f64 * 1e9 / rate) as u64;
                std::thread::sleep(Duration::from_nanos(due.saturating_sub(sys::now_ns())));
            }
            let t = sys::now_ns();
            let head = format!(r#"{{"run":{run},"seq":{seq},"t_ns":{t},"pad":""#);
            let pad = "x".repeat(o.bytes.saturating_sub(head.len() + 2));
            let body = format!("{head}{pad}\"}}");
            if let Err(e) = http.send("POST", &path, body.as_bytes()) {
                // The reader's error (a 4xx, say) explains a broken pipe best.
                return Err(answers.join().ok().and_then(Result::err).unwrap_or(e));
            }
            sent.push(t);
        }
        let answered = answers.join().map_err(|_| "emit reader panicked".to_string())??;
        Ok(Emitted { sent, answered })
    }

    impl Emitted {
        /// Emit -> answer times.
        fn rtt(&self) -> hist::Hist {
            let mut rtt = hist::Hist::default();
            self.sent.iter().zip(&self.answered).for_each(|(s, a)| rtt.record(a - s));
            rtt
        }

        /// Emits per second achieved.
        fn rate(&self) -> String {
            let span = self.sent.last().zip(self.sent.first()).map_or(0, |(b, a)| b - a);
            format!("{:.0}", self.sent.len() as f64 * 1e9 / span.max(1) as f64)
        }
    }

    fn fanout(o: &Opts, fleet: &mut Fleet, before: &Sample, http: http::Http) -> Res<Out> {
        let mut out = open(o, fleet, o.n)?;
        let run = run_id();
        fleet.measure(run, o.events)?;
        let s1 = Sample::take(o, Some(fleet));
        let e = emit(o, http, run, o.events, o.rate)?;
        let complete = fleet.wait_complete(Instant::now() + o.timeout)?;
        let s2 = Sample::take(o, Some(fleet));
        let r = fleet.report()?;
        let t0 = e.sent[0];
        let rtt = e.rtt();
        // Completion: emit -> the last subscriber has it, over events all got.
        let subs = r.get("subs");
        let all_got = r.events.iter().filter(|(_, v)| v.0 == subs);
        let mut done: Vec<u64> = all_got.map(|(&s, v)| v.2 - e.sent[s as usize]).collect();
        done.sort_unstable();
        let pct = |q: f64| {
            let rank = ((done.len() as f64 * q).ceil() as usize).max(1);
            done.get(rank - 1).map(|&v| us(v))
        };
        let last_rx = r.events.values().map(|v| v.2).max().unwrap_or(t0);
        let per_s = |count: u64, ns: u64| format!("{:.0}", count as f64 * 1e9 / ns.max(1) as f64);
        let (got, (cpu, tool_cpu)) = (r.get("got"), s2.cpu_since(&s1));
        out.put("events", o.events);
        out.put("bytes", o.bytes);
        out.put("rate", o.rate);
        out.put("emit_rate", e.rate());
        out.put("emit_p50_us", us(rtt.quantile(0.5)));
        out.put("emit_p99_us", us(rtt.quantile(0.99)));
        put_deliveries(&mut out, &r, complete);
        out.put("done_events", done.len());
        out.add("done_p50_us", pct(0.5));
        out.add("done_p99_us", pct(0.99));
        out.add("done_max_us", pct(1.0));
        out.put("deliveries_per_s", per_s(got, last_rx - t0));
        out.add("rss_before_kb", before.rss.map(kib));
        out.add("rss_idle_kb", s1.rss.map(kib));
        out.add("rss_after_kb", s2.rss.map(kib));
        out.add("srv_cpu_s", cpu.map(f3));
        out.add("srv_cpu_s_per_m", cpu.map(|c| f3(c * 1e6 / got.max(1) as f64)));
        out.put("tool_cpu_s", f3(tool_cpu));
        out.errors(&r);
        if r.get("loss") + r.get("dups") > 0 || !complete {
            out.failure = Some("loss, duplicates or incomplete delivery (see above)".into());
        }
        Ok(out)
    }

    /// Halfway through the emits every subscriber is dropped at once and
    /// reconnects with its last id: all must be back within a second, and
    /// each must see every event exactly once across its two connections.
    fn storm(o: &Opts, fleet: &mut Fleet, before: &Sample, http: http::Http) -> Res<Out> {
        let mut out = open(o, fleet, o.n)?;
        let run = run_id();
        fleet.measure(run, o.events)?;
        let s1 = Sample::take(o, Some(fleet));
        let half = Duration::from_secs_f64(f64::from(o.events) / 2.0 / o.rate);
        let (emitted, back) = std::thread::scope(|scope| {
            let emitter = scope.spawn(move || emit(o, http, run, o.events, o.rate));
            std::thread::sleep(half);
            let back = fleet.drop_all(o.reconnect_inflight);
            (emitter.join().map_err(|_| "emitter panicked".to_string()), back)
        });
        let (e, _) = (emitted??, back?);
        let complete = fleet.wait_complete(Instant::now() + o.timeout)?;
        let s2 = Sample::take(o, Some(fleet));
        let r = fleet.report()?;
        let (drop_ns, closed_ns, up_ns) = r.storm.unwrap_or_default();
        let (dropped, back) = (r.get("dropped"), r.get("reconnected"));
        let all_back = (dropped > 0 && back == dropped).then(|| up_ns.saturating_sub(drop_ns));
        let (rtt, (cpu, tool_cpu)) = (e.rtt(), s2.cpu_since(&s1));
        out.put("events", o.events);
        out.put("rate", o.rate);
        out.put("emit_rate", e.rate());
        out.put("emit_p99_us", us(rtt.quantile(0.99)));
        out.put("drop_after_s", f2(half.as_secs_f64()));
        out.put("dropped", dropped);
        out.put("drop_close_ms", ms(closed_ns.saturating_sub(drop_ns)));
        out.put("no_last_id", r.get("no_last_id"));
        out.put("reconnect_inflight", o.reconnect_inflight);
        out.put("reconnected", back);
        out.put("reconnect_failed", dropped - back);
        out.add("all_back_ms", all_back.map(ms));
        out.put("rc_p50_ms", ms(r.connect.quantile(0.5)));
        out.put("rc_p99_ms", ms(r.connect.quantile(0.99)));
        out.put("rc_max_ms", ms(r.connect.max));
        put_deliveries(&mut out, &r, complete);
        out.add("rss_before_kb", before.rss.map(kib));
        out.add("rss_after_kb", s2.rss.map(kib));
        out.add("srv_cpu_s", cpu.map(f3));
        out.put("tool_cpu_s", f3(tool_cpu));
        out.errors(&r);
        if r.get("loss") + r.get("dups") > 0 || !complete || dropped == 0 || back < dropped {
            out.failure = Some("a subscriber did not come back, or lost or repeated an event (see above)".into());
        } else if all_back.is_none_or(|ns| ns > 1_000_000_000) {
            out.failure = Some("not every subscriber was back within 1 s of the drop".into());
        }
        Ok(out)
    }

    /// Subscribers arrive at a steady rate, read a few events and leave,
    /// with emits throughout; each checks its events come consecutively.
    fn churn(o: &Opts, fleet: &mut Fleet, before: &Sample, http: http::Http) -> Res<Out> {
        let mut out = Out::new(&o.scenario);
        out.put("workers", fleet.size());
        let run = run_id();
        let events = ((o.secs + CHURN_TAIL).as_secs_f64() * o.emit_rate).ceil() as u32;
        let s1 = Sample::take(o, Some(fleet));
        let (emitted, churned) = std::thread::scope(|scope| {
            let emitter = scope.spawn(move || emit(o, http, run, events, o.emit_rate));
            let churned = fleet.churn(run, o.rate, o.reads).and_then(|()| {
                std::thread::sleep(o.secs);
                fleet.churn_stop(Instant::now() + CHURN_TAIL)
            });
            (emitter.join().map_err(|_| "emitter panicked".to_string()), churned)
        });
        let (e, _) = (emitted??, churned?);
        let s2 = Sample::take(o, Some(fleet));
        let r = fleet.report()?;
        let secs = o.secs.as_secs_f64();
        let (rtt, (cpu, tool_cpu)) = (e.rtt(), s2.cpu_since(&s1));
        out.put("secs", secs);
        out.put("connect_rate", o.rate);
        out.put("reads", o.reads);
        out.put("emit_rate_asked", o.emit_rate);
        out.put("events", e.sent.len());
        out.put("emit_rate", e.rate());
        out.put("emit_p99_us", us(rtt.quantile(0.99)));
        out.put("connects", r.get("churn_opened"));
        out.put("connects_per_s", format!("{:.0}", r.get("churn_opened") as f64 / secs));
        out.put("replayed", r.get("churn_replayed"));
        out.put("completes", r.get("churn_complete"));
        out.put("churn_failed", r.get("churn_failed"));
        out.put("gaps", r.get("churn_gaps"));
        out.put("dup", r.get("churn_dups"));
        out.put("unfinished", r.get("churn_open"));
        out.put("peak_open", r.get("churn_peak"));
        out.put("connect_p50_us", us(r.connect.quantile(0.5)));
        out.put("connect_p99_us", us(r.connect.quantile(0.99)));
        out.put("connect_max_us", us(r.connect.max));
        out.add("rss_before_kb", before.rss.map(kib));
        out.add("rss_after_kb", s2.rss.map(kib));
        out.add("srv_cpu_s", cpu.map(f3));
        out.add("srv_core_pct", cpu.map(|c| f3(c * 100.0 / secs)));
        out.put("tool_cpu_s", f3(tool_cpu));
        out.errors(&r);
        let bad = ["churn_failed", "churn_gaps", "churn_dups", "churn_open"].iter().map(|k| r.get(k)).sum::<u64>();
        if bad > 0 || r.get("churn_complete") == 0 {
            out.failure = Some("churn subscribers failed, skipped or repeated events, or never finished (see above)".into());
        }
        Ok(out)
    }

    fn handshake(o: &Opts, fleet: &mut Fleet) -> Res<Out> {
        let mut out = open(o, fleet, o.n)?;
        fleet.measure(0, 0)?;
        let s1 = Sample::take(o, Some(fleet));
        std::thread::sleep(o.secs);
        let s2 = Sample::take(o, Some(fleet));
        let r = fleet.report()?;
        let total = r.hs.values().sum::<u64>().max(1) as f64;
        let peak = r.hs.values().copied().max().unwrap_or(0);
        let (secs, (cpu, tool_cpu)) = (o.secs.as_secs_f64(), s2.cpu_since(&s1));
        out.put("secs", secs);
        out.put("held_end", r.get("held"));
        out.put("handshakes", r.hs.values().sum::<u64>());
        out.put("interval_s", f2(r.get("subs") as f64 * secs / total));
        out.put("windows", r.hs.len());
        out.put("peak_window", peak);
        out.put("peak_share_pct", f2(peak as f64 * 100.0 / total));
        out.add("srv_cpu_s", cpu.map(f3));
        out.add("srv_core_pct", cpu.map(|c| f3(c * 100.0 / secs)));
        out.put("tool_cpu_s", f3(tool_cpu));
        out.errors(&r);
        Ok(out)
    }
}

/// Table tests, run with no scenario: a harness = false target has no libtest.
mod selftest {
    use super::sse::{Item, Parser, Probe, probe};
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<String> {
        let (mut p, mut got) = (Parser::default(), Vec::new());
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        for c in chunks {
            p.feed(c, &mut |item| {
                got.push(match item {
                    Item::Comment(c) => format!("comment {}", text(c)),
                    Item::Event { id, data } => format!("event {} {}", text(id), text(data)),
                })
            });
        }
        got
    }

    pub fn run() -> i32 {
        let (mut passed, mut failed) = (0, 0);
        let mut check = |name: &str, ok: bool| match ok {
            true => passed += 1,
            false => {
                failed += 1;
                println!("FAILED: {name}");
            }
        };
        let sse_cases: &[(&str, &[&str])] = &[
            (":sse-handshake\n\n", &["comment sse-handshake"]),
            ("id: 1-0\ndata: {\"a\":1}\n\n", &["event 1-0 {\"a\":1}"]),
            ("data: a\ndata: b\n\n", &["event  a\nb"]),
            ("data: x\r\n\r\n", &["event  x"]),
            ("data: x\r\r", &["event  x"]),
            ("data:x\n\ndata:  y\n\n", &["event  x", "event   y"]),
            ("data\n\n", &["event  "]),
            ("\n\n\n", &[]),
            ("data: x\n", &[]),
            ("id: 5\ndata: a\n\ndata: b\n\n", &["event 5 a", "event 5 b"]),
            ("event: e\nretry: 9\nfoo\ndata: z\n\n", &["event  z"]),
            (":hs\n\nid: 2-1\ndata: q\n\n:x\n\n", &["comment hs", "event 2-1 q", "comment x"]),
        ];
        for (input, want) in sse_cases {
            let input = input.as_bytes();
            // Whole, split in two at every byte, and one byte per read.
            for at in 0..=input.len() {
                let split = parse_all(&[&input[..at], &input[at..]]);
                check(&format!("sse {input:?} split at {at}"), split == *want);
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            check(&format!("sse {input:?} bytewise"), parse_all(&bytes) == *want);
        }
        let p = Some(Probe { run: 7, seq: 3, t_ns: 99 });
        let env = br#"{"id":"1-0","event":{"run":7,"seq":3,"t_ns":99,"pad":"xx"},"metadata":{}}"#;
        check("probe fast path", probe(env, true) == p);
        check("probe fallback", probe(br#"{"event":{"t_ns":99,"seq":3,"run":7}}"#, true) == p);
        check("probe other payload", probe(br#"{"event":{"total":12}}"#, true).is_none());
        check("probe garbage", probe(b"not json", true).is_none());
        // nchan: the payload is the data itself.
        check("probe raw fast path", probe(br#"{"run":7,"seq":3,"t_ns":99,"pad":"xx"}"#, false) == p);
        check("probe raw fallback", probe(br#"{"t_ns":99, "seq":3, "run":7}"#, false) == p);
        check("probe raw is no envelope", probe(env, false).is_none());
        check("probe envelope is not raw", probe(br#"{"run":7,"seq":3,"t_ns":99}"#, true).is_none());
        check("target", "nchan".parse() == Ok(Target::Nchan) && "x".parse::<Target>().is_err());
        check("nchan paths", Target::Nchan.emit_path("s") == "/pub/s" && Target::Nchan.sub_path("s") == "/sub/s");
        check("emit status", Target::Nchan.emit_ok(201) && !Target::Ssehub.emit_ok(201));
        check("auth header", auth_header("").is_empty() && auth_header("k") == "Authorization: Bearer k\r\n");
        let resumed = worker::resume_request(b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n", b"17-3");
        check("resume request", resumed == b"GET /s HTTP/1.1\r\nHost: h\r\nLast-Event-ID: 17-3\r\n\r\n");
        check("churn schedule", worker::churn_schedule_ok());
        for v in [0u64, 1, 63, 64, 65, 127, 128, 1000, 123_456, 10_000_000_007, u64::MAX / 3] {
            let back = hist::value(hist::index(v));
            check(&format!("hist bucket {v}"), back.abs_diff(v) as f64 <= v as f64 / 64.0);
        }
        let mut h = hist::Hist::default();
        (1..=1000u64).for_each(|v| h.record(v * 1000));
        check("hist p50", h.quantile(0.5).abs_diff(500_000) < 500_000 / 50);
        check("hist p99", h.quantile(0.99).abs_diff(990_000) < 990_000 / 50);
        check("hist max", h.quantile(1.0) == 1_000_000);
        let secs = |s: &str| s.parse::<Secs>().map(|d| d.0).ok();
        check("secs", secs("1.5s") == Some(Duration::from_millis(1500)) && secs("2m").is_some());
        check("secs bad", secs("250ms") == Some(Duration::from_millis(250)) && secs("5h").is_none());
        check("url loopback", parse_url("http://127.0.0.1:9000/").is_ok_and(|u| u.0.port() == 9000));
        check("url elsewhere", parse_url("http://10.0.0.1:80").is_err());
        println!("{passed} passed, {failed} failed");
        i32::from(failed > 0)
    }
}
