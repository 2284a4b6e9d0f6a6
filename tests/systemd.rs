//! Running under systemd: the readiness protocol over `$NOTIFY_SOCKET`
//! (`READY=1` once the port accepts, `RELOADING=1` … `READY=1` around a
//! SIGHUP, `STOPPING=1` on SIGTERM, `STATUS=` with the streams count), and
//! the unit in packaging/ that `systemd-analyze verify` accepts.

mod support;

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use support::{KEY, TempDir, TestServer};

/// A datagram socket standing in for systemd's; the messages it got.
struct Systemd {
    sock: UnixDatagram,
}

impl Systemd {
    fn bind(dir: &TempDir) -> (Systemd, String) {
        let path = dir.0.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (Systemd { sock }, path.to_str().unwrap().to_string())
    }

    /// The next message that is not only a `STATUS=` (those may come at any time).
    fn next(&self) -> String {
        loop {
            let mut buf = [0; 4096];
            let n = self.sock.recv(&mut buf).expect("no message from the server in 10 s");
            let message = String::from_utf8(buf[..n].to_vec()).unwrap();
            if !message.lines().all(|l| l.starts_with("STATUS=")) {
                return message;
            }
        }
    }
}

#[test]
fn notify_says_ready_once_the_port_accepts_then_reloading_and_stopping() {
    let dir = TempDir::new("notify");
    let (systemd, path) = Systemd::bind(&dir);
    let mut command = Command::new(support::bin());
    command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY, "--engine", "memory", "--source", "s"]);
    let mut server = TestServer::launch(command.env("NOTIFY_SOCKET", &path), KEY);

    let ready = systemd.next();
    assert_eq!(ready, "READY=1\nSTATUS=0 streams");
    // Said only once listening: the address is logged and a connection is taken at once.
    assert!(server.logs().contains("listening on http://"), "READY=1 before the listening line:\n{}", server.logs());
    server.wait_listening();
    TcpStream::connect(server.addr).expect("READY=1 came before the port accepts");
    assert_eq!(server.request("GET", "/healthz", None).status, 200);

    let _stream = server.subscribe("/sources/s/sse", "");
    let mut last_usec = 0;
    for _ in 0..2 {
        support::signal(server.pid(), "HUP");
        let reloading = systemd.next();
        let usec = reloading.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").unwrap_or_else(|| panic!("{reloading:?}"));
        let usec: u64 = usec.parse().unwrap_or_else(|_| panic!("{reloading:?}"));
        assert!(usec > last_usec, "MONOTONIC_USEC went from {last_usec} to {usec}");
        last_usec = usec;
        assert_eq!(systemd.next(), "READY=1\nSTATUS=1 streams");
    }

    let (status, _) = server.terminate();
    assert!(status.success());
    assert_eq!(systemd.next(), "STOPPING=1");
}

#[test]
fn notify_says_stopping_when_a_drain_begins_and_accepts_an_abstract_socket_name() {
    // An abstract name: `@` for the leading NUL, no file.
    let name = format!("ssehub-test-notify-{}", std::process::id());
    let sock = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&addr).unwrap()
    };
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let systemd = Systemd { sock };
    let mut command = Command::new(support::bin());
    command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY, "--engine", "memory", "--source", "s", "--drain", "2s"]);
    let mut server = TestServer::spawn(command.env("NOTIFY_SOCKET", format!("@{name}")), KEY);
    assert!(systemd.next().starts_with("READY=1\n"));
    let _stream = server.subscribe("/sources/s/sse", "");
    server.wait_metric("ssehub_subscribers", 1);
    support::signal(server.pid(), "TERM");
    assert_eq!(systemd.next(), "STOPPING=1\nSTATUS=draining 1 streams");
    assert!(server.child.wait().unwrap().success());
}

#[test]
fn the_packaged_unit_passes_systemd_analyze_verify() {
    let unit_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/ssehub.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for line in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=ssehub",
        "LimitNOFILE=1048576",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "TimeoutStopSec=40",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "EnvironmentFile=-/etc/ssehub/env",
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in {}", unit_path.display());
    }
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart= line");
    assert!(exec.contains("--data-dir /var/lib/ssehub") && exec.contains("--drain 30s"), "{exec}");
    // Flags and values the binary takes: a typo would fail the first start.
    let flags: Vec<String> = exec.split_whitespace().skip(2).map(String::from).collect();
    assert!(ssehub::Config::from_args(&flags, |_| None).is_ok(), "{exec}");

    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!("skipped: systemd-analyze is not installed here");
        return;
    }
    // verify wants ExecStart's binary to exist: a copy of the unit runs the one just built.
    let dir = TempDir::new("unit");
    let copy = dir.0.join("ssehub.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/ssehub", support::bin())).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {}\n{stderr}", out.status);
}
