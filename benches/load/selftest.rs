//! Table tests, run with no scenario: a harness = false target has no libtest.

use super::sse::{Item, Parser, Probe, probe};
use super::*;

fn parse_all(chunks: &[&[u8]]) -> Vec<String> {
    let (mut p, mut got) = (Parser::default(), Vec::new());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for c in chunks {
        p.feed(c, &mut |item| {
            got.push(match item {
                Item::Comment(c) => format!("comment {}", text(c)),
                Item::Event { id, data } => format!("event {} {}", text(id), text(data)),
            })
        });
    }
    got
}

pub fn run() -> i32 {
    let (mut passed, mut failed) = (0, 0);
    let mut check = |name: &str, ok: bool| match ok {
        true => passed += 1,
        false => {
            failed += 1;
            println!("FAILED: {name}");
        }
    };
    let sse_cases: &[(&str, &[&str])] = &[
        (":sse-handshake\n\n", &["comment sse-handshake"]),
        ("id: 1-0\ndata: {\"a\":1}\n\n", &["event 1-0 {\"a\":1}"]),
        ("data: a\ndata: b\n\n", &["event  a\nb"]),
        ("data: x\r\n\r\n", &["event  x"]),
        ("data: x\r\r", &["event  x"]),
        ("data:x\n\ndata:  y\n\n", &["event  x", "event   y"]),
        ("data\n\n", &["event  "]),
        ("\n\n\n", &[]),
        ("data: x\n", &[]),
        ("id: 5\ndata: a\n\ndata: b\n\n", &["event 5 a", "event 5 b"]),
        ("event: e\nretry: 9\nfoo\ndata: z\n\n", &["event  z"]),
        (":hs\n\nid: 2-1\ndata: q\n\n:x\n\n", &["comment hs", "event 2-1 q", "comment x"]),
    ];
    for (input, want) in sse_cases {
        let input = input.as_bytes();
        // Whole, split in two at every byte, and one byte per read.
        for at in 0..=input.len() {
            let split = parse_all(&[&input[..at], &input[at..]]);
            check(&format!("sse {input:?} split at {at}"), split == *want);
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        check(&format!("sse {input:?} bytewise"), parse_all(&bytes) == *want);
    }
    let p = Some(Probe { run: 7, seq: 3, t_ns: 99 });
    let env = br#"{"id":"1-0","event":{"run":7,"seq":3,"t_ns":99,"pad":"xx"},"metadata":{}}"#;
    check("probe fast path", probe(env, true) == p);
    check("probe fallback", probe(br#"{"event":{"t_ns":99,"seq":3,"run":7}}"#, true) == p);
    check("probe other payload", probe(br#"{"event":{"total":12}}"#, true).is_none());
    check("probe garbage", probe(b"not json", true).is_none());
    // nchan: the payload is the data itself.
    check("probe raw fast path", probe(br#"{"run":7,"seq":3,"t_ns":99,"pad":"xx"}"#, false) == p);
    check("probe raw fallback", probe(br#"{"t_ns":99, "seq":3, "run":7}"#, false) == p);
    check("probe raw is no envelope", probe(env, false).is_none());
    check("probe envelope is not raw", probe(br#"{"run":7,"seq":3,"t_ns":99}"#, true).is_none());
    check("target", "nchan".parse() == Ok(Target::Nchan) && "x".parse::<Target>().is_err());
    check("nchan paths", Target::Nchan.emit_path("s") == "/pub/s" && Target::Nchan.sub_path("s") == "/sub/s");
    check("emit status", Target::Nchan.emit_ok(201) && !Target::Ssehub.emit_ok(201));
    check("auth header", auth_header("").is_empty() && auth_header("k") == "Authorization: Bearer k\r\n");
    let resumed = socket::resume_request(b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n", b"17-3");
    check("resume request", resumed == b"GET /s HTTP/1.1\r\nHost: h\r\nLast-Event-ID: 17-3\r\n\r\n");
    check("churn schedule", tally::churn_schedule_ok());
    let retry_of = |input: &[u8]| {
        let mut p = Parser::default();
        p.feed(input, &mut |_| {});
        p.retry
    };
    check("retry", retry_of(b":hs\n\nretry: 2500\n\n") == Some(2500));
    check("retry last wins", retry_of(b"retry: 1\nretry: 7\n\n") == Some(7));
    check("retry not digits", retry_of(b"retry: 1x\nretry: -5\nretry:\n\n").is_none());
    let windows: BTreeMap<u64, u64> = [(10, 5), (12, 1), (13, 9)].into_iter().collect();
    // From window 9: 0, 5, 0, 1, 9 (empty windows count).
    check("spread", scenario::spread(&windows, 9 * HS_WINDOW_NS + 1) == (5, 9, 9, 3.0));
    check("spread none after", scenario::spread(&windows, 14 * HS_WINDOW_NS).0 == 0);
    for v in [0u64, 1, 63, 64, 65, 127, 128, 1000, 123_456, 10_000_000_007, u64::MAX / 3] {
        let back = hist::value(hist::index(v));
        check(&format!("hist bucket {v}"), back.abs_diff(v) as f64 <= v as f64 / 64.0);
    }
    let mut h = hist::Hist::default();
    (1..=1000u64).for_each(|v| h.record(v * 1000));
    check("hist p50", h.quantile(0.5).abs_diff(500_000) < 500_000 / 50);
    check("hist p99", h.quantile(0.99).abs_diff(990_000) < 990_000 / 50);
    check("hist max", h.quantile(1.0) == 1_000_000);
    let secs = |s: &str| s.parse::<Secs>().map(|d| d.0).ok();
    check("secs", secs("1.5s") == Some(Duration::from_millis(1500)) && secs("2m").is_some());
    check("secs bad", secs("250ms") == Some(Duration::from_millis(250)) && secs("5h").is_none());
    check("url loopback", parse_url("http://127.0.0.1:9000/").is_ok_and(|u| u.0.port() == 9000));
    check("url https", parse_url("https://127.0.0.1:9000").is_ok_and(|u| u.2 && u.0.port() == 9000));
    check("url elsewhere", parse_url("http://10.0.0.1:80").is_err());
    println!("{passed} passed, {failed} failed");
    i32::from(failed > 0)
}
