//! Signature checks on arrival (SPEC §2.4) over real sockets: GitHub,
//! Stripe and Standard Webhooks deliveries, valid and invalid, signed here
//! with the test's own HMAC; `reject_invalid`; PATCH; the settings kept
//! across a restart of the `log` engine, and the secret never shown.

mod support;

use std::io::{BufReader, Write};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::{KEY, Response, Sse, TempDir, TestServer, hex, hmac_sha256, read_response};

const GITHUB_SECRET: &str = "gh-secret-4e1f";
const STRIPE_SECRET: &str = "whsec_stripe_9c1d";
/// Standard Webhooks: `whsec_` + base64 of the key bytes.
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const BODY: &[u8] = b"{\n  \"action\": \"opened\",\n  \"number\": 7\n}";

fn b64(bytes: &[u8]) -> String {
    ssehub::base64::encode(bytes)
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn create(server: &TestServer, name: &str, verify: Value) -> Value {
    let body = json!({"name": name, "verify": verify}).to_string();
    let r = server.request("POST", "/v1/sources", Some(&body));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["data"].clone()
}

/// The endpoint's path (`/e/<key>`) of a source's JSON.
fn endpoint(server: &TestServer, source: &Value) -> String {
    let url = source["endpoint_url"].as_str().unwrap();
    url.strip_prefix(&format!("http://{}", server.addr)).unwrap().to_string()
}

/// A delivery with no API key, as a sender makes it.
fn deliver(server: &TestServer, path: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
    let mut s = server.connect();
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\n", server.addr);
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).unwrap();
    read_response(&mut BufReader::new(s))
}

/// The `signature` member of the next event on the stream.
fn next_signature(sse: &mut Sse) -> Value {
    let event = sse.next_event().envelope()["event"].clone();
    assert_eq!(event["bodyRaw"].as_str().map(str::as_bytes), Some(BODY), "the body is kept exactly");
    event["signature"].clone()
}

fn valid(scheme: &str) -> Value {
    json!({"scheme": scheme, "valid": true})
}

fn invalid(scheme: &str, reason: &str) -> Value {
    json!({"scheme": scheme, "valid": false, "reason": reason})
}

#[test]
fn github_deliveries_valid_and_invalid() {
    let server = TestServer::start(&[]);
    let source = create(&server, "gh", json!({"scheme": "github", "secret": GITHUB_SECRET}));
    assert_eq!(source["verify"], json!({"scheme": "github", "reject_invalid": false}));
    let path = endpoint(&server, &source);
    let mut sse = server.subscribe("/sources/gh/sse", "");

    let good = format!("sha256={}", hex(&hmac_sha256(GITHUB_SECRET.as_bytes(), &[BODY])));
    let wrong = format!("sha256={}", hex(&hmac_sha256(b"another secret", &[BODY])));
    let cases = [
        (vec![("X-Hub-Signature-256", good)], valid("github")),
        (vec![("X-Hub-Signature-256", wrong)], invalid("github", "signature mismatch")),
        (vec![], invalid("github", "missing header x-hub-signature-256")),
        (vec![("X-Hub-Signature-256", "sha1=0123".to_string())], invalid("github", "malformed header x-hub-signature-256")),
    ];
    for (headers, want) in cases {
        assert_eq!(deliver(&server, &path, &headers, BODY).status, 200, "marked, not refused");
        assert_eq!(next_signature(&mut sse), want, "{headers:?}");
    }
}

#[test]
fn stripe_deliveries_valid_invalid_and_stale() {
    let server = TestServer::start(&[]);
    let source = create(&server, "stripe", json!({"scheme": "stripe", "secret": STRIPE_SECRET}));
    let path = endpoint(&server, &source);
    let mut sse = server.subscribe("/sources/stripe/sse", "");

    let sign = |t: u64| hex(&hmac_sha256(STRIPE_SECRET.as_bytes(), &[t.to_string().as_bytes(), b".", BODY]));
    let now = now_s();
    let cases = [
        (format!("t={now},v1={},v0=legacy", sign(now)), valid("stripe")),
        (format!("t={now},v1={},v1={}", "0".repeat(64), sign(now)), valid("stripe")),
        (format!("t={now},v1={}", sign(now + 1)), invalid("stripe", "signature mismatch")),
        (format!("t={},v1={}", now - 600, sign(now - 600)), invalid("stripe", "timestamp more than 5 minutes from now")),
        (format!("t={},v1={}", now + 600, sign(now + 600)), invalid("stripe", "timestamp more than 5 minutes from now")),
        (format!("v1={}", sign(now)), invalid("stripe", "malformed header stripe-signature")),
    ];
    for (header, want) in cases {
        assert_eq!(deliver(&server, &path, &[("Stripe-Signature", header.clone())], BODY).status, 200);
        assert_eq!(next_signature(&mut sse), want, "{header}");
    }
}

