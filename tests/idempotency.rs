//! Idempotency under load and crash recovery, each scenario on SQLite and on DynamoDB (the moto
//! emulator): 100 concurrent copies of one delivery, 100 identical backup snapshots, one stream
//! record processed twice and concurrently by both consumers, a worker killed after and before
//! Bitbucket started its run, and a local stack restarted over deliveries it never processed.
//! Each scenario prints one `FIGURES idempotency …` line (run with `--nocapture`).

use std::time::Duration;

use aws_adapters::stream_image_from_item;
use bitbucket_sandbox::{Fault, FaultKind};
use cross_function_tests::fixtures_dir;
use cross_function_tests::on_stream;
use cross_function_tests::stack::{Stack, StateBackend, stack_on};
use cross_function_tests::temp_dir;
use domain::pipelines::Pipelines;
use domain::signature::sign;
use domain::store::Item;
use domain::tables::{ACTION_CLAIMS, DELIVERIES, ENVIRONMENTS};
use local_stack::{SANDBOX_ID, is_processed};
use serde_json::{Value, json};
use tokio::task::JoinSet;

const COPIES: usize = 100;

/// A Cloud `pullrequest:created` body: the recorded fixture with its source branch renamed to
/// one the sandbox has. Cloud abbreviates the head commit, so the run builds the branch tip.
pub(crate) fn pull_request_opened() -> Vec<u8> {
    let path = fixtures_dir().join("cloud/atlantis__bitbucket-cloud-pull-event-created.json");
    let mut body: Value = serde_json::from_slice(&std::fs::read(path).expect("fixture readable")).unwrap();
    body["pullrequest"]["source"]["branch"]["name"] = json!("develop");
    body["pullrequest"]["destination"]["branch"]["name"] = json!("main");
    // The fixture comes from a fork, which is not built: make it this repository's own.
    body["pullrequest"]["source"]["repository"]["full_name"] = json!("sandbox/demo");
    body["pullrequest"]["destination"]["repository"]["full_name"] = json!("sandbox/demo");
    serde_json::to_vec(&body).unwrap()
}

/// The fixture's head commit is not in the sandbox, so its pull request builds a custom
/// pipeline on the branch tip (`pull_request_pipeline`) rather than the pull-request target,
/// which names the commit; what these scenarios count (starts, once) is the same.
pub(crate) async fn builds_custom_pipeline(s: &Stack) {
    let options = json!({"options": {"pull_request_pipeline": "idempotency"}});
    let (status, answer) = s.call(reqwest::Method::PATCH, &format!("/integrations/{SANDBOX_ID}"), Some(options)).await;
    assert_eq!(status, 200, "{answer}");
}

/// A Cloud `repo:push` body: `branch` deleted (`deleted`) or pushed to.
fn push(branch: &str, deleted: bool) -> Vec<u8> {
    let tip = json!({"type": "branch", "name": branch,
                     "target": {"type": "commit", "hash": "7f3c2a1d9e8b4c5a6f7e8d9c0b1a2f3e4d5c6b7a"}});
    let change = if deleted {
        json!({"new": null, "old": tip, "created": false, "closed": true, "forced": false, "truncated": false})
    } else {
        json!({"new": tip, "old": tip, "created": false, "closed": false, "forced": false, "truncated": false})
    };
    serde_json::to_vec(&json!({"push": {"changes": [change]}, "repository": {"full_name": "sandbox/demo"}})).unwrap()
}

/// Records `body` once (202) and returns the delivery's record, as the stream would carry it.
pub(crate) async fn recorded(s: &Stack, event_key: &str, delivery_id: &str, body: &[u8]) -> Item {
    let (status, answer) = s.deliver(event_key, delivery_id, body).await;
    assert_eq!((status, answer["duplicate"].clone()), (202, json!(false)), "{answer}");
    let store = s.running.backends.store.clone();
    store.get(&DELIVERIES.key(SANDBOX_ID, &[delivery_id])).await.unwrap().expect("the delivery is recorded")
}

