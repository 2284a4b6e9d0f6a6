//! The server's base URL (`http://host[:port][/prefix]`) and escaping of
//! the names and ids put into request paths.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct BaseUrl {
    /// As written in the URL: IPv6 literals keep their brackets.
    pub host: String,
    pub port: u16,
    /// Path before `/v1`, without a trailing slash: a server behind a
    /// proxy at `http://example.org/ssehub` works.
    pub prefix: String,
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
    Https,
    NotHttp,
    BadHostOrPort,
}

/// Splits `http://[user@]host[:port][/path][?query][#fragment]`.
pub fn split(text: &str) -> Result<Parts<'_>, Flaw> {
    let rest = match text.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
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
    let (host, port) = split_port(authority).ok_or(Flaw::BadHostOrPort)?;
    let base = BaseUrl { host: host.to_string(), port, prefix: path.trim_end_matches('/').to_string() };
    Ok(Parts { base, query, fragment, credentials })
}

impl BaseUrl {
    /// The server's URL: a base, nothing more.
    pub fn parse(text: &str) -> Result<BaseUrl, String> {
        let parts = split(text).map_err(|flaw| match flaw {
            Flaw::Https => format!(
                "{text}: https is not supported by the built-in client; use http:// (a TLS proxy in front of the server can keep the public side https)"
            ),
            Flaw::NotHttp => format!("{text}: the server URL must start with http://"),
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
        if self.port == 80 { self.host.clone() } else { format!("{}:{}", self.host, self.port) }
    }

    /// The host as the resolver wants it: no IPv6 brackets.
    pub fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

fn split_port(authority: &str) -> Option<(&str, u16)> {
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
        None => 80,
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
            ("https://host", None),
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
    }

    #[test]
    fn escapes_segments() {
        assert_eq!(segment("orders_2-x.y~"), "orders_2-x.y~");
        assert_eq!(segment("a b/c?d#é"), "a%20b%2Fc%3Fd%23%C3%A9");
    }
}
