//! Signature checks of webhook deliveries on arrival (SPEC §2.4), sans
//! I/O: a source's settings, parsed from and written to JSON, and the
//! check of one request (its headers, its body, the time) against them.
//! Schemes as their senders define them; every comparison of a MAC is
//! constant-time (`hmac`'s `verify_slice`).

use std::fmt;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::base64;
use crate::json;

type HmacSha256 = Hmac<Sha256>;

/// Stripe and Standard Webhooks timestamps further than this from now
/// (either way) are refused: a replayed old delivery, or a wrong clock.
pub const TOLERANCE_S: u64 = 5 * 60;

/// A source's `verify` settings. `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct Verify {
    pub scheme: Scheme,
    pub secret: String,
    /// Answer an invalid request `401` and emit nothing.
    pub reject_invalid: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github,
    /// `Stripe-Signature: t=<unix s>,v1=<hex>[,v1=…]` over `<t>.<body>`.
    Stripe,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> …`
    /// over `<id>.<timestamp>.<body>`, keyed with the secret's base64 after `whsec_`.
    StandardWebhooks,
    /// `<header>: <prefix><hex or base64>` over the body.
    HmacSha256 { header: String, encoding: Encoding, prefix: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// What the check of one request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    Invalid(Reason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    MissingHeader(String),
    MalformedHeader(String),
    /// The signed timestamp is more than `TOLERANCE_S` from now.
    Timestamp,
    Mismatch,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::MissingHeader(h) => write!(f, "missing header {h}"),
            Reason::MalformedHeader(h) => write!(f, "malformed header {h}"),
            Reason::Timestamp => write!(f, "timestamp more than 5 minutes from now"),
            Reason::Mismatch => write!(f, "signature mismatch"),
        }
    }
}

impl fmt::Debug for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verify").field("scheme", &self.scheme).field("reject_invalid", &self.reject_invalid).finish_non_exhaustive()
    }
}

impl Scheme {
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Github => "github",
            Scheme::Stripe => "stripe",
            Scheme::StandardWebhooks => "standard-webhooks",
            Scheme::HmacSha256 { .. } => "hmac-sha256",
        }
    }
}

/// A header name as the sender spells it, for reasons.
const GITHUB_HEADER: &str = "x-hub-signature-256";
const STRIPE_HEADER: &str = "stripe-signature";
const SW_ID: &str = "webhook-id";
const SW_TIMESTAMP: &str = "webhook-timestamp";
const SW_SIGNATURE: &str = "webhook-signature";

impl Verify {
    /// Reads `{"scheme","secret","reject_invalid"[,"header","encoding","prefix"]}`;
    /// the error is a sentence for a `400`.
    pub fn from_json(value: &Value) -> Result<Verify, String> {
        let object = value.as_object().ok_or("\"verify\" must be an object or null")?;
        let text = |key: &str| -> Result<Option<&str>, String> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(format!("verify.{key} must be a string")),
            }
        };
        for key in object.keys() {
            if !["scheme", "secret", "reject_invalid", "header", "encoding", "prefix"].contains(&key.as_str()) {
                return Err(format!("verify.{key} is not a setting (scheme, secret, reject_invalid, header, encoding, prefix)"));
            }
        }
        let secret = text("secret")?.filter(|s| !s.is_empty()).ok_or("verify.secret is required")?.to_string();
        let reject_invalid = match object.get("reject_invalid") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("verify.reject_invalid must be true or false".into()),
        };
        let scheme_name = text("scheme")?.ok_or("verify.scheme is required: github, stripe, standard-webhooks or hmac-sha256")?;
        let custom = ["header", "encoding", "prefix"].into_iter().find(|k| object.get(*k).is_some_and(|v| !v.is_null()));
        let scheme = match scheme_name {
            "hmac-sha256" => {
                let header = text("header")?.map(str::trim).filter(|h| !h.is_empty()).ok_or("verify.header is required for hmac-sha256")?;
                if !header.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    return Err("verify.header must be a header name".into());
                }
                let encoding = match text("encoding")? {
                    None | Some("hex") => Encoding::Hex,
                    Some("base64") => Encoding::Base64,
                    Some(other) => return Err(format!("verify.encoding must be hex or base64, not {other:?}")),
                };
                let prefix = text("prefix")?.unwrap_or("").to_string();
                Scheme::HmacSha256 { header: header.to_ascii_lowercase(), encoding, prefix }
            }
            _ if custom.is_some() => return Err(format!("verify.{} is only for the hmac-sha256 scheme", custom.unwrap_or_default())),
            "github" => Scheme::Github,
            "stripe" => Scheme::Stripe,
            "standard-webhooks" => {
                if standard_key(&secret).is_none() {
                    return Err("verify.secret for standard-webhooks must be whsec_ followed by base64".into());
                }
                Scheme::StandardWebhooks
            }
            other => return Err(format!("unknown verify.scheme {other:?}: github, stripe, standard-webhooks or hmac-sha256")),
        };
        Ok(Verify { scheme, secret, reject_invalid })
    }

    /// What the API shows, as compact JSON: never the secret.
    pub fn write_public(&self, out: &mut Vec<u8>) {
        self.write(out, false);
    }

    /// Everything, the secret included: what storage keeps.
    pub fn stored_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out, true);
        out
    }

    fn write(&self, out: &mut Vec<u8>, secret: bool) {
        out.extend_from_slice(b"{\"scheme\":\"");
        out.extend_from_slice(self.scheme.name().as_bytes());
        out.push(b'"');
        if let Scheme::HmacSha256 { header, encoding, prefix } = &self.scheme {
            out.extend_from_slice(b",\"header\":");
            json::write_str(out, header);
            out.extend_from_slice(if *encoding == Encoding::Hex { b",\"encoding\":\"hex\"" } else { b",\"encoding\":\"base64\"" });
            out.extend_from_slice(b",\"prefix\":");
            json::write_str(out, prefix);
        }
        out.extend_from_slice(if self.reject_invalid { b",\"reject_invalid\":true" } else { b",\"reject_invalid\":false" });
        if secret {
            out.extend_from_slice(b",\"secret\":");
            json::write_str(out, &self.secret);
        }
        out.push(b'}');
    }

    /// Reads what `stored_json` wrote.
    pub fn from_stored(bytes: &[u8]) -> Option<Verify> {
        Verify::from_json(&serde_json::from_slice(bytes).ok()?).ok()
    }

    /// Checks one request: `header` finds a header's first value by its
    /// lower-case name; `now_s` is unix seconds.
    pub fn check<'h>(&self, header: impl Fn(&str) -> Option<&'h [u8]>, body: &[u8], now_s: u64) -> Outcome {
        let result = match &self.scheme {
            Scheme::Github => github(self.secret.as_bytes(), header(GITHUB_HEADER), body),
            Scheme::Stripe => stripe(self.secret.as_bytes(), header(STRIPE_HEADER), body, now_s),
            Scheme::StandardWebhooks => standard(&self.secret, [header(SW_ID), header(SW_TIMESTAMP), header(SW_SIGNATURE)], body, now_s),
            Scheme::HmacSha256 { header: name, encoding, prefix } => {
                custom(self.secret.as_bytes(), (name, header(name)), *encoding, prefix, body)
            }
        };
        match result {
            Ok(()) => Outcome::Valid,
            Err(reason) => Outcome::Invalid(reason),
        }
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC keys may have any length"));
    for part in parts {
        mac.update(part);
    }
    mac
}

/// True if one of `candidates` is the MAC (each compared in constant time).
fn any_matches(mac: HmacSha256, candidates: impl IntoIterator<Item = Vec<u8>>) -> bool {
    candidates.into_iter().fold(false, |found, candidate| mac.clone().verify_slice(&candidate).is_ok() | found)
}

fn text<'a>(value: Option<&'a [u8]>, name: &str) -> Result<&'a str, Reason> {
    let value = value.ok_or_else(|| Reason::MissingHeader(name.to_string()))?;
    std::str::from_utf8(value).map(str::trim).map_err(|_| malformed(name))
}

fn malformed(name: &str) -> Reason {
    Reason::MalformedHeader(name.to_string())
}

fn github(secret: &[u8], value: Option<&[u8]>, body: &[u8]) -> Result<(), Reason> {
    let value = text(value, GITHUB_HEADER)?;
    let sig = value.strip_prefix("sha256=").and_then(unhex).ok_or_else(|| malformed(GITHUB_HEADER))?;
    any_matches(mac(secret, &[body]), [sig]).then_some(()).ok_or(Reason::Mismatch)
}

fn stripe(secret: &[u8], value: Option<&[u8]>, body: &[u8], now_s: u64) -> Result<(), Reason> {
    let value = text(value, STRIPE_HEADER)?;
    let (mut t, mut v1) = (None, Vec::new());
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", ts)) => t = Some(ts),
            // An undecodable v1 is no match; the others may still be.
            Some(("v1", sig)) => v1.push(unhex(sig).unwrap_or_default()),
            _ => {}
        }
    }
    let t = t.ok_or_else(|| malformed(STRIPE_HEADER))?;
    let ts: u64 = t.parse().map_err(|_| malformed(STRIPE_HEADER))?;
    if v1.is_empty() {
        return Err(malformed(STRIPE_HEADER));
    }
    fresh(ts, now_s)?;
    any_matches(mac(secret, &[t.as_bytes(), b".", body]), v1).then_some(()).ok_or(Reason::Mismatch)
}

/// The HMAC key of a Standard Webhooks secret: base64 after `whsec_`.
fn standard_key(secret: &str) -> Option<Vec<u8>> {
    base64::decode(secret.strip_prefix("whsec_").unwrap_or(secret)).filter(|k| !k.is_empty())
}

fn standard(secret: &str, [id, ts, sigs]: [Option<&[u8]>; 3], body: &[u8], now_s: u64) -> Result<(), Reason> {
    let (id, t, sigs) = (text(id, SW_ID)?, text(ts, SW_TIMESTAMP)?, text(sigs, SW_SIGNATURE)?);
    let ts: u64 = t.parse().map_err(|_| malformed(SW_TIMESTAMP))?;
    let mut candidates = Vec::new();
    for sig in sigs.split_ascii_whitespace() {
        match sig.split_once(',') {
            Some(("v1", b64)) => candidates.push(base64::decode(b64).unwrap_or_default()),
            // Other versions (v1a: asymmetric) are not ours to check.
            Some(_) => {}
            None => return Err(malformed(SW_SIGNATURE)),
        }
    }
    if candidates.is_empty() {
        return Err(malformed(SW_SIGNATURE));
    }
    fresh(ts, now_s)?;
    let key = standard_key(secret).unwrap_or_default();
    any_matches(mac(&key, &[id.as_bytes(), b".", t.as_bytes(), b".", body]), candidates).then_some(()).ok_or(Reason::Mismatch)
}

fn custom(secret: &[u8], (name, value): (&str, Option<&[u8]>), encoding: Encoding, prefix: &str, body: &[u8]) -> Result<(), Reason> {
    let value = text(value, name)?;
    let encoded = value.strip_prefix(prefix).ok_or_else(|| malformed(name))?;
    let sig = match encoding {
        Encoding::Hex => unhex(encoded),
        Encoding::Base64 => base64::decode(encoded),
    };
    let sig = sig.ok_or_else(|| malformed(name))?;
    any_matches(mac(secret, &[body]), [sig]).then_some(()).ok_or(Reason::Mismatch)
}

fn fresh(ts: u64, now_s: u64) -> Result<(), Reason> {
    match ts.abs_diff(now_s) <= TOLERANCE_S {
        true => Ok(()),
        false => Err(Reason::Timestamp),
    }
}

/// Hex of either case; `None` for anything else.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    text.as_bytes().chunks(2).map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8)).collect()
}

/// The check of one request as the event's `"signature"` member, compact JSON.
pub fn write_signature(out: &mut Vec<u8>, scheme: &Scheme, outcome: &Outcome) {
    out.extend_from_slice(b"{\"scheme\":\"");
    out.extend_from_slice(scheme.name().as_bytes());
    match outcome {
        Outcome::Valid => out.extend_from_slice(b"\",\"valid\":true}"),
        Outcome::Invalid(reason) => {
            out.extend_from_slice(b"\",\"valid\":false,\"reason\":");
            json::write_str(out, &reason.to_string());
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const BODY: &[u8] = b"{\"action\": \"opened\",\n  \"n\": 1}";

    /// A request's headers: (lower-case name, value).
    type Headers<'a> = &'a [(&'a str, &'a str)];

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The test's own HMAC-SHA256, over the concatenated parts.
    fn sign(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        mac(key, parts).finalize().into_bytes().to_vec()
    }

    fn settings(value: Value) -> Verify {
        Verify::from_json(&value).unwrap()
    }

    fn check(v: &Verify, headers: &[(&str, &str)], body: &[u8], now: u64) -> Outcome {
        v.check(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_bytes()), body, now)
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            hex(&sign(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn github() {
        let v = settings(json!({"scheme": "github", "secret": "It's a Secret to Everybody"}));
        // GitHub's documented example: "Hello, World!" under that secret.
        let documented = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(check(&v, &[("x-hub-signature-256", documented)], b"Hello, World!", NOW), Outcome::Valid);
        let good = format!("sha256={}", hex(&sign(b"It's a Secret to Everybody", &[BODY])));
        let table: &[(Headers, &[u8], Outcome)] = &[
            (&[("x-hub-signature-256", &good)], BODY, Outcome::Valid),
            (&[("x-hub-signature-256", &good.to_ascii_uppercase().replace("SHA256=", "sha256="))], BODY, Outcome::Valid),
            (&[("x-hub-signature-256", &good)], b"{\"action\":\"opened\",\"n\":1}", Outcome::Invalid(Reason::Mismatch)),
            (&[], BODY, Outcome::Invalid(Reason::MissingHeader("x-hub-signature-256".into()))),
            (&[("x-hub-signature-256", "sha1=abcd")], BODY, Outcome::Invalid(Reason::MalformedHeader("x-hub-signature-256".into()))),
            (&[("x-hub-signature-256", "sha256=zz")], BODY, Outcome::Invalid(Reason::MalformedHeader("x-hub-signature-256".into()))),
            (&[("x-hub-signature-256", "sha256=00")], BODY, Outcome::Invalid(Reason::Mismatch)),
        ];
        for (headers, body, want) in table {
            assert_eq!(&check(&v, headers, body, NOW), want, "{headers:?}");
        }
    }

    #[test]
    fn stripe() {
        let secret = "whsec_stripe_test_secret";
        let v = settings(json!({"scheme": "stripe", "secret": secret}));
        let at = |t: u64| hex(&sign(secret.as_bytes(), &[t.to_string().as_bytes(), b".", BODY]));
        let good = format!("t={NOW},v1={},v0=ignored", at(NOW));
        let second = format!("t={NOW},v1={},v1={}", "ab".repeat(32), at(NOW));
        let old = format!("t={},v1={}", NOW - 301, at(NOW - 301));
        let ahead = format!("t={},v1={}", NOW + 301, at(NOW + 301));
        let edge = format!("t={},v1={}", NOW - 300, at(NOW - 300));
        let h = "stripe-signature";
        let table: Vec<(String, Outcome)> = vec![
            (good, Outcome::Valid),
            (second, Outcome::Valid),
            (edge, Outcome::Valid),
            (old, Outcome::Invalid(Reason::Timestamp)),
            (ahead, Outcome::Invalid(Reason::Timestamp)),
            (format!("t={NOW},v1={}", "00".repeat(32)), Outcome::Invalid(Reason::Mismatch)),
            (format!("v1={}", at(NOW)), Outcome::Invalid(Reason::MalformedHeader(h.into()))),
            (format!("t={NOW}"), Outcome::Invalid(Reason::MalformedHeader(h.into()))),
            (format!("t=soon,v1={}", at(NOW)), Outcome::Invalid(Reason::MalformedHeader(h.into()))),
        ];
        for (header, want) in table {
            assert_eq!(check(&v, &[(h, &header)], BODY, NOW), want, "{header}");
        }
        assert_eq!(check(&v, &[], BODY, NOW), Outcome::Invalid(Reason::MissingHeader(h.into())));
    }

    #[test]
    fn standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let v = settings(json!({"scheme": "standard-webhooks", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}));
        let spec = [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        ];
        let payload = br#"{"test": 2432232314}"#;
        assert_eq!(check(&v, &spec, payload, 1_614_265_330), Outcome::Valid);
        assert_eq!(check(&v, &spec, payload, 1_614_265_330 + 301), Outcome::Invalid(Reason::Timestamp));
        assert_eq!(check(&v, &spec, b"{\"test\":2432232314}", 1_614_265_330), Outcome::Invalid(Reason::Mismatch));
        let several = [spec[0], spec[1], ("webhook-signature", "v1a,xyz v1,AAAA v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")];
        assert_eq!(check(&v, &several, payload, 1_614_265_330), Outcome::Valid);
        let malformed = [spec[0], spec[1], ("webhook-signature", "g0hM9SsE")];
        assert_eq!(check(&v, &malformed, payload, 1_614_265_330), Outcome::Invalid(Reason::MalformedHeader("webhook-signature".into())));
        assert_eq!(check(&v, &spec[1..], payload, 1_614_265_330), Outcome::Invalid(Reason::MissingHeader("webhook-id".into())));
        // The key is the decoded secret, not its text.
        let key = base64::decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let ours = base64::encode(&sign(&key, &[b"msg_1.", NOW.to_string().as_bytes(), b".", BODY]));
        let headers = [("webhook-id", "msg_1"), ("webhook-timestamp", &NOW.to_string()), ("webhook-signature", &format!("v1,{ours}"))];
        assert_eq!(check(&v, &headers, BODY, NOW), Outcome::Valid);
    }

    #[test]
    fn hmac_sha256_with_header_encoding_and_prefix() {
        let hexed = settings(json!({"scheme": "hmac-sha256", "secret": "s3", "header": "X-Signature", "prefix": "sha256="}));
        let sig = sign(b"s3", &[BODY]);
        let good = format!("sha256={}", hex(&sig));
        assert_eq!(check(&hexed, &[("x-signature", &good)], BODY, NOW), Outcome::Valid);
        assert_eq!(
            check(&hexed, &[("x-signature", &hex(&sig))], BODY, NOW),
            Outcome::Invalid(Reason::MalformedHeader("x-signature".into()))
        );
        assert_eq!(check(&hexed, &[("x-signature", &good)], b"other", NOW), Outcome::Invalid(Reason::Mismatch));
        let b64 = settings(json!({"scheme": "hmac-sha256", "secret": "s3", "header": "x-sig", "encoding": "base64"}));
        assert_eq!(check(&b64, &[("x-sig", &base64::encode(&sig))], BODY, NOW), Outcome::Valid);
        assert_eq!(check(&b64, &[], BODY, NOW), Outcome::Invalid(Reason::MissingHeader("x-sig".into())));
    }

    #[test]
    fn settings_are_checked_and_the_secret_is_write_only() {
        let bad = [
            (json!("github"), "must be an object"),
            (json!({"scheme": "github"}), "secret is required"),
            (json!({"scheme": "github", "secret": ""}), "secret is required"),
            (json!({"secret": "s"}), "scheme is required"),
            (json!({"scheme": "gitlab", "secret": "s"}), "unknown verify.scheme"),
            (json!({"scheme": "github", "secret": "s", "reject_invalid": "yes"}), "true or false"),
            (json!({"scheme": "github", "secret": "s", "header": "x"}), "only for the hmac-sha256"),
            (json!({"scheme": "hmac-sha256", "secret": "s"}), "header is required"),
            (json!({"scheme": "hmac-sha256", "secret": "s", "header": "x", "encoding": "b32"}), "hex or base64"),
            (json!({"scheme": "standard-webhooks", "secret": "whsec_!!"}), "whsec_"),
            (json!({"scheme": "github", "secret": "s", "secrets": "s"}), "not a setting"),
            (json!({"scheme": "github", "secret": "s", "prefix": ""}), "only for the hmac-sha256"),
        ];
        for (value, want) in bad {
            let err = Verify::from_json(&value).unwrap_err();
            assert!(err.contains(want), "{value}: {err}");
        }
        let null_is_absent = json!({"scheme": "github", "secret": "s", "header": null, "encoding": null, "prefix": null});
        assert_eq!(settings(null_is_absent).scheme, Scheme::Github);
        let v = settings(json!({"scheme": "hmac-sha256", "secret": "s3cr3t", "header": "X-Sig", "reject_invalid": true}));
        let mut public = Vec::new();
        v.write_public(&mut public);
        assert_eq!(
            serde_json::from_slice::<Value>(&public).unwrap(),
            json!({"scheme": "hmac-sha256", "header": "x-sig", "encoding": "hex", "prefix": "", "reject_invalid": true})
        );
        assert!(!format!("{v:?}").contains("s3cr3t"));
        assert_eq!(Verify::from_stored(&v.stored_json()), Some(v));
    }

    #[test]
    fn writes_the_events_signature_member() {
        let mut out = Vec::new();
        write_signature(&mut out, &Scheme::Github, &Outcome::Valid);
        assert_eq!(out, br#"{"scheme":"github","valid":true}"#);
        out.clear();
        write_signature(&mut out, &Scheme::Stripe, &Outcome::Invalid(Reason::Timestamp));
        assert_eq!(out, br#"{"scheme":"stripe","valid":false,"reason":"timestamp more than 5 minutes from now"}"#);
    }
}