/// A DynamoDB stream batch holding `item`'s INSERT, shaped as Lambda hands it over.
pub(crate) fn stream_batch(item: &Item, sequence: &str) -> Value {
    json!({"Records": [{
        "eventID": format!("event-{sequence}"),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "Keys": {"pk": {"S": item.key.pk}, "sk": {"S": item.key.sk}},
            "NewImage": stream_image_from_item(item).expect("the item encodes"),
            "SequenceNumber": sequence,
            "SizeBytes": 512,
            "StreamViewType": "NEW_IMAGE",
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/state/stream/2026-01-01T00:00:00.000",
    }]})
}

pub(crate) fn failures(answer: &Value) -> usize {
    answer["batchItemFailures"].as_array().map_or(usize::MAX, Vec::len)
}

async fn deliveries(s: &Stack) -> usize {
    DELIVERIES.all(s.running.backends.store.as_ref(), SANDBOX_ID, &[]).await.unwrap().len()
}

/// The builds view, newest first.
async fn view(s: &Stack) -> Vec<Value> {
    let (status, page) = s.get("/integrations/sandbox/pipelines?limit=100").await;
    assert_eq!(status, 200, "{page}");
    page["pipelines"].as_array().unwrap().clone()
}

pub(crate) fn sandbox_runs(s: &Stack) -> usize {
    s.running.sandbox.pipelines().len()
}

