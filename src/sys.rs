//! Every call into libc, each with its SAFETY note: signals, resource
//! limits, socket options, OS randomness. The rest of the crate is safe
//! code.

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

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limit now
/// in force. Call it before [`Server::bind`] so the connection limit follows.
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
