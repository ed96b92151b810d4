//! Failed consumer work, kept so nothing is lost after the retries run out.
//!
//! When a consumer (pipelines, environments) fails on a delivery, the failure is recorded per
//! (delivery, consumer) in [`FAILURES`] with its error, how many attempts failed and when the
//! last one was; a later attempt that succeeds removes it. On AWS each failed stream attempt
//! counts (the stream retries, then sends the batch's position to the on-failure queue); locally
//! the worker records it after its own retries. `GET /integrations/{id}/failures` lists them and
//! [`replay`] (`POST /integrations/{id}/deliveries/{delivery_id}/replay`, and `bba failures
//! drain` for the on-failure queue) runs every consumer on the recorded delivery again — through
//! the same claims and conditional writes as the first time, so a replay never doubles an effect.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;

use crate::bitbucket::BitbucketError;
use crate::consumers::{self, DeliveryConsumer, Outcome};
use crate::delivery::Delivery;
use crate::error::Error;
use crate::store::{Condition, StateStore, StoreError};
use crate::tables::{DELIVERIES, FAILURES, Record};

/// A failure is kept as long as a parked delivery: past that its events are too old to act on.
const LIFETIME: chrono::Duration = chrono::Duration::days(30);
/// Conditional writes tried when attempts race.
const WRITE_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub delivery_id: String,
    pub consumer: String,
    /// The last attempt's error.
    pub error: String,
    /// Attempts that failed so far.
    pub attempts: u32,
    pub first_failed_at: DateTime<Utc>,
    pub last_attempt_at: DateTime<Utc>,
    pub event_key: String,
    pub summary: String,
    pub received_at: DateTime<Utc>,
}

fn micros(at: DateTime<Utc>) -> String {
    format!("{:016}", at.timestamp_micros())
}

impl Record for Failure {
    const KIND: &'static str = "consumer_failure";

    fn sort_parts(&self) -> Vec<String> {
        vec![micros(self.last_attempt_at), self.delivery_id.clone(), self.consumer.clone()]
    }
}

