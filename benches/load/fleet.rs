//! The coordinator's side of the workers.

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
    /// `redial`: [expect, ended, back, failed] summed, and (first stream
    /// ended, last stream ended, last reconnect up) over the workers.
    pub redial: [u64; 4],
    pub redial_ns: Option<(u64, u64, u64)>,
    /// The most a worker began a reconnect after it was due.
    pub redial_late_ns: u64,
    /// 100 ms window -> reconnects begun, reconnects up, reconnects due.
    pub rc: BTreeMap<u64, u64>,
    pub ru: BTreeMap<u64, u64>,
    pub rd: BTreeMap<u64, u64>,
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
            ("rc", &[window, count]) => *self.rc.entry(window).or_default() += count,
            ("ru", &[window, count]) => *self.ru.entry(window).or_default() += count,
            ("rd", &[window, count]) => *self.rd.entry(window).or_default() += count,
            ("redial", &[expect, ended, back, failed, first, last, up, late]) => {
                self.redial_late_ns = self.redial_late_ns.max(late);
                let sum = [expect, ended, back, failed];
                self.redial.iter_mut().zip(sum).for_each(|(a, b)| *a += b);
                if ended > 0 {
                    let s = self.redial_ns.get_or_insert((first, last, up));
                    *s = (s.0.min(first), s.1.max(last), s.2.max(up));
                }
            }
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
        Fleet::spawn_with(o, workers, o.inflight)
    }

    /// `workers` processes with `inflight` connects in flight over all of them.
    pub fn spawn_with(o: &Opts, workers: usize, inflight: usize) -> Res<Fleet> {
        Fleet::spawn_on(o, &o.source, workers, inflight)
    }

    /// As `spawn_with`, subscribing to `source`.
    pub fn spawn_on(o: &Opts, source: &str, workers: usize, inflight: usize) -> Res<Fleet> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let mut procs = Vec::new();
        for w in 0..workers {
            let cfg = serde_json::json!({
                "dst": o.addr.to_string(), "host": o.host, "key": o.key,
                "path": o.target.sub_path(source), "envelope": o.target.envelope(),
                "index": w, "stride": workers, "inflight": inflight.div_ceil(workers), "src_count": o.src_count,
                "tls": o.tls.is_some(),
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

    /// Moves the workers' nice value by `by`; false where that is not
    /// allowed (lowering it needs root or CAP_SYS_NICE).
    pub fn renice(&self, by: i32) -> bool {
        self.procs.iter().all(|(c, _)| {
            // SAFETY: getpriority and setpriority on our own children only.
            unsafe {
                let now = libc::getpriority(libc::PRIO_PROCESS, c.id());
                libc::setpriority(libc::PRIO_PROCESS, c.id(), now + by) == 0
            }
        })
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

    /// From now on, streams the server ends reconnect after their
    /// `retry:` (`default_ms` without one), counted per 100 ms window.
    pub fn redial(&mut self, default_ms: u64) -> Res<()> {
        self.ask_all(&format!("redial {default_ms}"), "redialing")
    }

    /// True once every stream open at `redial` has reconnected; false
    /// if some have not by `deadline`.
    pub fn wait_redialed(&mut self, deadline: Instant) -> Res<bool> {
        self.gather(&self.all(), deadline, |_, l| l.starts_with("redialed "))
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
