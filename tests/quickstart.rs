//! The README's quick start, run as written: its first block starts the
//! server (here the binary cargo built for the tests, in a fresh
//! directory), its second is run by bash in that directory. Only the
//! binary's path and the port change (`target/release/ssehub` and
//! `localhost:8080` become this build's binary and a free port).

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{TempDir, TestServer, is_event_id};

/// The ```sh blocks of the README section `## Quick start`.
fn quick_start_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("\n## Quick start\n").nth(1).expect("a Quick start section");
    let section = section.split("\n## ").next().unwrap();
    section.split("```sh\n").skip(1).map(|b| b.split("```").next().unwrap().to_string()).collect()
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let blocks = quick_start_blocks();
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert_eq!(blocks[0].lines().collect::<Vec<_>>(), ["cargo build --release", "target/release/ssehub"], "the server block");

    // `target/release/ssehub`, with no flags, in a fresh directory.
    let dir = TempDir::new("quickstart");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new(support::bin());
    command.current_dir(&dir.0).env("SSEHUB_LISTEN", format!("127.0.0.1:{port}"));
    let server = TestServer::spawn(&mut command, "");
    assert!(server.logs().contains("generated one, kept in ./ssehub-data (`ssehub key` prints it"), "{}", server.logs());

    let script = blocks[1].replace("target/release/ssehub", support::bin()).replace("localhost:8080", &format!("127.0.0.1:{port}"));
    let mut client = Command::new("bash")
        .args(["-c", &format!("set -e\n{script}")])
        .current_dir(&dir.0)
        .env("SSEHUB_URL", format!("http://127.0.0.1:{port}"))
        .env_remove("SSEHUB_API_KEY")
        .env("XDG_CONFIG_HOME", dir.0.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the quick start did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    client.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    client.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");

    let lines: Vec<&str> = out.lines().collect();
    // create prints the source, each emit its id.
    assert!(lines.iter().any(|l| l.starts_with("name") && l.ends_with("orders")), "{out}");
    assert_eq!(lines.iter().filter(|l| is_event_id(l)).count(), 2, "{out}");
    // events -f: the history, then the live event.
    assert_eq!(lines.iter().filter(|l| l.starts_with('{')).copied().collect::<Vec<_>>(), ["{\"total\":12}", "{\"total\":13}"], "{out}");
    // curl: the stream's handshake, then the live event's frame.
    assert!(lines.contains(&":sse-handshake"), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("data: ") && l.contains("\"event\":{\"total\":13}")), "{out}");
}