/// Records that `consumer` failed on `delivery` (`attempts` more failed attempts); the
/// failure as now stored.
pub async fn record(
    store: &dyn StateStore,
    consumer: &str,
    delivery: &Delivery,
    error: &str,
    attempts: u32,
) -> Result<Failure, StoreError> {
    let id = &delivery.integration_id;
    let parts = [delivery.delivery_id.as_str(), consumer];
    for _ in 0..WRITE_ATTEMPTS {
        let now = Utc::now();
        let (failure, condition) = match FAILURES.get(store, id, &parts).await? {
            Some(known) => (
                Failure {
                    error: error.to_owned(),
                    attempts: known.record.attempts.saturating_add(attempts),
                    last_attempt_at: now,
                    ..known.record
                },
                Condition::Version(known.version),
            ),
            None => (
                Failure {
                    delivery_id: delivery.delivery_id.clone(),
                    consumer: consumer.to_owned(),
                    error: error.to_owned(),
                    attempts,
                    first_failed_at: now,
                    last_attempt_at: now,
                    event_key: delivery.event_key.clone(),
                    summary: delivery.summary.clone(),
                    received_at: delivery.received_at,
                },
                Condition::Absent,
            ),
        };
        let item = FAILURES.item(id, &parts, &failure)?.with_expiry((delivery.received_at + LIFETIME).timestamp());
        match store.put(item, condition).await {
            Ok(_) => return Ok(failure),
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable("the failure record keeps changing concurrently".into()))
}

/// Removes the failure of `consumer` on a delivery once it succeeded; whether there was one.
pub async fn clear(
    store: &dyn StateStore,
    integration_id: &str,
    delivery_id: &str,
    consumer: &str,
) -> Result<bool, StoreError> {
    let parts = [delivery_id, consumer];
    let Some(known) = FAILURES.get(store, integration_id, &parts).await? else { return Ok(false) };
    match FAILURES.delete(store, integration_id, &parts, Condition::Version(known.version)).await {
        // Changed meanwhile: a concurrent attempt failed again, and its record stands.
        Ok(()) | Err(StoreError::ConditionFailed { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

/// An integration's failures, newest attempt first.
pub async fn list(
    store: &dyn StateStore,
    integration_id: &str,
    limit: usize,
    cursor: Option<String>,
) -> Result<(Vec<Failure>, Option<String>), StoreError> {
    FAILURES.page_sorted(store, integration_id, &[], true, limit, cursor).await
}

/// Whether retrying the same work later may succeed (Bitbucket down or rate limiting, a claim
/// still held, the store or secret store failing) — as against a refusal that will stay one.
pub fn retryable(e: &Error) -> bool {
    match e {
        Error::Retry(_) | Error::Store(_) | Error::Secrets(_) => true,
        Error::Bitbucket(b) => matches!(
            b,
            BitbucketError::Unavailable(_)
                | BitbucketError::Network(_)
                | BitbucketError::RateLimited
                | BitbucketError::Deferred(_)
        ),
        _ => false,
    }
}

/// What a replay did at one consumer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replayed {
    pub consumer: String,
    #[serde(flatten)]
    pub outcome: ReplayOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplayOutcome {
    /// It acted; `effects` says what it did (`repeated` names what an earlier processing did).
    Acted { effects: Value },
    /// Nothing to do (the consumer never acts on this integration).
    Skipped,
    /// The integration cannot act now: parked with the reason, acted on once it can.
    Parked { reason: String },
    /// It failed again: kept in the failures with one more attempt.
    Failed { error: String, retryable: bool },
}

impl Replayed {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, ReplayOutcome::Failed { .. })
    }
}

/// Hands one consumer one delivery, keeping its failures list in step: a success clears the
/// delivery's failure, a failure is recorded (`attempts` more).
pub async fn run_recorded(
    consumer: &dyn DeliveryConsumer,
    delivery: &Delivery,
    attempts: u32,
) -> (Result<Outcome, Error>, Result<(), StoreError>) {
    let store = consumer.context().store.as_ref();
    let result = consumers::consume(consumer, delivery).await;
    let kept = match &result {
        Ok(_) => clear(store, &delivery.integration_id, &delivery.delivery_id, consumer.name()).await.map(|_| ()),
        Err(e) => record(store, consumer.name(), delivery, &e.to_string(), attempts).await.map(|_| ()),
    };
    (result, kept)
}

/// Runs every consumer on one recorded delivery again, through the same claims and conditional
/// writes as its first processing (so nothing is done twice), and answers what each did.
pub async fn replay(
    consumers: &[Arc<dyn DeliveryConsumer>],
    integration_id: &str,
    delivery_id: &str,
) -> Result<Vec<Replayed>, Error> {
    let Some(first) = consumers.first() else { return Ok(Vec::new()) };
    let ctx = first.context();
    ctx.get(integration_id).await?;
    let delivery = DELIVERIES
        .get(ctx.store.as_ref(), integration_id, &[delivery_id])
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no delivery `{delivery_id}` recorded for integration `{integration_id}` (deliveries are kept for the retention period)"
            ))
        })?
        .record;
    let mut done = Vec::new();
    for consumer in consumers {
        let span = tracing::info_span!("replay", delivery_id, integration = integration_id, consumer = consumer.name());
        let (result, kept) = run_recorded(consumer.as_ref(), &delivery, 1).instrument(span.clone()).await;
        let _enter = span.enter();
        if let Err(e) = kept {
            tracing::warn!(error = %e, "the failures list was not updated");
        }
        let outcome = match result {
            Ok(Outcome::Acted(effects)) => ReplayOutcome::Acted { effects },
            Ok(Outcome::Skipped) => ReplayOutcome::Skipped,
            Ok(Outcome::Parked(reason)) => ReplayOutcome::Parked { reason },
            Err(e) => ReplayOutcome::Failed { retryable: retryable(&e), error: e.to_string() },
        };
        tracing::info!(?outcome, "delivery replayed");
        done.push(Replayed { consumer: consumer.name().to_owned(), outcome });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::webhook::Flavor;

    fn delivery(id: &str) -> Delivery {
        Delivery {
            event_id: "e".into(),
            integration_id: "int".into(),
            delivery_id: id.into(),
            event_key: "repo:push".into(),
            flavor: Flavor::Cloud,
            received_at: Utc::now(),
            hook_uuid: None,
            attempt: None,
            repository: None,
            events: Vec::new(),
            summary: "branch main updated".into(),
            body_xxh3: None,
        }
    }

    #[tokio::test]
    async fn failures_count_attempts_and_clear() {
        let store = MemoryStore::new();
        record(&store, "pipelines", &delivery("d#1"), "Bitbucket is unavailable", 1).await.unwrap();
        let again = record(&store, "pipelines", &delivery("d#1"), "still unavailable", 3).await.unwrap();
        assert_eq!((again.attempts, again.error.as_str()), (4, "still unavailable"));
        record(&store, "environments", &delivery("d#1"), "x", 1).await.unwrap();
        record(&store, "pipelines", &delivery("d"), "y", 1).await.unwrap();
        let (listed, _) = list(&store, "int", 10, None).await.unwrap();
        assert_eq!(listed.len(), 3, "one per (delivery, consumer), never mixed up: {listed:?}");
        assert_eq!(listed[0].delivery_id, "d", "newest attempt first");
        assert!(clear(&store, "int", "d#1", "pipelines").await.unwrap());
        assert!(!clear(&store, "int", "d#1", "pipelines").await.unwrap());
        assert_eq!(list(&store, "int", 10, None).await.unwrap().0.len(), 2);
    }
}
