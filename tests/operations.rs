//! Operations at scale: nothing lost after the retries run out, nothing that grows with the number
//! of integrations in one invocation. The stream mappings' retries against the claim timeout
//! (read from template.yaml), a held claim waited for rather than failed, failed consumer work
//! listed and replayed without doubling an effect, the schedules fanned out one message per
//! integration in a rotating order, and the credentials' shared rate budget honouring Bitbucket's
//! `X-RateLimit-*` announcements — on the local stack against the sandbox; the SQS adapter on the
//! AWS emulator (moto).

use std::time::Duration;

use bitbucket_sandbox::{Fault, FaultKind};
use cross_function_tests::stack::{Stack, stack};
use domain::fanout::{Job, Work, WorkQueue};
use domain::pipelines::CLAIM_TIMEOUT;
use domain::tables::ACTION_CLAIMS;
use entry::lambda::CLAIM_WAIT_PER_INVOCATION;
use local_stack::SANDBOX_ID;
use serde_json::{Value, json};

use crate::idempotency::{
    builds_custom_pipeline, failures, pull_request_opened, recorded, sandbox_runs, stream_batch, wait_until,
};

fn template() -> String {
    let path = format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The value of `key` in each `Type: DynamoDB` event's properties (a line-based read, as
/// tests/openapi.rs does: the template's short tags trip strict YAML parsers).
fn stream_mapping_settings() -> Vec<Vec<(String, String)>> {
    let mut mappings = Vec::new();
    let mut current: Option<(usize, Vec<(String, String)>)> = None;
    for line in template().lines() {
        let trimmed = line.trim();
        let indent = line.len() - line.trim_start().len();
        let nested = current.as_ref().is_some_and(|(at, _)| indent > *at);
        if let Some(kind) = trimmed.strip_prefix("Type: ")
            && !nested
        {
            mappings.extend(current.take().map(|(_, settings)| settings));
            if kind == "DynamoDB" {
                current = Some((indent, Vec::new()));
            }
            continue;
        }
        if let Some((_, settings)) = current.as_mut()
            && let Some((key, value)) = trimmed.split_once(": ")
        {
            settings.push((key.to_owned(), value.to_owned()));
        }
    }
    mappings.extend(current.map(|(_, settings)| settings));
    mappings
}

/// The arithmetic RELIABILITY.md gives: a crashed worker's claim is held for CLAIM_TIMEOUT; each
/// stream attempt meeting it waits up to CLAIM_WAIT_PER_INVOCATION before failing the record, so
/// the retries must add up to more than the claim (twice over here, for a margin), and the record
/// age must not cut them short; what is left goes to the on-failure queue.
#[test]
fn stream_retries_outlast_the_claim_timeout() {
    let mappings = stream_mapping_settings();
    // pipeline-trigger's and branch-pruner's (the delivery consumers), the event publisher's.
    assert!(mappings.len() >= 2, "the stream mappings: {mappings:?}");
    let claim = CLAIM_TIMEOUT.to_std().unwrap();
    for settings in mappings {
        let get = |key: &str| settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let number = |key: &str| get(key).and_then(|v| v.parse::<u64>().ok());
        let retries = number("MaximumRetryAttempts").expect("a bounded number of retries");
        assert!(
            CLAIM_WAIT_PER_INVOCATION * retries as u32 >= 2 * claim,
            "{retries} retries × {CLAIM_WAIT_PER_INVOCATION:?} of waiting do not outlast a {claim:?} claim twice"
        );
        let age = number("MaximumRecordAgeInSeconds").expect("a maximum record age");
        // The slowest consumer (branch-pruner) may take its whole 300 s timeout per attempt.
        assert!(age >= (retries + 1) * 300, "a record age of {age} s cuts {retries} retries short");
        assert_eq!(get("Destination").as_deref(), Some("!GetAtt ConsumerFailureQueue.Arn"), "{settings:?}");
        assert_eq!(get("BisectBatchOnFunctionError").as_deref(), Some("true"));
    }
    assert!(CLAIM_WAIT_PER_INVOCATION < Duration::from_secs(29), "within pipeline-trigger's timeout");
}

/// A redelivery that meets the claim of a worker still starting the run waits for it and ends
/// with the run recorded as done — where it used to fail at once (and 10 such failures in a few
/// seconds exhausted Lambda's retries inside the claim's 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_claim_is_waited_for() {
    let temp = cross_function_tests::temp_dir("operations");
    let state = cross_function_tests::stack::StateBackend::Sqlite;
    let s = cross_function_tests::stack::stack_on(temp.path(), &state, false).await;
    builds_custom_pipeline(&s).await;
    let item = recorded(&s, "pullrequest:created", "held-claim", &pull_request_opened()).await;
    let batch = stream_batch(&item, "7");
    // The first worker's start reaches Bitbucket, whose answer takes 1.5 s to come back.
    s.running.sandbox.inject_fault(Fault {
        method: Some("POST".into()),
        path_contains: "/pipelines/".into(),
        kind: FaultKind::LatencyAfter { millis: 1500 },
        times: Some(1),
    });
    let first = {
        let (pipelines, batch) = (s.running.pipelines.clone(), batch.clone());
        tokio::spawn(async move { cross_function_tests::on_stream(pipelines, &batch).await })
    };
    wait_until("the first worker's run created", async || sandbox_runs(&s) == 1).await;
    let claims = ACTION_CLAIMS.all(s.running.backends.store.as_ref(), SANDBOX_ID, &[]).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert!(claims[0].record.run.is_none(), "the claim is held while the first worker waits for Bitbucket");
    // The redelivery meets the held claim.
    let second = cross_function_tests::on_stream(s.running.pipelines.clone(), &batch).await;
    assert_eq!(failures(&second), 0, "waited for the other worker instead of failing: {second}");
    assert_eq!(failures(&first.await.unwrap()), 0);
    assert_eq!(sandbox_runs(&s), 1, "one run");
    let (status, listed) = s.get("/integrations/sandbox/failures").await;
    assert_eq!((status, listed["failures"].clone()), (200, json!([])), "nothing failed");
    s.stop().await;
}

