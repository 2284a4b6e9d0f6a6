//! The operating system: every call into libc, each with its SAFETY
//! note (signals, resource limits, socket options, OS randomness), and the
//! clocks. The rest of the crate is safe code.

use std::os::fd::RawFd;

/// SIGINT and SIGTERM, blocked so that a thread can wait for them.
///
/// Create it first, before any thread is spawned: threads inherit the
/// blocked mask, so the signals then wait for [`StopSignals::wait`] instead
/// of killing the process.
pub struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    /// Blocks SIGINT and SIGTERM in this thread and the threads it spawns from now on.
    pub fn block() -> StopSignals {
        StopSignals::block_set(&[libc::SIGINT, libc::SIGTERM])
    }

    /// Also blocks SIGHUP (a closed terminal or SSH session sends it; its
    /// default kills), which [`StopSignals::wait`] then returns like the
    /// others: see [`StopSignals::is_hangup`].
    pub fn block_with_hangup() -> StopSignals {
        StopSignals::block_set(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
    }

    /// The signal `wait` returned is SIGHUP.
    pub fn is_hangup(signal: i32) -> bool {
        signal == libc::SIGHUP
    }

    fn block_set(signals: &[i32]) -> StopSignals {
        // SAFETY: the set is initialised by sigemptyset before use, and
        // pthread_sigmask only reads it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &signal in signals {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            StopSignals { set }
        }
    }

    /// Waits for a blocked signal; returns its number.
    pub fn wait(&self) -> i32 {
        let mut signal = 0;
        // SAFETY: `set` is initialised; sigwait writes the signal number.
        unsafe { libc::sigwait(&self.set, &mut signal) };
        signal
    }
}

/// Runs `handler` on SIGINT and SIGTERM (the CLI's stop flag). No
/// `SA_RESTART`, so a blocked read returns `EINTR` at once.
pub fn on_stop_signals(handler: extern "C" fn(libc::c_int)) {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `sigaction` gets a fully initialised struct (zeroed, empty
        // mask); the caller's handler must be async-signal-safe (the CLI's
        // only stores to an atomic).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limit now
/// in force. Call it before `Server::bind` so the connection limit follows.
pub fn raise_fd_limit() -> u64 {
    let mut lim = nofile();
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    lim.rlim_cur
}

/// The soft open-file limit now in force.
pub fn fd_limit() -> u64 {
    nofile().rlim_cur
}

fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
    // SAFETY: getrlimit only writes the struct we pass; on failure it is untouched.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim
}

/// User plus system CPU time this process has used, in microseconds.
pub fn cpu_micros() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct we pass; on failure it stays zero.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let micros = |t: libc::timeval| t.tv_sec.max(0) as u64 * 1_000_000 + t.tv_usec.max(0) as u64;
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

/// Lowers the calling thread's CPU priority by `steps` nice steps (on
/// Linux the nice value is a thread's own): background work then yields
/// the core to the reactor as soon as the reactor has work, where the two
/// share one core, and still runs whenever the core is otherwise idle.
pub fn lower_thread_priority(steps: i32) {
    // SAFETY: getpriority and setpriority only read and set the calling
    // thread's nice value (who = 0); a failure leaves it as it was.
    unsafe {
        let now = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, (now + steps).min(19));
    }
}

/// Sets the listen backlog of a listening socket (std asks 128, which
/// overflows in a reconnect storm; the kernel caps it at somaxconn).
pub fn set_listen_backlog(fd: RawFd, backlog: i32) {
    // SAFETY: listen() on a listening socket we own only changes its backlog.
    unsafe { libc::listen(fd, backlog) };
}

/// Fills `buf` from the OS's random source.
pub fn os_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most `len` bytes into the live buffer.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // Without OS randomness keys and ids would be guessable: stop.
            panic!("getrandom failed: {}", std::io::Error::last_os_error());
        }
    }
}

/// A number in `range` (inclusive) from the OS's generator: spreads
/// clients' reconnects (`retry:`), so a bias of one in 2^32 does not matter.
pub fn random_in(range: &std::ops::RangeInclusive<u32>) -> u32 {
    let span = u64::from(range.end().saturating_sub(*range.start())) + 1;
    let mut bytes = [0; 8];
    os_random(&mut bytes);
    range.start() + (u64::from_ne_bytes(bytes) % span) as u32
}

/// `CLOCK_MONOTONIC` in microseconds: the clock systemd reads
/// `MONOTONIC_USEC=` on (std's `Instant` is the same clock, but opaque).
pub fn monotonic_micros() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the struct we pass; on failure it stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec.max(0) as u64 * 1_000_000 + ts.tv_nsec.max(0) as u64 / 1000
}

/// Takes an exclusive, non-blocking `flock` on `file`; false if another
/// process (or another open file) holds it. Released when the file closes.
pub fn try_lock(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; it changes no memory.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Ignores SIGXFSZ, so a write past `RLIMIT_FSIZE` fails with `EFBIG`
/// (answered 503) instead of killing the process.
pub fn ignore_sigxfsz() {
    // SAFETY: setting a signal's disposition to SIG_IGN touches no memory of ours.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// A non-blocking listening socket on `addr` with `SO_REUSEADDR` and
/// `SO_REUSEPORT`, so several processes can listen on one port and the
/// kernel spreads new connections over them.
pub fn listen_reuse_port(addr: std::net::SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket() takes no pointers; the descriptor it returns is
    // owned by the TcpListener below (or closed on every error path).
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own; from here it closes on drop.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
        let r = unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, option, (&one as *const libc::c_int).cast(), size_of::<libc::c_int>() as libc::socklen_t)
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: zeroed sockaddr_storage is a valid value; we fill the
    // variant for the address family and pass its true length.
    let r = unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            std::net::SocketAddr::V4(a) => {
                let sin = &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
                size_of::<libc::sockaddr_in>()
            }
            std::net::SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>()
            }
        };
        libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len as libc::socklen_t)
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: listen() on a bound socket we own.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(listener)
}

/// The wall clock in unix milliseconds (event ids, creation times): the
/// reactor reads it once per turn.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    /// The compaction thread's priority drop is its own: the thread that
    /// spawned it (the reactor) keeps its nice value.
    #[test]
    fn a_thread_lowers_its_own_priority_only() {
        // SAFETY: getpriority only reads the calling thread's nice value.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice();
        let lowered = std::thread::spawn(move || {
            super::lower_thread_priority(3);
            nice()
        })
        .join()
        .unwrap();
        assert_eq!((lowered, nice()), ((before + 3).min(19), before));
    }
}
