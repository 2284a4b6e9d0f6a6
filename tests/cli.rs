//! The `ssehub` command-line client end to end: the real binary runs both
//! as the server (on a free port of 127.0.0.1) and as the client, which
//! finds the server through SSEHUB_URL and SSEHUB_API_KEY. The
//! dead-connection watchdog is proved against a fake server in this file
//! that goes silent, with SSEHUB_IDLE_TIMEOUT_MS shortening the 45 s.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::{TestServer, is_event_id};

const BIN: &str = env!("CARGO_BIN_EXE_ssehub");
const KEY: &str = "cli-test-key";
/// Longest wait for anything that should happen; failures show up sooner.
const WAIT: Duration = Duration::from_secs(15);

// ---- the tests ------------------------------------------------------------

/// The listing is paged (100 a page by default); the CLI pages through all,
/// oldest first.
#[test]
fn list_sources_pages_through_250_sources() {
    let server = serve();
    let client = Client::new(&server);
    let names: Vec<String> = (0..250).map(|n| format!("s{n:03}")).collect();
    for name in &names {
        let r = server.request("POST", "/v1/sources", Some(&format!("{{\"name\":\"{name}\"}}")));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let listed = client.ok(&["list", "sources"]);
    let got: Vec<&str> = listed.lines().skip(1).map(|row| row.split_whitespace().nth(1).unwrap()).collect();
    // `serve` starts with one source, "orders".
    assert_eq!(got.len(), 251, "{listed}");
    assert_eq!(got[0], "orders");
    assert_eq!(got[1..], names.iter().map(String::as_str).collect::<Vec<_>>()[..]);
    assert_eq!(client.ok(&["list", "streams"]).lines().count(), 252);
}

#[test]
fn list_streams_prints_a_table_of_sources() {
    let server = serve();
    let client = Client::new(&server);
    client.ok(&["create", "payments-eu"]);

    let table = client.ok(&["list", "streams"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["NAME", "TYPE", "VISIBILITY", "SSE"]);
    assert_eq!(lines.len(), 3, "{table}");
    let base = format!("http://127.0.0.1:{}/", server.addr.port());
    let mut names = Vec::new();
    for row in &lines[1..] {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1..3], ["http", "private"], "{row}");
        assert!(cells[3].starts_with(&base) && cells[3].ends_with("/sse"), "{row}");
        // Columns line up under the header.
        assert_eq!(row.find(cells[3]), lines[0].find("SSE"), "{table}");
        names.push(cells[0]);
    }
    names.sort();
    assert_eq!(names, ["orders", "payments-eu"]);
    assert_eq!(client.ok(&["list", "st"]), table);

    let sources = client.ok(&["list", "so"]);
    let lines: Vec<&str> = sources.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["ID", "NAME", "ENDPOINT"]);
    for row in &lines[1..] {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert!(cells[0].starts_with("dc_"), "{row}");
        assert!(cells[2].starts_with(&base) && cells[2].contains("/e/"), "{row}");
    }
    assert_eq!(client.ok(&["list", "sources"]), sources);
}

#[test]
fn create_describe_and_delete_a_source() {
    let server = serve();
    let client = Client::new(&server);

    let created = client.ok(&["create", "payments"]);
    let id = field(&created, "id");
    assert!(id.starts_with("dc_"), "{created}");
    assert_eq!(field(&created, "name"), "payments");
    assert!(field(&created, "sse_url").ends_with("/sse"), "{created}");
    assert!(field(&created, "endpoint_url").contains("/e/"), "{created}");
    assert!(field(&created, "created_at").contains('T'), "{created}");

    assert_eq!(client.ok(&["describe", "payments"]), created);
    assert_eq!(client.ok(&["describe", &id]), created);

    client.fails(&["create", "payments"], 1, "409");
    client.fails(&["create", "bad name!"], 1, "400");

    let deleted = client.run(&["delete", "payments"], None);
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    assert_eq!(deleted.stdout, "");
    client.fails(&["describe", "payments"], 1, "404");
    client.fails(&["delete", &id], 1, "404");
    client.fails(&["events", "payments"], 1, "404");
    client.fails(&["emit", "payments", "1"], 1, "404");
}

