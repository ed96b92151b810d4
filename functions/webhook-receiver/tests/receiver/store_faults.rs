//! The receiver over a DynamoDB table that fails: the real `DynamoStore` on an SDK client whose
//! HTTP answers are injected (aws-smithy-mocks), with the SDK's standard retry mode as in
//! production. What Bitbucket sees is the point: a delivery that was not recorded is never
//! answered 2xx — throttling and server errors that outlast the SDK's retries are a 503 with a
//! clear JSON error (Cloud redelivers only on 5xx), a conditional-check failure carrying the
//! original item is the duplicate answer, one without an item is retryable.
//!
//! Also the adapter itself: throttling maps to `StoreError::Throttled`, a server error to
//! `Unavailable`, a failed condition to `ConditionFailed` with the live item (what the backup
//! lease and every optimistic update wait or re-read on).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_adapters::DynamoStore;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use chrono::Utc;
use domain::Backends;
use domain::bitbucket::{Credential, RepoTarget};
use domain::secrets::{Secret, SecretStore};
use domain::signature::sign;
use domain::store::{Condition, Item, StateStore, StoreError};
use domain::tables::{DELIVERIES, INTEGRATIONS};
use domain::webhook::Flavor;
use domain::{Delivery, Integration, WebhookSecrets};
use entry::http::ApiError;
use local_adapters::FileSecretStore;
use serde_json::{Value, json};
use tower::ServiceExt;
use webhook_receiver::app;

const ID: &str = "live";
const SECRET: &str = "store-faults-webhook-secret";
const PUSH: &str = r#"{"push":{"changes":[]},"repository":{"full_name":"ws/repo"}}"#;
/// Enough answers for any number of attempts the SDK makes.
const ALWAYS: usize = 20;
/// The SDK's standard retry mode makes at most this many attempts (the production default).
const SDK_ATTEMPTS: usize = 3;

static INJECTED: AtomicUsize = AtomicUsize::new(0);

/// One answer of the mocked DynamoDB endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// GetItem: the integration record.
    Integration,
    /// PutItem: written.
    Written,
    Throughput,
    Throttling,
    RequestLimit,
    /// HTTP 500 `InternalServerError`.
    Internal,
    /// `ConditionalCheckFailedException` with the live item (`ReturnValuesOnConditionCheckFailure`).
    ConditionFailedWith(Version),
    /// `ConditionalCheckFailedException` without an item (it expired meanwhile, say).
    ConditionFailedEmpty,
}

/// Which stored item a conditional-check failure returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// The delivery recorded earlier (a Bitbucket retry of it).
    Delivery,
    /// The integration at this version.
    Integration(u64),
}

impl Reply {
    fn fault(self) -> bool {
        !matches!(self, Reply::Integration | Reply::Written)
    }

    /// Status and body as DynamoDB's JSON protocol answers.
    fn http(self) -> (u16, String) {
        let error = |kind: &str, message: &str| {
            json!({"__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"), "message": message}).to_string()
        };
        match self {
            Reply::Integration => (200, json!({"Item": dynamo_json(&integration_item(1))}).to_string()),
            Reply::Written => (200, "{}".into()),
            Reply::Throughput => (400, error("ProvisionedThroughputExceededException", "Throughput exceeded")),
            Reply::Throttling => (400, error("ThrottlingException", "Rate of requests exceeds the allowed throughput")),
            Reply::RequestLimit => (400, error("RequestLimitExceeded", "Throughput exceeds the account limit")),
            Reply::Internal => (500, error("InternalServerError", "Internal server error")),
            Reply::ConditionFailedWith(version) => {
                let item = match version {
                    Version::Delivery => original_delivery_item(),
                    Version::Integration(v) => integration_item(v),
                };
                let mut body: Value =
                    serde_json::from_str(&error("ConditionalCheckFailedException", "The conditional request failed"))
                        .expect("JSON");
                body["Item"] = dynamo_json(&item);
                (400, body.to_string())
            }
            Reply::ConditionFailedEmpty => {
                (400, error("ConditionalCheckFailedException", "The conditional request failed"))
            }
        }
    }
}

