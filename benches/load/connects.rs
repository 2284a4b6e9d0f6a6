//! The scenarios about connecting: `connects` (how many connects, over TLS
//! full handshakes, the server completes per second) and `surge` (delivery
//! to open streams while a crowd connects).

use super::fleet::Fleet;
use super::scenario::{Out, Sample, emit, f2, f3, ms, open, put_deliveries, run_id, us};
use super::*;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What one `connects` thread counted.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    lat: hist::Hist,
    errors: BTreeMap<String, u64>,
}

/// One connect: (TLS handshake,) `GET /healthz`, its answer, close.
fn one(o: &Opts, src: [u8; 4], request: &[u8]) -> Res<()> {
    let fd = socket::connect_from(o.addr.ip().octets(), o.addr.port(), src, false)?;
    // SAFETY: connect_from made this blocking socket, and nothing else owns it.
    let mut sock = unsafe { TcpStream::from_raw_fd(fd) };
    sock.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let _ = sock.set_nodelay(true);
    let mut answer = Vec::new();
    match &o.tls {
        None => {
            sock.write_all(request).map_err(|e| format!("write: {e}"))?;
            let _ = sock.read_to_end(&mut answer);
        }
        Some(config) => {
            let mut conn = tls::connection(config)?;
            let mut s = rustls::Stream::new(&mut conn, &mut sock);
            s.write_all(request).map_err(|e| format!("tls: {e}"))?;
            // The server closes after its answer, with or without close_notify.
            let _ = s.read_to_end(&mut answer);
        }
    }
    match answer.starts_with(b"HTTP/1.1 200") {
        true => Ok(()),
        false if answer.is_empty() => Err("no answer".into()),
        false => Err(format!("answered {:?}", String::from_utf8_lossy(&answer[..answer.len().min(12)]))),
    }
}

