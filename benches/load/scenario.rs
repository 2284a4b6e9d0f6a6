//! The scenarios and what they print.

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
    ("idle_s", "idle before the emits (s)"),
    ("srv_idle_cpu_pct", "server CPU while idle, all processes (% of a core)"),
    ("tool_idle_cpu_pct", "load tool CPU while idle (% of a core)"),
    ("rss_held_kb", "server RSS with all connected, all processes (KiB)"),
    ("kernel_before_kb", "kernel slab+TCP before subscribers (KiB)"),
    ("kernel_held_kb", "kernel slab+TCP with all connected (KiB)"),
    ("pss_held_kb", "server PSS with all connected, all processes (KiB)"),
    ("slab_held_kb", "kernel Slab with all connected (KiB)"),
    ("tcp_mem_held_kb", "kernel TCP buffer pages with all connected (KiB)"),
    ("srv_emit_cpu_pct", "server CPU during the emits (% of a core)"),
    ("tool_emit_cpu_pct", "load tool CPU during the emits (% of a core)"),
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
    ("tls", "over TLS"),
    ("inflight", "connecting at once (threads)"),
    ("connect_failed", "connects failed (at most 1 %)"),
    ("srv_us_per_connect", "server CPU per connect (µs)"),
    ("tool_us_per_connect", "load tool CPU per connect (µs)"),
    ("measured_nice", "nice of the measured subscribers' workers"),
    ("crowd", "crowd asked to connect meanwhile"),
    ("crowd_held", "crowd connected (first handshake seen)"),
    ("crowd_failed", "crowd failed"),
    ("crowd_s", "crowd: first connect -> last one in (s)"),
    ("crowd_per_s", "crowd: connects per second"),
    ("crowd_connect_p99_ms", "crowd: connect -> first handshake p99 (ms)"),
    ("during_events", "events emitted while the crowd connected"),
    ("during_done_p50_us", "their completion (emit -> last subscriber) p50 (µs)"),
    ("during_done_p99_us", "their completion p99 (µs)"),
    ("during_done_max_us", "their completion max (µs)"),
    ("drain_s", "--drain of the node stopped (s)"),
    ("streams", "streams on it at the SIGTERM"),
    ("ended", "streams it ended"),
    ("last_end_ms", "SIGTERM -> its last stream ended (ms)"),
    ("exit_ms", "SIGTERM -> it exited (ms)"),
    ("exit_code", "its exit code"),
    ("back", "reconnected to the sibling (handshake seen)"),
    ("retries", "reconnects that failed and were retried"),
    ("span_ms", "SIGTERM -> last reconnect up (ms)"),
    ("rc_windows", "100 ms windows from SIGTERM to last reconnect"),
    ("rc_max", "reconnects begun per 100 ms: max"),
    ("rc_p99", "reconnects begun per 100 ms: p99"),
    ("rc_mean", "reconnects begun per 100 ms: mean"),
    ("rc_max_pct", "largest window's share of the streams (%)"),
    ("up_max", "handshakes per 100 ms: max"),
    ("up_p99", "handshakes per 100 ms: p99"),
    ("due_max", "reconnects due per 100 ms (the clients' own timing): max"),
    ("due_p99", "reconnects due per 100 ms: p99"),
    ("late_max_ms", "most a reconnect began after it was due (load tool stall, ms)"),
];

/// One moment's readings: server RSS and CPU, load-tool CPU, kernel memory.
pub(crate) struct Sample {
    pub(crate) rss: Option<u64>,
    cpu: Option<f64>,
    tool_cpu: f64,
    kernel: Option<u64>,
}

impl Sample {
    pub(crate) fn take(o: &Opts, fleet: Option<&Fleet>) -> Sample {
        let workers = fleet.map_or(0.0, Fleet::cpu_s);
        Sample {
            rss: sum(&o.pids, sys::proc_rss),
            cpu: sum(&o.pids, sys::proc_cpu_s),
            tool_cpu: sys::rusage_cpu_s(libc::RUSAGE_SELF) + workers,
            kernel: sys::kernel_mem(),
        }
    }

