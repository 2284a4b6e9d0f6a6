//! The web inspector (`/ui`, SPEC §8) in a real headless Chromium:
//! tests/js/inspector.mjs uses the page as a person would while emitting
//! events with plain HTTP requests, and checks what it shows (see the
//! script for each step). This test serves it, restarts the server when
//! the script asks (same port, same data dir), and keeps the screenshots
//! in target/ui-screenshots/. The files' headers are checked over a raw
//! socket.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::node::{CHROMIUM, gather, js_dir, npm_setup};
use support::{KEY, TempDir, TestServer};

/// The whole walk through the page; Chromium's start included.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

fn shots_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("ui-screenshots")
}

fn start(dir: &TempDir, listen: &str) -> TestServer {
    TestServer::start(&["--listen", listen, "--data-dir", dir.path(), "--handshake-interval", "1s"])
}

#[test]
fn the_page_is_served_with_a_strict_policy_and_revalidated() {
    let server = TestServer::start(&["--engine", "memory"]);
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/sources/orders", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = server.raw_request("GET", path, "", None);
        assert_eq!(r.status, 200, "{path} needs no key");
        assert!(r.header("content-type").unwrap().starts_with(kind), "{path}: {}", r.head);
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.starts_with("default-src 'self'") && !csp.contains("unsafe"), "{csp}");
        assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(r.header("referrer-policy").as_deref(), Some("no-referrer"));
        assert_eq!(r.header("cache-control").as_deref(), Some("no-cache"));
        let etag = r.header("etag").unwrap();
        let again = server.raw_request("GET", path, &format!("If-None-Match: {etag}\r\n"), None);
        assert_eq!((again.status, again.body.as_str(), again.header("etag")), (304, "", Some(etag.clone())), "{path}");
        let stale = server.raw_request("GET", path, "If-None-Match: \"other\"\r\n", None);
        assert_eq!(stale.status, 200);
        let mut s = server.connect();
        write!(s, "HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut head = String::new();
        s.read_to_string(&mut head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200") && head.contains(&etag) && head.ends_with("\r\n\r\n"), "HEAD {path}: {head}");
    }
    let html = server.raw_request("GET", "/ui", "", None).body;
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");
    let total: usize = ["/ui", "/ui/app.js", "/ui/app.css"].iter().map(|p| server.raw_request("GET", p, "", None).body.len()).sum();
    assert!(total <= 40 * 1024, "the three files are {total} bytes, over 40 KB");
    assert_eq!(server.raw_request("POST", "/ui", "", Some("{}")).status, 405);
    assert_eq!(server.raw_request("GET", "/ui/nope.js", "", None).status, 404);
}

#[test]
fn the_inspector_in_a_real_browser() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: the browser tests need Debian's Chromium (.ci/run installs it)");
    npm_setup();
    let dir = TempDir::new("inspector");
    let mut server = start(&dir, "127.0.0.1:0");
    let addr = server.addr;
    server.create_source("orders");
    server.create_source("github");
    server.emit("orders", "{\"before\":\"the page\",\"n\":1}");
    server.emit("orders", "{\"before\":\"the page\",\"n\":2}");

    let mut child = Command::new("node")
        .arg(js_dir().join("inspector.mjs"))
        .args(["--base", &format!("http://{addr}"), "--key", KEY, "--shots", shots_dir().to_str().unwrap()])
        .current_dir(js_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node inspector.mjs");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line)));
        }
    });
    let stderr = gather(child.stderr.take().unwrap());

    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let mut seen = Vec::new();
    let mut logs = String::new();
    let transcript = |seen: &[Value], stderr: &Mutex<String>| {
        let lines: Vec<String> = seen.iter().map(Value::to_string).collect();
        format!("lines:\n{}\nstderr:\n{}", lines.join("\n"), stderr.lock().unwrap())
    };
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let kind = line["type"].as_str().unwrap_or("").to_string();
                seen.push(line);
                match kind.as_str() {
                    "restart" => {
                        logs.push_str(&server.logs());
                        let (status, _) = server.terminate();
                        assert!(status.success());
                        server = start(&dir, &addr.to_string());
                        assert_eq!(server.addr, addr);
                        writeln!(stdin, "restarted").unwrap();
                    }
                    "done" => break,
                    _ => {}
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("the page's walk did not end within {SCRIPT_TIMEOUT:?}\n{}", transcript(&seen, &stderr));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!("inspector.mjs exited ({status}) before the end\n{}", transcript(&seen, &stderr));
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "inspector.mjs: {status}\n{}", transcript(&seen, &stderr));
    for shot in ["key", "sources", "event", "webhook", "webhook-dark", "phone", "source", "source-dark"] {
        assert!(shots_dir().join(format!("{shot}.png")).exists(), "screenshot {shot}");
    }
    // The page read its streams with tokens; neither they nor the key reached the log.
    logs.push_str(&server.logs());
    assert!(logs.contains("subscribe token for source"), "the page asked for tokens:\n{logs}");
    assert!(!logs.contains("access_token") && !logs.contains("st_"), "a token in the log:\n{logs}");
}

/// The inspector behind a reverse proxy that serves the server under a
/// path prefix (nginx: `location /ssehub/ { proxy_pass http://…/; }`):
/// every file, call and stream of the page goes through the prefix, and
/// nothing asks for the proxy's root.
#[test]
fn the_inspector_under_a_path_prefix_in_a_real_browser() {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: the browser tests need Debian's Chromium (.ci/run installs it)");
    npm_setup();
    let server = TestServer::start(&["--engine", "memory"]);
    server.create_source("orders");
    server.emit("orders", "{\"before\":\"the page\",\"n\":1}");
    server.emit("orders", "{\"before\":\"the page\",\"n\":2}");

    let proxy_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/prefix_proxy.py");
    let mut proxy = Command::new("python3")
        .arg(proxy_script)
        .args(["--upstream", &server.addr.to_string(), "--prefix", "/ssehub"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3 prefix_proxy.py");
    let proxied = read_all(proxy.stderr.take().unwrap());
    let mut port = String::new();
    BufReader::new(proxy.stdout.take().unwrap()).read_line(&mut port).unwrap();
    let base = format!("http://127.0.0.1:{}/ssehub", port.trim());

    let shots = shots_dir().join("prefix");
    let mut child = Command::new("node")
        .arg(js_dir().join("inspector.mjs"))
        .args(["--base", &base, "--key", KEY, "--shots", shots.to_str().unwrap(), "--prefix"])
        .current_dir(js_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node inspector.mjs");
    let out = read_all(child.stdout.take().unwrap());
    let err = read_all(child.stderr.take().unwrap());
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = proxy.kill();
    let _ = proxy.wait();
    let (out, err, proxied) = (out.join().unwrap(), err.join().unwrap(), proxied.join().unwrap());
    assert!(status.success() && out.contains("{\"type\":\"done\"}"), "inspector.mjs --prefix: {status}\n{out}\n{err}\nproxy:\n{proxied}");
    assert!(!proxied.contains("outside"), "the page asked for something outside the prefix:\n{proxied}");
    for want in ["proxied /ssehub/ui/app.js", "proxied /ssehub/ui/app.css", "proxied /ssehub/v1/sources", "proxied /ssehub/sources/"] {
        assert!(proxied.contains(want), "{want}:\n{proxied}");
    }
}

/// Everything `pipe` gives until it closes, once joined.
fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}