async fn failures_of(s: &Stack) -> Vec<Value> {
    let (status, page) = s.get("/integrations/sandbox/failures").await;
    assert_eq!(status, 200, "{page}");
    page["failures"].as_array().unwrap().clone()
}

/// A consumer that fails past the worker's retries lands in the failures list; a replay once
/// Bitbucket is back acts (one run), clears it, and a second replay doubles nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_work_is_listed_and_replayed_once() {
    let s = stack("operations").await;
    builds_custom_pipeline(&s).await;
    // Bitbucket refuses every run start (a 400 releases the claim: nothing started).
    s.running.sandbox.inject_fault(Fault {
        method: Some("POST".into()),
        path_contains: "/pipelines/".into(),
        kind: FaultKind::Status { status: 400 },
        times: None,
    });
    let (status, _) = s.deliver("pullrequest:created", "replay-me", &pull_request_opened()).await;
    assert_eq!(status, 202);
    wait_until("the failure recorded", async || !failures_of(&s).await.is_empty()).await;
    let listed = failures_of(&s).await;
    assert_eq!(listed.len(), 1, "pipelines failed, environments did not: {listed:?}");
    let failure = &listed[0];
    assert_eq!((failure["delivery_id"].as_str(), failure["consumer"].as_str()), (Some("replay-me"), Some("pipelines")));
    assert_eq!(failure["attempts"], 3, "the worker's three attempts: {failure}");
    assert_eq!(failure["event_key"], "pullrequest:created");
    assert!(failure["error"].as_str().unwrap().contains("400"), "{failure}");
    assert_eq!(sandbox_runs(&s), 0);

    // Still failing: the replay says so, and counts the attempt.
    let path = "/integrations/sandbox/deliveries/replay-me/replay";
    let (status, answer) = s.post(path).await;
    assert_eq!((status, answer["ok"].clone()), (200, json!(false)), "{answer}");
    let outcome = |answer: &Value, consumer: &str| {
        answer["consumers"].as_array().unwrap().iter().find(|c| c["consumer"] == consumer).cloned().unwrap()
    };
    assert_eq!(outcome(&answer, "pipelines")["outcome"], "failed");
    assert_eq!(outcome(&answer, "environments")["outcome"], "acted");
    assert_eq!(failures_of(&s).await[0]["attempts"], 4);

    s.running.sandbox.clear_faults();
    let (status, answer) = s.post(path).await;
    assert_eq!((status, answer["ok"].clone()), (200, json!(true)), "{answer}");
    let pipelines = outcome(&answer, "pipelines");
    assert_eq!(pipelines["outcome"], "acted");
    assert_eq!(pipelines["effects"]["started"].as_array().unwrap().len(), 1, "{pipelines}");
    assert_eq!(sandbox_runs(&s), 1);
    assert!(failures_of(&s).await.is_empty(), "a replay that succeeds clears the failure");

    // Replayed again (an operator draining twice): the run is not started twice.
    let (status, answer) = s.post(path).await;
    assert_eq!((status, answer["ok"].clone()), (200, json!(true)), "{answer}");
    let pipelines = outcome(&answer, "pipelines");
    assert_eq!(pipelines["effects"]["started"], json!([]), "{pipelines}");
    assert_eq!(pipelines["effects"]["repeated"].as_array().unwrap().len(), 1, "{pipelines}");
    assert_eq!(sandbox_runs(&s), 1);

    let (status, answer) = s.post("/integrations/sandbox/deliveries/never-recorded/replay").await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")), "{answer}");
    let (status, _) = s.get("/integrations/no-such/failures").await;
    assert_eq!(status, 404);
    s.stop().await;
}

