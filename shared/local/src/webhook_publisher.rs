//! The domain-event publisher outside AWS: each event POSTed as JSON to `EVENTS_URL`, signed
//! per the Standard Webhooks convention (`webhook-id`: the event id, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` under the
//! `whsec_…` secret), with the reference implementation of that convention.

use std::time::Duration;

use async_trait::async_trait;
use domain::outbox::{DomainEvent, PublishError, Publisher};
use domain::secrets::Secret;

pub struct WebhookPublisher {
    client: reqwest::Client,
    url: String,
    signer: standardwebhooks::Webhook,
}

impl WebhookPublisher {
    /// `secret` is `whsec_` and base64 (the convention's form); anything else is refused.
    pub fn new(url: &str, secret: &Secret) -> Result<Self, PublishError> {
        let signer = standardwebhooks::Webhook::new(secret.expose())
            .map_err(|e| PublishError(format!("EVENTS_SECRET is not a whsec_… secret: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PublishError(e.to_string()))?;
        Ok(WebhookPublisher { client, url: url.to_owned(), signer })
    }

    /// A new `whsec_…` secret (24 random bytes, base64).
    pub fn generate_secret() -> Secret {
        use base64::Engine as _;
        let key: [u8; 24] = rand::random();
        Secret::new(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key)))
    }
}

#[async_trait]
impl Publisher for WebhookPublisher {
    async fn publish(&self, event: &DomainEvent) -> Result<(), PublishError> {
        let body = serde_json::to_vec(event).map_err(|e| PublishError(e.to_string()))?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| PublishError(e.to_string()))?
            .as_secs() as i64;
        let signature = self.signer.sign(&event.id, timestamp, &body).map_err(|e| PublishError(e.to_string()))?;
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &event.id)
            .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| PublishError(format!("POST {}: {e}", self.url)))?;
        if !response.status().is_success() {
            return Err(PublishError(format!("POST {} answered {}", self.url, response.status())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_whsec() {
        let secret = WebhookPublisher::generate_secret();
        assert!(secret.expose().starts_with("whsec_") && secret.expose().len() == 38, "{}", secret.expose());
        assert!(WebhookPublisher::new("http://127.0.0.1:9/", &secret).is_ok());
        assert!(WebhookPublisher::new("http://127.0.0.1:9/", &Secret::new("whsec_!!")).is_err());
    }
}
