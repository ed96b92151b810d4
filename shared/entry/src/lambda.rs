//! The Lambda boundary. One binary serves every event source its function has: HTTP API requests
//! go to its router (as `lambda_http::run` would), DynamoDB stream batches to its delivery
//! consumers, schedules to its scheduled work, SQS batches (the schedule's work, one message per
//! integration) to its queue work. Events are read into [`Event`] first, so what a payload is
//! gets decided (and tested) in one place; config and clients are built once per cold start
//! whatever woke the function.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::middleware::from_fn_with_state;
use domain::consumers::{self, DeliveryConsumer, Outcome};
use domain::fanout::Work;
use domain::outbox::Relay;
use domain::store::{Item, StoreError};
use domain::tables::Record;
use domain::{Delivery, failures};
use futures_util::stream::{self, StreamExt};
use lambda_http::lambda_runtime::{self, LambdaEvent};
use lambda_http::request::LambdaRequest;
use serde_json::{Value, json};
use tower::ServiceExt;
use tracing::Instrument;

use crate::http::{AdminGuard, require_iam_or_token};
use crate::root::Root;
use crate::settings::{ConfigError, Settings};

pub type Error = lambda_http::Error;

/// A function's scheduled work: what it answers is logged and returned to Lambda; an error is
/// the invocation's error (the schedule's retry policy, then its dead-letter queue, and the
/// errors alarm see it).
pub type Scheduled = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Value, domain::Error>> + Send>> + Send + Sync>;

/// A function's share of a fanned-out schedule: one message's work. `Err` of a kind worth
/// retrying (`failures::retryable`) makes the queue deliver the message again.
pub type QueueWork =
    Arc<dyn Fn(Work) -> Pin<Box<dyn Future<Output = Result<Value, domain::Error>> + Send>> + Send + Sync>;

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
    /// The work of one message of its schedule's queue.
    pub queue: Option<QueueWork>,
    /// Publishes the outbox records of the table's stream (domain events).
    pub relay: Option<Arc<Relay>>,
}

