//! One Lambda binary, several event sources: HTTP API requests go to the function's router (as
//! `lambda_http::run` would), anything else (a DynamoDB stream batch, a schedule) to the
//! function's own handler. Also the reading of stream batches.

use std::fmt::{Debug, Display};
use std::future::Future;

use lambda_http::lambda_runtime::{self, LambdaEvent};
use lambda_http::request::LambdaRequest;
use serde_json::{Value, json};
use tower::ServiceExt;

use tracing::Instrument;

use crate::domain::delivery::{self, Delivery};
use crate::store::{Item, StoreError, item_from_stream_image};

pub type Error = lambda_http::Error;

/// Serves `router` for HTTP events and `other` for every other event.
pub async fn serve<F, Fut>(router: axum::Router, other: F) -> Result<(), Error>
where
    F: Fn(Value) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, Error>> + Send,
{
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<Value>| {
        let (router, other) = (router.clone(), other.clone());
        async move {
            let (payload, context) = event.into_parts();
            if payload.get("requestContext").is_some() {
                let request: LambdaRequest = serde_json::from_value(payload)?;
                let adapter = lambda_http::Adapter::from(router);
                let response = adapter.oneshot(LambdaEvent::new(request, context)).await?;
                Ok(serde_json::to_value(response)?)
            } else {
                other(payload).await
            }
        }
    }))
    .await
}

/// The records of a DynamoDB stream batch: each one's sequence number and new image.
pub fn stream_records(batch: &Value) -> Vec<(String, Result<Item, StoreError>)> {
    let records = batch.get("Records").and_then(Value::as_array).cloned().unwrap_or_default();
    records
        .iter()
        .map(|r| {
            let sequence = r.pointer("/dynamodb/SequenceNumber").and_then(Value::as_str).unwrap_or_default().to_owned();
            let item = match r.pointer("/dynamodb/NewImage") {
                Some(image) => item_from_stream_image(image),
                None => Err(StoreError::Corrupt("a stream record without NewImage".into())),
            };
            (sequence, item)
        })
        .collect()
}

/// A stream batch: `handle` for each record's new image; the records it fails are answered as
/// `batchItemFailures`, so Lambda retries those alone. An image that cannot be read will not
/// read better on retry: it is logged and skipped.
pub async fn on_stream<F, Fut>(batch: &Value, handle: F) -> Value
where
    F: Fn(Item) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut failed = Vec::new();
    for (sequence, item) in stream_records(batch) {
        match item {
            Ok(item) => {
                if handle(item).await.is_err() {
                    failed.push(sequence);
                }
            }
            Err(e) => tracing::error!(error = %e, sequence, "unreadable stream record skipped"),
        }
    }
    batch_failures(&failed)
}

/// Hands `item` to `handle` when it is a delivery record (on AWS the stream's filter already
/// selects only those), logging under the delivery's ids. `Err` means "retry this record".
pub async fn on_delivery_item<T, E, F, Fut>(item: &Item, handle: F) -> Result<(), String>
where
    T: Debug,
    E: Display,
    F: FnOnce(Delivery) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    if item.kind != delivery::KIND {
        return Ok(());
    }
    let delivery: Delivery = item.record().map_err(|e| e.to_string())?;
    let span =
        tracing::info_span!("delivery", delivery_id = %delivery.delivery_id, integration = %delivery.integration_id);
    async move {
        match handle(delivery).await {
            Ok(effects) => {
                tracing::info!(?effects, "delivery processed");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "delivery processing failed; it will be retried");
                Err(e.to_string())
            }
        }
    }
    .instrument(span)
    .await
}

/// The answer that makes Lambda retry only the failed records (`ReportBatchItemFailures`).
pub fn batch_failures(failed: &[String]) -> Value {
    json!({"batchItemFailures": failed.iter().map(|s| json!({"itemIdentifier": s})).collect::<Vec<_>>()})
}

/// Whether an event is an EventBridge schedule.
pub fn is_schedule(event: &Value) -> bool {
    event.get("source").and_then(Value::as_str) == Some("aws.events")
        || event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_images_become_items() {
        let batch = json!({"Records": [{
            "eventName": "INSERT",
            "dynamodb": {"SequenceNumber": "111", "NewImage": {
                "pk": {"S": "INT#a"}, "sk": {"S": "DLV#d"}, "kind": {"S": "delivery"}, "version": {"N": "1"},
                "summary": {"S": "branch main updated"}, "events": {"L": [{"M": {"type": {"S": "ping"}}}]}
            }}
        }, {"dynamodb": {"SequenceNumber": "112"}}]});
        let records = stream_records(&batch);
        let item = records[0].1.as_ref().unwrap();
        assert_eq!((records[0].0.as_str(), item.kind.as_str(), item.version), ("111", "delivery", 1));
        assert_eq!(item.attrs["events"][0]["type"], "ping");
        assert!(records[1].1.is_err());
        assert_eq!(batch_failures(&["112".into()])["batchItemFailures"][0]["itemIdentifier"], "112");
        assert!(is_schedule(&json!({"source": "aws.events", "detail-type": "Scheduled Event"})));
    }
}
