//! Parked deliveries: a delivery recorded while its integration was connected, which a consumer
//! (pipelines, environments) could not act on because the integration was disconnected (or, for
//! pipelines, its credential refused) by the time the delivery reached it. The consumer parks a
//! copy with the reason instead of dropping its effects; once the integration can act again,
//! the consumer's scheduled run works through its parked deliveries, oldest first, and removes
//! each one it handled. `GET /integrations/{id}/parked` lists them.
//!
//! Records `PRK#{consumer}#{received µs}#{delivery id}` in the integration's partition, sorted
//! on the LSI by `PRK#{received µs}#{consumer}#{delivery id}` for the newest-first listing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::delivery::Delivery;
use super::integration;
use crate::store::{Condition, Index, Item, Key, Query, StateStore, StoreError, compose, query_all};

pub const KIND: &str = "parked_delivery";
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

fn key(consumer: &str, delivery: &Delivery) -> Key {
    let sk = compose(&["PRK", consumer, &micros(delivery.received_at), &delivery.delivery_id]);
    Key::new(integration::partition(&delivery.integration_id), sk)
}

/// Parks `delivery` for `consumer`; parking it again (a redelivery) keeps the first record.
pub async fn park(store: &dyn StateStore, consumer: &str, delivery: &Delivery, reason: &str) -> Result<(), StoreError> {
    let parked = Parked {
        consumer: consumer.to_owned(),
        reason: reason.to_owned(),
        parked_at: Utc::now(),
        delivery: delivery.clone(),
    };
    let sort = compose(&["PRK", &micros(delivery.received_at), consumer, &delivery.delivery_id]);
    let item = Item::from_record(key(consumer, delivery), KIND, &parked)?
        .with_sort(sort)
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
    let prefix = format!("{}#", compose(&["PRK", consumer]));
    let items = query_all(store, &integration::partition(integration_id), &prefix).await?;
    items.iter().map(|i| Ok((i.record()?, i.version))).collect()
}

/// Removes a parked delivery once handled (unless it changed since it was read).
pub async fn handled(store: &dyn StateStore, parked: &Parked, version: u64) -> Result<(), StoreError> {
    match store.delete(&key(&parked.consumer, &parked.delivery), Condition::Version(version)).await {
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
    let page = store
        .query(&Query {
            pk: integration::partition(integration_id),
            index: Index::Sorted { prefix: "PRK#".into() },
            descending: true,
            limit,
            cursor,
        })
        .await?;
    Ok((page.items.iter().map(Item::record).collect::<Result<_, _>>()?, page.cursor))
}

/// Works through `consumer`'s parked deliveries of one integration, oldest first: `handle` acts
/// on each and says whether it could (`false`: it was parked again, so the integration cannot
/// act yet and the rest wait too); each handled one is removed. How many were handled.
pub async fn drain<F, Fut, E>(
    store: &dyn StateStore,
    integration_id: &str,
    consumer: &str,
    handle: F,
) -> Result<usize, E>
where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = Result<bool, E>>,
    E: From<StoreError>,
{
    let mut done = 0;
    for (parked, version) in waiting(store, integration_id, consumer).await? {
        if !handle(parked.delivery.clone()).await? {
            break;
        }
        handled(store, &parked, version).await?;
        done += 1;
    }
    Ok(done)
}