#[test]
fn standard_webhooks_deliveries_and_reject_invalid() {
    let server = TestServer::start(&[]);
    let settings = json!({"scheme": "standard-webhooks", "secret": SW_SECRET, "reject_invalid": true});
    let source = create(&server, "sw", settings);
    assert_eq!(source["verify"], json!({"scheme": "standard-webhooks", "reject_invalid": true}));
    let path = endpoint(&server, &source);
    let mut sse = server.subscribe("/sources/sw/sse", "");

    let key = ssehub::base64::decode(SW_SECRET.strip_prefix("whsec_").unwrap()).unwrap();
    let headers = |id: &str, t: u64, sig: &str| {
        vec![("webhook-id", id.to_string()), ("webhook-timestamp", t.to_string()), ("webhook-signature", sig.to_string())]
    };
    let now = now_s();
    let good = b64(&hmac_sha256(&key, &[b"msg_1.", now.to_string().as_bytes(), b".", BODY]));
    let over_text = b64(&hmac_sha256(SW_SECRET.as_bytes(), &[b"msg_1.", now.to_string().as_bytes(), b".", BODY]));

    // Refused: 401 JSON, and no event.
    for (h, reason) in [
        (headers("msg_1", now, &format!("v1,{over_text}")), "signature mismatch"),
        (headers("msg_2", now, &format!("v1,{good}")), "signature mismatch"),
        (headers("msg_1", now - 301, &format!("v1,{good}")), "timestamp more than 5 minutes from now"),
        (headers("msg_1", now, &good), "malformed header webhook-signature"),
        (vec![], "missing header webhook-id"),
    ] {
        let r = deliver(&server, &path, &h, BODY);
        assert_eq!(r.status, 401, "{h:?}: {}", r.body);
        assert_eq!(r.json(), json!({"error": format!("invalid signature: {reason}")}));
    }
    // The first event on the stream is the valid delivery: nothing was emitted before it.
    let r = deliver(&server, &path, &headers("msg_1", now, &format!("v1a,ignored v1,{over_text} v1,{good}")), BODY);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(next_signature(&mut sse), valid("standard-webhooks"));
    assert_eq!(server.request("GET", "/v1/sources/sw/event_summaries", None).json()["page_info"]["total_count"], 1);
}

