//! What the `redis` engine's tests ask of ssehub nodes on one `RedisServer`
//! (tests/redis.rs, tests/redis_links.rs, tests/redis_catchup.rs).

use super::{RedisServer, TestServer};

/// A node: `ssehub serve --redis <redis> <extra>`.
pub fn node(redis: &RedisServer, extra: &[&str]) -> TestServer {
    let mut args = vec!["--redis", &*Box::leak(redis.url().into_boxed_str())];
    args.extend_from_slice(extra);
    TestServer::start(&args)
}

/// The names of the sources `node` lists.
pub fn source_names(node: &TestServer) -> Vec<String> {
    let r = node.request("GET", "/v1/sources", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

/// The status of `n`'s `/healthz`.
pub fn healthz(n: &TestServer) -> u16 {
    n.request("GET", "/healthz", None).status
}

/// The ids of `source`'s last 100 events on `n`, the oldest first.
pub fn summary_ids(n: &TestServer, source: &str) -> Vec<String> {
    let r = n.request("GET", &format!("/v1/sources/{source}/event_summaries?limit=100"), None);
    let mut ids: Vec<String> = r.json()["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    ids.reverse();
    ids
}