fn integration_record() -> Integration {
    let at = "2026-01-01T00:00:00Z".parse().expect("a time");
    let access = Credential::AccessToken { token: Secret::new("unused") };
    Integration {
        created_at: at,
        updated_at: at,
        ..Integration::new(ID, "Live", RepoTarget::cloud("ws", "repo"), &access, "test")
    }
}

fn integration_item(version: u64) -> Item {
    let mut item = INTEGRATIONS.item("", &[ID], &integration_record()).expect("an item");
    item.version = version;
    item
}

const ORIGINAL_EVENT: &str = "00000000-0000-4000-8000-00000000e1e1";

/// The delivery as an earlier attempt recorded it.
fn original_delivery_item() -> Item {
    let received_at = Utc::now();
    let delivery = Delivery {
        event_id: ORIGINAL_EVENT.into(),
        integration_id: ID.into(),
        delivery_id: "d-1".into(),
        event_key: "repo:push".into(),
        flavor: Flavor::Cloud,
        received_at,
        hook_uuid: None,
        attempt: Some(1),
        repository: Some("ws/repo".into()),
        events: Vec::new(),
        summary: "push".into(),
        body_xxh3: None,
    };
    let mut item =
        DELIVERIES.item(ID, &["d-1"], &delivery).expect("an item").with_expiry(received_at.timestamp() + 86_400);
    item.version = 1;
    item
}

/// An item as DynamoDB JSON (`{"pk": {"S": "…"}, …}`), store attributes included.
fn dynamo_json(item: &Item) -> Value {
    use serde_dynamo::AttributeValue as A;
    let mut attrs: serde_dynamo::Item = serde_dynamo::to_item(&item.attrs).expect("encodable");
    attrs.insert("pk".into(), A::S(item.key.pk.clone()));
    attrs.insert("sk".into(), A::S(item.key.sk.clone()));
    attrs.insert("kind".into(), A::S(item.kind.clone()));
    attrs.insert("version".into(), A::N(item.version.to_string()));
    if let Some(sort) = &item.sort {
        attrs.insert("sort".into(), A::S(sort.clone()));
    }
    if let Some(at) = item.expires_at {
        attrs.insert("expires_at".into(), A::N(at.to_string()));
    }
    serde_json::to_value(attrs).expect("DynamoDB JSON")
}

/// A rule answering `replies` in order (each repeated its count), one per SDK attempt.
macro_rules! rule {
    ($operation:expr, $replies:expr) => {{
        let replies: &[(Reply, usize)] = $replies;
        let mut sequence = mock!($operation).sequence();
        for (reply, times) in replies {
            if reply.fault() {
                INJECTED.fetch_add(1, Ordering::SeqCst);
            }
            let (status, body) = reply.http();
            sequence = sequence.http_status(status, Some(body)).times(*times);
        }
        sequence.build()
    }};
}

/// A client whose every request is answered by `rules`, retrying as production does (standard
/// mode, three attempts) with a tiny backoff so tests stay fast.
fn mocked_client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules.iter().copied(), |config| {
        config.retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(1)))
    })
}

/// The receiver, and the temp dir holding its secret file (removed when dropped).
async fn receiver(client: Client) -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let secrets = FileSecretStore::new(dir.path().join("secrets.json"));
    let name = integration_record().webhook_secret_name;
    secrets.put(&name, &WebhookSecrets::new(&Secret::new(SECRET)).to_secret()).await.expect("a secret");
    let backends = Backends { store: Arc::new(DynamoStore::new(client, "state")), secrets: Arc::new(secrets) };
    (app(Arc::new(domain::Intake::new(backends, chrono::Duration::days(30), Duration::ZERO))), dir)
}

/// A signed Cloud push delivery, as Bitbucket sends it.
async fn deliver(router: axum::Router) -> (u16, Value) {
    let request = http::Request::post(format!("/webhooks/{ID}"))
        .header("content-type", "application/json")
        .header("x-event-key", "repo:push")
        .header("x-request-uuid", "d-1")
        .header("x-hub-signature", sign(SECRET.as_bytes(), PUSH.as_bytes()))
        .body(axum::body::Body::from(PUSH))
        .expect("a request");
    let response = router.oneshot(request).await.expect("an answer");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
    (status, serde_json::from_slice(&bytes).expect("a JSON answer"))
}