impl Function {
    /// An admin function that only serves HTTP.
    pub fn http(routes: axum::Router) -> Self {
        Function { routes, access: Access::Admin, consumers: Vec::new(), schedule: None, queue: None, relay: None }
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

/// A function as served: its router (guarded), consumers, schedule and queue work.
pub struct Served {
    pub router: axum::Router,
    pub consumers: Vec<Arc<dyn DeliveryConsumer>>,
    pub schedule: Option<Scheduled>,
    pub queue: Option<QueueWork>,
    pub relay: Option<Arc<Relay>>,
}

impl Served {
    pub fn new(function: Function, guard: AdminGuard) -> Self {
        Served {
            router: function.router(guard),
            consumers: function.consumers,
            schedule: function.schedule,
            queue: function.queue,
            relay: function.relay,
        }
    }
}

/// Wraps an async closure as a function's queue work.
pub fn queue_work<F, Fut>(work: F) -> QueueWork
where
    F: Fn(Work) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, domain::Error>> + Send + 'static,
{
    Arc::new(move |w| Box::pin(work(w)))
}

/// Wraps an async closure as a function's scheduled work.
pub fn scheduled<F, Fut>(work: F) -> Scheduled
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, domain::Error>> + Send + 'static,
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

/// One SQS message: its id (what `batchItemFailures` names) and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: String,
    pub body: String,
    /// `ApproximateReceiveCount`: 1 the first time.
    pub receive_count: u32,
}

/// What woke the function.
#[derive(Debug)]
pub enum Event {
    Http(Box<LambdaRequest>),
    Stream(Vec<StreamRecord>),
    /// An SQS batch: the schedule's work, one integration a message.
    Queue(Vec<QueueMessage>),
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
            if records.iter().all(|r| source(r).as_deref() == Some("aws:sqs")) {
                return Ok(Event::Queue(records.iter().map(queue_message).collect()));
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

fn queue_message(record: &Value) -> QueueMessage {
    let text = |pointer: &str| record.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned();
    QueueMessage {
        id: text("/messageId"),
        body: text("/body"),
        receive_count: text("/attributes/ApproximateReceiveCount").parse().unwrap_or(1),
    }
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
        Event::Queue(messages) => match &function.queue {
            Some(work) => Ok(on_queue(work, messages, QUEUE_CONCURRENCY).await),
            None => Ok(json!({"ignored": "this function consumes no queue"})),
        },
        Event::Schedule => match &function.schedule {
            Some(work) => Ok(work().await?),
            None => Ok(json!({"ignored": "this function has no schedule"})),
        },
        Event::Other(what) => {
            tracing::warn!(what, "event ignored");
            Ok(json!({"ignored": what}))
        }
    }
}

/// How long one stream invocation may wait, over its whole batch, for claims held by another
/// worker. Lambda retries a failed stream record at once, so without it the attempts of a record
/// whose claim a crashed worker left would all fail inside the claim's 60 s
/// ([`domain::pipelines::CLAIM_TIMEOUT`]); with it, each attempt covers up to this long of the
/// claim, and the template's retries cover the claim several times over (RELIABILITY.md has the
/// arithmetic; `tests/operations.rs` checks it against template.yaml). Below pipeline-trigger's
/// 29 s timeout, leaving room for the batch's own work.
pub const CLAIM_WAIT_PER_INVOCATION: Duration = Duration::from_secs(20);

/// A stream batch: each record to each consumer; the records a consumer failed are answered as
/// `batchItemFailures`, so Lambda retries those alone (and, once its retries run out, sends their
/// position to the on-failure queue). Each failure is kept in the failures list
/// (`domain::failures`); a success clears it. An image that cannot be read is failed too: it will
/// not read better on retry, but once the retries run out its position lands in the on-failure
/// queue, where the dead-letter alarm shows it, instead of vanishing into a log line.
pub async fn on_stream(consumers: &[Arc<dyn DeliveryConsumer>], records: Vec<StreamRecord>) -> Value {
    on_stream_waiting(consumers, records, CLAIM_WAIT_PER_INVOCATION).await
}

/// [`on_stream`] waiting at most `claim_wait` for held claims.
pub async fn on_stream_waiting(
    consumers: &[Arc<dyn DeliveryConsumer>],
    records: Vec<StreamRecord>,
    claim_wait: Duration,
) -> Value {
    let mut failed = Vec::new();
    let mut wait_left = claim_wait;
    for (sequence, item) in readable(records, &mut failed) {
        for consumer in consumers {
            if deliver_kept(consumer.as_ref(), &item, Some(1), &mut wait_left).await.is_err() {
                failed.push(sequence.clone());
                break;
            }
        }
    }
    batch_failures(&failed)
}

/// The records whose image reads, with their sequence numbers; the others are logged and their
/// sequence numbers added to `failed`.
fn readable(records: Vec<StreamRecord>, failed: &mut Vec<String>) -> Vec<(String, Item)> {
    let mut items = Vec::with_capacity(records.len());
    for StreamRecord { sequence, image } in records {
        match image {
            Ok(item) => items.push((sequence, item)),
            Err(e) => {
                tracing::error!(error = %e, sequence, "unreadable stream record failed");
                failed.push(sequence);
            }
        }
    }
    items
}

/// A stream batch of outbox records: each published (a failure is retried alone).
pub async fn on_outbox_stream(relay: &Relay, records: Vec<StreamRecord>) -> Value {
    let mut failed = Vec::new();
    for (sequence, item) in readable(records, &mut failed) {
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
    let Some(delivery) = delivery_of(item)? else { return Ok(()) };
    attempt(consumer, &delivery).await.map(|_| ()).map_err(|e| e.to_string())
}

fn delivery_of(item: &Item) -> Result<Option<Delivery>, String> {
    if item.kind != Delivery::KIND {
        return Ok(None);
    }
    item.record().map(Some).map_err(|e| e.to_string())
}

async fn attempt(consumer: &dyn DeliveryConsumer, delivery: &Delivery) -> Result<Outcome, domain::Error> {
    let span = tracing::info_span!("delivery", delivery_id = %delivery.delivery_id,
        integration = %delivery.integration_id, consumer = consumer.name());
    async move {
        match consumers::consume(consumer, delivery).await {
            Ok(outcome) => {
                tracing::info!(?outcome, "delivery processed");
                Ok(outcome)
            }
            Err(e) => {
                tracing::warn!(error = %e, "delivery processing failed; it will be retried");
                Err(e)
            }
        }
    }
    .instrument(span)
    .await
}

/// [`deliver`], keeping the failures list in step: a claim another worker holds is waited for
/// (backing off, out of `wait_left`), a failure is recorded as `record_failure` more failed
/// attempts (when given), a success clears the delivery's failure. Used by the stream handler
/// and the local worker.
pub async fn deliver_kept(
    consumer: &dyn DeliveryConsumer,
    item: &Item,
    record_failure: Option<u32>,
    wait_left: &mut Duration,
) -> Result<(), String> {
    let Some(delivery) = delivery_of(item)? else { return Ok(()) };
    let mut backoff = Duration::from_millis(250);
    let result = loop {
        match attempt(consumer, &delivery).await {
            Err(e) if domain::pipelines::claim_in_progress(&e) && !wait_left.is_zero() => {
                let pause = backoff.min(*wait_left);
                *wait_left -= pause;
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(Duration::from_secs(8));
            }
            other => break other,
        }
    };
    let store = consumer.context().store.as_ref();
    let kept = match (&result, record_failure) {
        (Ok(_), _) => {
            failures::clear(store, &delivery.integration_id, &delivery.delivery_id, consumer.name()).await.map(|_| ())
        }
        (Err(e), Some(attempts)) => {
            failures::record(store, consumer.name(), &delivery, &e.to_string(), attempts).await.map(|_| ())
        }
        (Err(_), None) => Ok(()),
    };
    if let Err(e) = kept {
        tracing::warn!(error = %e, delivery_id = %delivery.delivery_id, "the failures list was not updated");
    }
    result.map(|_| ()).map_err(|e| e.to_string())
}

/// Messages of one queue batch worked on at once. With the queue mapping's maximum concurrency
/// (template.yaml `QueueConcurrency`), this bounds the Bitbucket calls in flight for a schedule.
pub const QUEUE_CONCURRENCY: usize = 5;

/// A queue batch: each message's work, `concurrency` at a time; the messages whose work failed
/// in a way worth retrying are answered as `batchItemFailures` (the queue delivers them again,
/// then to its dead-letter queue). Work the rate budget deferred is done (the next cycle goes
/// on); a body that is no work is logged and dropped.
pub async fn on_queue(work: &QueueWork, messages: Vec<QueueMessage>, concurrency: usize) -> Value {
    let results: Vec<Option<String>> = stream::iter(messages)
        .map(|message| async move {
            let parsed: Work = match serde_json::from_str(&message.body) {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::error!(error = %e, message = message.id, "a queue message that is no work dropped");
                    return None;
                }
            };
            let span = tracing::info_span!("work", job = parsed.job.as_str(), integration = %parsed.integration_id,
                cycle = parsed.cycle, receive_count = message.receive_count);
            match work(parsed).instrument(span.clone()).await {
                Ok(report) => {
                    span.in_scope(|| tracing::info!(%report, "work done"));
                    None
                }
                Err(domain::Error::Bitbucket(domain::bitbucket::BitbucketError::Deferred(why))) => {
                    span.in_scope(|| tracing::info!(why, "work deferred to the next cycle"));
                    None
                }
                Err(e) if failures::retryable(&e) => {
                    span.in_scope(|| tracing::warn!(error = %e, "work failed; the queue delivers it again"));
                    Some(message.id)
                }
                Err(e) => {
                    span.in_scope(|| tracing::warn!(error = %e, "work failed"));
                    None
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let failed: Vec<String> = results.into_iter().flatten().collect();
    batch_failures(&failed)
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
        let mixed = json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}, {"eventSource": "aws:s3"}]});
        assert!(matches!(Event::read(mixed).unwrap(), Event::Other(what) if what == "records from aws:sqs, aws:s3"));
        assert!(matches!(Event::read(json!({"hello": 1})).unwrap(), Event::Other(_)));
        let http = json!({"version": "2.0", "routeKey": "$default", "rawPath": "/health", "rawQueryString": "",
            "headers": {}, "isBase64Encoded": false,
            "requestContext": {"http": {"method": "GET", "path": "/health", "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1", "userAgent": "t"}, "requestId": "r", "routeKey": "$default",
                "stage": "$default", "time": "03/Dec/2026:10:00:00 +0000", "timeEpoch": 0,
                "accountId": "1", "apiId": "a", "domainName": "d", "domainPrefix": "d"}});
        assert!(matches!(Event::read(http).unwrap(), Event::Http(_)));
        assert_eq!(batch_failures(&["112".into()])["batchItemFailures"][0]["itemIdentifier"], "112");
        // The unreadable record is failed (kept past the retries), the readable one passed on.
        let mut failed = Vec::new();
        let items = readable(records, &mut failed);
        assert_eq!((items.len(), items[0].0.as_str(), failed), (1, "111", vec!["112".to_owned()]));
    }

