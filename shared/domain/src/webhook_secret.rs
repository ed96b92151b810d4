//! The secrets a webhook's signatures are checked against: the current one, and during a
//! rotation window the previous one (Bitbucket may still sign in-flight retries with it).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::secrets::{Secret, SecretError};

#[derive(Clone, Serialize, Deserialize)]
pub struct WebhookSecrets {
    current: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_valid_until: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecrets(***)")
    }
}

impl WebhookSecrets {
    pub fn new(current: &Secret) -> Self {
        WebhookSecrets { current: current.expose().to_owned(), previous: None, previous_valid_until: None }
    }

    /// Makes `next` current and keeps the old one valid until `until`.
    pub fn rotate(&self, next: &Secret, until: DateTime<Utc>) -> Self {
        WebhookSecrets {
            current: next.expose().to_owned(),
            previous: Some(self.current.clone()),
            previous_valid_until: Some(until),
        }
    }

    pub fn current(&self) -> Secret {
        Secret::new(self.current.clone())
    }

    /// Secrets a signature may be made with at `now`.
    pub fn accepted(&self, now: DateTime<Utc>) -> Vec<&[u8]> {
        let mut out = vec![self.current.as_bytes()];
        if let (Some(previous), Some(until)) = (&self.previous, self.previous_valid_until)
            && now < until
        {
            out.push(previous.as_bytes());
        }
        out
    }

    pub fn to_secret(&self) -> Secret {
        Secret::new(serde_json::to_string(self).expect("plain struct serializes"))
    }

    pub fn from_secret(name: &str, secret: &Secret) -> Result<Self, SecretError> {
        serde_json::from_str(secret.expose()).map_err(|_| SecretError::Corrupt(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_secret_expires() {
        let now = Utc::now();
        let s = WebhookSecrets::new(&Secret::new("a")).rotate(&Secret::new("b"), now + chrono::Duration::hours(1));
        assert_eq!(s.accepted(now), vec![b"b".as_slice(), b"a"]);
        assert_eq!(s.accepted(now + chrono::Duration::hours(2)), vec![b"b".as_slice()]);
        let back = WebhookSecrets::from_secret("n", &s.to_secret()).unwrap();
        assert_eq!(back.accepted(now).len(), 2);
        assert_eq!(format!("{s:?}"), "WebhookSecrets(***)");
    }
}
