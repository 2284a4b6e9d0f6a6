//! `drain`: the ssehub processes the tool starts itself, one after another
//! on one port (`--reuse-port`), each told when to stop.

use super::*;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// A node's exit: when (CLOCK_MONOTONIC ns) and its exit code.
pub type Exit = (u64, Option<i32>);

/// The nodes started so far, and the socket their systemd notifications
/// (`READY=1`) come to.
pub struct Nodes {
    /// Taken when stopped (a thread waits on it then).
    procs: Vec<Option<Child>>,
    notify: UnixDatagram,
    dir: PathBuf,
}

impl Nodes {
    pub fn new() -> Res<Nodes> {
        let dir = std::env::temp_dir().join(format!("ssehub-load-drain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let notify = UnixDatagram::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Nodes { procs: Vec::new(), notify, dir })
    }

    /// Starts node `k` with `--drain drain` on the tool's port and waits
    /// for its `READY=1` (sent once it listens). Returns its pid.
    pub fn start(&mut self, o: &Opts, drain: Duration) -> Res<u32> {
        let k = self.procs.len();
        let data = self.dir.join(format!("data-{k}"));
        let mut cmd = Command::new(&o.server);
        cmd.args(["serve", "--listen", &o.addr.to_string(), "--reuse-port", "--source", &o.source])
            .arg("--drain")
            .arg(format!("{}ms", drain.as_millis()))
            .arg("--data-dir")
            .arg(&data)
            .args(&o.node_args)
            .env("SSEHUB_API_KEY", &o.key)
            .env("NOTIFY_SOCKET", self.dir.join("notify"))
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or("info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("starting {}: {e}", o.server))?;
        let pid = child.id();
        self.procs.push(Some(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("node {k} (pid {pid}) sent no READY=1 within 30 s"));
            }
            self.notify.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
            match self.notify.recv(&mut buf) {
                Ok(n) if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("notify socket: {e}")),
            }
            if let Some(Ok(Some(status))) = self.procs[k].as_mut().map(Child::try_wait) {
                return Err(format!("node {k} exited at start: {status}"));
            }
        }
        eprintln!("load: node {k} (pid {pid}, --drain {drain:?}) ready");
        Ok(pid)
    }

    /// SIGTERM to node `k`: when it was sent (CLOCK_MONOTONIC ns), and
    /// a receiver of its exit time and code, timed by a thread waiting on it.
    pub fn stop(&mut self, k: usize) -> Res<(u64, Receiver<Exit>)> {
        let pid = self.procs[k].as_ref().ok_or(format!("node {k} already stopped"))?.id();
        let at = sys::now_ns();
        // SAFETY: kill has no memory preconditions; the pid is our child's, not yet reaped.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } < 0 {
            return Err(sys::last_err("kill"));
        }
        let (tx, rx) = mpsc::channel();
        let mut child = self.procs[k].take().ok_or("node gone")?;
        std::thread::spawn(move || {
            let code = child.wait().ok().and_then(|s| s.code());
            let _ = tx.send((sys::now_ns(), code));
        });
        Ok((at, rx))
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in self.procs.iter_mut().flatten() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
