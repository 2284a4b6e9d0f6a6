//! The server's REST calls and stream as typed functions. Status codes
//! become `Error`s here, so the commands only handle results.

use super::config::Settings;
use super::error::Error;
use super::http::{self, Exchange, Request};
use super::json::{self, Envelope};
use super::url::{self, BaseUrl};
use serde_json::Value;
use std::time::Duration;

/// How long a REST call waits for the server's next byte.
const PATIENCE: Duration = Duration::from_secs(30);
/// Sources asked for per page of a listing: the server's default, so
/// that no one call holds its reactor long.
const PAGE: usize = 100;
/// How long a refused stream may take to explain itself.
const ERROR_BODY_PATIENCE: Duration = Duration::from_secs(5);

pub struct Api {
    base: BaseUrl,
    key: String,
}

/// A source as `/v1/sources` describes it.
#[derive(Debug)]
pub struct Source {
    pub id: String,
    pub name: String,
    pub sse_url: String,
    pub endpoint_url: String,
    /// Unix milliseconds.
    pub created_at: Option<i64>,
    /// The signature check in words (`github, invalid ones refused`), if any.
    pub verify: Option<String>,
}

impl Api {
    pub fn new(settings: Settings) -> Api {
        Api { base: settings.url, key: settings.api_key }
    }

    /// Every source of the account, oldest first, a page at a time.
    pub fn sources(&self) -> Result<Vec<Source>, Error> {
        let mut sources = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                None => format!("/v1/sources?limit={PAGE}"),
                Some(id) => format!("/v1/sources?limit={PAGE}&after={}", url::segment(id)),
            };
            let answer = self.request("GET", path, None)?;
            let list = answer.get("data").and_then(Value::as_array).ok_or_else(|| shape("\"data\" is not a list"))?;
            for source in list {
                sources.push(Source::from_json(source)?);
            }
            // A server before paging sends them all, without page_info.
            let end = answer.get("page_info").and_then(|p| p.get("end_cursor")).and_then(Value::as_str);
            match end {
                Some(end) if list.len() == PAGE && after.as_deref() != Some(end) => after = Some(end.to_string()),
                _ => return Ok(sources),
            }
        }
    }

    pub fn source(&self, source: &str) -> Result<Source, Error> {
        Source::from_json(&self.call("GET", source_path(source), None)?)
    }

    /// Creates a source, with `verify` settings (a JSON object) if given.
    pub fn create(&self, name: &str, verify: Option<&str>) -> Result<Source, Error> {
        let body = format!("{{\"name\":{},\"verify\":{}}}", json::string(name), verify.unwrap_or("null"));
        Source::from_json(&self.call("POST", "/v1/sources".into(), Some(&body))?)
    }

    pub fn delete(&self, source: &str) -> Result<(), Error> {
        self.request("DELETE", source_path(source), None).map(drop)
    }

    /// Emits `event` (already checked to be JSON) and returns its id.
    pub fn emit(&self, source: &str, event: &str) -> Result<String, Error> {
        let answer = self.request("POST", format!("{}/events", source_path(source)), Some(event))?;
        let id = answer.get("id").and_then(Value::as_str);
        id.map(str::to_string).ok_or_else(|| shape("no event \"id\" in the answer"))
    }

    /// The newest `limit` events, oldest first (the server sends newest first).
    pub fn recent(&self, source: &str, limit: usize) -> Result<Vec<Envelope>, Error> {
        self.recent_counted(source, limit).map(|(events, _)| events)
    }

    /// `recent`, and how many events the server keeps of the source, if it says.
    pub fn recent_counted(&self, source: &str, limit: usize) -> Result<(Vec<Envelope>, Option<u64>), Error> {
        let path = format!("{}/event_summaries?limit={limit}", source_path(source));
        let body = self.raw("GET", path, None)?;
        let text = String::from_utf8(body).map_err(|_| shape("the answer is not UTF-8"))?;
        let mut events = json::summaries(&text).map_err(|e| shape(&e))?;
        events.reverse();
        Ok((events, json::total_count(&text)))
    }

    /// Opens the source's stream, replaying what came after `after`.
    pub fn stream(&self, source: &str, after: Option<&str>, patience: Duration) -> Result<Exchange, Error> {
        let mut headers = self.headers("text/event-stream");
        headers.push(("Cache-Control", "no-cache".into()));
        if let Some(id) = after {
            headers.push(("Last-Event-ID", id.to_string()));
        }
        let path = format!("{}/sse", source_path(source));
        let request = Request { method: "GET", path, headers, body: None };
        let exchange = http::send(&self.base, &request, patience)?;
        let head = &exchange.head;
        if head.status != 200 {
            let (status, reason) = (head.status, head.reason.clone());
            let body = exchange.read_body(ERROR_BODY_PATIENCE).unwrap_or_default();
            return Err(status_error(status, &reason, &body));
        }
        let kind = head.header("content-type").unwrap_or("");
        if !kind.starts_with("text/event-stream") {
            return Err(Error::Protocol(format!("the stream came as {kind:?}, not text/event-stream")));
        }
        Ok(exchange)
    }

    /// A JSON call whose answer is `{"data": ...}`; returns the data.
    fn call(&self, method: &str, path: String, body: Option<&str>) -> Result<Value, Error> {
        let mut answer = self.request(method, path, body)?;
        answer.get_mut("data").map(Value::take).ok_or_else(|| shape("no \"data\" in the answer"))
    }

    /// A JSON call; an empty answer (204) is `null`.
    fn request(&self, method: &str, path: String, body: Option<&str>) -> Result<Value, Error> {
        let bytes = self.raw(method, path, body)?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| shape(&format!("not JSON: {e}")))
    }

    fn raw(&self, method: &str, path: String, body: Option<&str>) -> Result<Vec<u8>, Error> {
        let request = Request { method, path, headers: self.headers("application/json"), body: body.map(str::as_bytes) };
        let exchange = http::send(&self.base, &request, PATIENCE)?;
        let (status, reason) = (exchange.head.status, exchange.head.reason.clone());
        let bytes = exchange.read_body(PATIENCE)?;
        match status {
            200..=299 => Ok(bytes),
            _ => Err(status_error(status, &reason, &bytes)),
        }
    }

    fn headers(&self, accept: &str) -> Vec<(&'static str, String)> {
        vec![("Accept", accept.to_string()), ("Authorization", format!("Bearer {}", self.key))]
    }
}