struct Case {
    name: &'static str,
    get: &'static [(Reply, usize)],
    put: &'static [(Reply, usize)],
    status: u16,
    /// `error.code` of a refusal, or `None` for an accepted delivery.
    code: Option<&'static str>,
    gets: usize,
    puts: usize,
}

const INTEGRATION: &[(Reply, usize)] = &[(Reply::Integration, ALWAYS)];

const CASES: &[Case] = &[
    Case {
        name: "write throttled (provisioned throughput) past the SDK's retries",
        get: INTEGRATION,
        put: &[(Reply::Throughput, ALWAYS)],
        status: 503,
        code: Some("unavailable"),
        gets: 1,
        puts: SDK_ATTEMPTS,
    },
    Case {
        name: "write throttled (ThrottlingException) past the SDK's retries",
        get: INTEGRATION,
        put: &[(Reply::Throttling, ALWAYS)],
        status: 503,
        code: Some("unavailable"),
        gets: 1,
        puts: SDK_ATTEMPTS,
    },
    Case {
        name: "write over the account's request limit past the SDK's retries",
        get: INTEGRATION,
        put: &[(Reply::RequestLimit, ALWAYS)],
        status: 503,
        code: Some("unavailable"),
        gets: 1,
        puts: SDK_ATTEMPTS,
    },
    Case {
        name: "write answered 500 past the SDK's retries",
        get: INTEGRATION,
        put: &[(Reply::Internal, ALWAYS)],
        status: 503,
        code: Some("unavailable"),
        gets: 1,
        puts: SDK_ATTEMPTS,
    },
    Case {
        name: "write throttled once: the SDK retries, the delivery is recorded",
        get: INTEGRATION,
        put: &[(Reply::Throughput, 1), (Reply::Written, 1)],
        status: 202,
        code: None,
        gets: 1,
        puts: 2,
    },
    Case {
        name: "write answered 500 twice: the third attempt records it",
        get: INTEGRATION,
        put: &[(Reply::Internal, 2), (Reply::Written, 1)],
        status: 202,
        code: None,
        gets: 1,
        puts: 3,
    },
    Case {
        name: "condition failed on the recorded delivery: a duplicate",
        get: INTEGRATION,
        put: &[(Reply::ConditionFailedWith(Version::Delivery), 1)],
        status: 200,
        code: None,
        gets: 1,
        puts: 1,
    },
    Case {
        name: "condition failed without the item: retryable, not retried blindly",
        get: INTEGRATION,
        put: &[(Reply::ConditionFailedEmpty, 1)],
        status: 503,
        code: Some("unavailable"),
        gets: 1,
        puts: 1,
    },
    Case {
        name: "integration read throttled past the SDK's retries: nothing written",
        get: &[(Reply::Throttling, ALWAYS)],
        put: &[(Reply::Written, ALWAYS)],
        status: 503,
        code: Some("unavailable"),
        gets: SDK_ATTEMPTS,
        puts: 0,
    },
    Case {
        name: "integration read answered 500 once: retried, recorded",
        get: &[(Reply::Internal, 1), (Reply::Integration, ALWAYS)],
        put: &[(Reply::Written, 1)],
        status: 202,
        code: None,
        gets: 2,
        puts: 1,
    },
];

