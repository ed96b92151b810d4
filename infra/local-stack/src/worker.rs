//! The in-process worker: what the table's stream feeds the pipeline-trigger and branch-pruner
//! Lambdas on AWS, one consumer after the other for each item. A failed record is retried a
//! few times per consumer, as Lambda retries a stream batch per function.
//!
//! The feed is in memory: deliveries recorded but not yet processed when the process stopped
//! are gone from it, where a stream would redeliver them. So a delivery both consumers handled
//! gets a marker ([`FEED_MARKS`], in its integration's partition), and on start the worker
//! first re-feeds the recent deliveries without one. A marker rather than re-feeding everything
//! recent: processing is idempotent, but a replay still costs Bitbucket requests and re-applies
//! old pull request events, and a stream does not replay processed records either. Domain
//! events not yet published are handed to the relay again on start for the same reason.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::consumers::DeliveryConsumer;
use domain::delivery::{Delivery, FeedMark};
use domain::outbox::{self, OutboxEntry, Relay};
use domain::store::{Condition, Item, StateStore, StoreError};
use domain::tables::{DELIVERIES, FEED_MARKS, INTEGRATIONS, Record};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How far back the startup sweep looks: a DynamoDB stream keeps records 24 hours, so older
/// deliveries would not be redelivered on AWS either. Markers live a little longer.
const SWEEP_WINDOW: chrono::Duration = chrono::Duration::hours(24);
const MARKER_LIFETIME: chrono::Duration = chrono::Duration::hours(25);

/// Whether the local worker has handled this delivery (both consumers succeeded).
pub async fn is_processed(store: &dyn StateStore, integration_id: &str, delivery_id: &str) -> Result<bool, StoreError> {
    Ok(FEED_MARKS.get(store, integration_id, &[delivery_id]).await?.is_some())
}

/// Starts the worker on `feed`, after the startup sweep. `store` is the undecorated store, so
/// markers are not fed back.
pub(crate) fn spawn(
    consumers: Vec<Arc<dyn DeliveryConsumer>>,
    relay: Option<Relay>,
    store: Arc<dyn StateStore>,
    mut feed: mpsc::UnboundedReceiver<Item>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // What the event-publisher Lambda does with the table's stream: outbox records are
        // published (in their own task, so a slow receiver never holds deliveries up).
        let (outbox, mut waiting) = mpsc::unbounded_channel::<Item>();
        if let Some(relay) = relay {
            // Events recorded but not published before the last stop: the in-memory feed lost
            // them, where the stream would have kept them.
            match unpublished_events(store.as_ref()).await {
                Ok(backlog) => backlog.into_iter().for_each(|item| drop(outbox.send(item))),
                Err(e) => tracing::warn!(error = %e, "unpublished events not read; they wait for the next start"),
            }
            tokio::spawn(async move {
                while let Some(item) = waiting.recv().await {
                    if !retried(|| async { relay.relay(&item).await.map(drop).map_err(|e| e.to_string()) }).await {
                        tracing::warn!(sk = %item.key.sk, "domain event not published; it stays in the activity feed");
                    }
                }
            });
        }
        match unprocessed(store.as_ref(), Utc::now()).await {
            Ok(backlog) => {
                if !backlog.is_empty() {
                    tracing::info!(count = backlog.len(), "re-feeding deliveries not processed before the last stop");
                }
                for item in backlog {
                    consume(&consumers, store.as_ref(), &item).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "startup sweep failed; unprocessed deliveries wait for the next start")
            }
        }
        while let Some(item) = feed.recv().await {
            if item.kind == OutboxEntry::KIND {
                let _ = outbox.send(item);
                continue;
            }
            consume(&consumers, store.as_ref(), &item).await;
        }
    })
}

/// Publishing one outbox record, retried a few times.
async fn retried<F: Future<Output = Result<(), String>>>(mut attempt: impl FnMut() -> F) -> bool {
    for n in 1..=ATTEMPTS {
        if attempt().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500 * n)).await;
    }
    false
}