/// Pipelines listings the sandbox answered, per integration's credential.
fn listings(s: &Stack) -> usize {
    s.running.sandbox.requests().iter().filter(|r| r.path.ends_with("/pipelines/") && r.method == "GET").count()
}

/// Each schedule's run enqueues one message per integration it applies to, and its queue works
/// them off one integration each; the next cycle starts elsewhere in the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_fan_out_one_message_per_integration() {
    let s = stack("operations").await;
    let backends = s.running.backends.clone();
    local_stack::demo::seed_fleet(&backends, &s.running.sandbox, &s.sandbox_api(), "local", 24, 3).await.unwrap();
    s.data_center_integration(json!({})).await; // no Pipelines: not polled
    let (polls, prunes) = s.running.run_schedules().await.unwrap();
    // 24 + the seeded sandbox integration; the Data Center one mirrors branches, so it is pruned.
    assert_eq!((polls["enqueued"].clone(), polls["skipped"].clone()), (json!(25), json!(1)), "{polls}");
    assert_eq!((prunes["enqueued"].clone(), prunes["skipped"].clone()), (json!(26), json!(0)), "{prunes}");
    s.running.queues_idle().await;
    assert_eq!(listings(&s), 25, "one poll per pollable integration");
    let environments = |id: &str| {
        let (s, id) = (&s, id.to_owned());
        async move { s.get(&format!("/integrations/{id}/environments")).await.1["environments"].as_array().unwrap().len() }
    };
    assert!(environments("scale-00023").await >= 3, "reconciled by its own message");
    let per_credential = s.running.sandbox.requests_per_credential();
    for n in 0..3 {
        assert!(per_credential.get(&format!("scale-{n}@sandbox.test")).is_some_and(|c| *c > 0), "{per_credential:?}");
    }

    let (again, _) = s.running.run_schedules().await.unwrap();
    assert_eq!(again["cycle"], polls["cycle"].as_u64().unwrap() + 1);
    assert_ne!(again["first"], polls["first"], "the order rotates with the cycle");
    s.running.queues_idle().await;
    assert_eq!(listings(&s), 50);
    assert_eq!((s.running.poll_queue.dead_lettered(), s.running.prune_queue.dead_lettered()), (0, 0));
    s.stop().await;
}

