//! Thin safe wrappers over the libc calls the tool needs, and /proc readers.

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

/// Proportional set size (`Pss` of /proc/PID/smaps_rollup): pages shared
/// with other processes, as the binary's own text, counted in shares, so
/// that a sum over processes counts each page once.
pub fn proc_pss(pid: u32) -> Option<u64> {
    proc_kb(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// Kernel memory that sockets cost: slab (socket structs, epoll items,
/// files; both ends of every loopback pair) plus TCP buffer pages.
pub fn kernel_mem() -> Option<u64> {
    kernel_parts().map(|(slab, tcp)| slab + tcp)
}

/// The two parts of `kernel_mem`: Slab and the TCP buffer pages, in bytes.
pub fn kernel_parts() -> Option<(u64, u64)> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let pages: u64 = tcp.split(' ').skip_while(|w| *w != "mem").nth(1)?.parse().ok()?;
    Some((proc_kb("/proc/meminfo", "Slab:")?, pages * sysconf(libc::_SC_PAGESIZE)))
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
