//! Parked deliveries: a delivery recorded while its integration was connected, which a consumer
//! (pipelines, environments) could not act on because the integration was disconnected (or, for
//! pipelines, its credential refused) by the time the delivery reached it. The consumer parks a
//! copy with the reason instead of dropping its effects; once the integration can act again,
//! the consumer's scheduled run works through its parked deliveries, oldest first, and removes
//! each one it handled ([`crate::consumers::drain`]). `GET /integrations/{id}/parked` lists them.
//!
//! Stored in [`PARKED`]: keyed by (consumer, received µs, delivery id) so each consumer's are
//! read oldest first, and sorted by (received µs, consumer, delivery id) for the newest-first
//! listing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::delivery::Delivery;
use crate::store::{Condition, StateStore, StoreError};
use crate::tables::{PARKED, Record};
/// A parked delivery older than this is dropped: its events are too old to act on (and a
/// DynamoDB stream would not have kept it either).
const LIFETIME: chrono::Duration = chrono::Duration::days(30);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parked {
    pub consumer: String,
    pub reason: String,
    pub parked_at: DateTime<Utc>,
    pub delivery: Delivery,
}

fn micros(at: DateTime<Utc>) -> String {
    format!("{:016}", at.timestamp_micros())
}

impl Record for Parked {
    const KIND: &'static str = "parked_delivery";

    fn sort_parts(&self) -> Vec<String> {
        vec![micros(self.delivery.received_at), self.consumer.clone(), self.delivery.delivery_id.clone()]
    }
}

impl Parked {
    fn parts(&self) -> [String; 3] {
        [self.consumer.clone(), micros(self.delivery.received_at), self.delivery.delivery_id.clone()]
    }
}

/// Parks `delivery` for `consumer`; parking it again (a redelivery) keeps the first record.
pub async fn park(store: &dyn StateStore, consumer: &str, delivery: &Delivery, reason: &str) -> Result<(), StoreError> {
    let parked = Parked {
        consumer: consumer.to_owned(),
        reason: reason.to_owned(),
        parked_at: Utc::now(),
        delivery: delivery.clone(),
    };
    let parts = parked.parts();
    let item = PARKED
        .item(&delivery.integration_id, &parts.each_ref().map(String::as_str), &parked)?
        .with_expiry((delivery.received_at + LIFETIME).timestamp());
    match store.put(item, Condition::Absent).await {
        Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `consumer`'s parked deliveries of one integration, oldest first, with their versions.
pub async fn waiting(
    store: &dyn StateStore,
    integration_id: &str,
    consumer: &str,
) -> Result<Vec<(Parked, u64)>, StoreError> {
    let waiting = PARKED.all(store, integration_id, &[consumer]).await?;
    Ok(waiting.into_iter().map(|v| (v.record, v.version)).collect())
}

/// Removes a parked delivery once handled (unless it changed since it was read).
pub async fn handled(store: &dyn StateStore, parked: &Parked, version: u64) -> Result<(), StoreError> {
    let parts = parked.parts();
    let parts = parts.each_ref().map(String::as_str);
    match PARKED.delete(store, &parked.delivery.integration_id, &parts, Condition::Version(version)).await {
        Ok(()) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Every consumer's parked deliveries, newest first.
pub async fn list(
    store: &dyn StateStore,
    integration_id: &str,
    limit: usize,
    cursor: Option<String>,
) -> Result<(Vec<Parked>, Option<String>), StoreError> {
    PARKED.page_sorted(store, integration_id, &[], true, limit, cursor).await
}