#[test]
fn emit_from_argument_stdin_and_lines() {
    let server = serve();
    let client = Client::new(&server);

    let id = client.ok(&["emit", "orders", r#"{"b": 1, "a": [1, 2.50]}"#]);
    assert!(is_event_id(id.trim()), "{id}");
    let id = client.ok_with_stdin(&["emit", "orders"], "{\n  \"from\": \"stdin\"\n}\n");
    assert!(is_event_id(id.trim()), "{id}");
    let ids = client.ok_with_stdin(&["emit", "--lines", "orders"], "1\n\n\"two\"\n[3]\n");
    assert_eq!(ids.lines().filter(|l| is_event_id(l)).count(), 3, "{ids}");
    client.ok(&["emit", "orders", "--", "-4"]);

    // Refused before sending: nothing more is stored.
    client.fails(&["emit", "orders", "{not json"], 1, "invalid JSON");
    client.fails_with_stdin(&["emit", "orders"], "", 2, "no JSON");
    let partial = client.run(&["emit", "--lines", "orders"], Some("5\n{oops\n6\n"));
    assert_eq!((partial.code, partial.stdout.lines().count()), (Some(1), 1), "{partial:?}");
    assert!(one_line(&partial.stderr).contains("line 2"), "{partial:?}");

    let events = client.ok(&["events", "-n", "20", "orders"]);
    let want = [r#"{"b":1,"a":[1,2.50]}"#, r#"{"from":"stdin"}"#, "1", "\"two\"", "[3]", "-4", "5"];
    assert_eq!(events.lines().collect::<Vec<_>>(), want);
}

#[test]
fn events_prints_the_last_n_oldest_first() {
    let server = serve();
    let client = Client::new(&server);
    for n in 1..=12 {
        client.emit(&format!("{{\"n\":{n}}}"));
    }
    assert_eq!(client.ok(&["events", "-n", "3", "orders"]), "{\"n\":10}\n{\"n\":11}\n{\"n\":12}\n");
    let default: Vec<String> = (3..=12).map(|n| format!("{{\"n\":{n}}}")).collect();
    assert_eq!(client.ok(&["events", "orders"]).lines().collect::<Vec<_>>(), default);
    assert_eq!(client.ok(&["events", "-n", "0", "orders"]), "");

    let envelopes = client.ok(&["events", "--envelope", "-n", "2", "orders"]);
    let envelopes: Vec<serde_json::Value> = envelopes.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(envelopes[1]["event"], serde_json::json!({"n": 12}));
    let ids: Vec<&str> = envelopes.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(is_event_id(ids[0]) && ids[0] < ids[1], "{ids:?}");
}

#[test]
fn events_says_when_the_server_kept_fewer_than_asked() {
    let server = serve();
    let client = Client::new(&server);
    // The default --history 100 keeps 51..=150.
    let lines: String = (1..=150).map(|n| format!("{n}\n")).collect();
    client.ok_with_stdin(&["emit", "--lines", "orders"], &lines);
    let capped = client.run(&["events", "-n", "1000", "orders"], None);
    assert_eq!(capped.code, Some(0), "{capped:?}");
    assert_eq!(capped.stdout.lines().collect::<Vec<_>>(), (51..=150).map(|n| n.to_string()).collect::<Vec<_>>());
    let notice = one_line(&capped.stderr);
    assert!(notice.contains("keeps only the newest 100 events of this source") && notice.contains("printed 100"), "{notice}");

    // As many as asked, or all a source ever had: nothing to say.
    let all = client.run(&["events", "-n", "100", "orders"], None);
    assert_eq!((all.stdout.lines().count(), all.stderr.as_str()), (100, ""), "{all:?}");
    client.ok(&["create", "few"]);
    for n in 1..=5 {
        client.ok(&["emit", "few", &n.to_string()]);
    }
    let few = client.run(&["events", "-n", "1000", "few"], None);
    assert_eq!((few.code, few.stdout.lines().count(), few.stderr.as_str()), (Some(0), 5, ""), "{few:?}");
}

#[test]
fn events_follow_prints_history_then_live_events_and_exits_0_on_ctrl_c() {
    let server = serve();
    let client = Client::new(&server);
    client.emit("1");
    client.emit("2");

    let mut follower = client.follow(&["events", "-f", "-n", "1", "orders"]);
    assert_eq!(follower.line(), "2");
    for n in 3..=5 {
        client.emit(&n.to_string());
    }
    assert_eq!(follower.lines(3), ["3", "4", "5"]);
    follower.assert_quiet();
    follower.interrupt();
}

#[test]
fn events_follow_with_no_history_misses_nothing() {
    let server = serve();
    let client = Client::new(&server);
    let mut follower = client.follow(&["events", "-f", "orders"]);
    // Emitted while the follower may still be between its history call
    // and its stream call: the stream must replay it.
    client.emit("\"first\"");
    client.emit("\"second\"");
    assert_eq!(follower.lines(2), ["\"first\"", "\"second\""]);
    follower.assert_quiet();
    follower.interrupt();
}

#[test]
fn events_follow_survives_a_server_restart_printing_every_event_once() {
    let mut server = serve();
    let port = server.addr.port();
    let client = Client::new(&server);
    client.emit("1");
    client.emit("2");

    let mut follower = client.follow(&["events", "-f", "-n", "10", "orders"]);
    assert_eq!(follower.lines(2), ["1", "2"]);
    client.emit("3");
    assert_eq!(follower.line(), "3");

    terminate(&mut server);
    follower.wait_for_notice("reconnecting");
    let _server = serve_on(port);
    // The follower is still waiting out its backoff: these are replayed.
    client.emit("4");
    client.emit("5");
    follower.wait_for_notice("reconnected");
    client.emit("6");
    client.emit("7");

    assert_eq!(follower.lines(4), ["4", "5", "6", "7"]);
    follower.assert_quiet();
    follower.interrupt();
}

#[test]
fn events_follow_warns_of_a_gap_on_stderr_and_keeps_printing_payloads() {
    let mut server = serve();
    let port = server.addr.port();
    let client = Client::new(&server);
    client.emit("0");
    let mut follower = client.follow(&["events", "-f", "-n", "1", "orders"]);
    assert_eq!(follower.line(), "0");

    // Held still while the server restarts and evicts: its resume point
    // (the id of "0") is then older than events no longer retained.
    support::signal(follower.child.id(), "STOP");
    terminate(&mut server);
    let _server = serve_on(port);
    let lines: String = (1..=150).map(|n| format!("{n}\n")).collect();
    client.ok_with_stdin(&["emit", "--lines", "orders"], &lines);
    support::signal(follower.child.id(), "CONT");

    // The default --history 100 keeps 51..=150; the gap is one line on stderr.
    let printed = follower.lines(100);
    assert_eq!(printed, (51..=150).map(|n| n.to_string()).collect::<Vec<_>>());
    follower.wait_for_notice("warning: events after ");
    assert_eq!(follower.stderr().matches("were no longer kept by the server").count(), 1, "{}", follower.stderr());
    client.emit("151");
    assert_eq!(follower.line(), "151");
    follower.interrupt();
}

#[test]
fn events_follow_stops_when_its_source_is_deleted() {
    let server = serve();
    let client = Client::new(&server);
    client.ok(&["create", "doomed"]);
    client.ok(&["emit", "doomed", "1"]);
    let mut follower = client.follow(&["events", "-f", "doomed"]);
    assert_eq!(follower.line(), "1");
    client.ok(&["delete", "doomed"]);
    let (code, stderr) = follower.wait_exit();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.lines().last().unwrap_or("").contains("404"), "{stderr}");
}

#[test]
fn events_follow_stops_at_once_on_401_and_404() {
    let server = serve();
    let client = Client::new(&server);
    client.fails(&["events", "-f", "nosuch"], 1, "404");
    Client { key: "wrong".into(), ..Client::new(&server) }.fails(&["events", "-f", "orders"], 1, "401");
}

#[test]
fn every_failure_is_one_line_and_a_nonzero_status() {
    let server = serve();
    let client = Client::new(&server);

    let wrong_key = Client { key: "wrong".into(), ..Client::new(&server) };
    wrong_key.fails(&["list", "streams"], 1, "401");
    client.fails(&["describe", "nosuch"], 1, "404");
    client.fails(&["frobnicate", "list"], 2, "unknown command");
    client.fails(&["events", "-n", "many", "orders"], 2, "-n needs a count");
    client.fails(&["list"], 2, "usage");

    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = Client { url: format!("http://127.0.0.1:{closed}"), ..Client::new(&server) };
    nowhere.fails(&["list", "streams"], 1, "cannot connect");
    nowhere.fails(&["events", "-f", "orders"], 1, "cannot connect");

    let no_key = Client { key: String::new(), ..Client::new(&server) };
    no_key.fails(&["list", "streams"], 2, "no API key");
}

#[test]
fn a_plain_request_to_a_tls_port_says_the_server_may_want_https() {
    let nginx_page = "<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n<body>\r\n\
        <center><h1>400 Bad Request</h1></center>\r\n<center>The plain HTTP request was sent to HTTPS port</center>\r\n\
        <hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n";
    let nginx = format!(
        "HTTP/1.1 400 Bad Request\r\nServer: nginx/1.24.0\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{nginx_page}",
        nginx_page.len()
    );
    // A TLS server's alert (fatal, decode_error) to bytes that are no handshake.
    let alert = b"\x15\x03\x01\x00\x02\x02\x32".to_vec();
    for (answer, what) in [(nginx.into_bytes(), "nginx"), (alert, "TLS alert")] {
        let port = answer_once(answer);
        let client = Client { url: format!("http://127.0.0.1:{port}"), key: KEY.into(), config: Config::new() };
        let ran = client.run(&["list", "streams"], None);
        assert_eq!(ran.code, Some(1), "{what}: {ran:?}");
        assert!(one_line(&ran.stderr).contains("may want https://"), "{what}: {ran:?}");
    }
}

#[test]
fn help_explains_every_command() {
    let client = Client { url: "http://127.0.0.1:1".into(), key: KEY.into(), config: Config::new() };
    let main = client.ok(&["help"]);
    for command in ["list", "create", "delete", "describe", "emit", "events"] {
        assert!(main.contains(command), "{command}");
        let help = client.ok(&[command, "--help"]);
        assert!(help.starts_with("Usage: ssehub"), "{command}: {help}");
        assert_eq!(client.ok(&["help", command]), help);
    }
    for flag in ["-n", "-f", "--envelope", "SSEHUB_IDLE_TIMEOUT_MS"] {
        assert!(client.ok(&["events", "-h"]).contains(flag), "{flag}");
    }
    assert!(client.ok(&["emit", "--help"]).contains("--lines"));
    for flag in ["--url", "--api-key", "--profile", "SSEHUB_URL", "SSEHUB_API_KEY"] {
        assert!(main.contains(flag), "{flag}");
    }
}

#[test]
fn version_and_help_of_the_server() {
    let client = Client { url: "http://127.0.0.1:1".into(), key: KEY.into(), config: Config::new() };
    let version = format!("ssehub {}\n", env!("CARGO_PKG_VERSION"));
    for args in [&["--version"][..], &["-V"], &["serve", "--version"], &["serve", "-V"], &["--listen", "127.0.0.1:0", "--version"]] {
        assert_eq!(client.ok(args), version, "{args:?}");
    }
    let usage = client.ok(&["serve", "--help"]);
    for flag in ["--listen ADDR", "--history N", "--data-dir DIR", "--api-key KEY", "--source NAME", "-V, --version"] {
        assert!(usage.contains(flag), "{flag} in {usage}");
    }
    let main = client.ok(&["--help"]);
    for flag in ["--url URL", "--api-key KEY", "--profile NAME", "events [-n N]", "--to URL"] {
        assert!(main.contains(flag), "{flag} in {main}");
    }
}

#[test]
fn a_server_flag_value_that_is_a_command_word_is_no_command() {
    // `events` is the value of --source here, not the client command.
    let server = serve_with(&["--listen", "127.0.0.1:0", "--api-key", KEY, "--source", "events", "--engine", "memory"]);
    let client = Client::new(&server);
    let sources = client.ok(&["list", "sources"]);
    let names: Vec<&str> = sources.lines().skip(1).filter_map(|row| row.split_whitespace().nth(1)).collect();
    assert_eq!(names, ["events"], "{sources}");
    // A client global option's value may be a command word too.
    client.fails(&["--profile", "events", "list", "st"], 2, "profile \"events\" not found");
}

#[test]
fn config_file_and_profiles() {
    let server = serve();
    let client = Client { url: String::new(), key: String::new(), ..Client::new(&server) };
    let good = format!("http://127.0.0.1:{}", server.addr.port());
    client.config.write(&format!("# top level\nurl = {good}\napi_key = wrong\n\n[prod]\napi_key = {KEY}\n"));

    client.fails(&["list", "st"], 1, "401");
    assert!(client.ok(&["-p", "prod", "list", "st"]).starts_with("NAME"));
    assert!(client.ok(&["list", "st", "--profile=prod"]).starts_with("NAME"));
    assert!(client.ok(&["--api-key", KEY, "list", "st"]).starts_with("NAME"));
    client.fails(&["-p", "staging", "list", "st"], 2, "profile \"staging\" not found");
    let env_wins = Client { key: KEY.into(), ..client };
    assert!(env_wins.ok(&["list", "st"]).starts_with("NAME"));
}

#[test]
fn follow_reconnects_a_silent_connection_and_resumes_after_the_last_event() {
    let fake = SilentServer::start();
    let client = Client { url: format!("http://127.0.0.1:{}", fake.port), key: KEY.into(), config: Config::new() };
    let started = Instant::now();
    let mut follower = client.follow_env(&["events", "-f", "orders"], &[("SSEHUB_IDLE_TIMEOUT_MS", "500")]);

    assert_eq!(follower.lines(3), [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    // Two silences of 0.5 s and one backoff of 1 s between them, not 45 s.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let requests = fake.requests();
    let resumed: Vec<Option<&str>> = requests.iter().filter(|r| r.contains("/sse")).map(|r| header(r, "last-event-id")).collect();
    assert_eq!(resumed[..2], [Some("1-0"), Some("2-0")], "{requests:?}");
    assert!(requests.iter().all(|r| header(r, "authorization") == Some(&format!("Bearer {KEY}"))), "{requests:?}");
    follower.wait_for_notice("no data for 500 ms");
    follower.interrupt();
}

// ---- https ----------------------------------------------------------------

/// A server speaking TLS with `cert` (`<cert>.pem`, `<cert>.key` in `certs`).
#[cfg(feature = "tls")]
fn serve_tls(certs: &support::tls::Certs, cert: &str) -> TestServer {
    let (pem, key) = (certs.path(&format!("{cert}.pem")), certs.path(&format!("{cert}.key")));
    serve_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        KEY,
        "--source",
        "orders",
        "--engine",
        "memory",
        "--tls-cert",
        &pem,
        "--tls-key",
        &key,
    ])
}

#[cfg(feature = "tls")]
fn https_client(server: &TestServer) -> Client {
    Client { url: format!("https://127.0.0.1:{}", server.addr.port()), key: KEY.into(), config: Config::new() }
}

#[test]
#[cfg(feature = "tls")]
fn https_is_trusted_through_cacert_the_environment_and_the_config_key() {
    let certs = support::tls::certs();
    let server = serve_tls(&certs, "server");
    let ca = certs.path("ca.pem");
    let client = https_client(&server);
    let id = client.ok(&["--cacert", &ca, "emit", "orders", r#"{"n":1}"#]);
    assert!(is_event_id(id.trim()), "{id}");
    let ran = client.command(&["events", "orders"], &[("SSEHUB_CACERT", &ca)]).output().unwrap();
    assert_eq!((ran.status.code(), String::from_utf8_lossy(&ran.stdout).as_ref()), (Some(0), "{\"n\":1}\n"), "{ran:?}");
    client.config.write(&format!("[tls]\nurl = {}\napi_key = {KEY}\ncacert = {ca}\n", client.url));
    let table = client.ok(&["-p", "tls", "list", "sources"]);
    assert!(table.contains(&format!("https://127.0.0.1:{}/e/", server.addr.port())), "URLs in answers are https: {table}");
    // A plain request to the TLS port: the server's 400 says so.
    let plain = Client { url: format!("http://127.0.0.1:{}", server.addr.port()), ..https_client(&server) };
    plain.fails(&["list", "sources"], 1, "this port speaks HTTPS; use https://");
}

#[test]
#[cfg(feature = "tls")]
fn https_refusals_name_the_cause_in_one_line() {
    let certs = support::tls::certs();
    let ca = certs.path("ca.pem");
    let server = serve_tls(&certs, "server");
    https_client(&server).fails(&["list", "sources"], 1, "TLS handshake failed: the certificate's issuer is unknown (unknown issuer");

    support::tls::openssl(certs.dir.path(), &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "other.key"]);
    certs.sign("other", "DNS:other.example", "30");
    let wrong_name = serve_tls(&certs, "other");
    https_client(&wrong_name).fails(&["--cacert", &ca, "list", "sources"], 1, "(name mismatch)");

    support::tls::openssl(certs.dir.path(), &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "expired.key"]);
    certs.sign("expired", "IP:127.0.0.1", "-1");
    let expired = serve_tls(&certs, "expired");
    https_client(&expired).fails(&["--cacert", &ca, "list", "sources"], 1, "(expired)");
}

#[test]
#[cfg(feature = "tls")]
fn insecure_skips_verification_and_says_so_once() {
    let certs = support::tls::certs();
    let server = serve_tls(&certs, "server");
    let client = https_client(&server);
    for (args, env) in [(&["--insecure", "list", "sources"][..], &[][..]), (&["list", "sources"][..], &[("SSEHUB_INSECURE", "1")][..])] {
        let ran = client.command(args, env).output().unwrap();
        let stderr = String::from_utf8_lossy(&ran.stderr);
        assert_eq!(ran.status.code(), Some(0), "{ran:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("--insecure: the certificate of https://127.0.0.1:") && stderr.contains("is not verified"), "{stderr}");
        assert!(String::from_utf8_lossy(&ran.stdout).contains("orders"));
    }
}

// ---- support ----------------------------------------------------------------

/// A real `ssehub serve` with source `orders` on a free port (support's
/// TestServer, with this file's key, logging at info); killed on drop.
fn serve() -> TestServer {
    serve_on(0)
}

/// The same on `port` (port 0 picks a free one; the server logs the one it bound).
fn serve_on(port: u16) -> TestServer {
    let listen = format!("127.0.0.1:{port}");
    // The memory engine: these tests are about the CLI (restarts with the log engine: tests/restart.rs).
    serve_with(&[
        "serve",
        "--listen",
        &listen,
        "--api-key",
        KEY,
        "--source",
        "orders",
        "--handshake-interval",
        "200ms",
        "--engine",
        "memory",
    ])
}

/// The binary run with `args` (which must make it serve on 127.0.0.1),
/// none of the test's own SSEHUB_* variables.
fn serve_with(args: &[&str]) -> TestServer {
    TestServer::spawn(clean(Command::new(BIN)).args(args).env("RUST_LOG", "info"), KEY)
}

/// SIGTERM, as `kill` or a supervisor would send, then wait for the exit.
fn terminate(server: &mut TestServer) {
    support::signal(server.child.id(), "TERM");
    let deadline = Instant::now() + WAIT;
    while server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server ignores SIGTERM");
        thread::sleep(Duration::from_millis(20));
    }
}

/// How one client call ended.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary as a client of one server, with an empty config dir.
struct Client {
    url: String,
    key: String,
    config: Config,
}

impl Client {
    fn new(server: &TestServer) -> Client {
        Client { url: format!("http://127.0.0.1:{}", server.addr.port()), key: KEY.into(), config: Config::new() }
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = clean(Command::new(BIN));
        command.args(args).env("XDG_CONFIG_HOME", &self.config.dir).env("HOME", &self.config.dir);
        for (name, value) in [("SSEHUB_URL", &self.url), ("SSEHUB_API_KEY", &self.key)] {
            if !value.is_empty() {
                command.env(name, value);
            }
        }
        command.envs(env.iter().copied());
        command
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Ran {
        let mut child = self.command(args, &[]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let Output { status, stdout, stderr } = wait_output(child);
        Ran { code: status.code(), stdout: String::from_utf8(stdout).unwrap(), stderr: String::from_utf8(stderr).unwrap() }
    }

    /// Runs a call that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args, None);
        assert_eq!(ran.code, Some(0), "{args:?}: {ran:?}");
        ran.stdout
    }

    fn ok_with_stdin(&self, args: &[&str], stdin: &str) -> String {
        let ran = self.run(args, Some(stdin));
        assert_eq!(ran.code, Some(0), "{args:?}: {ran:?}");
        ran.stdout
    }

    /// Runs a call that must fail with `code` and one stderr line saying `why`.
    fn fails(&self, args: &[&str], code: i32, why: &str) {
        self.fails_with_stdin(args, "", code, why);
    }

    fn fails_with_stdin(&self, args: &[&str], stdin: &str, code: i32, why: &str) {
        let ran = self.run(args, Some(stdin));
        assert_eq!(ran.code, Some(code), "{args:?}: {ran:?}");
        assert!(one_line(&ran.stderr).contains(why), "{args:?}: {ran:?}");
        assert_eq!(ran.stdout, "", "{args:?}");
    }

    fn emit(&self, json: &str) -> String {
        self.ok(&["emit", "orders", json]).trim().to_string()
    }

    fn follow(&self, args: &[&str]) -> Follower {
        self.follow_env(args, &[])
    }

    fn follow_env(&self, args: &[&str], env: &[(&str, &str)]) -> Follower {
        let mut child = self.command(args, env).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let lines = read_lines(child.stdout.take().unwrap());
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Follower { child, lines, stderr }
    }
}

/// A running `events -f`: its stdout line by line, its stderr as a whole.
struct Follower {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Follower {
    fn line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(_) => panic!("no line from the follower; stderr: {}", self.stderr()),
        }
    }

    fn lines(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.line()).collect()
    }

    /// Nothing more, in particular no event printed twice.
    fn assert_quiet(&mut self) {
        match self.lines.recv_timeout(Duration::from_millis(700)) {
            Err(RecvTimeoutError::Timeout) => {}
            other => panic!("unexpected output {other:?}; stderr: {}", self.stderr()),
        }
    }

    fn wait_for_notice(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} on stderr: {}", self.stderr());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C: the follower must exit 0 at once, printing nothing more.
    fn interrupt(mut self) {
        support::signal(self.child.id(), "INT");
        let (code, stderr) = self.wait_exit();
        assert_eq!(code, Some(0), "after SIGINT; stderr: {stderr}");
        assert!(self.lines.try_iter().next().is_none());
    }

    fn wait_exit(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                thread::sleep(Duration::from_millis(50));
                return (status.code(), self.stderr());
            }
            assert!(Instant::now() < deadline, "the follower does not exit; stderr: {}", self.stderr());
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An empty config dir of its own for each client, removed on drop.
struct Config {
    dir: PathBuf,
}

impl Config {
    fn new() -> Config {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("ssehub-cli-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Config { dir }
    }

    fn write(&self, text: &str) {
        std::fs::create_dir_all(self.dir.join("ssehub")).unwrap();
        std::fs::write(self.dir.join("ssehub").join("config"), text).unwrap();
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fake server for one follower: `event_summaries` answers one event
/// (chunked, to exercise that path), then every stream connection gets a
/// handshake and the next event, and then silence, never closing.
struct SilentServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl SilentServer {
    fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        thread::spawn(move || {
            let mut open = Vec::new();
            let mut next = 1;
            for mut sock in listener.incoming().map_while(Result::ok) {
                let head = read_head(&mut sock);
                seen.lock().unwrap().push(head.clone());
                if head.contains("/event_summaries") {
                    let body = format!(r#"{{"page_info":{{"count":1}},"data":[{}]}}"#, envelope(next));
                    let (first, rest) = body.split_at(10);
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{rest}\r\n0\r\n\r\n",
                        first.len(),
                        rest.len()
                    );
                    let _ = sock.write_all(reply.as_bytes());
                } else {
                    next += 1;
                    let frame = format!("id: {next}-0\ndata: {}\n\n", envelope(next));
                    let reply = format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n:sse-handshake\n\n{frame}");
                    let _ = sock.write_all(reply.as_bytes());
                    open.push(sock);
                }
            }
        });
        SilentServer { port, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A port that answers the first request with `answer` and closes.
fn answer_once(answer: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        if let Ok((mut sock, _)) = listener.accept() {
            read_head(&mut sock);
            let _ = sock.write_all(&answer);
        }
    });
    port
}

fn envelope(n: u32) -> String {
    format!(r#"{{"id":"{n}-0","indexed_at_ms":{n},"event":{{"n":{n}}},"metadata":{{}}}}"#)
}

fn read_head(sock: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") && sock.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// No SSEHUB_* variable of the test's own environment leaks in.
fn clean(mut command: Command) -> Command {
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("SSEHUB_")) {
        command.env_remove(name);
    }
    command
}

fn read_lines(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `wait_with_output`, but a hung client fails the test instead of hanging it.
fn wait_output(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(WAIT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) only sends a signal. The child is not reaped
            // unless it exits right now, and a pid is not reused that fast.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("the client did not finish within {WAIT:?}");
        }
    }
}

/// The only line of `text`: failures are one line on stderr.
fn one_line(text: &str) -> &str {
    assert_eq!(text.lines().count(), 1, "expected one line: {text:?}");
    text.trim_end()
}

/// The value of a `describe` line `key  value`.
fn field(describe: &str, key: &str) -> String {
    let line = describe.lines().find(|l| l.split_whitespace().next() == Some(key));
    line.unwrap_or_else(|| panic!("no {key} in {describe}"))[key.len()..].trim().to_string()
}
