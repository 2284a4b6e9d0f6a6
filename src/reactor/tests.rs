//! The reactor with an engine that acknowledges late (every third turn,
//! in batches), over real sockets: pipelined emits are answered in order,
//! and subscribers get each event only once it is acknowledged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::engine::Memory;
use crate::engine::conformance::Delayed;
use crate::{Config, Server};

fn server() -> (std::net::SocketAddr, crate::Handle, std::thread::JoinHandle<std::io::Result<()>>) {
    let config =
        Config { listen: "127.0.0.1:0".parse().unwrap(), api_key: Some("k".into()), sources: vec!["s".into()], ..Config::default() };
    let make: Box<dyn FnOnce(u64) -> Box<dyn crate::engine::Engine> + Send> =
        Box::new(|floor| Box::new(Delayed::new(Box::new(Memory::new(100, floor)), 3)));
    let server = Server::bind_with(config, make).unwrap();
    let (addr, handle) = (server.local_addr(), server.handle());
    (addr, handle, std::thread::spawn(move || server.run()))
}

/// Reads `n` responses; returns (status, body) of each.
fn responses(r: &mut BufReader<TcpStream>, n: usize) -> Vec<(u16, String)> {
    (0..n)
        .map(|_| {
            let mut status_line = String::new();
            r.read_line(&mut status_line).unwrap();
            let mut len = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            (status_line.split_whitespace().nth(1).unwrap().parse().unwrap(), String::from_utf8(body).unwrap())
        })
        .collect()
}

#[test]
fn pipelined_emits_are_answered_in_order_and_delivered_after_their_ack() {
    let (addr, handle, thread) = server();
    let mut sub = TcpStream::connect(addr).unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sub.write_all(b"GET /sources/s/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n").unwrap();
    let mut sub = BufReader::new(sub);
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        sub.read_line(&mut line).unwrap();
    }

    let mut publisher = TcpStream::connect(addr).unwrap();
    publisher.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut batch = Vec::new();
    for n in 0..30 {
        let body = format!("{{\"n\":{n}}}");
        batch.extend_from_slice(
            format!(
                "POST /v1/sources/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    // Then a request that is no emit: answered after them, in its turn.
    batch.extend_from_slice(b"GET /v1/sources/s/event_summaries?limit=100 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n");
    publisher.write_all(&batch).unwrap();
    let mut r = BufReader::new(publisher);
    let answers = responses(&mut r, 31);
    let ids: Vec<String> = answers[..30]
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 202, "{body}");
            serde_json::from_str::<serde_json::Value>(body).unwrap()["id"].as_str().unwrap().to_string()
        })
        .collect();
    let summaries: serde_json::Value = serde_json::from_str(&answers[30].1).unwrap();
    assert_eq!(summaries["page_info"]["total_count"], 30, "every acknowledged emit is retained before the next answer");

    // The subscriber's frames: the handshake, then each event in the order of the answers.
    let mut seen = Vec::new();
    while seen.len() < 30 {
        line.clear();
        sub.read_line(&mut line).unwrap();
        if let Some(id) = line.strip_prefix("id: ") {
            seen.push(id.trim().to_string());
        }
    }
    assert_eq!(seen, ids);
    handle.shutdown();
    thread.join().unwrap().unwrap();
}

fn emit_request(source: &str, n: u32, close: bool) -> String {
    let body = format!("{{\"n\":{n}}}");
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "POST /v1/sources/{source}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n{connection}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn answers_keep_request_order_around_immediate_and_closing_ones() {
    let (addr, handle, thread) = server();
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Awaited, immediate (404), awaited, then one that closes, and one
    // after it that must not be carried out.
    let batch = [emit_request("s", 1, false), emit_request("missing", 2, false), emit_request("s", 3, false), emit_request("s", 4, true)]
        .concat()
        + &emit_request("s", 5, false);
    c.write_all(batch.as_bytes()).unwrap();
    let mut r = BufReader::new(c);
    let answers = responses(&mut r, 4);
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [202, 404, 202, 202], "{answers:?}");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the closing answer: {}", String::from_utf8_lossy(&rest));
    let ids: Vec<String> = [0, 2, 3]
        .iter()
        .map(|&i| serde_json::from_str::<serde_json::Value>(&answers[i].1).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");

    // A malformed request behind awaited ones is refused after their answers.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all((emit_request("s", 6, false) + "BAD\x01 / HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut r = BufReader::new(c);
    let answers = responses(&mut r, 2);
    assert_eq!((answers[0].0, answers[1].0), (202, 400), "{answers:?}");

    let summaries: serde_json::Value = {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /v1/sources/s/event_summaries HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n").unwrap();
        serde_json::from_str(&responses(&mut BufReader::new(c), 1)[0].1).unwrap()
    };
    assert_eq!(summaries["page_info"]["total_count"], 4, "the request after the closing one was not carried out");
    handle.shutdown();
    thread.join().unwrap().unwrap();
}

#[test]
fn handle_calls_wait_for_the_acknowledgement() {
    let (_, handle, thread) = server();
    let a = handle.emit("s", "1").unwrap();
    let b = handle.emit("s", "2").unwrap();
    assert!(a < b, "{a} {b}");
    handle.create_source("t").unwrap();
    handle.delete_source("t").unwrap();
    assert_eq!(handle.emit("t", "1"), Err(crate::Error::NotFound));
    handle.shutdown();
    thread.join().unwrap().unwrap();
}