#[tokio::test]
async fn a_delivery_is_never_acknowledged_unless_it_is_recorded() {
    let mut operations = 0;
    for case in CASES {
        let get = rule!(Client::get_item, case.get);
        let put = rule!(Client::put_item, case.put);
        let (router, _dir) = receiver(mocked_client(&[&get, &put])).await;
        let (status, answer) = deliver(router).await;
        operations += 1;
        let name = case.name;
        assert_eq!(status, case.status, "{name}: {answer}");
        assert_eq!((get.num_calls(), put.num_calls()), (case.gets, case.puts), "{name}: requests made");
        // 2xx only when DynamoDB took the write, or holds the original of a retried delivery.
        let written = case.put.iter().any(|(r, _)| *r == Reply::Written) && put.num_calls() > 0;
        let duplicate = case.put.iter().any(|(r, _)| matches!(r, Reply::ConditionFailedWith(_)));
        assert_eq!((200..300).contains(&status), written || duplicate, "{name}: {answer}");
        match case.code {
            Some(code) => {
                assert_eq!(answer["error"]["code"], code, "{name}: {answer}");
                // The detail (DynamoDB's error) goes to the log; the answer is generic, with the
                // request id that finds the log lines.
                let message = answer["error"]["message"].as_str().unwrap_or_default();
                assert_eq!(message, "a service this API depends on is unavailable; retry later", "{name}");
                assert!(answer["error"]["request_id"].is_string(), "{name}: {answer}");
            }
            None if status == 200 => {
                assert_eq!(
                    (answer["duplicate"].as_bool(), answer["event_id"].as_str()),
                    (Some(true), Some(ORIGINAL_EVENT))
                );
            }
            None => assert_eq!(answer["duplicate"], false, "{name}: {answer}"),
        }
        assert!(!answer.to_string().contains(SECRET), "{name}: the webhook secret leaked: {answer}");
    }
    println!("FIGURES store-faults injected={} operations={operations} lost=0", INJECTED.load(Ordering::SeqCst));
}

#[tokio::test]
async fn the_adapter_maps_throttling_server_errors_and_failed_conditions() {
    // Query throttled past the retries: the port's `Throttled`, answered 503.
    let throttled = rule!(Client::query, &[(Reply::Throttling, ALWAYS)]);
    let store = DynamoStore::new(mocked_client(&[&throttled]), "state");
    let error = DELIVERIES.page_sorted(&store, ID, &[], true, 10, None).await.expect_err("throttled");
    assert!(matches!(error, StoreError::Throttled), "{error:?}");
    assert_eq!(throttled.num_calls(), SDK_ATTEMPTS);
    assert_eq!(ApiError::from(error).status(), 503);

    // A 500 that outlasts the retries: `Unavailable`, naming DynamoDB's error.
    let failing = rule!(Client::get_item, &[(Reply::Internal, ALWAYS)]);
    let store = DynamoStore::new(mocked_client(&[&failing]), "state");
    let error = store.get(&INTEGRATIONS.key("", &[ID])).await.expect_err("unavailable");
    assert!(matches!(&error, StoreError::Unavailable(m) if m.starts_with("InternalServerError")), "{error:?}");
    assert_eq!(ApiError::from(error).status(), 503);

    // A failed version condition is a conflict carrying the live item — no retry, no guess.
    let conflict = rule!(Client::put_item, &[(Reply::ConditionFailedWith(Version::Integration(5)), 1)]);
    let store = DynamoStore::new(mocked_client(&[&conflict]), "state");
    let error = store.put(integration_item(0), Condition::Version(4)).await.expect_err("a conflict");
    let StoreError::ConditionFailed { current: Some(current) } = &error else { panic!("{error:?}") };
    assert_eq!((current.version, current.key.clone()), (5, INTEGRATIONS.key("", &[ID])));
    assert_eq!(conflict.num_calls(), 1, "a failed condition is not retried by the SDK");
    assert_eq!(ApiError::from(error).status(), 409);

    // An unconditional put is an optimistic read-modify-write: a conflict re-reads and wins.
    let reads = mock!(Client::get_item)
        .sequence()
        .http_status(200, Some(json!({"Item": dynamo_json(&integration_item(1))}).to_string()))
        .http_status(200, Some(json!({"Item": dynamo_json(&integration_item(2))}).to_string()))
        .build();
    let writes =
        rule!(Client::put_item, &[(Reply::ConditionFailedWith(Version::Integration(2)), 1), (Reply::Written, 1)]);
    let store = DynamoStore::new(mocked_client(&[&reads, &writes]), "state");
    let version = store.put(integration_item(0), Condition::None).await.expect("written after one conflict");
    assert_eq!((version, reads.num_calls(), writes.num_calls()), (3, 2, 2));
}