    /// Server and load-tool CPU seconds since `earlier`.
    pub(crate) fn cpu_since(&self, earlier: &Sample) -> (Option<f64>, f64) {
        let server = self.cpu.zip(earlier.cpu).map(|(b, a)| b - a);
        (server, self.tool_cpu - earlier.tool_cpu)
    }
}

/// `f` summed over the server's processes; None without one, or when one
/// cannot be read (gone).
fn sum<T: std::iter::Sum>(pids: &[u32], f: impl Fn(u32) -> Option<T>) -> Option<T> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| f(p)).sum()
}

/// The human table and the RESULT line of one measurement.
pub(crate) struct Out {
    rows: Vec<(String, String)>,
    kv: Vec<String>,
    /// Printed, then returned as the run's error (loss, say).
    pub(crate) failure: Option<String>,
}

impl Out {
    pub(crate) fn new(scenario: &str) -> Out {
        let kv = vec![format!("scenario={scenario}")];
        Out { rows: Vec::new(), kv, failure: None }
    }

    pub(crate) fn put(&mut self, key: &str, v: impl ToString) {
        self.add(key, Some(v));
    }

    /// `None` (no --pid, say) prints as n/a, and as `na` in RESULT.
    pub(crate) fn add(&mut self, key: &str, v: Option<impl ToString>) {
        let v = v.map_or("na".into(), |v| v.to_string());
        let label = FIELDS.iter().find(|f| f.0 == key).map_or(key, |f| f.1);
        self.kv.push(format!("{key}={v}"));
        self.rows.push((label.into(), if v == "na" { "n/a".into() } else { v }));
    }

