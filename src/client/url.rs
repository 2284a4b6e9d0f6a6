//! The server's base URL (`http[s]://host[:port][/prefix]`) and escaping
//! of the names and ids put into request paths.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub struct BaseUrl {
    /// As written in the URL: IPv6 literals keep their brackets.
    pub host: String,
    pub port: u16,
    /// Path before `/v1`, without a trailing slash: a server behind a
    /// proxy at `http://example.org/ssehub` works.
    pub prefix: String,
    /// `https://`: how the server's certificate is checked.
    pub tls: Option<Tls>,
}

/// How an `https://` server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tls {
    /// PEM roots trusted besides the system's.
    pub cacert: Option<PathBuf>,
    /// The option that named `cacert`, for errors (`--cacert`, `--to-cacert`).
    pub cacert_flag: &'static str,
    /// Not checked at all.
    pub insecure: bool,
}

/// What a URL holds besides its base: each use decides what it allows.
#[derive(Debug)]
pub struct Parts<'a> {
    pub base: BaseUrl,
    /// After `?`, before any `#`.
    pub query: Option<&'a str>,
    pub fragment: bool,
    /// `user[:password]@` before the host.
    pub credentials: bool,
}

/// Why a text is no `http://` URL at all.
#[derive(Debug, PartialEq)]
pub enum Flaw {
    /// `https://` in a build without the `tls` feature.
    #[cfg_attr(feature = "tls", allow(dead_code))]
    Https,
    NotHttp,
    BadHostOrPort,
}

/// Splits `http[s]://[user@]host[:port][/path][?query][#fragment]`.
pub fn split(text: &str) -> Result<Parts<'_>, Flaw> {
    let (rest, tls) = match text.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (rest, None),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") && cfg!(feature = "tls") => (rest, Some(Tls::default())),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => return Err(Flaw::Https),
        _ => return Err(Flaw::NotHttp),
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, _)) => (rest, true),
        None => (rest, false),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (credentials, authority) = match authority.rsplit_once('@') {
        Some((_, host)) => (true, host),
        None => (false, authority),
    };
    let (host, port) = split_port(authority, if tls.is_some() { 443 } else { 80 }).ok_or(Flaw::BadHostOrPort)?;
    let base = BaseUrl { host: host.to_string(), port, prefix: path.trim_end_matches('/').to_string(), tls };
    Ok(Parts { base, query, fragment, credentials })
}

impl BaseUrl {
    /// The server's URL: a base, nothing more.
    pub fn parse(text: &str) -> Result<BaseUrl, String> {
        let parts = split(text).map_err(|flaw| match flaw {
            Flaw::Https => format!("{text}: this ssehub is built without TLS (the `tls` feature); use http://"),
            Flaw::NotHttp => format!("{text}: the server URL must start with http:// or https://"),
            Flaw::BadHostOrPort => format!("{text}: bad host or port"),
        })?;
        if parts.query.is_some() || parts.fragment {
            return Err(format!("{text}: a query or fragment has no place in the server URL"));
        }
        if parts.credentials {
            return Err(format!("{text}: credentials in the URL are not used; pass --api-key"));
        }
        Ok(parts.base)
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        if self.port == self.default_port() { self.host.clone() } else { format!("{}:{}", self.host, self.port) }
    }

    fn default_port(&self) -> u16 {
        if self.tls.is_some() { 443 } else { 80 }
    }

    /// The host as the resolver wants it: no IPv6 brackets.
    pub fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.prefix)
    }
}

fn split_port(authority: &str, default: u16) -> Option<(&str, u16)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, after) = authority.split_at(end + 1);
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => default,
        Some(digits) => digits.parse().ok().filter(|&p| p != 0)?,
    };
    let valid = match host.strip_prefix('[') {
        Some(inner) => inner.len() > 1,
        None => !host.is_empty() && !host.contains([':', '[', ']']),
    };
    valid.then_some((host, port))
}

/// Percent-encodes one path segment, so a source named by the user can
/// never add a `/`, `?` or `#` to the request path.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL and its host, port and prefix, or `None` if refused.
    type Case = (&'static str, Option<(&'static str, u16, &'static str)>);

    #[test]
    fn parses_base_urls() {
        let cases: &[Case] = &[
            ("http://127.0.0.1:8080", Some(("127.0.0.1", 8080, ""))),
            ("http://localhost", Some(("localhost", 80, ""))),
            ("HTTP://example.org:81/", Some(("example.org", 81, ""))),
            ("http://example.org/ssehub/", Some(("example.org", 80, "/ssehub"))),
            ("http://[::1]:9000", Some(("[::1]", 9000, ""))),
            ("http://[::1]", Some(("[::1]", 80, ""))),
            ("http://host:0", None),
            ("http://host:99999", None),
            ("http://host:x", None),
            ("http://:80", None),
            ("http://[::1:80", None),
            ("http://::1", None),
            ("http://u:p@host", None),
            ("http://host/?q", None),
            ("https://host", if cfg!(feature = "tls") { Some(("host", 443, "")) } else { None }),
            ("https://host:8443/p", if cfg!(feature = "tls") { Some(("host", 8443, "/p")) } else { None }),
            ("host:8080", None),
        ];
        for (text, want) in cases {
            let got = BaseUrl::parse(text).ok();
            let got = got.as_ref().map(|u| (u.host.as_str(), u.port, u.prefix.as_str()));
            assert_eq!(got, *want, "{text}");
        }
    }

    #[test]
    fn shows_authority_and_url() {
        let url = BaseUrl::parse("http://[::1]:9000/x").unwrap();
        assert_eq!(url.authority(), "[::1]:9000");
        assert_eq!(url.bare_host(), "::1");
        assert_eq!(url.to_string(), "http://[::1]:9000/x");
        assert_eq!(BaseUrl::parse("http://h").unwrap().to_string(), "http://h");
        #[cfg(feature = "tls")]
        assert_eq!(BaseUrl::parse("https://h:443/x").unwrap().to_string(), "https://h/x");
    }

    #[test]
    fn escapes_segments() {
        assert_eq!(segment("orders_2-x.y~"), "orders_2-x.y~");
        assert_eq!(segment("a b/c?d#é"), "a%20b%2Fc%3Fd%23%C3%A9");
    }
}