/// Bitbucket's announcements are honoured: once it says the credential is near its limit
/// (`X-RateLimit-NearLimit`), scheduled work defers to its next cycle — every integration using
/// that credential, in every process — while a person's request still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_work_defers_when_bitbucket_says_the_credential_is_near_its_limit() {
    let s = stack("operations").await;
    let backends = s.running.backends.clone();
    local_stack::demo::seed_fleet(&backends, &s.running.sandbox, &s.sandbox_api(), "local", 10, 1).await.unwrap();
    s.running.sandbox.set_rate_limit(Some(1000));
    let (polls, _) = s.running.run_schedules().await.unwrap();
    s.running.queues_idle().await;
    assert_eq!(polls["enqueued"], 11);
    let scale =
        |s: &Stack| s.running.sandbox.requests_per_credential().get("scale-0@sandbox.test").copied().unwrap_or(0);
    let before = scale(&s);
    assert!(before >= 10, "every integration polled while the budget is ample: {before}");

    // The next answer to that credential says it is near its limit (under 20% left).
    s.running.sandbox.set_rate_limit(Some(before + 2));
    let (status, _) = s.post("/integrations/scale-00000/pipelines/refresh").await;
    assert_eq!(status, 200, "people's requests go first");
    let after_person = scale(&s);
    s.running.run_schedules().await.unwrap();
    s.running.queues_idle().await;
    assert_eq!(scale(&s), after_person, "no scheduled request once Bitbucket said near the limit");
    // Another credential's integrations are unaffected.
    let sandbox_polls = s.running.sandbox.requests_per_credential().get("dev@sandbox.test").copied().unwrap_or(0);
    assert!(sandbox_polls >= 2, "{sandbox_polls}");
    let (status, _) = s.post("/integrations/scale-00001/pipelines/refresh").await;
    assert_eq!(status, 200, "a person's request still goes through");
    assert!(s.running.sandbox.requests().iter().all(|r| r.status != 429), "Bitbucket never had to refuse");
    s.stop().await;
}

/// The SQS adapter on the emulator: a schedule's 25 messages sent in batches of ten, received as
/// the queue mapping receives them, and read back through the Lambda boundary as the queue
/// batch event, one `Work` each.
#[tokio::test]
async fn work_messages_round_trip_through_sqs() {
    let config = cross_function_tests::emulator_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let name = cross_function_tests::unique("poll");
    let url = sqs.create_queue().queue_name(&name).send().await.unwrap().queue_url.unwrap();
    let queue = aws_adapters::SqsQueue::new(sqs.clone(), url.clone());
    let work: Vec<Work> =
        (0..25).map(|i| Work { job: Job::Poll, integration_id: format!("int-{i:02}"), cycle: 9 }).collect();
    queue.send(&work).await.unwrap();

    let mut received = Vec::new();
    for _ in 0..10 {
        let page = sqs.receive_message().queue_url(&url).max_number_of_messages(10).send().await.unwrap();
        if page.messages().is_empty() {
            break;
        }
        // As Lambda hands a batch to the function.
        let records: Vec<Value> = page
            .messages()
            .iter()
            .map(|m| {
                json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                    "eventSource": "aws:sqs", "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{name}"),
                    "awsRegion": "us-east-1"})
            })
            .collect();
        let entry::lambda::Event::Queue(messages) = entry::lambda::Event::read(json!({"Records": records})).unwrap()
        else {
            panic!("an SQS batch is a queue event")
        };
        for (message, original) in messages.iter().zip(page.messages()) {
            assert_eq!(Some(message.id.as_str()), original.message_id());
            received.push(serde_json::from_str::<Work>(&message.body).unwrap());
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(original.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    received.sort_by(|a, b| a.integration_id.cmp(&b.integration_id));
    assert_eq!(received, work, "every message once, intact");
}