    pub(crate) fn errors(&mut self, r: &Report) {
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

pub(crate) fn f2(v: f64) -> String {
    format!("{v:.2}")
}

pub(crate) fn f3(v: f64) -> String {
    format!("{v:.3}")
}

/// What every measured run reports of its deliveries: completeness,
/// the count, loss and duplicates (must be 0), and latency.
pub(crate) fn put_deliveries(out: &mut Out, r: &Report, complete: bool) {
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

pub(crate) fn us(ns: u64) -> String {
    format!("{:.0}", ns as f64 / 1e3)
}

fn kib(bytes: u64) -> u64 {
    bytes / 1024
}

pub(crate) fn ms(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e6)
}

/// Tells this run's events from any others on the source.
pub(crate) fn run_id() -> u64 {
    sys::now_ns() ^ (u64::from(std::process::id()) << 40)
}

/// How long `churn` keeps emitting after it stops connecting, so the last
/// subscribers get their events.
const CHURN_TAIL: Duration = Duration::from_secs(2);

/// Runs the scenario, stops the workers, then prints its last table with
/// the whole run's CPU (getrusage counts children once they are reaped).
pub fn run(o: &Opts) -> Res<()> {
    let limit = sys::raise_nofile()?;
    // `drain` starts its servers: the first before anything speaks to it.
    let mut nodes = match o.scenario.as_str() {
        "drain" => Some(nodes::Nodes::new()?),
        _ => None,
    };
    if let Some(nodes) = &mut nodes {
        nodes.start(o, o.drains[0])?;
    }
    let pid = match o.pids.as_slice() {
        [] => "none: no server RSS/CPU".into(),
        [p] => p.to_string(),
        all => format!("{} .. {} ({} processes)", all[0], all[all.len() - 1], all.len()),
    };
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
        "churn" | "connects" => 0,
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
        "drain" => match nodes.as_mut() {
            // The emit connection would keep node 0 waiting for its FIN.
            Some(nodes) => drain(o, &mut fleet, nodes, http)?,
            None => return Err("drain without nodes".into()),
        },
        "connects" => connects::connects(o)?,
        "surge" => connects::surge(o, &mut fleet, &before, http)?,
        _ => handshake(o, &mut fleet)?,
    };
    drop(fleet);
    let total = sys::rusage_cpu_s(libc::RUSAGE_SELF) + sys::rusage_cpu_s(libc::RUSAGE_CHILDREN);
    out.put("tool_cpu_total_s", f2(total));
    out.print();
    out.failure.map_or(Ok(()), Err)
}

pub(crate) fn open(o: &Opts, fleet: &mut Fleet, n: usize) -> Res<Out> {
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
pub(crate) struct Emitted {
    pub(crate) sent: Vec<u64>,
    answered: Vec<u64>,
}

/// Emits open-loop over one keep-alive connection: requests leave on
/// schedule (back-to-back for rate 0) without waiting for the previous
/// answer, up to --window unanswered, so a slow answer does not lower the
/// offered rate and hide the delay (coordinated omission).
pub(crate) fn emit(o: &Opts, mut http: http::Http, run: u64, events: u32, rate: f64) -> Res<Emitted> {
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
    pub(crate) fn rtt(&self) -> hist::Hist {
        let mut rtt = hist::Hist::default();
        self.sent.iter().zip(&self.answered).for_each(|(s, a)| rtt.record(a - s));
        rtt
    }

    /// Emits per second achieved.
    pub(crate) fn rate(&self) -> String {
        let span = self.sent.last().zip(self.sent.first()).map_or(0, |(b, a)| b - a);
        format!("{:.0}", self.sent.len() as f64 * 1e9 / span.max(1) as f64)
    }
}

fn fanout(o: &Opts, fleet: &mut Fleet, before: &Sample, http: http::Http) -> Res<Out> {
    let mut out = open(o, fleet, o.n)?;
    let mut http = http;
    if !o.idle.is_zero() {
        idle_phase(o, fleet, before, &mut out);
        // The server closes an idle keep-alive connection meanwhile.
        http = http::Http::connect(o)?;
    }
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
    let emit_secs = e.sent.last().map_or(1.0, |&l| (last_rx.max(l) - t0) as f64 / 1e9).max(1e-3);
    out.add("srv_emit_cpu_pct", cpu.map(|c| format!("{:.1}", c * 100.0 / emit_secs)));
    out.put("tool_emit_cpu_pct", format!("{:.1}", tool_cpu * 100.0 / emit_secs));
    out.errors(&r);
    if r.get("loss") + r.get("dups") > 0 || !complete {
        out.failure = Some("loss, duplicates or incomplete delivery (see above)".into());
    }
    Ok(out)
}

/// `fanout --idle D`: the subscribers sit idle for D (handshake comments
/// only); the servers' and the tool's CPU over it, in % of one core, and
/// memory once all are connected (RSS and kernel slab + TCP pages, both
/// ends of every loopback connection, against `before`).
fn idle_phase(o: &Opts, fleet: &Fleet, before: &Sample, out: &mut Out) {
    let s1 = Sample::take(o, Some(fleet));
    let t = Instant::now();
    std::thread::sleep(o.idle);
    let s2 = Sample::take(o, Some(fleet));
    let secs = t.elapsed().as_secs_f64();
    let (cpu, tool_cpu) = s2.cpu_since(&s1);
    out.put("idle_s", f2(secs));
    out.add("srv_idle_cpu_pct", cpu.map(|c| format!("{:.1}", c * 100.0 / secs)));
    out.put("tool_idle_cpu_pct", format!("{:.1}", tool_cpu * 100.0 / secs));
    out.add("rss_held_kb", s2.rss.map(kib));
    out.add("pss_held_kb", sum(&o.pids, sys::proc_pss).map(kib));
    out.add("kernel_before_kb", before.kernel.map(kib));
    out.add("kernel_held_kb", s2.kernel.map(kib));
    if let Some((slab, tcp)) = sys::kernel_parts() {
        out.put("slab_held_kb", kib(slab));
        out.put("tcp_mem_held_kb", kib(tcp));
    }
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

/// Counts per 100 ms window from the one holding `from_ns` to the last one
/// counted, empty ones included: (windows, max, p99, mean).
pub(crate) fn spread(windows: &BTreeMap<u64, u64>, from_ns: u64) -> (usize, u64, u64, f64) {
    let first = from_ns / HS_WINDOW_NS;
    let Some(&last) = windows.keys().next_back().filter(|&&l| l >= first) else { return (0, 0, 0, 0.0) };
    let mut counts: Vec<u64> = (first..=last).map(|w| windows.get(&w).copied().unwrap_or(0)).collect();
    counts.sort_unstable();
    let n = counts.len();
    let p99 = counts[(n as f64 * 0.99).ceil() as usize - 1];
    (n, counts[n - 1], p99, counts.iter().sum::<u64>() as f64 / n as f64)
}

/// N subscribers on node 0; for each `--drains` value, the next node is
/// started and the current one stopped: how its streams reconnect to the
/// sibling, per 100 ms window, one table per stop.
fn drain(o: &Opts, fleet: &mut Fleet, nodes: &mut nodes::Nodes, http: http::Http) -> Res<Out> {
    drop(http);
    let mut out = open(o, fleet, o.n)?;
    for (k, &d) in o.drains.iter().enumerate() {
        out.print();
        nodes.start(o, o.drains.get(k + 1).copied().unwrap_or_default())?;
        fleet.redial(o.default_retry.as_millis() as u64)?;
        let (term, exited) = nodes.stop(k)?;
        eprintln!("load: node {k} (--drain {d:?}) stopped; waiting for its streams on node {}", k + 1);
        let limit = d + o.default_retry.max(Duration::from_secs(5)) + o.timeout;
        let all_back = fleet.wait_redialed(Instant::now() + limit)?;
        let wait = d + Duration::from_secs(5);
        let (exit_ns, code) = exited.recv_timeout(wait).map_err(|_| format!("node {k} still running {wait:?} after SIGTERM"))?;
        let r = fleet.report()?;
        let [streams, ended, back, retries] = r.redial;
        let (_, last_end, last_up) = r.redial_ns.unwrap_or_default();
        let (windows, rc_max, rc_p99, rc_mean) = spread(&r.rc, term);
        let (_, up_max, up_p99, _) = spread(&r.ru, term);
        let (_, due_max, due_p99, _) = spread(&r.rd, term);
        out = Out::new("drain");
        out.put("drain_s", f2(d.as_secs_f64()));
        out.put("streams", streams);
        out.put("ended", ended);
        out.put("last_end_ms", ms(last_end.saturating_sub(term)));
        out.put("exit_ms", ms(exit_ns.saturating_sub(term)));
        out.add("exit_code", code);
        out.put("back", back);
        out.put("retries", retries);
        out.put("span_ms", ms(last_up.saturating_sub(term)));
        out.put("rc_windows", windows);
        out.put("rc_max", rc_max);
        out.put("rc_p99", rc_p99);
        out.put("rc_mean", f2(rc_mean));
        out.put("rc_max_pct", f2(rc_max as f64 * 100.0 / streams.max(1) as f64));
        out.put("up_max", up_max);
        out.put("up_p99", up_p99);
        out.put("due_max", due_max);
        out.put("due_p99", due_p99);
        out.put("late_max_ms", ms(r.redial_late_ns));
        out.errors(&r);
        if !all_back || back < streams || code != Some(0) {
            out.failure = Some(format!("node {k}: not every stream came back, or it did not exit 0 (see above)"));
            return Ok(out);
        }
    }
    let last = o.drains.len();
    let (_, exited) = nodes.stop(last)?;
    let _ = exited.recv_timeout(Duration::from_secs(5));
    Ok(out)
}