impl Source {
    fn from_json(value: &Value) -> Result<Source, Error> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
        Ok(Source {
            id: text("id").ok_or_else(|| shape("a source without \"id\""))?,
            name: text("name").ok_or_else(|| shape("a source without \"name\""))?,
            sse_url: text("sse_url").unwrap_or_default(),
            endpoint_url: text("endpoint_url").unwrap_or_default(),
            created_at: value.get("created_at").and_then(Value::as_i64),
            verify: value.get("verify").filter(|v| !v.is_null()).map(describe_verify),
        })
    }
}

/// `github`, `hmac-sha256 (x-sig: sha256=<hex>)`, each followed by what
/// happens to an invalid delivery.
fn describe_verify(verify: &Value) -> String {
    let text = |key: &str| verify.get(key).and_then(Value::as_str).unwrap_or("");
    let mut out = text("scheme").to_string();
    if out == "hmac-sha256" {
        out.push_str(&format!(" ({}: {}<{}>)", text("header"), text("prefix"), text("encoding")));
    }
    match verify.get("reject_invalid").and_then(Value::as_bool) {
        Some(true) => out.push_str(", invalid deliveries refused (401)"),
        _ => out.push_str(", invalid deliveries marked"),
    }
    out
}

fn source_path(source: &str) -> String {
    format!("/v1/sources/{}", url::segment(source))
}

/// The server's own `{"error": ...}` sentence when it sent one. A bare
/// 400 without it is not ssehub's: it is what a TLS port behind a proxy
/// (nginx's "The plain HTTP request was sent to HTTPS port" page) answers
/// a plain-HTTP request with.
fn status_error(status: u16, reason: &str, body: &[u8]) -> Error {
    let message = json::error_message(body).unwrap_or_else(|| {
        let said = match (html_title(body), reason) {
            (Some(title), _) => title,
            (None, "") => "the server refused".to_string(),
            (None, reason) => reason.to_string(),
        };
        match status {
            400 => format!("{said}; not an answer of ssehub: {}", http::WANTS_HTTPS),
            _ => said,
        }
    });
    Error::Status { status, message }
}

/// The `<title>` of an HTML page, on one line.
fn html_title(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    let title = text[start..end].split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}

fn shape(what: &str) -> Error {
    Error::Protocol(what.to_string())
}
