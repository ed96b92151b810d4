//! The Lambda boundary. One binary serves every event source its function has: HTTP API requests
//! go to its router (as `lambda_http::run` would), DynamoDB stream batches to its delivery
//! consumers, schedules to its scheduled work. Events are read into [`Event`] first, so what a
//! payload is gets decided (and tested) in one place; config and clients are built once per cold
//! start whatever woke the function.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use domain::Delivery;
use domain::consumers::{self, DeliveryConsumer};
use domain::outbox::Relay;
use domain::store::{Item, StoreError};
use domain::tables::Record;
use lambda_http::lambda_runtime::{self, LambdaEvent};
use lambda_http::request::LambdaRequest;
use serde_json::{Value, json};
use tower::ServiceExt;
use tracing::Instrument;

use crate::http::{AdminGuard, require_iam_or_token};
use crate::root::Root;
use crate::settings::{ConfigError, Settings};

pub type Error = lambda_http::Error;

/// A function's scheduled work: what it answers is logged and returned to Lambda.
pub type Scheduled = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Value> + Send>> + Send + Sync>;

/// Who may call a function's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the webhook receiver (its own HMAC check authenticates Bitbucket).
    Public,
    /// An IAM-authorized caller, or the configured bearer token ([`AdminGuard`]).
    Admin,
}

/// What a function serves.
pub struct Function {
    /// Its routes, bare: [`Function::router`] adds the guard its access needs and the shared layers.
    pub routes: axum::Router,
    pub access: Access,
    /// The consumers of the state table's stream (deliveries), in order.
    pub consumers: Vec<Arc<dyn DeliveryConsumer>>,
    pub schedule: Option<Scheduled>,
    /// Publishes the outbox records of the table's stream (domain events).
    pub relay: Option<Arc<Relay>>,
}

impl Function {
    /// An admin function that only serves HTTP.
    pub fn http(routes: axum::Router) -> Self {
        Function { routes, access: Access::Admin, consumers: Vec::new(), schedule: None, relay: None }
    }

    /// The router to serve: an admin function's routes behind `guard`, then the shared layers
    /// (request ids, JSON 404s).
    pub fn router(&self, guard: AdminGuard) -> axum::Router {
        let routes = match self.access {
            Access::Public => self.routes.clone(),
            Access::Admin => self.routes.clone().route_layer(from_fn_with_state(guard, require_iam_or_token)),
        };
        crate::http::finish(routes)
    }
}

/// A function as served: its router (guarded), consumers and schedule.
pub struct Served {
    pub router: axum::Router,
    pub consumers: Vec<Arc<dyn DeliveryConsumer>>,
    pub schedule: Option<Scheduled>,
    pub relay: Option<Arc<Relay>>,
}

impl Served {
    pub fn new(function: Function, guard: AdminGuard) -> Self {
        let router = function.router(guard);
        Served { router, consumers: function.consumers, schedule: function.schedule, relay: function.relay }
    }
}

/// Wraps an async closure as a function's scheduled work.
pub fn scheduled<F, Fut>(work: F) -> Scheduled
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Value> + Send + 'static,
{
    Arc::new(move || Box::pin(work()))
}

/// Every `main.rs`: logs, settings (once), the AWS root, the function, then serve.
pub async fn run(build: impl FnOnce(&Root) -> Result<Function, ConfigError>) -> Result<(), Error> {
    crate::telemetry::init();
    let root = Root::aws(Settings::from_env()?)?;
    let function = Arc::new(Served::new(build(&root)?, root.admin_guard()));
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<Value>| {
        let function = function.clone();
        async move { handle(&function, event).await }
    }))
    .await
}

/// One stream record: its sequence number (what `batchItemFailures` names) and its new image.
#[derive(Debug)]
pub struct StreamRecord {
    pub sequence: String,
    pub image: Result<Item, StoreError>,
}

/// What woke the function.
#[derive(Debug)]
pub enum Event {
    Http(Box<LambdaRequest>),
    Stream(Vec<StreamRecord>),
    Schedule,
    /// Anything else: answered, logged, never an error (Lambda would retry it).
    Other(String),
}

impl Event {
    pub fn read(payload: Value) -> Result<Event, serde_json::Error> {
        if payload.get("requestContext").is_some() {
            return Ok(Event::Http(Box::new(serde_json::from_value(payload)?)));
        }
        let source = |v: &Value| v.get("eventSource").and_then(Value::as_str).map(str::to_owned);
        if let Some(records) = payload.get("Records").and_then(Value::as_array) {
            if records.iter().all(|r| source(r).as_deref() == Some("aws:dynamodb")) {
                return Ok(Event::Stream(records.iter().map(stream_record).collect()));
            }
            let sources: Vec<String> = records.iter().filter_map(source).collect();
            return Ok(Event::Other(format!("records from {}", sources.join(", "))));
        }
        if payload.get("source").and_then(Value::as_str) == Some("aws.events")
            || payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        {
            return Ok(Event::Schedule);
        }
        Ok(Event::Other("an event of no known shape".into()))
    }
}

fn stream_record(record: &Value) -> StreamRecord {
    let sequence = record.pointer("/dynamodb/SequenceNumber").and_then(Value::as_str).unwrap_or_default().to_owned();
    let image = match record.pointer("/dynamodb/NewImage") {
        Some(image) => aws_adapters::item_from_stream_image(image),
        None => Err(StoreError::Corrupt("a stream record without NewImage".into())),
    };
    StreamRecord { sequence, image }
}