/// `--inflight` threads connect in turn for `--secs`; each connect is new
/// (over TLS a full handshake) and spreads over the source addresses.
pub fn connects(o: &Opts) -> Res<Out> {
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", o.host).into_bytes();
    let next = AtomicUsize::new(0);
    let s1 = Sample::take(o, None);
    let t0 = Instant::now();
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..o.inflight)
            .map(|_| {
                let (next, request) = (&next, &request);
                scope.spawn(move || {
                    let mut t = Tally::default();
                    while t0.elapsed() < o.secs {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let src = [127, 0, 0, (SRC_FIRST + k % o.src_count) as u8];
                        let began = sys::now_ns();
                        match one(o, src, request) {
                            Ok(()) => {
                                t.ok += 1;
                                t.lat.record(sys::now_ns() - began);
                            }
                            Err(e) => {
                                t.failed += 1;
                                *t.errors.entry(e).or_default() += 1;
                            }
                        }
                    }
                    t
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_default()).collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    let s2 = Sample::take(o, None);
    let (cpu, tool_cpu) = s2.cpu_since(&s1);
    let mut lat = hist::Hist::default();
    let (mut ok, mut failed, mut errors) = (0, 0, BTreeMap::new());
    for t in tallies {
        (ok, failed) = (ok + t.ok, failed + t.failed);
        t.lat.counts.iter().enumerate().for_each(|(b, &n)| lat.add(b, n));
        lat.max = lat.max.max(t.lat.max);
        t.errors.into_iter().for_each(|(e, n)| *errors.entry(e).or_default() += n);
    }
    let mut out = Out::new(&o.scenario);
    out.put("tls", o.tls.is_some());
    out.put("inflight", o.inflight);
    out.put("secs", f2(secs));
    out.put("connects", ok);
    out.put("connect_failed", failed);
    out.put("connects_per_s", format!("{:.0}", ok as f64 / secs));
    out.put("connect_p50_us", us(lat.quantile(0.5)));
    out.put("connect_p99_us", us(lat.quantile(0.99)));
    out.add("srv_cpu_s", cpu.map(f3));
    out.add("srv_core_pct", cpu.map(|c| f2(c * 100.0 / secs)));
    out.add("srv_us_per_connect", cpu.map(|c| f2(c * 1e6 / ok.max(1) as f64)));
    out.put("tool_cpu_s", f3(tool_cpu));
    out.put("tool_us_per_connect", f2(tool_cpu * 1e6 / ok.max(1) as f64));
    let r = fleet::Report { errors, ..Default::default() };
    out.errors(&r);
    if ok == 0 || failed * 100 > ok {
        out.failure = Some("more than 1 % of the connects failed (see above)".into());
    }
    Ok(out)
}

/// N measured streams; once events flow, a second fleet opens `--crowd`
/// more while the emits go on.
pub fn surge(o: &Opts, fleet: &mut Fleet, before: &Sample, mut http: http::Http) -> Res<Out> {
    let mut out = open(o, fleet, o.n)?;
    let run = run_id();
    fleet.measure(run, o.events)?;
    // The crowd subscribes to a source of its own that nothing emits to:
    // what is measured is its connects (over TLS, full handshakes) beside
    // the streams, not a fan-out eleven times the size (on the emitted
    // source, 11,000 streams at 200 events/s are 2.2 million deliveries a
    // second, which the crowd's own workers then have to decrypt).
    let quiet = format!("{}-crowd", o.source);
    if o.target == Target::Ssehub {
        let (status, answer) = http.call("POST", "/v1/sources", serde_json::json!({ "name": quiet }).to_string().as_bytes())?;
        if status != 201 && status != 409 {
            return Err(format!("creating source {quiet}: HTTP {status} {}", String::from_utf8_lossy(&answer)));
        }
    }
    let mut crowd = Fleet::spawn_on(o, &quiet, o.crowd.div_ceil(o.per_worker).max(2), o.crowd_inflight)?;
    // The measured subscribers read before the crowd's handshakes where we
    // may say so: the delay measured is then the server's, not the tool's.
    let nice = if fleet.renice(-5) { -5 } else { 0 };
    // SAFETY: getpriority of this process.
    let nice = nice + unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let s1 = Sample::take(o, Some(fleet));
    let (emitted, crowded) = std::thread::scope(|scope| {
        let emitter = scope.spawn(move || emit(o, http, run, o.events, o.rate));
        // A second of undisturbed delivery first.
        std::thread::sleep(Duration::from_secs(1));
        let from = sys::now_ns();
        let opened = crowd.open_to(o.crowd).map(|held| (held, from, sys::now_ns()));
        (emitter.join().map_err(|_| "emitter panicked".to_string()), opened)
    });
    let (e, ((held, failed), from, to)) = (emitted??, crowded?);
    let complete = fleet.wait_complete(Instant::now() + o.timeout)?;
    let s2 = Sample::take(o, Some(fleet));
    let r = fleet.report()?;
    let cr = crowd.report()?;
    drop(crowd);
    // Completion of the events emitted while the crowd connected.
    let subs = r.get("subs");
    let during = r.events.iter().filter(|(s, v)| v.0 == subs && (from..to).contains(&e.sent[**s as usize]));
    let mut done: Vec<u64> = during.map(|(&s, v)| v.2 - e.sent[s as usize]).collect();
    done.sort_unstable();
    let pct = |q: f64| done.get(((done.len() as f64 * q).ceil() as usize).max(1) - 1).map(|&v| us(v));
    let (cpu, tool_cpu) = s2.cpu_since(&s1);
    out.put("tls", o.tls.is_some());
    out.put("measured_nice", nice);
    out.put("crowd", o.crowd);
    out.put("crowd_held", held);
    out.put("crowd_failed", failed);
    out.put("crowd_s", f2((to - from) as f64 / 1e9));
    out.put("crowd_per_s", format!("{:.0}", held as f64 * 1e9 / (to - from).max(1) as f64));
    out.put("crowd_connect_p99_ms", ms(cr.connect.quantile(0.99)));
    out.put("events", o.events);
    out.put("rate", o.rate);
    out.put("emit_rate", e.rate());
    out.put("emit_p99_us", us(e.rtt().quantile(0.99)));
    put_deliveries(&mut out, &r, complete);
    out.put("during_events", done.len());
    out.add("during_done_p50_us", pct(0.5));
    out.add("during_done_p99_us", pct(0.99));
    out.add("during_done_max_us", pct(1.0));
    out.add("rss_before_kb", before.rss.map(|b| b / 1024));
    out.add("rss_after_kb", s2.rss.map(|b| b / 1024));
    out.add("srv_cpu_s", cpu.map(f3));
    out.put("tool_cpu_s", f3(tool_cpu));
    out.errors(&r);
    out.errors(&cr);
    let outlasted = e.sent.last().is_some_and(|&l| l >= to);
    if r.get("loss") + r.get("dups") > 0 || !complete {
        out.failure = Some("loss, duplicates or incomplete delivery (see above)".into());
    } else if !outlasted {
        out.failure = Some("the emits ended before the crowd was in: give more --events".into());
    }
    Ok(out)
}