/// Bounded wait for something the worker or the sandbox does in the background.
pub(crate) async fn wait_until(what: &str, done: impl AsyncFn() -> bool) {
    for _ in 0..600 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn processed(s: &Stack, delivery_id: &str) -> bool {
    is_processed(s.running.backends.store.as_ref(), SANDBOX_ID, delivery_id).await.unwrap()
}

/// 100 concurrent copies of one delivery (one delivery id): one record, every answer 2xx (one
/// `recorded`, the rest `duplicate` with the same event id), one run in Bitbucket and the view.
async fn webhooks(state: StateBackend) {
    let temp = temp_dir("idempotency");
    let s = stack_on(temp.path(), &state, true).await;
    builds_custom_pipeline(&s).await;
    let body = pull_request_opened();
    let mut copies = JoinSet::new();
    for _ in 0..COPIES {
        let (http, url, body) = (s.http.clone(), s.url(&format!("/webhooks/{SANDBOX_ID}")), body.clone());
        let signature = sign(s.running.seeded.sandbox_webhook_secret.expose().as_bytes(), &body);
        copies.spawn(async move {
            let response = http
                .post(url)
                .header("Content-Type", "application/json")
                .header("X-Event-Key", "pullrequest:created")
                .header("X-Request-UUID", "load-delivery-1")
                .header("X-Hub-Signature", signature)
                .body(body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        });
    }
    let answers = copies.join_all().await;
    let recorded = answers.iter().filter(|(status, a)| *status == 202 && a["duplicate"] == false).count();
    let duplicates = answers.iter().filter(|(status, a)| *status == 200 && a["duplicate"] == true).count();
    assert_eq!((recorded, duplicates), (1, COPIES - 1), "{answers:?}");
    let event_id = &answers[0].1["event_id"];
    assert!(answers.iter().all(|(_, a)| &a["event_id"] == event_id), "every answer names the one event");

    wait_until("the delivery processed", async || processed(&s, "load-delivery-1").await).await;
    let deliveries = deliveries(&s).await;
    let (runs, view_runs) = (sandbox_runs(&s), view(&s).await.len());
    assert_eq!((deliveries, runs, view_runs), (1, 1, 1));
    println!(
        "FIGURES idempotency scenario=webhooks backend={} deliveries={COPIES} recorded={recorded} \
         duplicates={duplicates} records={deliveries} runs={runs} view_runs={view_runs}",
        state.name()
    );
    s.stop().await;
}

/// 100 concurrent identical snapshots (same document, same version): one commit, the others
/// answered `unchanged` (or `superseded`) with 200, one history entry.
async fn snapshots(state: StateBackend) {
    let temp = temp_dir("idempotency");
    let s = stack_on(temp.path(), &state, true).await;
    builds_custom_pipeline(&s).await;
    let target = "/integrations/sandbox/backup-targets/orders";
    let (status, answer) =
        s.put(target, json!({"directory": "collections", "filename": "orders.json", "branch": "backups"})).await;
    assert_eq!(status, 201, "{answer}");
    let before = s.running.sandbox.commit_count();
    let snapshot = json!({"document": {"info": {"name": "Orders API"}, "item": []}, "version": 1});
    let mut copies = JoinSet::new();
    for _ in 0..COPIES {
        let (http, url, token, snapshot) =
            (s.http.clone(), s.url(&format!("{target}/snapshots")), s.token.clone(), snapshot.clone());
        copies.spawn(async move {
            let response = http.post(url).bearer_auth(token).json(&snapshot).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        });
    }
    let answers = copies.join_all().await;
    let committed = answers.iter().filter(|(status, a)| *status == 201 && a["changed"] == true).count();
    let superseded = answers.iter().filter(|(status, a)| *status == 200 && a["superseded"] == true).count();
    let unchanged = answers
        .iter()
        .filter(|(status, a)| *status == 200 && a["changed"] == false && a["superseded"].is_null())
        .count();
    let other: Vec<_> = answers.iter().filter(|(status, _)| !matches!(status, 200 | 201)).collect();
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((committed, unchanged + superseded), (1, COPIES - 1), "{answers:?}");
    let commit = answers.iter().find(|(status, _)| *status == 201).map(|(_, a)| a["commit"].clone()).unwrap();
    assert!(answers.iter().filter(|(_, a)| a["superseded"].is_null()).all(|(_, a)| a["commit"] == commit));
    let commits = s.running.sandbox.commit_count() - before;
    let (status, history) = s.get(&format!("{target}/history")).await;
    assert_eq!(status, 200);
    let history = history["history"].as_array().unwrap().len();
    assert_eq!((commits, history), (1, 1));
    println!(
        "FIGURES idempotency scenario=snapshots backend={} snapshots={COPIES} committed={committed} \
         unchanged={unchanged} superseded={superseded} commits={commits} history={history}",
        state.name()
    );
    s.stop().await;
}

/// One stream record handed to both consumers twice at once and then once more (a retry): one
/// run, one environment write; then a branch deletion the same way: one prune audit entry.
async fn stream_redelivery(state: StateBackend) {
    let temp = temp_dir("idempotency");
    let s = stack_on(temp.path(), &state, false).await;
    builds_custom_pipeline(&s).await;
    let (pipelines, pruner) = (s.running.pipelines.clone(), s.running.pruner.clone());
    let consume_twice_at_once = async |batch: &Value| {
        let mut consumers = JoinSet::new();
        for _ in 0..2 {
            let (p, b) = (pipelines.clone(), batch.clone());
            consumers.spawn(async move { ("pipelines", on_stream(p.clone(), &b).await) });
            let (p, b) = (pruner.clone(), batch.clone());
            consumers.spawn(async move { ("pruner", on_stream(p.clone(), &b).await) });
        }
        consumers.join_all().await
    };

    let opened = recorded(&s, "pullrequest:created", "stream-opened", &pull_request_opened()).await;
    let batch = stream_batch(&opened, "100");
    let answers = consume_twice_at_once(&batch).await;
    // A consumer that found the other one starting the run asks for a retry: never "done" early.
    let retried = answers.iter().filter(|(consumer, a)| *consumer == "pipelines" && failures(a) == 1).count();
    assert!(answers.iter().all(|(consumer, a)| failures(a) == 0 || *consumer == "pipelines"), "{answers:?}");
    assert!(retried <= 1, "{answers:?}");
    // Lambda's retry of the batch (or a plain redelivery): nothing left to do, nothing fails.
    assert_eq!(failures(&on_stream(pipelines.clone(), &batch).await), 0);
    assert_eq!(failures(&on_stream(pruner.clone(), &batch).await), 0);
    let (runs, view_runs) = (sandbox_runs(&s), view(&s).await.len());
    assert_eq!((runs, view_runs), (1, 1));
    let store = s.running.backends.store.clone();
    let environment =
        store.get(&ENVIRONMENTS.key(SANDBOX_ID, &["develop"])).await.unwrap().expect("develop is an environment");
    assert_eq!((environment.version, environment.attrs["status"].clone()), (1, json!("active")), "one write");

    let deleted = recorded(&s, "repo:push", "stream-deleted", &push("develop", true)).await;
    let batch = stream_batch(&deleted, "101");
    let answers = consume_twice_at_once(&batch).await;
    assert!(answers.iter().all(|(_, a)| failures(a) == 0), "{answers:?}");
    assert_eq!(failures(&on_stream(pruner.clone(), &batch).await), 0);
    assert!(store.get(&ENVIRONMENTS.key(SANDBOX_ID, &["develop"])).await.unwrap().is_none(), "pruned");
    let (status, audit) = s.get("/integrations/sandbox/prune-audit").await;
    assert_eq!(status, 200, "{audit}");
    let audit = audit["audit"].as_array().unwrap().clone();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["delivery_id"], "stream-deleted");
    assert_eq!(sandbox_runs(&s), 1, "a deletion starts nothing");
    println!(
        "FIGURES idempotency scenario=stream backend={} deliveries=2 consumers_per_record=4+2 retry_answers={retried} \
         runs={runs} view_runs={view_runs} environment_writes={} audit_entries={}",
        state.name(),
        environment.version,
        audit.len()
    );
    s.stop().await;
}

/// The claims of automatic runs: (how many, how many name their run).
async fn claims(s: &Stack) -> (usize, usize) {
    let claims = ACTION_CLAIMS.all(s.running.backends.store.as_ref(), SANDBOX_ID, &[]).await.unwrap();
    (claims.len(), claims.iter().filter(|c| c.record.run.is_some()).count())
}

/// The pipeline worker of one delivery, in its own task so the test can kill it.
fn spawn_worker(s: &Stack, item: &Item) -> tokio::task::JoinHandle<Result<(), String>> {
    let (pipelines, item) = (s.running.pipelines.clone(), item.clone());
    tokio::spawn(async move { entry::lambda::deliver(pipelines.as_ref(), &item).await })
}

/// The same service once the claim timeout has passed (shortened instead of waited for).
pub(crate) fn after_claim_timeout(s: &Stack) -> Pipelines {
    Pipelines { claim_timeout: chrono::Duration::zero(), ..(*s.running.pipelines).clone() }
}

/// The worker dies after Bitbucket created the run and before it heard back (the sandbox holds
/// the answer; a task abort writes nothing more, as a dead process would): the redelivery
/// after the claim timeout finds that run, records it, and starts no second one.
async fn crash_after_start(state: StateBackend) {
    let temp = temp_dir("idempotency");
    let s = stack_on(temp.path(), &state, false).await;
    builds_custom_pipeline(&s).await;
    let item = recorded(&s, "pullrequest:created", "crash-after", &pull_request_opened()).await;
    s.running.sandbox.inject_fault(Fault {
        method: Some("POST".into()),
        path_contains: "/pipelines/".into(),
        kind: FaultKind::LatencyAfter { millis: 30_000 },
        times: Some(1),
    });
    let worker = spawn_worker(&s, &item);
    wait_until("the run created in the sandbox", async || sandbox_runs(&s) == 1).await;
    worker.abort();
    assert!(worker.await.unwrap_err().is_cancelled(), "the worker died mid-request");
    assert_eq!(claims(&s).await, (1, 0), "the dead worker left its claim without a run");
    assert!(view(&s).await.is_empty());

    // Redelivered at once: the claim may still be its worker's, so "retry later", not "done".
    let early = entry::lambda::deliver(s.running.pipelines.as_ref(), &item).await;
    assert!(early.is_err(), "{early:?}");
    let later = after_claim_timeout(&s);
    entry::lambda::deliver(&later, &item).await.unwrap();
    let shown = view(&s).await;
    assert_eq!((sandbox_runs(&s), shown.len()), (1, 1), "{shown:?}");
    assert_eq!(shown[0]["uuid"], s.running.sandbox.pipelines()[0]["uuid"]);
    assert_eq!(
        (shown[0]["origin"]["delivery_id"].clone(), shown[0]["trigger"].clone()),
        (json!("crash-after"), json!("pull_request"))
    );
    assert_eq!(claims(&s).await, (1, 1));
    // Any later redelivery: done already.
    entry::lambda::deliver(s.running.pipelines.as_ref(), &item).await.unwrap();
    entry::lambda::deliver(&later, &item).await.unwrap();
    let runs = sandbox_runs(&s);
    let view_runs = view(&s).await.len();
    s.stop().await;
    assert_eq!((runs, view_runs), (1, 1));
    println!(
        "FIGURES idempotency scenario=crash-after-start backend={} redeliveries=4 runs={runs} view_runs={view_runs}",
        state.name()
    );
}

/// The worker dies after claiming the action and before Bitbucket started anything (its
/// request is held before it reaches the handler, then cut): the redelivery after the claim
/// timeout starts exactly one run.
async fn crash_before_start(state: StateBackend) {
    let temp = temp_dir("idempotency");
    let s = stack_on(temp.path(), &state, false).await;
    builds_custom_pipeline(&s).await;
    let item = recorded(&s, "pullrequest:created", "crash-before", &pull_request_opened()).await;
    s.running.sandbox.inject_fault(Fault {
        method: Some("POST".into()),
        path_contains: "/pipelines/".into(),
        kind: FaultKind::Latency { millis: 30_000 },
        times: Some(1),
    });
    let worker = spawn_worker(&s, &item);
    // The fault is used up once the start request is inside the sandbox, held.
    let faults = s.url("/sandbox/bitbucket/_admin/faults");
    wait_until("the start request held in the sandbox", async || {
        let listed: Value = s.http.get(&faults).send().await.unwrap().json().await.unwrap();
        listed.as_array().is_some_and(Vec::is_empty)
    })
    .await;
    worker.abort();
    assert!(worker.await.unwrap_err().is_cancelled(), "the worker died mid-request");
    assert_eq!(claims(&s).await, (1, 0), "claimed, nothing recorded");
    assert_eq!(sandbox_runs(&s), 0, "nothing started");

    entry::lambda::deliver(&after_claim_timeout(&s), &item).await.unwrap();
    let shown = view(&s).await;
    assert_eq!((sandbox_runs(&s), shown.len()), (1, 1), "{shown:?}");
    assert_eq!(shown[0]["origin"]["delivery_id"], "crash-before");
    assert_eq!(claims(&s).await, (1, 1));
    entry::lambda::deliver(s.running.pipelines.as_ref(), &item).await.unwrap();
    let view_runs = view(&s).await.len();
    // Stopping waits for requests in flight: had the dead worker's request survived, its run
    // would be counted below.
    let sandbox = s.running.sandbox.clone();
    s.stop().await;
    let runs = sandbox.pipelines().len();
    assert_eq!((runs, view_runs), (1, 1));
    println!(
        "FIGURES idempotency scenario=crash-before-start backend={} redeliveries=2 runs={runs} view_runs={view_runs}",
        state.name()
    );
}

/// A delivery recorded while no worker ran is processed by the next start's sweep, exactly
/// once; a further restart processes nothing again.
async fn restart(state: StateBackend) {
    let temp = temp_dir("idempotency");
    let dir = temp.path();
    let first = stack_on(dir, &state, false).await;
    builds_custom_pipeline(&first).await;
    recorded(&first, "pullrequest:created", "restart-opened", &pull_request_opened()).await;
    let runs_first = sandbox_runs(&first);
    assert_eq!(runs_first, 0, "no worker, no run");
    first.stop().await;

    let second = stack_on(dir, &state, true).await;
    wait_until("the sweep processed the delivery", async || processed(&second, "restart-opened").await).await;
    let runs_second = sandbox_runs(&second);
    assert_eq!((runs_second, view(&second).await.len()), (1, 1));
    second.stop().await;

    let third = stack_on(dir, &state, true).await;
    // The sweep goes first, so once a delivery recorded after the start is processed it is over.
    recorded(&third, "repo:push", "restart-push", &push("feature/login", false)).await;
    wait_until("the new delivery processed", async || processed(&third, "restart-push").await).await;
    let runs_third = sandbox_runs(&third);
    let starts = third
        .running
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/pipelines/"))
        .count();
    let view_runs = view(&third).await.len();
    assert_eq!((runs_third, starts, view_runs), (0, 0, 1));
    let deliveries = deliveries(&third).await;
    third.stop().await;
    println!(
        "FIGURES idempotency scenario=restart backend={} restarts=2 deliveries={deliveries} runs_without_worker={runs_first} \
         runs_after_restart={runs_second} runs_after_second_restart={runs_third} view_runs={view_runs}",
        state.name()
    );
}

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::StateBackend::Sqlite).await
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::StateBackend::dynamodb().await).await
                }
            )*
        }
    };
}

on_both_backends!(webhooks, snapshots, stream_redelivery, crash_after_start, crash_before_start, restart);
