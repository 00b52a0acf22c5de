//! OAuth 1.0a request signing (RFC 5849 §3.4): HMAC-SHA1, or PLAINTEXT.
//! Written here because no well-kept crate signs a form POST with body
//! parameters for a client; the RFC's own examples are the tests.

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;

/// RFC 3986 unreserved characters stay; everything else is %XX (§3.6).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode as §3.6 says.
#[must_use]
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

/// Signature method: the config's choice.
pub use crate::config::Signature as Method;

/// The method's name in `oauth_signature_method`.
#[must_use]
pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::HmacSha1 => "HMAC-SHA1",
        Method::Plaintext => "PLAINTEXT",
    }
}

/// Client credentials and token credentials. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub token: String,
    pub token_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { … }")
    }
}

/// The signature base string (§3.4.1): method, base URI, normalized
/// parameters (query, form body and `oauth_*` except the signature).
#[must_use]
pub fn base_string(method: &str, base_uri: &str, params: &[(String, String)]) -> String {
    let mut enc: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "oauth_signature")
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    enc.sort();
    let normalized = enc
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        encode(base_uri),
        encode(&normalized)
    )
}

/// The signature (§3.4.2, §3.4.4) over a base string.
#[must_use]
pub fn sign(m: Method, base: &str, consumer_secret: &str, token_secret: &str) -> String {
    let key = format!("{}&{}", encode(consumer_secret), encode(token_secret));
    match m {
        Method::Plaintext => key,
        Method::HmacSha1 => {
            let mut mac =
                Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
            mac.update(base.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
    }
}

/// The `oauth_*` parameters of one request, signed; `params` are the
/// request's own (query and form body).
#[must_use]
pub fn oauth_params(
    creds: &Credentials,
    m: Method,
    method: &str,
    base_uri: &str,
    params: &[(String, String)],
    nonce: &str,
    timestamp: u64,
) -> Vec<(String, String)> {
    let mut oauth = vec![
        ("oauth_consumer_key".to_string(), creds.consumer_key.clone()),
        ("oauth_nonce".to_string(), nonce.to_string()),
        (
            "oauth_signature_method".to_string(),
            method_name(m).to_string(),
        ),
        ("oauth_timestamp".to_string(), timestamp.to_string()),
        ("oauth_token".to_string(), creds.token.clone()),
        ("oauth_version".to_string(), "1.0".to_string()),
    ];
    let mut all = params.to_vec();
    all.extend(oauth.iter().cloned());
    let base = base_string(method, base_uri, &all);
    oauth.push((
        "oauth_signature".to_string(),
        sign(m, &base, &creds.consumer_secret, &creds.token_secret),
    ));
    oauth
}

/// The `Authorization: OAuth …` header value (§3.5.1).
#[must_use]
pub fn authorization_header(oauth: &[(String, String)]) -> String {
    let parts: Vec<String> = oauth
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", encode(k), encode(v)))
        .collect();
    format!("OAuth {}", parts.join(", "))
}

/// Parse an `Authorization: OAuth …` header (what a server does).
#[must_use]
pub fn parse_authorization(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.strip_prefix("OAuth ")?;
    let mut out = Vec::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.trim_matches('"');
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        };
        if k == "realm" {
            continue;
        }
        out.push((dec(k)?, dec(v)?));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    /// RFC 5849 §3.4.1.1: the example request's signature base string.
    #[test]
    fn rfc5849_base_string_example() {
        let params = vec![
            p("b5", "=%3D"),
            p("a3", "a"),
            p("c@", ""),
            p("a2", "r b"),
            p("oauth_consumer_key", "9djdj82h48djs9d2"),
            p("oauth_token", "kkk9d7dh3k39sjv7"),
            p("oauth_signature_method", "HMAC-SHA1"),
            p("oauth_timestamp", "137131201"),
            p("oauth_nonce", "7d8f3e4a"),
            p("c2", ""),
            p("a3", "2 q"),
        ];
        assert_eq!(
            base_string("POST", "http://example.com/request", &params),
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
             %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
             key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
             ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
             9d7dh3k39sjv7"
        );
    }

    /// RFC 5849 §1.2: the photos request, signature MdpQcU8iPSUjWoN/UDMsK2sui9I=.
    #[test]
    fn rfc5849_photos_example_signature() {
        let params = vec![
            p("file", "vacation.jpg"),
            p("size", "original"),
            p("oauth_consumer_key", "dpf43f3p2l4k3l03"),
            p("oauth_token", "nnch734d00sl2jdk"),
            p("oauth_signature_method", "HMAC-SHA1"),
            p("oauth_timestamp", "137131202"),
            p("oauth_nonce", "chapoH"),
        ];
        let base = base_string("GET", "http://photos.example.net/photos", &params);
        assert_eq!(
            sign(
                Method::HmacSha1,
                &base,
                "kd94hf93k423kf44",
                "pfkkdhi9sl3r4s00"
            ),
            "MdpQcU8iPSUjWoN/UDMsK2sui9I="
        );
    }

    #[test]
    fn plaintext_and_header_round_trip() {
        assert_eq!(sign(Method::Plaintext, "", "a b", "c&d"), "a%20b&c%26d");
        let creds = Credentials {
            consumer_key: "ck".into(),
            consumer_secret: "cs".into(),
            token: "tk".into(),
            token_secret: "ts".into(),
        };
        let o = oauth_params(
            &creds,
            Method::HmacSha1,
            "POST",
            "https://x/y",
            &[p("raw", "urn:rfid:04AA")],
            "n",
            1,
        );
        let back = parse_authorization(&authorization_header(&o)).unwrap();
        assert_eq!(back, o);
        assert_eq!(
            format!("{creds:?}"),
            "Credentials { … }",
            "secrets are never printed"
        );
    }
}
