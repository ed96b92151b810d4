//! The sample events under `events/` — what `cargo lambda invoke --data-file` and the cold-start
//! benchmark send — answered by each function's own handlers, on the `demo` seed, against the
//! sandbox Bitbucket: they stay valid as the code changes. The stream samples are golden files
//! made from a recorded delivery; `UPDATE_SAMPLE_EVENTS=1` rewrites them.

use std::path::PathBuf;

use aws_adapters::stream_image_from_item;
use bitbucket_client::RetryPolicy;
use cross_function_tests::stack::stack;
use domain::tables::DELIVERIES;
use entry::lambda::{Function, Served, handle};
use entry::{Root, Settings};
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use local_stack::demo::{self, DEMO_ID};
use serde_json::{Value, json};

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

fn read_event(name: &str) -> String {
    let path = events_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A sample event through the function's Lambda boundary, as the runtime hands it over.
async fn invoke(function: &Served, event: &Value) -> Value {
    handle(function, LambdaEvent::new(event.clone(), Context::default())).await.expect("the function answers")
}

/// An HTTP sample event: its status and JSON body.
async fn invoke_http(function: &Served, name: &str) -> (u16, Value) {
    let event: Value = serde_json::from_str(&read_event(name)).unwrap();
    let answer = invoke(function, &event).await;
    let body = answer["body"].as_str().unwrap_or_default();
    let status = answer["statusCode"].as_u64().unwrap_or_else(|| panic!("{name}: {answer}")) as u16;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
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
            "StreamViewType": "NEW_IMAGE"
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
    // The composition root every `main.rs` builds, on the local stack's state.
    let settings = Settings::local(&stack.running.base_url, "sample", chrono::Duration::days(30));
    let root = Root::new(settings, backends.clone(), RetryPolicy::default());
    let serve = |function: Result<Function, _>| Served::new(function.unwrap(), root.admin_guard());

    // webhook-receiver: the signed 14.5 KB push is verified and recorded.
    let receiver = serve(webhook_receiver::function(&root));
    let (status, body) = invoke_http(&receiver, "webhook-receiver/signed-push.json").await;
    assert_eq!((status, &body["duplicate"], &body["event_key"]), (202, &json!(false), &json!("repo:push")), "{body}");
    let (status, body) = invoke_http(&receiver, "webhook-receiver/signed-push.json").await;
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "the redelivery is a duplicate: {body}");

    // integrations-api
    let api = serve(integrations_api::function(&root));
    let (status, body) = invoke_http(&api, "integrations-api/list-integrations.json").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("\"demo\""), "{body}");
    let (status, body) = invoke_http(&api, "integrations-api/show-integration.json").await;
    assert_eq!((status, &body["id"], &body["status"]), (200, &json!(DEMO_ID), &json!("active")), "{body}");

    // backup-committer
    let backups = serve(backup_committer::function(&root));
    let (status, body) = invoke_http(&backups, "backup-committer/list-backup-targets.json").await;
    assert_eq!(status, 200, "{body}");

    // pipeline-trigger: a real run in the sandbox.
    let runs_before = stack.running.sandbox.pipelines().len();
    let trigger = serve(pipeline_trigger::function(&root));
    let (status, body) = invoke_http(&trigger, "pipeline-trigger/run-pipeline.json").await;
    assert_eq!((status, &body["branch"]), (201, &json!("main")), "{body}");
    assert_eq!(stack.running.sandbox.pipelines().len(), runs_before + 1);

    // status-poller: the list shows that run; the schedule polls the demo integration.
    let poller = serve(status_poller::function(&root));
    let (status, body) = invoke_http(&poller, "status-poller/list-pipelines.json").await;
    assert_eq!(status, 200, "{body}");
    let listed = body["pipelines"].as_array().map(Vec::len).unwrap_or_default();
    assert!(listed >= 1, "the run is listed: {body}");
    let schedule: Value = serde_json::from_str(&read_event("status-poller/schedule.json")).unwrap();
    let polled = invoke(&poller, &schedule).await;
    assert!(polled.to_string().contains(DEMO_ID), "{polled}");

    // branch-pruner: environments, the schedule's reconciliation.
    let pruner = serve(branch_pruner::function(&root));
    let (status, body) = invoke_http(&pruner, "branch-pruner/list-environments.json").await;
    assert_eq!(status, 200, "{body}");
    let schedule: Value = serde_json::from_str(&read_event("branch-pruner/schedule.json")).unwrap();
    let reconciled = invoke(&pruner, &schedule).await;
    assert!(reconciled.to_string().contains(DEMO_ID), "{reconciled}");
    // A function without a schedule answers one without acting.
    assert_eq!(invoke(&trigger, &schedule).await, json!({"ignored": "this function has no schedule"}));

    // The stream samples: the recorded push delivery, as DynamoDB Streams would carry it.
    let deliveries = DELIVERIES.all(backends.store.as_ref(), DEMO_ID, &[]).await.unwrap();
    let mut delivery = deliveries.into_iter().next().expect("the push was recorded").record;
    // Fixed values where the record has fresh ones, so the golden file is stable.
    delivery.event_id = "0b7f8a52-5d1e-4c3a-9a57-3f1c2d4e5f60".into();
    delivery.received_at = "2026-11-22T10:00:00Z".parse().unwrap();
    let mut item = DELIVERIES.item(DEMO_ID, &[&delivery.delivery_id], &delivery).unwrap().with_expiry(1797933600);
    item.version = 1;
    let event = stream_event(stream_image_from_item(&item).unwrap());
    for name in ["pipeline-trigger/stream-delivery.json", "branch-pruner/stream-delivery.json"] {
        golden(name, &event);
    }
    assert_eq!(invoke(&trigger, &event).await, json!({"batchItemFailures": []}));
    assert_eq!(invoke(&pruner, &event).await, json!({"batchItemFailures": []}));
    let (_, environments) = invoke_http(&pruner, "branch-pruner/list-environments.json").await;
    assert!(
        environments.to_string().contains("feature/webhook"),
        "the pushed branch became an environment: {environments}"
    );
    stack.stop().await;
}
