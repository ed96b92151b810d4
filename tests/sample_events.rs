//! The sample events under `events/` — what `cargo lambda invoke --data-file` and the cold-start
//! benchmark send — answered by each function's own handlers, on the `demo` seed, against the
//! sandbox Bitbucket: they stay valid as the code changes. The stream samples are golden files
//! made from a recorded delivery; `UPDATE_SAMPLE_EVENTS=1` rewrites them.

use std::path::PathBuf;
use std::sync::Arc;

use cross_function_tests::stack::stack;
use local_stack::demo::{self, DEMO_ID};
use serde_json::{Value, json};
use shared::bitbucket::Connector;
use shared::domain::backup::Backups;
use shared::domain::connection::Connections;
use shared::domain::pipelines::Pipelines;
use shared::domain::pruning::Pruner;
use shared::store::{query_all, stream_image_from_item};
use tower::ServiceExt;

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

fn read_event(name: &str) -> String {
    let path = events_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An HTTP sample event through `router`, as the Lambda runtime would hand it over.
async fn invoke_http(router: &axum::Router, name: &str) -> (u16, Value) {
    let request = lambda_http::request::from_str(&read_event(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let request = request.map(|body| axum::body::Body::from(body.to_vec()));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A one-record stream batch. The image comes from the DynamoDB adapter's own encoding
/// (`stream_image_from_item`), so it is what the table's stream would carry.
fn stream_event(image: Value) -> Value {
    json!({"Records": [{
        "eventID": "c4ca4238a0b923820dcc509a6f75849b",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1795341600,
            "Keys": {"pk": image["pk"].clone(), "sk": image["sk"].clone()},
            "NewImage": image,
            "SequenceNumber": "111100000000000000000001",
            "SizeBytes": 1024,
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/bitbucket-automation-StateTable/stream/2026-11-22T00:00:00.000"
    }]})
}

/// Compares with the golden file, or rewrites it under `UPDATE_SAMPLE_EVENTS=1`.
fn golden(name: &str, event: &Value) {
    let path = events_dir().join(name);
    let text = format!("{}\n", serde_json::to_string_pretty(event).unwrap());
    if std::env::var_os("UPDATE_SAMPLE_EVENTS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let kept: Value = serde_json::from_str(&read_event(name)).unwrap();
    assert_eq!(&kept, event, "{name} is stale: rerun with UPDATE_SAMPLE_EVENTS=1 and review the diff");
}

#[tokio::test]
async fn every_sample_event_is_answered_by_its_function() {
    let stack = stack("sample-events").await;
    let backends = stack.running.backends.clone();
    demo::seed(&backends, &stack.sandbox_api(), "sample").await.unwrap();
    let connector = Connector::default();
    let pipelines = Arc::new(Pipelines::new(backends.store.clone(), backends.secrets.clone(), connector.clone()));
    let pruner = Arc::new(Pruner {
        store: backends.store.clone(),
        secrets: backends.secrets.clone(),
        connector: connector.clone(),
    });

    // webhook-receiver: the signed 14.5 KB push is verified and recorded.
    let receiver = webhook_receiver::app(Arc::new(webhook_receiver::Receiver {
        backends: backends.clone(),
        retention: chrono::Duration::days(30),
    }));
    let (status, body) = invoke_http(&receiver, "webhook-receiver/signed-push.json").await;
    assert_eq!((status, &body["duplicate"], &body["event_key"]), (202, &json!(false), &json!("repo:push")), "{body}");
    let (status, body) = invoke_http(&receiver, "webhook-receiver/signed-push.json").await;
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "the redelivery is a duplicate: {body}");

    // integrations-api
    let api = integrations_api::app(Arc::new(integrations_api::Api {
        connections: Connections {
            store: backends.store.clone(),
            secrets: backends.secrets.clone(),
            connector: connector.clone(),
            public_base_url: stack.running.base_url.clone(),
            secret_prefix: "sample".into(),
        },
    }));
    let (status, body) = invoke_http(&api, "integrations-api/list-integrations.json").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("\"demo\""), "{body}");
    let (status, body) = invoke_http(&api, "integrations-api/show-integration.json").await;
    assert_eq!((status, &body["id"], &body["status"]), (200, &json!(DEMO_ID), &json!("active")), "{body}");

    // backup-committer
    let backups = backup_committer::app(Arc::new(Backups {
        store: backends.store.clone(),
        secrets: backends.secrets.clone(),
        connector: connector.clone(),
    }));
    let (status, body) = invoke_http(&backups, "backup-committer/list-backup-targets.json").await;
    assert_eq!(status, 200, "{body}");

    // pipeline-trigger: a real run in the sandbox.
    let runs_before = stack.running.sandbox.pipelines().len();
    let trigger = pipeline_trigger::app(pipelines.clone());
    let (status, body) = invoke_http(&trigger, "pipeline-trigger/run-pipeline.json").await;
    assert_eq!((status, &body["branch"]), (201, &json!("main")), "{body}");
    assert_eq!(stack.running.sandbox.pipelines().len(), runs_before + 1);

    // status-poller: the list shows that run; the schedule polls the demo integration.
    let poller = status_poller::app(pipelines.clone());
    let (status, body) = invoke_http(&poller, "status-poller/list-pipelines.json").await;
    assert_eq!(status, 200, "{body}");
    let listed = body["pipelines"].as_array().map(Vec::len).unwrap_or_default();
    assert!(listed >= 1, "the run is listed: {body}");
    let schedule: Value = serde_json::from_str(&read_event("status-poller/schedule.json")).unwrap();
    assert!(shared::lambda::is_schedule(&schedule));
    let polled = status_poller::on_schedule(&pipelines).await;
    assert!(polled.to_string().contains(DEMO_ID), "{polled}");

    // branch-pruner: environments, the schedule's reconciliation.
    let pruner_app = branch_pruner::app(pruner.clone());
    let (status, body) = invoke_http(&pruner_app, "branch-pruner/list-environments.json").await;
    assert_eq!(status, 200, "{body}");
    let schedule: Value = serde_json::from_str(&read_event("branch-pruner/schedule.json")).unwrap();
    assert!(shared::lambda::is_schedule(&schedule));
    let reconciled = branch_pruner::on_schedule(&pruner).await;
    assert!(reconciled.to_string().contains(DEMO_ID), "{reconciled}");

    // The stream samples: the recorded push delivery, as DynamoDB Streams would carry it.
    let partition = shared::domain::integration::partition(DEMO_ID);
    let deliveries = query_all(backends.store.as_ref(), &partition, "DLV#").await.unwrap();
    let mut item = deliveries.into_iter().next().expect("the push was recorded");
    // Fixed values where the record has fresh ones, so the golden file is stable.
    item.attrs.insert("event_id".into(), json!("0b7f8a52-5d1e-4c3a-9a57-3f1c2d4e5f60"));
    item.attrs.insert("received_at".into(), json!("2026-11-22T10:00:00Z"));
    item.sort = Some("EVT#2026-11-22T10:00:00Z#0b7f8a52-5d1e-4c3a-9a57-3f1c2d4e5f60".into());
    item.expires_at = Some(1797933600);
    item.version = 1;
    let event = stream_event(stream_image_from_item(&item).unwrap());
    for name in ["pipeline-trigger/stream-delivery.json", "branch-pruner/stream-delivery.json"] {
        golden(name, &event);
    }
    let answer = pipeline_trigger::on_stream(&pipelines, &event).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let answer = branch_pruner::on_stream(&pruner, &event).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let (_, environments) = invoke_http(&pruner_app, "branch-pruner/list-environments.json").await;
    assert!(
        environments.to_string().contains("feature/webhook"),
        "the pushed branch became an environment: {environments}"
    );

    stack.stop().await;
}
