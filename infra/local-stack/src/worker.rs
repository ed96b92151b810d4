//! The in-process worker: what the table's stream feeds the pipeline-trigger and branch-pruner
//! Lambdas on AWS, one consumer after the other for each item. A failed record is retried a
//! few times per consumer, as Lambda retries a stream batch per function.
//!
//! The feed is in memory: deliveries recorded but not yet processed when the process stopped
//! are gone from it, where a stream would redeliver them. So a delivery both consumers handled
//! gets a marker (`FED#{delivery id}` in its integration's partition), and on start the worker
//! first re-feeds the recent deliveries without one. A marker rather than re-feeding everything
//! recent: processing is idempotent, but a replay still costs Bitbucket requests and re-applies
//! old pull request events, and a stream does not replay processed records either.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use shared::domain::delivery;
use shared::domain::integration;
use shared::domain::pipelines::Pipelines;
use shared::domain::pruning::Pruner;
use shared::store::{Condition, Index, Item, Key, Query, StateStore, StoreError, query_all};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const MARKER_KIND: &str = "local_delivery_processed";
/// How far back the startup sweep looks: a DynamoDB stream keeps records 24 hours, so older
/// deliveries would not be redelivered on AWS either. Markers live a little longer.
const SWEEP_WINDOW: chrono::Duration = chrono::Duration::hours(24);
const MARKER_LIFETIME: chrono::Duration = chrono::Duration::hours(25);

fn marker_key(integration_id: &str, delivery_id: &str) -> Key {
    Key::new(integration::partition(integration_id), format!("FED#{delivery_id}"))
}

/// Whether the local worker has handled this delivery (both consumers succeeded).
pub async fn is_processed(store: &dyn StateStore, integration_id: &str, delivery_id: &str) -> Result<bool, StoreError> {
    Ok(store.get(&marker_key(integration_id, delivery_id)).await?.is_some())
}

/// Starts the worker on `feed`, after the startup sweep. `store` is the undecorated store, so
/// markers are not fed back.
pub(crate) fn spawn(
    pipelines: Arc<Pipelines>,
    pruner: Arc<Pruner>,
    store: Arc<dyn StateStore>,
    mut feed: mpsc::UnboundedReceiver<Item>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        match unprocessed(store.as_ref(), Utc::now()).await {
            Ok(backlog) => {
                if !backlog.is_empty() {
                    tracing::info!(count = backlog.len(), "re-feeding deliveries not processed before the last stop");
                }
                for item in backlog {
                    consume(&pipelines, &pruner, store.as_ref(), &item).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "startup sweep failed; unprocessed deliveries wait for the next start")
            }
        }
        while let Some(item) = feed.recv().await {
            consume(&pipelines, &pruner, store.as_ref(), &item).await;
        }
    })
}

async fn retried<F: Future<Output = Result<(), String>>>(mut consume: impl FnMut() -> F) -> bool {
    for attempt in 1..=3u64 {
        if consume().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
    }
    false
}

async fn consume(pipelines: &Pipelines, pruner: &Pruner, store: &dyn StateStore, item: &Item) {
    if item.kind != delivery::KIND {
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
    let triggered = retried(|| pipeline_trigger::on_item(pipelines, item)).await;
    let pruned = retried(|| branch_pruner::on_item(pruner, item)).await;
    if !(triggered && pruned) {
        // No marker: the next start tries it again.
        return;
    }
    let now = Utc::now();
    let marker = json!({"delivery_id": delivery_id, "processed_at": now});
    let written = match Item::from_record(marker_key(integration_id, delivery_id), MARKER_KIND, &marker) {
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

/// Deliveries of the last [`SWEEP_WINDOW`] without a marker, oldest first (the order they were
/// recorded in, as a stream would hand them over).
async fn unprocessed(store: &dyn StateStore, now: DateTime<Utc>) -> Result<Vec<Item>, StoreError> {
    let since = now - SWEEP_WINDOW;
    let mut backlog = Vec::new();
    for integration in integration::list(store).await? {
        let partition = integration::partition(&integration.id);
        let processed: HashSet<String> = query_all(store, &partition, "FED#")
            .await?
            .iter()
            .filter_map(|marker| marker.key.sk.strip_prefix("FED#").map(str::to_owned))
            .collect();
        let mut recent = Vec::new();
        let mut cursor = None;
        'pages: loop {
            let page = store
                .query(&Query {
                    pk: partition.clone(),
                    index: Index::Sorted { prefix: "EVT#".into() },
                    descending: true,
                    limit: 100,
                    cursor,
                })
                .await?;
            for item in page.items {
                let received = field(&item, "received_at").and_then(|t| t.parse::<DateTime<Utc>>().ok());
                if received.is_some_and(|t| t < since) {
                    break 'pages;
                }
                if field(&item, "delivery_id").is_some_and(|id| !processed.contains(id)) {
                    recent.push(item);
                }
            }
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
        recent.reverse();
        backlog.extend(recent);
    }
    Ok(backlog)
}
