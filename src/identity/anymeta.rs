//! The anyMeta REST client: `identity.identify` (tag → person) and
//! `anymeta.user.info` (health), as form POSTs to the site's
//! `/services/rest/` entrypoint, signed with OAuth 1.0a.

use std::time::Duration;

use serde_json::Value;

use super::oauth::{self, Credentials, Method};
use crate::domain::{Person, text};

/// The most of an answer read (an identify answer is a few hundred bytes;
/// a site that sends more is broken or hostile).
const MAX_BODY: usize = 64 * 1024;

/// Why a lookup failed (retried, and counted by the circuit breaker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnyMetaError {
    #[error("anyMeta did not answer in time")]
    Timeout,
    #[error("cannot reach anyMeta: {0}")]
    Connect(String),
    #[error("anyMeta answered HTTP {0}")]
    Http(u16),
    #[error("anyMeta error {code}: {msg}")]
    Api { code: i64, msg: String },
    #[error("anyMeta sent something that is not the expected JSON: {0}")]
    Malformed(String),
    #[error("anyMeta's answer is larger than {} KiB", MAX_BODY / 1024)]
    TooLarge,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

/// Strip HTML tags and decode the few entities titles carry.
#[must_use]
pub fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.trim().is_empty())
}

/// Read an `identity.identify` answer: a person, `None` for an unknown tag
/// (`null` / `false`), or the anyMeta error.
pub fn parse_identify(body: &str) -> Result<Option<Person>, AnyMetaError> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| AnyMetaError::Malformed(e.to_string()))?;
    if let Some(err) = v.get("err") {
        let attrib = err.get("-attrib-").unwrap_or(err);
        return Err(AnyMetaError::Api {
            code: attrib
                .get("code")
                .and_then(|c| c.as_i64().or_else(|| c.as_str()?.parse().ok()))
                .unwrap_or(0),
            msg: attrib
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        });
    }
    match &v {
        Value::Null | Value::Bool(false) => return Ok(None),
        Value::Object(_) => {}
        other => {
            return Err(AnyMetaError::Malformed(format!(
                "unexpected answer {other}"
            )));
        }
    }
    let id = ["id", "rsc_id"]
        .iter()
        .find_map(|k| match v.get(*k)? {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
        .ok_or_else(|| AnyMetaError::Malformed("a person without an id".into()))?;
    let title = str_at(&v, &["title"])
        .or_else(|| str_at(&v, &["text", "title"]))
        .map(strip_html);
    let full = str_at(&v, &["name", "full"])
        .map(strip_html)
        .or(title.clone())
        .unwrap_or_default();
    let first = str_at(&v, &["name", "first"])
        .map(strip_html)
        .or_else(|| full.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    // Names are shown and published: control characters (which XML
    // forbids) are dropped here, where they enter the station.
    let (clean_name, clean_first) = (text::printable(&full), text::printable(&first));
    if clean_name != full || clean_first != first {
        tracing::warn!(person = %id, "anyMeta sent a name with control characters; they are dropped");
    }
    Ok(Some(Person {
        id: format!("anymeta:{}", text::printable(&id)),
        name: clean_name.into_owned(),
        first: clean_first.into_owned(),
    }))
}

/// A client for one anyMeta site.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    entrypoint: String,
    creds: Credentials,
    method: Method,
}

impl Client {
    pub fn new(
        entrypoint: &str,
        creds: Credentials,
        method: Method,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self {
            http,
            entrypoint: entrypoint.to_string(),
            creds,
            method,
        })
    }

    /// One signed call; the body as text.
    async fn call(&self, params: Vec<(String, String)>) -> Result<String, AnyMetaError> {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let oauth = oauth::oauth_params(
            &self.creds,
            self.method,
            "POST",
            &self.entrypoint,
            &params,
            &nonce,
            ts,
        );
        let resp = self
            .http
            .post(&self.entrypoint)
            .header("Authorization", oauth::authorization_header(&oauth))
            .form(&params)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    AnyMetaError::Timeout
                } else {
                    AnyMetaError::Connect(e.to_string())
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(AnyMetaError::Http(status.as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(AnyMetaError::TooLarge);
        }
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            if e.is_timeout() {
                AnyMetaError::Timeout
            } else {
                AnyMetaError::Connect(e.to_string())
            }
        })? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(AnyMetaError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|e| AnyMetaError::Malformed(e.to_string()))
    }

    /// Who carries this tag (`urn:rfid:…`)?
    pub async fn identify(&self, tag: &str) -> Result<Option<Person>, AnyMetaError> {
        let body = self
            .call(vec![
                ("method".into(), "identity.identify".into()),
                ("type".into(), "rfid".into()),
                ("raw".into(), tag.into()),
                ("format".into(), "json".into()),
            ])
            .await?;
        parse_identify(&body)
    }

    /// Health check: are the credentials accepted?
    pub async fn user_info(&self) -> Result<(), AnyMetaError> {
        let body = self
            .call(vec![
                ("method".into(), "anymeta.user.info".into()),
                ("format".into(), "json".into()),
            ])
            .await?;
        let v: Value =
            serde_json::from_str(&body).map_err(|e| AnyMetaError::Malformed(e.to_string()))?;
        if let Some(err) = v.get("err") {
            let a = err.get("-attrib-").unwrap_or(err);
            return Err(AnyMetaError::Api {
                code: a.get("code").and_then(Value::as_i64).unwrap_or(0),
                msg: a.get("msg").and_then(Value::as_str).unwrap_or("").into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_people_unknowns_and_errors() {
        let p = parse_identify(r#"{"id": 124445, "title": "<b>Arjan</b> Scherpenisse", "name": {"first": "Arjan", "full": "Arjan Scherpenisse"}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(p.id, "anymeta:124445");
        assert_eq!(p.name, "Arjan Scherpenisse");
        assert_eq!(p.first, "Arjan");
        let p =
            parse_identify(r#"{"rsc_id": "77", "text": {"title": "Ms &amp; <i>Mx</i> Jansen"}}"#)
                .unwrap()
                .unwrap();
        assert_eq!(
            (p.id.as_str(), p.name.as_str(), p.first.as_str()),
            ("anymeta:77", "Ms & Mx Jansen", "Ms")
        );
        assert_eq!(parse_identify("false").unwrap(), None);
        assert_eq!(parse_identify("null").unwrap(), None);
        assert_eq!(
            parse_identify(r#"{"err":{"-attrib-":{"code":"9","msg":"Not allowed"}}}"#),
            Err(AnyMetaError::Api {
                code: 9,
                msg: "Not allowed".into()
            })
        );
        assert!(matches!(
            parse_identify("<html>"),
            Err(AnyMetaError::Malformed(_))
        ));
        assert!(matches!(
            parse_identify(r#"{"title": "x"}"#),
            Err(AnyMetaError::Malformed(_))
        ));
    }

    #[test]
    fn control_characters_in_a_name_are_dropped() {
        let p = parse_identify("{\"id\": 1, \"name\": {\"first\": \"An\\u0001na\", \"full\": \"An\\u0001na de Vries\"}}")
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.first.as_str(), p.name.as_str()),
            ("Anna", "Anna de Vries")
        );
    }
}
