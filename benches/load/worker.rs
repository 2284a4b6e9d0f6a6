//! A worker: holds subscribers on one epoll and measures what they
//! receive, driven by the coordinator's commands on stdin (`open`,
//! `measure`, `drop`, `redial`, `churn`, `report`) and answering on stdout.
//! Their sockets: `socket.rs`; what they received, counted: `tally.rs`.

use super::*;
use crate::socket::{check_head, connect_from, connected, resume_request, send_request};
use crate::tally::{Churn, Measure, Redial, Storm, Sub};
use std::cmp::Reverse;
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
    /// Source addresses 127.0.0.2 and on, this many.
    src_count: usize,
    /// Payloads arrive in ssehub's envelope (else raw, as from nchan).
    envelope: bool,
    /// `https://`: every subscriber speaks TLS.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
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
    /// Its TLS state, over `https://`.
    tls: Option<Box<rustls::ClientConnection>>,
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
    redial: Redial,
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
        src_count: n("src_count")?.clamp(1, SRC_COUNT),
        envelope: v["envelope"].as_bool().ok_or("config lacks envelope")?,
        tls: v["tls"].as_bool().ok_or("config lacks tls")?.then(tls::config),
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
            let now = sys::now_ns();
            let wait_ms = self.redial.wait_ms(now, self.churn.wait_ms(now));
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
        while let Some(&Reverse((at, i))) = self.redial.due.peek()
            && at <= now
        {
            let r = &mut self.redial;
            r.due.pop();
            *r.connects.entry(now / HS_WINDOW_NS).or_default() += 1;
            *r.dues.entry(at / HS_WINDOW_NS).or_default() += 1;
            r.late_max_ns = r.late_max_ns.max(now - at);
            let sub = std::mem::take(&mut self.conns[i].sub);
            self.open(i, sub, now);
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
        let src = [127, 0, 0, (SRC_FIRST + global % self.cfg.src_count) as u8];
        let fd = connect_from(self.cfg.dst, self.cfg.port, src, true).and_then(|fd| match self.register(fd, i as u64) {
            Ok(()) => Ok(fd),
            Err(e) => {
                // SAFETY: closes the socket connect_from just made.
                unsafe { libc::close(fd) };
                Err(e)
            }
        });
        let phase = if fd.is_ok() { Phase::Connecting } else { Phase::Closed };
        let fd_or = *fd.as_ref().unwrap_or(&-1);
        let conn = Conn { fd: fd_or, phase, head: Vec::new(), sse: Default::default(), sub, started_ns, tls: None };
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
                if self.conns[i].sub.redialing {
                    self.redial.failed += 1;
                    self.redial_later(i, started_ns);
                }
                self.gone(i);
            }
        }
    }

    /// Queues slot `i` to reconnect after its retry time from `now`.
    fn redial_later(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        let wait = c.sse.retry.or(c.sub.retry_ms).unwrap_or(self.redial.default_ms);
        c.sub.retry_ms = Some(wait);
        c.sub.redialing = true;
        c.sub.comments = 0;
        self.redial.due.push(Reverse((now + u64::from(wait) * 1_000_000, i)));
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
        let r = &mut self.redial;
        if r.armed && !r.announced && r.back >= r.expect {
            r.announced = true;
            say(&format!("redialed {} {}", r.back, r.failed))?;
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
            let sent = match &self.cfg.tls {
                None => send_request(c.fd, &request),
                Some(config) => connected(c.fd).and_then(|()| {
                    // The request waits in rustls until the handshake is done.
                    let mut tls = tls::connection(config)?;
                    tls.writer().write_all(&request).map_err(|e| e.to_string())?;
                    c.tls = Some(Box::new(tls));
                    Ok(())
                }),
            };
            if let Err(e) = sent {
                return self.close(i, e);
            }
            c.phase = Phase::AwaitHead;
        }
        if self.conns[i].tls.is_some() {
            return self.on_tls_ready(i, rbuf);
        }
        while self.conns[i].phase != Phase::Closed {
            // SAFETY: read writes at most rbuf.len() bytes into rbuf.
            let n = unsafe { libc::read(self.conns[i].fd, rbuf.as_mut_ptr().cast(), rbuf.len()) };
            if n > 0 {
                self.on_bytes(i, &rbuf[..n as usize], sys::now_ns());
                // A short read drained the socket, and data arriving after
                // it raises a new edge: skipping the EAGAIN read halves the
                // syscalls when each event comes in a read of its own. Not
                // when the peer's FIN came with this edge (a drained stream's
                // last bytes, say): no later edge would tell of it.
                let hup = flags & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0;
                if (n as usize) < rbuf.len() && !hup {
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

    /// A TLS subscriber's socket is ready: writes what rustls has queued,
    /// then reads records to EAGAIN, each batch's plaintext to `on_bytes`.
    fn on_tls_ready(&mut self, i: usize, rbuf: &mut [u8]) {
        while self.conns[i].phase != Phase::Closed {
            let c = &mut self.conns[i];
            let (fd, Some(tls)) = (c.fd, c.tls.as_mut()) else { return };
            if let Err(e) = tls::flush(tls, fd) {
                return self.close(i, e);
            }
            match tls.read_tls(&mut tls::Fd(fd)) {
                Ok(0) => return self.close(i, "closed by server".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.close(i, e.to_string()),
            }
            if let Err(e) = tls.process_new_packets() {
                let _ = tls::flush(tls, fd);
                return self.close(i, format!("tls: {e}"));
            }
            let now = sys::now_ns();
            loop {
                let Some(tls) = self.conns[i].tls.as_mut() else { return };
                match tls.reader().read(rbuf) {
                    Ok(0) => return self.close(i, "closed by server".into()),
                    Ok(n) => self.on_bytes(i, &rbuf[..n], now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return self.close(i, format!("tls: {e}")),
                }
                if self.conns[i].phase == Phase::Closed {
                    return;
                }
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
            if std::mem::take(&mut c.sub.redialing) {
                let r = &mut self.redial;
                r.back += 1;
                r.last_up_ns = r.last_up_ns.max(now);
                *r.ups.entry(now / HS_WINDOW_NS).or_default() += 1;
            }
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
        if self.redial.armed && reason.is_some() && !c.sub.churn {
            let (now, r) = (sys::now_ns(), &mut self.redial);
            if c.phase == Phase::Streaming {
                r.ended += 1;
                r.first_end_ns = if r.first_end_ns == 0 { now } else { r.first_end_ns.min(now) };
                r.last_end_ns = r.last_end_ns.max(now);
            } else {
                r.failed += 1;
            }
            self.redial_later(i, now);
        }
        let c = &mut self.conns[i];
        if c.phase != Phase::Streaming {
            self.failed += 1;
            self.inflight -= 1;
        } else if reason.is_some() {
            self.closed += 1;
        }
        c.phase = Phase::Closed;
        c.tls = None;
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
            ["redial", default_ms] => {
                let expect = self.conns.iter().filter(|c| c.phase == Phase::Streaming).count() as u64;
                let default_ms = num(default_ms)? as u32;
                self.redial = Redial { armed: true, default_ms, expect, ..Redial::default() };
                // Each stop is measured with clients as if new: none keeps
                // a `retry:` an earlier stop's node told it.
                self.conns.iter_mut().for_each(|c| c.sub.retry_ms = None);
                // Its report tells how this stop's streams ended.
                self.errors.clear();
                say("redialing")?;
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
        let r = &self.redial;
        if r.armed {
            write!(out, "redial {} {} {} {} ", r.expect, r.ended, r.back, r.failed)?;
            writeln!(out, "{} {} {} {}", r.first_end_ns, r.last_end_ns, r.last_up_ns, r.late_max_ns)?;
        }
        for (w, n) in &r.connects {
            writeln!(out, "rc {w} {n}")?;
        }
        for (w, n) in &r.ups {
            writeln!(out, "ru {w} {n}")?;
        }
        for (w, n) in &r.dues {
            writeln!(out, "rd {w} {n}")?;
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
