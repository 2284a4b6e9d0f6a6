//! The web inspector's static files (`ui/`, SPEC §8), embedded at build
//! time. The page needs no key to load; every API call it makes does.
//! One HTML page serves `/ui` and `/ui/sources/{source}` (its script
//! routes by location). Every URL in it is relative (`{ui}` is replaced by
//! the way from the page's path to `/ui/`), and the script finds the
//! server's root from its own URL, so the page works under any path
//! prefix a reverse proxy maps to the server's root.

use super::reply::{Reply, ok};
use crate::http::Head;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Page,
    Script,
    Style,
}

const PAGE: &[u8] = include_bytes!("../../ui/index.html");
const SCRIPT: &[u8] = include_bytes!("../../ui/app.js");
const STYLE: &[u8] = include_bytes!("../../ui/app.css");

/// No inline script or style, nothing from elsewhere; the favicon is a data: URL.
const HEADERS: &str = "Content-Security-Policy: default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-cache\r\n";

/// Each file's ETag, `"` + 16 hex digits of its FNV-1a hash + `"`, computed at build.
const fn etag(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    let mut out = [b'"'; 18];
    let mut d = 0;
    while d < 16 {
        let nibble = ((hash >> (60 - 4 * d)) & 0xf) as u8;
        out[1 + d] = if nibble < 10 { b'0' + nibble } else { b'a' + nibble - 10 };
        d += 1;
    }
    out
}

const PAGE_TAG: [u8; 18] = etag(PAGE);
const SCRIPT_TAG: [u8; 18] = etag(SCRIPT);
const STYLE_TAG: [u8; 18] = etag(STYLE);

fn file(asset: Asset) -> (&'static [u8], &'static [u8; 18], &'static str) {
    match asset {
        Asset::Page => (PAGE, &PAGE_TAG, "text/html; charset=utf-8"),
        Asset::Script => (SCRIPT, &SCRIPT_TAG, "text/javascript; charset=utf-8"),
        Asset::Style => (STYLE, &STYLE_TAG, "text/css; charset=utf-8"),
    }
}

/// The relative way from the page at `path` (`/ui`, `/ui/`,
/// `/ui/sources/x`) to the `/ui/` directory.
fn to_ui_dir(path: &str) -> String {
    match path.strip_prefix("/ui").unwrap_or("") {
        "" => "ui/".to_string(),
        rest => "../".repeat(rest.matches('/').count().saturating_sub(1)),
    }
}

/// True if `If-None-Match` lists `tag` (weak or strong) or is `*`.
fn matches(if_none_match: &[u8], tag: &[u8]) -> bool {
    if_none_match.split(|&b| b == b',').map(<[u8]>::trim_ascii).any(|t| t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == tag)
}

/// `GET` or `HEAD` of one file: `304` when the browser has it.
pub fn serve(head: &Head, asset: Asset) -> Reply {
    let (body, tag, content_type) = file(asset);
    // Each URL gets one body, so the template's tag serves them all.
    let page;
    let body = match asset {
        Asset::Page => {
            page = String::from_utf8_lossy(body).replace("{ui}", &to_ui_dir(head.path()));
            page.as_bytes()
        }
        _ => body,
    };
    let tag_text = std::str::from_utf8(tag).unwrap_or("\"\"");
    let extra = format!("ETag: {tag_text}\r\n{HEADERS}");
    if head.header("if-none-match").is_some_and(|v| matches(v, tag)) {
        return ok(head, 304, "", &extra, b"");
    }
    ok(head, 200, content_type, &extra, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_ways_to_the_ui_dir() {
        for (path, want) in [("/ui", "ui/"), ("/ui/", ""), ("/ui/sources/orders", "../"), ("/ui/sources/orders/", "../../")] {
            assert_eq!(to_ui_dir(path), want, "{path}");
        }
    }

    #[test]
    fn etags_differ_and_match() {
        assert_ne!(PAGE_TAG, SCRIPT_TAG);
        assert_eq!(&etag(b"")[..], b"\"cbf29ce484222325\"");
        let tag = &PAGE_TAG[..];
        let quoted = std::str::from_utf8(tag).unwrap();
        for (header, want) in [
            (quoted.to_string(), true),
            (format!("W/{quoted}"), true),
            (format!("\"x\", {quoted}"), true),
            ("*".to_string(), true),
            ("\"x\"".to_string(), false),
            (String::new(), false),
        ] {
            assert_eq!(matches(header.as_bytes(), tag), want, "{header}");
        }
    }
}
