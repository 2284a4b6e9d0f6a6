//! Query strings: percent-decoded pairs, as forms encode them.

/// Splits a query string into percent-decoded `(key, value)` pairs
/// (`+` is a space, as in forms). Invalid escapes are kept literally;
/// invalid UTF-8 is replaced.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

/// The first value of `key` in `query`.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query_pairs(query).find(|(k, _)| k == key).map(|(_, v)| v)
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| (c as char).to_digit(16);
        match b {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b),
            },
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        let pairs: Vec<(String, String)> = query_pairs("a=1&b=%41%42&c=x+y&d&&e=%zz&f=%4").collect();
        let want = [("a", "1"), ("b", "AB"), ("c", "x y"), ("d", ""), ("e", "%zz"), ("f", "%4")];
        assert_eq!(pairs, want.map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(query_param("access_token=k%2B1&x=2", "access_token").as_deref(), Some("k+1"));
        assert_eq!(percent_decode("%E2%98%83"), "☃");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        // Edges from fuzz/query_decode (checked there against the URL crate's form parser).
        for (input, want) in
            [("%%41", "%A"), ("a%2", "a%2"), ("%", "%"), ("+%2B", " +"), ("%e2%98", "\u{fffd}"), ("%C3%A9%", "é%"), ("é%41", "éA")]
        {
            assert_eq!(percent_decode(input), want, "{input:?}");
        }
    }
}