    /// An SQS batch as Lambda hands it over (the shape of AWS's sample event).
    fn sqs_batch(bodies: &[&str]) -> Value {
        let records: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                json!({
                    "messageId": format!("m-{i}"), "receiptHandle": "AQEB…", "body": body,
                    "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1545082649183",
                        "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185"},
                    "messageAttributes": {}, "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                    "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:poll",
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        json!({"Records": records})
    }

    #[test]
    fn queue_batches_are_read_as_messages() {
        let body = r#"{"job":"poll","integration_id":"a","cycle":7}"#;
        let Event::Queue(messages) = Event::read(sqs_batch(&[body, "x"])).unwrap() else { panic!("a queue batch") };
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0], QueueMessage { id: "m-0".into(), body: body.into(), receive_count: 2 });
        let work: Work = serde_json::from_str(&messages[0].body).unwrap();
        assert_eq!((work.job, work.integration_id.as_str(), work.cycle), (domain::fanout::Job::Poll, "a", 7));
    }

    #[tokio::test]
    async fn queue_work_runs_bounded_and_answers_what_to_retry() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, p) = (running.clone(), peak.clone());
        let work = queue_work(move |w: Work| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                match w.integration_id.as_str() {
                    "store-down" => Err(domain::Error::Store(domain::store::StoreError::Throttled)),
                    "refused" => Err(domain::Error::NotFound("gone".into())),
                    "deferred" => Err(domain::bitbucket::BitbucketError::Deferred("budget".into()).into()),
                    _ => Ok(json!({"ok": true})),
                }
            }
        });
        let ids = ["a", "store-down", "b", "refused", "c", "deferred", "d", "e", "f", "g"];
        let bodies: Vec<String> =
            ids.iter().map(|id| format!(r#"{{"job":"prune","integration_id":"{id}","cycle":1}}"#)).collect();
        let mut bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
        bodies.push("not work");
        let Event::Queue(messages) = Event::read(sqs_batch(&bodies)).unwrap() else { panic!("a queue batch") };
        let answer = on_queue(&work, messages, 3).await;
        // Only the store failure is worth another delivery: a refusal stays one, deferred work
        // waits for its next cycle, and a body that is no work never becomes one.
        assert_eq!(answer, json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]}));
        assert_eq!(peak.load(Ordering::SeqCst), 3, "at most 3 at once, and the batch used them");
    }
}
