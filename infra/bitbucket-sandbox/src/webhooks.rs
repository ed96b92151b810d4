//! Webhook delivery as Bitbucket does it: one POST per hook and event, signed when the hook has a
//! secret, retried (same `X-Request-UUID` on Cloud, `X-Request-Id` on Data Center) on a 5xx or a
//! connection error, 3 attempts at most.

use std::time::Duration;

use chrono::Utc;
use domain::webhook::Flavor;
use serde::Serialize;

/// One delivery attempt, as [`crate::Sandbox::sent_webhooks`] reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SentWebhook {
    pub flavor: Flavor,
    /// The hook's uuid (Cloud) or id (Data Center).
    pub hook_uuid: String,
    pub url: String,
    pub event_key: String,
    pub attempt: u32,
    /// `None` when the request failed without an answer (connection refused, timeout).
    pub status: Option<u16>,
}

/// An event bound for one hook; `body` is the exact bytes sent (and signed).
pub struct Delivery {
    pub flavor: Flavor,
    pub hook_id: String,
    pub url: String,
    pub secret: Option<String>,
    pub event_key: String,
    pub body: Vec<u8>,
}

const ATTEMPTS: u32 = 3;

/// Sends `delivery`, calling `record` after every attempt.
pub async fn deliver(client: &reqwest::Client, delivery: Delivery, record: impl Fn(SentWebhook)) {
    // Fixed for the event: a receiver deduplicates retries by it.
    let request_id = uuid::Uuid::new_v4().to_string();
    let event_time = Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let signature = delivery.secret.as_ref().map(|s| domain::signature::sign(s.as_bytes(), &delivery.body));
    for attempt in 1..=ATTEMPTS {
        let mut request = client
            .post(&delivery.url)
            .header("Content-Type", "application/json")
            .header("X-Event-Key", &delivery.event_key)
            .body(delivery.body.clone());
        request = match delivery.flavor {
            Flavor::Cloud => request
                .header("User-Agent", "Bitbucket-Webhooks/2.0")
                .header("X-Request-UUID", &request_id)
                .header("X-Hook-UUID", &delivery.hook_id)
                .header("X-Attempt-Number", attempt.to_string())
                .header("X-Event-Time", &event_time),
            Flavor::DataCenter => request.header("X-Request-Id", &request_id),
        };
        if let Some(signature) = &signature {
            request = request.header("X-Hub-Signature", signature);
        }
        let status = match request.send().await {
            Ok(response) => Some(response.status().as_u16()),
            Err(e) => {
                tracing::debug!(url = %delivery.url, error = %e, "webhook delivery failed");
                None
            }
        };
        record(SentWebhook {
            flavor: delivery.flavor,
            hook_uuid: delivery.hook_id.clone(),
            url: delivery.url.clone(),
            event_key: delivery.event_key.clone(),
            attempt,
            status,
        });
        // Only a server error or no answer at all is worth another try; a 4xx is final.
        if status.is_some_and(|s| s < 500) {
            break;
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
    }
}
