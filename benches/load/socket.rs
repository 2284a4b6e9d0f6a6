//! A subscriber's socket: connected from 127.0.0.x, its request sent,
//! and the response head checked.

use super::*;
use std::os::fd::RawFd;

/// Connect from 127.0.0.x (nonblocking: only begun). IP_BIND_ADDRESS_NO_PORT
/// defers the port choice to connect(), so each source address can use its
/// whole ephemeral range towards the server.
pub fn connect_from(dst: [u8; 4], port: u16, src: [u8; 4], nonblock: bool) -> Result<RawFd, String> {
    let sa = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
        sin_zero: [0; 8],
    };
    let (local, remote) = (sa(src, 0), sa(dst, port));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | if nonblock { libc::SOCK_NONBLOCK } else { 0 };
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
pub fn send_request(fd: RawFd, request: &[u8]) -> Result<(), String> {
    connected(fd)?;
    // SAFETY: write reads request.len() bytes from request.
    let n = unsafe { libc::write(fd, request.as_ptr().cast(), request.len()) };
    if n != request.len() as isize {
        return Err(sys::last_err("short request write"));
    }
    Ok(())
}

/// The outcome of a nonblocking connect.
pub fn connected(fd: RawFd) -> Result<(), String> {
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
    Ok(())
}

/// The subscription request with `Last-Event-ID: <id>` added.
pub fn resume_request(request: &[u8], id: &[u8]) -> Vec<u8> {
    let head = request.strip_suffix(b"\r\n").unwrap_or(request);
    [head, b"Last-Event-ID: ", id, b"\r\n\r\n"].concat()
}

/// A stream must be `200` and unframed (the contract rules out chunked).
pub fn check_head(head: &[u8]) -> Result<(), String> {
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