/// Attempts per consumer before a delivery's failure is recorded (`GET …/failures`).
const ATTEMPTS: u64 = 3;

/// A delivery to one consumer, retried a few times (a held claim is waited for, as on the
/// stream); a failure is recorded after the last attempt (`GET …/failures`), a success clears one.
async fn delivered(consumer: &dyn DeliveryConsumer, item: &Item) -> bool {
    let mut wait = entry::lambda::CLAIM_WAIT_PER_INVOCATION;
    for attempt in 1..=ATTEMPTS {
        let record = (attempt == ATTEMPTS).then_some(ATTEMPTS as u32);
        if entry::lambda::deliver_kept(consumer, item, record, &mut wait).await.is_ok() {
            return true;
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
        }
    }
    false
}

/// One new image to every consumer in turn (as the stream hands it to each consumer's
/// function), deliveries only, and only when first written: the stream's filter is `INSERT`.
async fn consume(consumers: &[Arc<dyn DeliveryConsumer>], store: &dyn StateStore, item: &Item) {
    if item.kind != Delivery::KIND || item.version != 1 {
        return;
    }
    let (Some(integration_id), Some(delivery_id)) = (field(item, "integration_id"), field(item, "delivery_id")) else {
        tracing::error!(pk = %item.key.pk, sk = %item.key.sk, "a delivery record without ids skipped");
        return;
    };
    // A delivery recorded while the sweep read the backlog arrives twice: handle it once.
    if is_processed(store, integration_id, delivery_id).await.unwrap_or(false) {
        return;
    }
    let mut all_done = true;
    for consumer in consumers {
        all_done &= delivered(consumer.as_ref(), item).await;
    }
    if !all_done {
        // No marker: the next start tries it again.
        return;
    }
    let now = Utc::now();
    let marker = FeedMark { delivery_id: delivery_id.to_owned(), processed_at: now };
    let written = match FEED_MARKS.item(integration_id, &[delivery_id], &marker) {
        Ok(marker) => store.put(marker.with_expiry((now + MARKER_LIFETIME).timestamp()), Condition::None).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::warn!(error = %e, delivery_id, "processed marker not written; the next start re-feeds it");
    }
}

fn field<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.attrs.get(name).and_then(|v| v.as_str())
}

/// Every integration's events not yet published, oldest first per integration.
async fn unpublished_events(store: &dyn StateStore) -> Result<Vec<Item>, StoreError> {
    let mut backlog = Vec::new();
    for integration in INTEGRATIONS.all(store, "", &[]).await? {
        backlog.extend(outbox::unpublished(store, &integration.record.id).await?);
    }
    Ok(backlog)
}

/// Deliveries of the last [`SWEEP_WINDOW`] without a marker, oldest first (the order they were
/// recorded in, as a stream would hand them over).
async fn unprocessed(store: &dyn StateStore, now: DateTime<Utc>) -> Result<Vec<Item>, StoreError> {
    let since = now - SWEEP_WINDOW;
    let mut backlog = Vec::new();
    for integration in INTEGRATIONS.all(store, "", &[]).await? {
        let id = integration.record.id.as_str();
        let processed: HashSet<String> =
            FEED_MARKS.all(store, id, &[]).await?.into_iter().map(|marker| marker.record.delivery_id).collect();
        let mut recent = Vec::new();
        let mut cursor = None;
        'pages: loop {
            let (page, next) = DELIVERIES.page_sorted(store, id, &[], true, 100, cursor).await?;
            for delivery in page {
                if delivery.received_at < since {
                    break 'pages;
                }
                if !processed.contains(&delivery.delivery_id) {
                    let parts = [delivery.delivery_id.as_str()];
                    let mut item = DELIVERIES.item(id, &parts, &delivery)?;
                    item.version = 1;
                    recent.push(item);
                }
            }
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        recent.reverse();
        backlog.extend(recent);
    }
    Ok(backlog)
}
