//! Bitbucket webhook deliveries: the headers both flavors send, their payload models, and the
//! normalization of both into one [`RepoEvent`] type.

pub mod cloud;
pub mod datacenter;
mod event;

pub use event::{PullRequest, RepoEvent, summarize};

use serde::{Deserialize, Serialize};

/// Which Bitbucket product sent a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Cloud,
    #[serde(rename = "datacenter")]
    DataCenter,
}

impl Flavor {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Cloud => "cloud",
            Flavor::DataCenter => "datacenter",
        }
    }
}

/// The Data Center key whose deliveries are unsigned (the "Test connection" button).
pub const PING_EVENT_KEY: &str = "diagnostics:ping";

/// What the delivery's headers say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryHeaders {
    pub event_key: Option<String>,
    /// `X-Request-UUID` (Cloud) or `X-Request-Id` (Data Center): the same on every retry.
    pub delivery_id: Option<String>,
    pub hook_uuid: Option<String>,
    pub attempt: Option<u32>,
    pub signature: Option<String>,
    /// The flavor the headers betray, if they do (only Cloud sends `X-Hook-UUID`/`X-Request-UUID`).
    pub flavor_hint: Option<Flavor>,
}

/// A header a delivery carries once came more than once: which copy counts would be a guess
/// (two signatures judged by their order, say), so the delivery is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {0} header appears more than once")]
pub struct RepeatedHeader(pub &'static str);

/// The headers [`DeliveryHeaders`] reads, each of which may appear at most once.
const SINGLE_HEADERS: [&str; 6] =
    ["X-Hub-Signature", "X-Event-Key", "X-Request-UUID", "X-Request-Id", "X-Hook-UUID", "X-Attempt-Number"];

impl DeliveryHeaders {
    /// Reads a request's headers, given as (name, value) pairs in any case.
    pub fn from_pairs<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Self, RepeatedHeader> {
        let headers: Vec<(&str, &[u8])> = headers.into_iter().collect();
        let values = |name: &str| {
            headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v).collect::<Vec<_>>()
        };
        if let Some(name) = SINGLE_HEADERS.iter().find(|name| values(name).len() > 1) {
            return Err(RepeatedHeader(name));
        }
        let text = |name: &str| {
            values(name)
                .first()
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let cloud_id = text("x-request-uuid");
        let hook_uuid = text("x-hook-uuid");
        let dc_id = text("x-request-id");
        let flavor_hint = if cloud_id.is_some() || hook_uuid.is_some() {
            Some(Flavor::Cloud)
        } else if dc_id.is_some() {
            Some(Flavor::DataCenter)
        } else {
            None
        };
        Ok(DeliveryHeaders {
            event_key: text("x-event-key"),
            delivery_id: cloud_id.or(dc_id),
            hook_uuid,
            attempt: text("x-attempt-number").and_then(|v| v.parse().ok()),
            signature: text("x-hub-signature"),
            flavor_hint,
        })
    }
}

/// A payload that is not valid JSON, or not the shape its event key promises.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(#[from] serde_json::Error);

/// A delivery body reduced to what the system acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParsedPayload {
    /// `workspace/repo` (Cloud) or `PROJECT/repo` (Data Center), when the payload names it.
    pub repository: Option<String>,
    pub events: Vec<RepoEvent>,
}

/// Parses and normalizes a delivery body. Unknown event keys are accepted (as
/// [`RepoEvent::Other`]) as long as the body is JSON; known keys must have their documented shape.
pub fn parse(flavor: Flavor, event_key: &str, body: &[u8]) -> Result<ParsedPayload, PayloadError> {
    // JSON is UTF-8 (RFC 8259); serde_json checks only the strings it keeps, so bytes in an
    // ignored field would otherwise pass.
    if let Err(e) = std::str::from_utf8(body) {
        let problem = format!("the body is not UTF-8 (invalid byte at offset {})", e.valid_up_to());
        return Err(PayloadError(serde::de::Error::custom(problem)));
    }
    match flavor {
        Flavor::Cloud => cloud::normalize(event_key, body),
        Flavor::DataCenter => datacenter::normalize(event_key, body),
    }
}

/// Checks that `body` is JSON without building it (the cheap path for keys we do not model).
pub(crate) fn validate_json(body: &[u8]) -> Result<(), PayloadError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
    Ok(())
}

/// A key the system does not act on: recorded as [`RepoEvent::Other`] with its repository.
pub(crate) fn other(event_key: &str, repository: Option<String>) -> ParsedPayload {
    ParsedPayload { repository, events: vec![RepoEvent::Other { event_key: event_key.to_owned() }] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs<'a>(h: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        h.iter().map(|(n, v)| (*n, v.as_bytes()))
    }

    #[test]
    fn headers_tell_flavor_and_delivery_id() {
        let h = [("X-Event-Key", "repo:push"), ("x-request-uuid", "abc"), ("X-Attempt-Number", "2")];
        let d = DeliveryHeaders::from_pairs(pairs(&h)).unwrap();
        assert_eq!(d.flavor_hint, Some(Flavor::Cloud));
        assert_eq!(d.delivery_id.as_deref(), Some("abc"));
        assert_eq!(d.attempt, Some(2));

        let d = DeliveryHeaders::from_pairs(pairs(&[("X-Request-Id", "dc-1")])).unwrap();
        assert_eq!(d.flavor_hint, Some(Flavor::DataCenter));
        assert_eq!(d.event_key, None);

        // Every header it reads counts once: a second copy of any is refused, not ordered.
        for name in SINGLE_HEADERS {
            let lower = name.to_ascii_lowercase();
            let h = [(name, "sha256=00"), (lower.as_str(), "sha256=01")];
            assert_eq!(DeliveryHeaders::from_pairs(pairs(&h)), Err(RepeatedHeader(name)));
        }
    }

    #[test]
    fn bodies_must_be_utf8_even_in_ignored_fields() {
        let body = b"{\"push\": {\"changes\": []}, \"ignored\": \"\xC3\x28\"}";
        for flavor in [Flavor::Cloud, Flavor::DataCenter] {
            let error = parse(flavor, "repo:push", body).unwrap_err().to_string();
            assert!(error.contains("not UTF-8"), "{error}");
        }
        assert!(parse(Flavor::Cloud, "repo:push", br#"{"push": {"changes": []}, "ignored": "\u00e9"}"#).is_ok());
    }
}