/// Answers one event the way its kind needs.
pub async fn handle(function: &Served, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    match Event::read(payload)? {
        Event::Http(request) => {
            let adapter = lambda_http::Adapter::from(function.router.clone());
            let response = adapter.oneshot(LambdaEvent::new(*request, context)).await?;
            Ok(serde_json::to_value(response)?)
        }
        Event::Stream(records) => Ok(match &function.relay {
            Some(relay) => on_outbox_stream(relay, records).await,
            None => on_stream(&function.consumers, records).await,
        }),
        Event::Schedule => match &function.schedule {
            Some(work) => Ok(work().await),
            None => Ok(json!({"ignored": "this function has no schedule"})),
        },
        Event::Other(what) => {
            tracing::warn!(what, "event ignored");
            Ok(json!({"ignored": what}))
        }
    }
}

/// A stream batch: each record to each consumer; the records a consumer failed are answered as
/// `batchItemFailures`, so Lambda retries those alone. An image that cannot be read will not
/// read better on retry: it is logged and skipped.
pub async fn on_stream(consumers: &[Arc<dyn DeliveryConsumer>], records: Vec<StreamRecord>) -> Value {
    let mut failed = Vec::new();
    for StreamRecord { sequence, image } in records {
        let item = match image {
            Ok(item) => item,
            Err(e) => {
                tracing::error!(error = %e, sequence, "unreadable stream record skipped");
                continue;
            }
        };
        for consumer in consumers {
            if deliver(consumer.as_ref(), &item).await.is_err() {
                failed.push(sequence.clone());
                break;
            }
        }
    }
    batch_failures(&failed)
}

/// A stream batch of outbox records: each published (a failure is retried alone).
pub async fn on_outbox_stream(relay: &Relay, records: Vec<StreamRecord>) -> Value {
    let mut failed = Vec::new();
    for StreamRecord { sequence, image } in records {
        let item = match image {
            Ok(item) => item,
            Err(e) => {
                tracing::error!(error = %e, sequence, "unreadable stream record skipped");
                continue;
            }
        };
        match relay.relay(&item).await {
            Ok(published) => tracing::info!(published, pk = %item.key.pk, sk = %item.key.sk, "outbox record relayed"),
            Err(e) => {
                tracing::warn!(error = %e, sequence, "outbox record not published; it will be retried");
                failed.push(sequence);
            }
        }
    }
    batch_failures(&failed)
}

/// Hands a new table image to `consumer` when it is a delivery record (on AWS the stream's
/// filter already selects only those), logging under the delivery's ids. `Err` means "retry".
pub async fn deliver(consumer: &dyn DeliveryConsumer, item: &Item) -> Result<(), String> {
    if item.kind != Delivery::KIND {
        return Ok(());
    }
    let delivery: Delivery = item.record().map_err(|e| e.to_string())?;
    let span = tracing::info_span!("delivery", delivery_id = %delivery.delivery_id,
        integration = %delivery.integration_id, consumer = consumer.name());
    async move {
        match consumers::consume(consumer, &delivery).await {
            Ok(outcome) => {
                tracing::info!(?outcome, "delivery processed");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_by_their_shape() {
        let batch = json!({"Records": [{
            "eventName": "INSERT", "eventSource": "aws:dynamodb",
            "dynamodb": {"SequenceNumber": "111", "NewImage": {
                "pk": {"S": "INT#a"}, "sk": {"S": "DLV#d"}, "kind": {"S": "delivery"}, "version": {"N": "1"},
                "summary": {"S": "branch main updated"}, "events": {"L": [{"M": {"type": {"S": "ping"}}}]}
            }}
        }, {"eventSource": "aws:dynamodb", "dynamodb": {"SequenceNumber": "112"}}]});
        let Event::Stream(records) = Event::read(batch).unwrap() else { panic!("a stream batch") };
        let item = records[0].image.as_ref().unwrap();
        assert_eq!((records[0].sequence.as_str(), item.kind.as_str(), item.version), ("111", "delivery", 1));
        assert_eq!(item.attrs["events"][0]["type"], "ping");
        assert!(records[1].image.is_err());

        let schedule = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        assert!(matches!(Event::read(schedule).unwrap(), Event::Schedule));
        let queue = json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]});
        assert!(matches!(Event::read(queue).unwrap(), Event::Other(what) if what == "records from aws:sqs"));
        assert!(matches!(Event::read(json!({"hello": 1})).unwrap(), Event::Other(_)));
        let http = json!({"version": "2.0", "routeKey": "$default", "rawPath": "/health", "rawQueryString": "",
            "headers": {}, "isBase64Encoded": false,
            "requestContext": {"http": {"method": "GET", "path": "/health", "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1", "userAgent": "t"}, "requestId": "r", "routeKey": "$default",
                "stage": "$default", "time": "03/Dec/2026:10:00:00 +0000", "timeEpoch": 0,
                "accountId": "1", "apiId": "a", "domainName": "d", "domainPrefix": "d"}});
        assert!(matches!(Event::read(http).unwrap(), Event::Http(_)));
        assert_eq!(batch_failures(&["112".into()])["batchItemFailures"][0]["itemIdentifier"], "112");
    }
}