#[test]
fn patch_sets_changes_and_removes_the_check() {
    let server = TestServer::start(&[]);
    server.create_source("plain");
    let patch = |body: &str| server.request("PATCH", "/v1/sources/plain", Some(body));
    let get = || server.request("GET", "/v1/sources/plain", None).json()["data"].clone();
    assert_eq!(get()["verify"], Value::Null);

    let hmac_settings = json!({"verify": {"scheme": "hmac-sha256", "secret": "s3cr3t-value", "header": "X-Signature",
        "encoding": "base64", "prefix": "v=", "reject_invalid": true}});
    let r = patch(&hmac_settings.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let shown = json!({"scheme": "hmac-sha256", "header": "x-signature", "encoding": "base64", "prefix": "v=", "reject_invalid": true});
    assert_eq!(r.json()["data"]["verify"], shown);
    assert_eq!(get()["verify"], shown);
    assert!(!r.body.contains("s3cr3t") && !server.request("GET", "/v1/sources", None).body.contains("s3cr3t"));

    let path = endpoint(&server, &get());
    let sig = format!("v={}", b64(&hmac_sha256(b"s3cr3t-value", &[BODY])));
    assert_eq!(deliver(&server, &path, &[("X-Signature", sig)], BODY).status, 200);
    assert_eq!(deliver(&server, &path, &[("X-Signature", "v=AAAA".into())], BODY).status, 401);

    for (body, status, why) in [
        (r#"{"verify":{"scheme":"gitlab","secret":"s"}}"#, 400, "unknown verify.scheme"),
        (r#"{"verify":{"scheme":"github"}}"#, 400, "secret is required"),
        (r#"{"verify":{"scheme":"hmac-sha256","secret":"s"}}"#, 400, "header is required"),
        (r#"{"name":"x"}"#, 400, "verify"),
        ("not json", 400, "not valid JSON"),
    ] {
        let r = patch(body);
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains(why), "{body}: {}", r.body);
    }
    assert_eq!(get()["verify"], shown, "a refused change changes nothing");
    let r = server.request("POST", "/v1/sources", Some(r#"{"name":"other","verify":{"scheme":"nope","secret":"s"}}"#));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(server.request("GET", "/v1/sources/other", None).status, 404, "a refused create creates nothing");

    let r = patch(r#"{"verify":null}"#);
    assert_eq!((r.status, r.json()["data"]["verify"].clone()), (200, Value::Null));
    assert_eq!(deliver(&server, &path, &[], BODY).status, 200, "no check any more");
}

#[test]
fn the_check_survives_a_restart_and_the_secret_is_never_shown_or_logged() {
    let dir = TempDir::new("verify-restart");
    let args = ["--data-dir", dir.path()];
    let path = {
        let mut server = TestServer::start(&args);
        let source = create(&server, "gh", json!({"scheme": "github", "secret": GITHUB_SECRET, "reject_invalid": true}));
        let r = server.request(
            "PATCH",
            "/v1/sources/gh",
            Some(
                &json!({"verify": {"scheme": "github", "secret": "rotated-secret-77",
            "reject_invalid": true}})
                .to_string(),
            ),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let path = endpoint(&server, &source);
        server.terminate();
        assert!(!server.logs().contains(GITHUB_SECRET) && !server.logs().contains("rotated-secret-77"), "{}", server.logs());
        path
    };
    let server = TestServer::start(&args);
    let shown = server.request("GET", "/v1/sources/gh", None);
    assert_eq!(shown.json()["data"]["verify"], json!({"scheme": "github", "reject_invalid": true}));
    assert!(!shown.body.contains("rotated-secret-77"));
    let old = format!("sha256={}", hex(&hmac_sha256(GITHUB_SECRET.as_bytes(), &[BODY])));
    let new = format!("sha256={}", hex(&hmac_sha256(b"rotated-secret-77", &[BODY])));
    let endpoint_path = endpoint(&server, &shown.json()["data"]);
    assert_eq!(endpoint_path, path, "same endpoint after the restart");
    assert_eq!(deliver(&server, &path, &[("X-Hub-Signature-256", old)], BODY).status, 401, "the old secret no longer verifies");
    assert_eq!(deliver(&server, &path, &[("X-Hub-Signature-256", new)], BODY).status, 200);
    assert!(!server.logs().contains("rotated-secret-77"));
}

#[test]
fn cli_create_with_verify_and_describe() {
    let server = TestServer::start(&[]);
    let secret_file = TempDir::new("verify-cli");
    let file = secret_file.0.join("secret");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(support::bin())
            .args(args)
            .env("SSEHUB_URL", format!("http://{}", server.addr))
            .env("SSEHUB_API_KEY", KEY)
            .env("HOOK_SECRET", GITHUB_SECRET)
            .env("XDG_CONFIG_HOME", secret_file.path())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, out, err) = run(&["create", "gh", "--verify", "github", "--secret-env", "HOOK_SECRET", "--reject-invalid"]);
    assert_eq!(code, Some(0), "{err}");
    let verify_line = |out: &str| out.lines().find(|l| l.starts_with("verify")).unwrap_or("").to_string();
    assert_eq!(verify_line(&out), "verify        github, invalid deliveries refused (401)");
    let (_, described, _) = run(&["describe", "gh"]);
    assert_eq!(described, out);
    assert!(!out.contains(GITHUB_SECRET));

    let args = ["create", "custom", "--verify", "hmac-sha256", "--secret-file", file.to_str().unwrap(), "--header", "X-Sig"];
    let (code, out, err) = run(&[&args[..], &["--prefix", "sha256="]].concat());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(verify_line(&out), "verify        hmac-sha256 (x-sig: sha256=<hex>), invalid deliveries marked");
    // The secret came from the file, without its newline.
    let path = endpoint(&server, &server.request("GET", "/v1/sources/custom", None).json()["data"]);
    let mut sse = server.subscribe("/sources/custom/sse", "");
    let sig = format!("sha256={}", hex(&hmac_sha256(b"from-a-file", &[BODY])));
    deliver(&server, &path, &[("X-Sig", sig)], BODY);
    assert_eq!(next_signature(&mut sse), valid("hmac-sha256"));

    let (_, plain, _) = run(&["create", "plain"]);
    assert_eq!(verify_line(&plain), "verify        none");
    let (code, _, err) = run(&["create", "bad", "--verify", "gitlab", "--secret-env", "HOOK_SECRET"]);
    assert_eq!((code, err.lines().count()), (Some(1), 1), "{err}");
    assert!(err.contains("unknown verify.scheme") && err.contains("400"), "{err}");
    let (code, _, err) = run(&["create", "bad", "--verify", "github", "--secret-env", "NOT_SET_ANYWHERE"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("NOT_SET_ANYWHERE is not set"), "{err}");
}
